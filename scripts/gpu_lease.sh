# Sourced by the GPU lease scripts (gpu_arc.sh, gpu_arc_protocols.sh, gpu_distill.sh): the first call's set-up.
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
