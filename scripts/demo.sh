#!/usr/bin/env bash
# Set up and run the demo: invert a test latent with every method on the built-in analytic model (and on tiny
# SD1.5/SD3/Flux models when a ComfyUI is found), print error and model calls, and write demo_out/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/host.sh
. scripts/venv.sh
# the newest host (its tiny models join the demo), else the core tier only
if [ ${#HOSTS[@]} -gt 0 ]; then export COMFYUI_PATH=${HOSTS[0]}; fi
EXTRA_PACKAGES=matplotlib enter_venv "${HOSTS[0]:-}"
exec python scripts/demo.py "$@"
