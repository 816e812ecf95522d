#!/usr/bin/env bash
# Set up and run the test suite. Core tier always; host tier when COMFYUI_PATH (or ~/ComfyUI) holds a ComfyUI.
#   ./scripts/test.sh            (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
host=${COMFYUI_PATH:-$HOME/ComfyUI}
if [ -f "$host/comfy/samplers.py" ] && ! python -c "import sys; sys.path.append('$host'); import comfy.options, aiohttp, safetensors, av" 2>/dev/null; then
  grep -v -E '^(torch|torchvision|torchaudio)$' "$host/requirements.txt" > .venv-comfyui-requirements.txt
  pip install -q -r .venv-comfyui-requirements.txt requests
fi
exec python -m pytest -q -rs "$@"
