#!/usr/bin/env bash
# Run every molecule scenario (what `make molecule` does). CI shows only the end of a run's
# output, so when a scenario fails, the failing tasks' messages are printed again last.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
log=build/molecule.log
molecule test --all 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  # Without colours and molecule's box drawing; molecule wraps long lines, hence the lines after each hit.
  echo
  echo "==== molecule failed (rc=$rc); the failing tasks (full log: $log) ===="
  sed -E 's/\x1b\[[0-9;]*m//g; s/^[[:space:]]*[│└┌─]+[[:space:]]?//' "$log" |
    grep -E -A6 'fatal: \[|failed: \[|^(ERROR|CRITICAL)' | grep -v -E '^(skipping|ok|changed): \[' |
    cut -c1-300 | tail -n 40
fi
exit "$rc"
