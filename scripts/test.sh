#!/usr/bin/env bash
# Set up and run the test suite: the core tier always, the host tier against a real ComfyUI (see host.sh for
# where it comes from). When a host is found, a host test that cannot run fails instead of skipping.
#   ./scripts/test.sh            (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
. scripts/host.sh
. scripts/venv.sh
if [ -n "${COMFYUI_PATH:-}" ]; then
  export INVERSION_SUITE_REQUIRE_HOST=1
fi
# Tiny models on few cores: thread contention dominates, so torch runs single-threaded (measured: one
# 18-family check went from 5 min 43 s to 17 s on 2 cores).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
echo "setup took $(( $(date +%s) - start )) s; running pytest (about 10 minutes on 2 cores)"
rc=0
python -m pytest -q -rs --durations=15 "$@" || rc=$?
echo "total $(( $(date +%s) - start )) s"
exit $rc
