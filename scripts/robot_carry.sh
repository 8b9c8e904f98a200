#!/usr/bin/env bash
# Builds the two folders that scripts/gpu_robot.sh carries to the offline GPU machine (Python 3.12, torch,
# numpy, opencv-python-headless, imageio, scipy, packaging, cloudpickle ... already there):
#   .whl-robot/  wheels (cp312, manylinux x86_64, --no-deps) of what sage_distill.robot imports at run time
#                and the GPU machine lacks, pinned to the versions in .venv (pip freeze); metaworld comes as
#                metaworld-pruned.tar.xz (12 MB instead of a 37 MB wheel: the textures and meshes no MJCF file
#                names are left out; every one of the 50 tasks still builds and renders), which gpu_robot.sh
#                unpacks onto PYTHONPATH;
#   .gl/         Debian .deb files that gpu_robot.sh unpacks with `dpkg -x` to / so that MuJoCo's headless
#                EGL backend (MUJOCO_GL=egl) finds glvnd's libEGL.so.1; NVIDIA's EGL vendor library
#                (libEGL_nvidia.so.0 + its egl_vendor.d JSON) comes with the machine's driver.
# Run from the repository root on the dev machine (reaches PyPI and the Debian mirror through pip and apt):
#   bash scripts/robot_carry.sh            WITH_AV=1 adds PyAV (~36 MB)
# Both folders are git-ignored through .git/info/exclude. gpu_robot.sh carries them with .whl: with the
# tracked tree (~27 MB) that must stay under the 64 MiB a device call carries.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
WHL=.whl-robot GL=.gl
rm -rf "$WHL" "$GL"; mkdir -p "$WHL" "$GL"

# ---- wheels -------------------------------------------------------------------------------------------
pin() { # NAME -> NAME==VERSION as installed in .venv (fails when it is not installed there)
  local v; v=$(.venv/bin/pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v" ] || { echo "$1 is not installed in .venv (pip install -e '.[robot]')" >&2; exit 1; }
  echo "$1==$v"
}
pkgs=(
  metaworld             # the environments; pure py3-none-any wheel on PyPI (assets included, ~37 MB): pruned below
  mujoco                # the simulator (cp312 wheel); its egl backend imports PyOpenGL
  pyopengl              # mujoco.egl: `from OpenGL import EGL` loads libEGL.so.1 and libOpenGL.so.0
  gymnasium             # metaworld's env base classes (gymnasium.envs.mujoco.MujocoEnv)
  farama-notifications  # gymnasium imports it at start-up
  glfw                  # gymnasium.envs.mujoco imports mujoco_rendering, which does `import glfw` at the
                        # top; the wheel bundles libglfw.so, which loads without X (it opens X only in glfw.init)
)
# Left out on purpose: absl-py and etils (mujoco's metadata lists them; only its tests and codegen import them);
# av (PyAV: gpu_robot_pipeline.sh sets SAGE_VIDEO_BACKEND=opencv and video.py falls back to cv2 without it);
# numpy, scipy, imageio, typing-extensions, cloudpickle, packaging (on the GPU machine already).
[ "${WITH_AV:-0}" = 1 ] && pkgs+=(av)
specs=(); for p in "${pkgs[@]}"; do specs+=("$(pin "$p")"); done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$WHL" "${specs[@]}"

# ---- metaworld, pruned: keep every asset whose file name an MJCF file mentions (the rest are unused textures)
mw=$(mktemp -d); trap 'rm -rf "$mw"' EXIT
unzip -q "$WHL"/metaworld-*.whl -d "$mw"
find "$mw/metaworld" -name '*.xml' -exec cat {} + > "$mw/mjcf.txt"
find "$mw/metaworld/assets" -type f ! -name '*.xml' | while read -r f; do
  grep -qF "$(basename "$f")" "$mw/mjcf.txt" || rm "$f"
done
rm "$mw/mjcf.txt" "$WHL"/metaworld-*.whl
(cd "$mw" && tar -cJf - metaworld metaworld-*.dist-info) > "$WHL/metaworld-pruned.tar.xz"

# ---- EGL runtime (Debian packages) --------------------------------------------------------------------
apt-get update -qq
debs=(
  libglvnd0   # libGLdispatch.so.0: the glvnd dispatch core that libEGL.so.1 and libOpenGL.so.0 link to
  libegl1     # libEGL.so.1 (glvnd): reads /usr/share/glvnd/egl_vendor.d/*.json and loads the vendor's EGL
  libopengl0  # libOpenGL.so.0 (glvnd): PyOpenGL's EGL platform loads 'OpenGL' before 'GL', so no libGL/GLX/X11
)
# Not carried: Mesa (libegl-mesa0, libgbm1, libgl1-mesa-dri + libllvm15, libdrm2, libwayland-*, libxcb-*):
# ~35 MB, needed only where the driver gives no NVIDIA EGL vendor library (software llvmpipe fallback).
(cd "$GL" && apt-get download "${debs[@]}")

# ---- keep both out of git -----------------------------------------------------------------------------
ex="$(git rev-parse --git-dir)/info/exclude"
for d in "/$WHL/" "/$GL/"; do grep -qxF "$d" "$ex" 2>/dev/null || echo "$d" >> "$ex"; done

ls -l "$WHL" "$GL"; du -ch "$WHL" "$GL" .whl 2>/dev/null | tail -1
