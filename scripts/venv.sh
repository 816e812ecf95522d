# Sourced by demo.sh and test.sh after host.sh: enter .venv (unless a virtual environment is active) and install
# what the run needs, saying what it installs.
#  - With a ComfyUI host: ComfyUI's own requirements, which include its torch/torchvision pair. torchvision has
#    no CPU build on these machines' registries that matches the offline CPU torch, and ComfyUI imports
#    torchvision, so the host tier uses the pair pip resolves (a CUDA build, several GB; it runs on CPU).
#  - Without a host (core tier only): a CPU torch where none is installed.
# A stamp in the venv skips the install when nothing changed since the last run.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "venv: creating .venv with $(python3 --version)"
    python3 -m venv .venv
  fi
  . .venv/bin/activate
fi
_want=$(cat requirements-dev.txt ${COMFYUI_PATH:+"$COMFYUI_PATH/requirements.txt"} | sha1sum | cut -c1-12)
_want="$_want ${EXTRA_PACKAGES:-}"
_stamp="$VIRTUAL_ENV/.inversion-suite-installed"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "venv: installing ComfyUI's requirements from $COMFYUI_PATH/requirements.txt into $VIRTUAL_ENV,"
    echo "      including its torch/torchvision/torchaudio (a CUDA build of several GB, used on CPU here;"
    echo "      about 3-6 minutes the first time, seconds afterwards)"
    pip install -q --disable-pip-version-check -r "$COMFYUI_PATH/requirements.txt" requests
  elif ! python -c "import torch" 2>/dev/null; then
    echo "venv: installing a CPU torch (torch==2.13.0; core tier only)"
    pip install -q --disable-pip-version-check "torch==2.13.0" || pip install -q --disable-pip-version-check torch
  fi
  echo "venv: installing the test tools (requirements-dev.txt${EXTRA_PACKAGES:+ and $EXTRA_PACKAGES})"
  pip install -q --disable-pip-version-check -r requirements-dev.txt ${EXTRA_PACKAGES:-}
  echo "$_want" > "$_stamp"
fi
echo "venv: $(python -c 'import torch, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")')"
