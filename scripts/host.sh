# Sourced by test.sh and demo.sh: find the real ComfyUI the host tier runs against, and say which.
# Order: $COMFYUI_PATH; else the ComfyUI source tarball in ../shared/comfyui, unpacked once into .cache/;
# else (outside this repository's CI, with network) the pinned ComfyUI commit fetched with git into .cache/;
# else no host: the host tier is skipped with the reason printed.
# Sets COMFYUI_PATH (exported) when a host is found; HOST_SOURCE says where it came from.
COMFYUI_PIN=a125cd84                 # ComfyUI 0.3.64, 2025-10-12: the version the host tier is tested on
COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
HOST_SOURCE=""
_cache=.cache
_tarball=$(ls ../shared/comfyui/ComfyUI-*.tar.gz 2>/dev/null | head -n 1 || true)
if [ -n "${COMFYUI_PATH:-}" ]; then
  if [ -f "$COMFYUI_PATH/comfy/samplers.py" ]; then
    HOST_SOURCE="COMFYUI_PATH"
  else
    echo "host: COMFYUI_PATH=$COMFYUI_PATH holds no ComfyUI (no comfy/samplers.py)" >&2
    return 1
  fi
elif [ -n "$_tarball" ]; then
  _name=$(basename "$_tarball" .tar.gz)              # ComfyUI-0.3.64-a125cd84
  _dir=$_cache/${_name%-*}                            # .cache/ComfyUI-0.3.64
  if [ ! -f "$_dir/comfy/samplers.py" ]; then
    echo "host: unpacking $_tarball into $_dir (once; a few seconds)"
    mkdir -p "$_cache" && tar xzf "$_tarball" -C "$_cache"
  fi
  export COMFYUI_PATH=$PWD/$_dir
  HOST_SOURCE="$_tarball"
elif [ -f "$_cache/ComfyUI-git/comfy/samplers.py" ]; then
  export COMFYUI_PATH=$PWD/$_cache/ComfyUI-git
  HOST_SOURCE="$COMFYUI_REPO@$COMFYUI_PIN (fetched earlier)"
elif [ -z "${CI:-}" ] && command -v git >/dev/null && timeout 15 git ls-remote -q "$COMFYUI_REPO" HEAD >/dev/null 2>&1; then
  echo "host: fetching ComfyUI $COMFYUI_PIN from $COMFYUI_REPO into $_cache/ComfyUI-git (once; about a minute)"
  mkdir -p "$_cache"
  git clone -q --filter=blob:none --no-checkout "$COMFYUI_REPO" "$_cache/ComfyUI-git"
  git -C "$_cache/ComfyUI-git" checkout -q "$COMFYUI_PIN"
  export COMFYUI_PATH=$PWD/$_cache/ComfyUI-git
  HOST_SOURCE="$COMFYUI_REPO@$COMFYUI_PIN"
else
  echo "host: no ComfyUI found (no COMFYUI_PATH, no ../shared/comfyui tarball, no network to fetch $COMFYUI_PIN):"
  echo "      the host tier will be skipped; only the core tier runs"
fi
if [ -n "$HOST_SOURCE" ]; then
  _version=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$COMFYUI_PATH/comfyui_version.py" 2>/dev/null)
  echo "host: ComfyUI ${_version:-?} at $COMFYUI_PATH (from $HOST_SOURCE)"
fi
