#!/usr/bin/env bash
# Set up and run the test suite: the core tier once, and the host tier against every real ComfyUI found (host.sh:
# both trees in ../shared/comfyui, 0.30.0 and 0.3.64, each in its own venv). With a host, a host test that cannot
# run fails instead of skipping. Ends with one summary line per host.
#   ./scripts/test.sh            (extra arguments go to pytest, on every host)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
. scripts/host.sh
. scripts/venv.sh
# Tiny models on few cores: thread contention dominates, so torch runs single-threaded (measured: one
# 18-family check went from 5 min 43 s to 17 s on 2 cores).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p .cache
summary=()
rc=0
run_pytest() {  # label, then pytest arguments; appends the label and pytest's last line to summary
  local label=$1 log t0 code
  shift
  log=.cache/pytest-$(echo "$label" | tr -c 'A-Za-z0-9.\n' '-').log
  t0=$(date +%s)
  set +e
  python -m pytest -q -rs --durations=10 "$@" 2>&1 | tee "$log"
  code=${PIPESTATUS[0]}
  set -e
  [ "$code" -eq 0 ] || rc=1
  summary+=("$label: $(grep -E '[0-9]+ (passed|failed|error|skipped)|no tests ran' "$log" | tail -n 1 | tr -d '=' \
                       | sed 's/^ *//;s/ *$//') (exit $code, $(( $(date +%s) - t0 )) s)")
}
if [ ${#HOSTS[@]} -eq 0 ]; then
  enter_venv
  run_pytest "no ComfyUI: core tier only" "$@"
fi
first=1
for host in "${HOSTS[@]}"; do
  version=$(host_version "$host")
  echo "=== ComfyUI $version ($host) ==="
  enter_venv "$host"
  if [ $# -gt 0 ]; then
    args=("$@")
  elif [ $first -eq 1 ]; then
    args=(tests)                    # core tier and host tier
  else
    args=(tests/nodes tests/host tests/server)  # the host tier again; the core tier does not depend on the host
  fi
  echo "setup took $(( $(date +%s) - start )) s so far; running pytest on ComfyUI $version"
  export COMFYUI_PATH=$host INVERSION_SUITE_REQUIRE_HOST=1
  run_pytest "ComfyUI $version" "${args[@]}"
  deactivate
  first=0
done
echo
echo "=== summary (total $(( $(date +%s) - start )) s) ==="
printf '%s\n' "${summary[@]}"
exit $rc
