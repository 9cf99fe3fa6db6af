#!/usr/bin/env bash
# VNN-COMP prepare script:
#   prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Kills only this tool's own leftover processes: verifier groups recorded by run_instance.sh
# (per user) whose run_instance.sh is no longer running — never a concurrent live run. Checks
# that the Python environment imports the verifier, and exits 0. A wrong version string, or an
# environment that cannot run the verifier, exits 1 (the category is skipped, with the reason).
if [ "${1:-}" != "v1" ]; then
  echo "prepare_instance.sh: expected version string 'v1', got '${1:-}'" >&2
  exit 1
fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIDDIR="${TMPDIR:-/tmp}/vnncomp-qeb-$(id -u)"
for f in "$PIDDIR"/*.pid; do
  [ -e "$f" ] || continue
  read -r pid script < "$f" 2>/dev/null
  if [ -n "${script:-}" ] && kill -0 "$script" 2>/dev/null \
      && grep -q "run_instance" "/proc/$script/cmdline" 2>/dev/null; then
    continue  # its run_instance.sh still runs it: not a leftover
  fi
  # only a process group that still runs our verifier
  if [ -n "$pid" ] && grep -q "vnncomp_qeb" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
PY="$DIR/.venv/bin/python"; [ -x "$PY" ] || PY="$(command -v python3)"
if ! OUT=$(PYTHONPATH="$DIR${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
    "import numpy, onnx, onnxruntime, highspy, vnnlib, psutil; import vnncomp_qeb.cli, vnncomp_qeb.portfolio" \
    < /dev/null 2>&1); then
  echo "prepare_instance.sh: the Python environment ($PY) cannot run the verifier:" >&2
  echo "$OUT" | tail -n 3 >&2
  echo "prepare_instance.sh: install it with: $PY -m pip install -r $DIR/requirements.txt" >&2
  exit 1
fi
exit 0
