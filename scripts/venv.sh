# Sourced by demo.sh and test.sh: enter .venv (unless a virtual environment is active) and make sure torch
# (a CPU build where none is installed; ComfyUI's own environment already has one) and the dev tools are there.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  . .venv/bin/activate
fi
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" || pip install -q torch
pip install -q -r requirements-dev.txt ${EXTRA_PACKAGES:-}
