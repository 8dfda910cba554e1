#!/usr/bin/env bash
# After the tests: no control-plane process of ours may still run, and no run directory remain.
set -euo pipefail
base="${TMPDIR:-/tmp}/onus-testenv"
sleep 1
leaked=$(pgrep -f "$base/" || true)
if [ -n "$leaked" ]; then
  echo "check-no-leaks: processes still running from $base:" >&2
  ps -o pid,args -p $leaked >&2 || true
  exit 1
fi
if [ -d "$base" ] && [ -n "$(ls -A "$base")" ]; then
  echo "check-no-leaks: run directories left in $base:" >&2
  ls -la "$base" >&2
  exit 1
fi
echo "check-no-leaks: no control-plane processes or run directories left behind"
