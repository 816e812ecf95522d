#!/usr/bin/env bash
# Set up and run the demo: invert a test latent with every method on the built-in analytic model (and on tiny
# SD1.5/SD3/Flux models when a ComfyUI is found), print error and model calls, and write demo_out/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  . .venv/bin/activate
fi
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" || pip install -q torch
pip install -q -r requirements-dev.txt matplotlib
exec python scripts/demo.py "$@"
