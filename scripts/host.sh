# Sourced by test.sh: find every real ComfyUI the host tier runs against, and say which.
# HOSTS (an array of ComfyUI source trees) holds, in this order:
#   - every ComfyUI source tarball in ../shared/comfyui (ComfyUI-<version>*.tar.gz), newest version first, each
#     unpacked once into .cache/ComfyUI-<version>;
#   - $COMFYUI_PATH, when set (one more host, e.g. the ComfyUI you run);
#   - only when neither gave one (outside this repository's CI, with network): the pinned ComfyUI 0.3.64 commit,
#     fetched once with git into .cache/ComfyUI-git.
# With no host at all the host tier is skipped with the reason printed; only the core tier runs.
COMFYUI_PIN=a125cd84                 # ComfyUI 0.3.64, 2025-10-12: the fallback host fetched with git
COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
HOSTS=()
_cache=.cache
host_version() {  # the __version__ of the ComfyUI tree $1
  sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$1/comfyui_version.py" 2>/dev/null
}
for _tarball in $(ls ../shared/comfyui/ComfyUI-*.tar.gz 2>/dev/null | sort -t- -k2 -V -r); do
  _name=$(basename "$_tarball" .tar.gz)                # ComfyUI-0.3.64-a125cd84 or ComfyUI-0.30.0
  _version=$(echo "$_name" | cut -d- -f2)
  _dir=$_cache/ComfyUI-$_version
  if [ ! -f "$_dir/comfy/samplers.py" ]; then
    echo "host: unpacking $_tarball into $_dir (once; a few seconds)"
    mkdir -p "$_cache"
    _tmp=$(mktemp -d "$_cache/unpack.XXXXXX")
    tar xzf "$_tarball" -C "$_tmp"
    rm -rf "$_dir" && mv "$_tmp"/* "$_dir" && rmdir "$_tmp"   # the tarball's one top folder, whatever its name
  fi
  HOSTS+=("$PWD/$_dir")
done
if [ -n "${COMFYUI_PATH:-}" ]; then
  if [ ! -f "$COMFYUI_PATH/comfy/samplers.py" ]; then
    echo "host: COMFYUI_PATH=$COMFYUI_PATH holds no ComfyUI (no comfy/samplers.py)" >&2
    return 1
  fi
  HOSTS+=("$(cd "$COMFYUI_PATH" && pwd)")
fi
if [ ${#HOSTS[@]} -eq 0 ]; then
  if [ ! -f "$_cache/ComfyUI-git/comfy/samplers.py" ] && [ -z "${CI:-}" ] && command -v git >/dev/null \
      && timeout 15 git ls-remote -q "$COMFYUI_REPO" HEAD >/dev/null 2>&1; then
    echo "host: fetching ComfyUI $COMFYUI_PIN from $COMFYUI_REPO into $_cache/ComfyUI-git (once; about a minute)"
    mkdir -p "$_cache"
    git clone -q --filter=blob:none --no-checkout "$COMFYUI_REPO" "$_cache/ComfyUI-git"
    git -C "$_cache/ComfyUI-git" checkout -q "$COMFYUI_PIN"
  fi
  [ -f "$_cache/ComfyUI-git/comfy/samplers.py" ] && HOSTS+=("$PWD/$_cache/ComfyUI-git")
fi
if [ ${#HOSTS[@]} -eq 0 ]; then
  echo "host: no ComfyUI found (no ../shared/comfyui tarball, no COMFYUI_PATH, no network to fetch $COMFYUI_PIN):"
  echo "      the host tier will be skipped; only the core tier runs"
fi
for _h in "${HOSTS[@]}"; do
  echo "host: ComfyUI $(host_version "$_h") at $_h"
done
