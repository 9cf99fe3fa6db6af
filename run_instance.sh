#!/usr/bin/env bash
# VNN-COMP run script:
#   run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT_S
# Writes the verdict on line 1 of RESULTS_FILE (a counterexample after `sat`), always exits 0,
# answers before TIMEOUT_S, and leaves no process behind. Never reads stdin.
# Python: $DIR/.venv/bin/python when that exists, else the python3 on PATH.
CHILD=""
RESULTS="${5:-}"
on_signal() {  # set before anything else: a signal at any point still leaves a verdict
  [ -n "$CHILD" ] && kill -KILL -- "-$CHILD" 2>/dev/null
  [ -n "${PIDFILE:-}" ] && rm -f "$PIDFILE"
  verdict timeout
  exit 0
}
trap on_signal TERM INT HUP
START=$(date +%s.%N)
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { echo "run_instance.sh: $*" >&2; }
verdict() {  # write a verdict, unless the verifier (started by this run) already wrote one
  [ -n "$RESULTS" ] || return 0
  if [ -z "$CHILD" ] || [ ! -s "$RESULTS" ]; then
    printf '%s\n' "$1" 2>/dev/null > "$RESULTS" || say "cannot write the results file '$RESULTS'"
  fi
}

if [ "$#" -ne 6 ]; then
  say "expected 6 arguments (v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT), got $#"
  verdict error; exit 0
fi
if [ -z "$RESULTS" ]; then say "the results file path is empty: nothing can be written"; exit 0; fi
if [ -d "$RESULTS" ]; then say "the results file '$RESULTS' is a folder"; exit 0; fi
# the stale verdict of an earlier run never survives: remove it, then check the file can be written
rm -f "$RESULTS" 2>/dev/null
mkdir -p "$(dirname "$RESULTS")" 2>/dev/null
if ! { : > "$RESULTS"; } 2>/dev/null; then
  say "cannot write the results file '$RESULTS' (its folder is missing or read-only, or the file is protected)"
  exit 0
fi
if [ "$1" != "v1" ]; then
  say "expected version string 'v1', got '$1'"
  verdict error; exit 0
fi
CATEGORY="$2"; ONNX="$3"; VNNLIB="$4"; TIMEOUT="$6"
if ! awk -v t="$TIMEOUT" 'BEGIN { exit !(t ~ /^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/ && t + 0 > 0) }'; then
  say "TIMEOUT must be a positive number of seconds, got '$TIMEOUT'"
  verdict error; exit 0
fi

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

# Leftover records, per user; each names the verifier's process group and this script, so that
# prepare_instance.sh kills only groups whose script is gone (never a concurrent live run).
PIDDIR="${TMPDIR:-/tmp}/vnncomp-qeb-$(id -u)"
mkdir -p "$PIDDIR" 2>/dev/null
# `timeout` puts the verifier in its own process group and signals that whole group; the
# verifier also watches this script (--parent-pid) and ends its group if the script is killed.
PYTHONPATH="$DIR${PYTHONPATH:+:$PYTHONPATH}" timeout -k 0.3 "$HARD" \
  "$PY" -m vnncomp_qeb verify "$ONNX" "$VNNLIB" --timeout "$TIMEOUT" --start-time "$START" \
  --results "$RESULTS" --category "$CATEGORY" --parent-pid "$$" ${EXTRA[@]+"${EXTRA[@]}"} < /dev/null 1>&2 &
CHILD=$!
PIDFILE="$PIDDIR/$CHILD.pid"
echo "$CHILD $$" > "$PIDFILE" 2>/dev/null
wait "$CHILD"
RC=$?
kill -KILL -- "-$CHILD" 2>/dev/null  # anything the verifier left in its group
rm -f "$PIDFILE"
case "$RC" in
  124|137) verdict timeout ;;
  *) verdict error ;;
esac
exit 0
