#!/usr/bin/env bash
# VNN-COMP run script:
#   run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT_S
# Writes the verdict on line 1 of RESULTS_FILE (a counterexample after `sat`), always exits 0,
# answers before TIMEOUT_S, and leaves no process behind. Never reads stdin.
START=$(date +%s.%N)
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="${5:-}"

verdict() {  # write a verdict unless the verifier already wrote one
  [ -n "$RESULTS" ] || return 0
  if [ ! -s "$RESULTS" ]; then printf '%s\n' "$1" > "$RESULTS"; fi
}

if [ "$#" -ne 6 ]; then
  echo "run_instance.sh: expected 6 arguments (v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT), got $#" >&2
  verdict error; exit 0
fi
if [ "$1" != "v1" ]; then
  echo "run_instance.sh: expected version string 'v1', got '$1'" >&2
  verdict error; exit 0
fi
CATEGORY="$2"; ONNX="$3"; VNNLIB="$4"; TIMEOUT="$6"
rm -f "$RESULTS" 2>/dev/null
mkdir -p "$(dirname "$RESULTS")" 2>/dev/null

PY="$DIR/.venv/bin/python"; [ -x "$PY" ] || PY="$(command -v python3)"
# Hard wall-clock cap a little below the budget; the verifier itself aims well below it.
HARD=$(awk -v t="$TIMEOUT" -v s="$START" -v n="$(date +%s.%N)" \
  'BEGIN { h = t - (n - s) - 0.5; if (h < 0.5) h = 0.5; printf "%.2f", h }' 2>/dev/null) || HARD=1

# Per-benchmark settings: extra verifier arguments from specs/CATEGORY/verifier_args (one line),
# then from $QEB_VERIFY_ARGS (e.g. "--backend scip --memory-mb 4000").
EXTRA=()
SETTINGS="$DIR/specs/$CATEGORY/verifier_args"
if [ -n "$CATEGORY" ] && [ -f "$SETTINGS" ]; then read -r -a EXTRA < "$SETTINGS" || true; fi
if [ -n "${QEB_VERIFY_ARGS:-}" ]; then read -r -a MORE <<< "$QEB_VERIFY_ARGS"; EXTRA+=("${MORE[@]}"); fi

PIDDIR="${TMPDIR:-/tmp}/vnncomp-qeb-$(id -u)"
mkdir -p "$PIDDIR" 2>/dev/null
# `timeout` puts the verifier in its own process group and signals that whole group.
PYTHONPATH="$DIR${PYTHONPATH:+:$PYTHONPATH}" timeout -k 0.3 "$HARD" \
  "$PY" -m vnncomp_qeb verify "$ONNX" "$VNNLIB" --timeout "$TIMEOUT" --start-time "$START" \
  --results "$RESULTS" --category "$CATEGORY" ${EXTRA[@]+"${EXTRA[@]}"} < /dev/null 1>&2 &
CHILD=$!
echo "$CHILD" > "$PIDDIR/$CHILD.pid" 2>/dev/null
trap 'kill -KILL -- "-$CHILD" 2>/dev/null; rm -f "$PIDDIR/$CHILD.pid"; verdict timeout; exit 0' TERM INT HUP
wait "$CHILD"
RC=$?
kill -KILL -- "-$CHILD" 2>/dev/null  # anything the verifier left in its group
rm -f "$PIDDIR/$CHILD.pid"
case "$RC" in
  124|137) verdict timeout ;;
  *) verdict error ;;
esac
exit 0
