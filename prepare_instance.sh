#!/usr/bin/env bash
# VNN-COMP prepare script:
#   prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Kills only this tool's own leftover processes (recorded by run_instance.sh), warms the
# Python byte-code cache, and exits 0. A wrong version string exits 1 (skips the category).
if [ "${1:-}" != "v1" ]; then
  echo "prepare_instance.sh: expected version string 'v1', got '${1:-}'" >&2
  exit 1
fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIDDIR="${TMPDIR:-/tmp}/vnncomp-qeb-$(id -u)"
for f in "$PIDDIR"/*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f" 2>/dev/null)
  # only a process group that still runs our verifier
  if [ -n "$pid" ] && grep -q "vnncomp_qeb" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
PY="$DIR/.venv/bin/python"; [ -x "$PY" ] || PY="$(command -v python3)"
PYTHONPATH="$DIR${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m vnncomp_qeb --version < /dev/null > /dev/null 2>&1
exit 0
