# Sourced by demo.sh and test.sh: `enter_venv [COMFYUI_TREE]` enters the virtual environment for that host and
# installs what the run needs, saying what it installs.
#  - With a ComfyUI tree: .venvs/comfyui-<version>, one per host, with that ComfyUI's own requirements (which
#    include its torch/torchvision/torchaudio: a CUDA build of several GB from the registry, run on CPU here;
#    torchvision has no CPU build on these machines' registries that matches the offline CPU torch).
#  - Without one (core tier only): .venv (or the active virtual environment) with a CPU torch where none is
#    installed.
# A stamp in each venv skips the install when nothing changed since the last run.
enter_venv() {
  local host=${1:-} venv want stamp
  if [ -n "$host" ]; then
    venv=.venvs/comfyui-$(host_version "$host")
    [ "$(basename "$host")" = "ComfyUI-$(host_version "$host")" ] || venv=$venv-$(echo "$host" | sha1sum | cut -c1-8)
  else
    venv=${VIRTUAL_ENV:-.venv}
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "venv: creating $venv with $(python3 --version)"
    mkdir -p "$(dirname "$venv")" && python3 -m venv "$venv"
  fi
  . "$venv/bin/activate"
  want=$(cat requirements-dev.txt ${host:+"$host/requirements.txt"} | sha1sum | cut -c1-12)
  stamp="$VIRTUAL_ENV/.inversion-suite-installed"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if [ -n "$host" ]; then
      echo "venv: installing ComfyUI $(host_version "$host")'s requirements ($host/requirements.txt) into $venv,"
      echo "      including its torch/torchvision/torchaudio (a CUDA build of several GB, used on CPU here;"
      echo "      about 3-6 minutes the first time, seconds afterwards)"
      pip install -q --disable-pip-version-check -r "$host/requirements.txt" requests
    elif ! python -c "import torch" 2>/dev/null; then
      echo "venv: installing a CPU torch (torch==2.13.0; core tier only)"
      pip install -q --disable-pip-version-check "torch==2.13.0" || pip install -q --disable-pip-version-check torch
    fi
    echo "venv: installing the test tools (requirements-dev.txt)"
    pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$want" > "$stamp"
  fi
  for extra in ${EXTRA_PACKAGES:-}; do  # optional extras (the demo's matplotlib), installed once where missing
    python -c "import $extra" 2>/dev/null || { echo "venv: installing $extra"; pip install -q --disable-pip-version-check "$extra"; }
  done
  echo "venv: $venv: $(python -c 'import torch, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")')"
}
