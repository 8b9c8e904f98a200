# Sourced by the GPU lease scripts (gpu_arc.sh, gpu_arc_protocols.sh, gpu_distill.sh, gpu_robot*.sh): the first
# call's set-up.
# lease_setup W [mps]: copy the carried tree to W/code (a later call replaces the carried tree), install the
# carried wheels into /tmp/site, name the GPU; with mps, start CUDA MPS so that several processes' kernels run
# side by side instead of time-slicing the GPU (one small model leaves most of an H200 idle). MPS is kept only
# if a CUDA call works under it; the daemon must not hold the call's stdout open, or the call never returns
# (it did once).
lease_setup() {
  mkdir -p "$1/res" && rm -rf "$1/code" && cp -r "$PWD" "$1/code"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  [ "${2:-}" = mps ] || return 0
  if nvidia-cuda-mps-control -d > /dev/null 2>&1 < /dev/null \
      && timeout 90 env PYTHONPATH=/tmp/site python3 -c "import torch; print(torch.ones(2, device='cuda').sum().item())"; then
    echo "MPS on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; echo "MPS off"
  fi
}

# robot_setup SITE: what the robot side needs beyond lease_setup, from the folders scripts/robot_carry.sh builds:
# glvnd's EGL libraries unpacked to / (MuJoCo renders headless through the driver's EGL), the robot wheels, and
# the pruned metaworld unpacked into SITE (put SITE on PYTHONPATH).
robot_setup() {
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  python3 -m pip install -q --no-deps --no-index .whl-robot/*.whl 2>&1 | tail -2
  mkdir -p "$1"
  if [ -f .whl-robot/metaworld-pruned.tar.xz ]; then tar -xJf .whl-robot/metaworld-pruned.tar.xz -C "$1"; fi
}
