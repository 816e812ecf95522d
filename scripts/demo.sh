#!/usr/bin/env bash
# Set up and run the demo: invert a test latent with every method on the built-in analytic model (and on tiny
# SD1.5/SD3/Flux models when a ComfyUI is found), print error and model calls, and write demo_out/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_PACKAGES=matplotlib . scripts/venv.sh
exec python scripts/demo.py "$@"
