#!/usr/bin/env bash
# Stage, on this machine, what tools/gpu_check.sh needs on the GPU machine (Python 3.12, jax
# with CUDA, flax, optax, chex, orbax-checkpoint, numpy, scipy, pyyaml, absl-py, no MuJoCo,
# no network): MuJoCo and MJX wheels for CPython 3.12 and the DeepMimic clips, in .device/
# (git-ignored). Idempotent: wheels already there are kept, other versions removed.
#
#   bash tools/prepare_device.sh        # then, with the device tool: carry [".device"],
#                                       # command "bash tools/gpu_check.sh"
#
# EXTRA="NAME==VERSION ..." adds pure-Python packages the device lacks (e.g. brax and its
# dependencies for the bench's brax row).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# The versions the test suite runs with (pyproject.toml, README "Tested versions"). mujoco's
# own requirements glfw and pyopengl, and mjx's trimesh, are pinned to what the project's
# venv holds; mujoco-studio's websockets is left out (nothing here imports the studio).
PKGS="mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 mujoco-mjx==3.17.0 glfw==2.11.0 pyopengl==3.1.10 trimesh==5.2.0 ${EXTRA:-}"
# The device's python3 (KINDS.md of the device tool: CPython 3.12.3, x86-64 manylinux).
PY_TAG=${DEVICE_PYTHON_VERSION:-3.12}

mkdir -p .device/whl .device/clips

# Clips: the first of MIMIC_MJX_CLIPS's folders, ../shared/deepmimic/motions, the user
# cache (mimic_mjx/clipstore.py's order) that holds humanoid3d_*.txt files.
clip_src=""
IFS=: read -r -a dirs <<< "${MIMIC_MJX_CLIPS:-}"
dirs+=("$root/../shared/deepmimic/motions" "${MIMIC_MJX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mimic_mjx/clips}")
for d in "${dirs[@]}"; do
  if [ -n "$d" ] && compgen -G "$d/humanoid3d_*.txt" > /dev/null; then clip_src=$d; break; fi
done
if [ -z "$clip_src" ]; then
  echo "prepare_device: no humanoid3d_*.txt clips found (set MIMIC_MJX_CLIPS, or run 'mimic-mjx clips' once to fetch them)" >&2
  exit 1
fi
cp "$clip_src"/humanoid3d_*.txt .device/clips/
echo "clips: $(ls .device/clips | wc -l) from $clip_src"

# Wheels: one version of each package (two would stop the install there); drop stale ones.
for spec in $PKGS; do
  name=${spec%%==*}; version=${spec#*==}
  stem=$(echo "$name" | tr '-' '_' | tr '[:upper:]' '[:lower:]')
  for f in .device/whl/*.whl; do
    [ -e "$f" ] || continue
    base=$(basename "$f" | tr '[:upper:]' '[:lower:]')
    case "$base" in "${stem}-"*) case "$base" in "${stem}-${version}-"*) ;; *) rm -v "$f" ;; esac ;; esac
  done
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_TAG" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .device/whl $PKGS
echo "wheels:"; ls -1 .device/whl | sed 's/^/  /'

# The device tool carries the working tree plus .device: 64 MiB in all.
tree_kb=$(git ls-files -co --exclude-standard -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
device_kb=$(du -sk .device | cut -f1)
total_mb=$(( (tree_kb + device_kb) / 1024 ))
echo "to send: working tree ${tree_kb} KiB + .device ${device_kb} KiB = ${total_mb} MiB (limit 64 MiB)"
if [ "$total_mb" -ge 64 ]; then echo "prepare_device: over the device tool's 64 MiB" >&2; exit 1; fi
echo 'device tool: run(command="bash tools/gpu_check.sh", carry=[".device"], timeout_s=600)'
