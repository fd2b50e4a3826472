#!/usr/bin/env bash
# Prepares the GPU machine reached through the device tool, then runs "$@" there:
# installs the carried wheels (.whl: pyopencl and its pure-Python needs, for Python 3.12), makes
# NVIDIA's OpenCL driver visible to the ICD loader (the machine has no ICD entry for it), and
# installs gllm and its plugins editable without dependencies (the image has them all).
#   run: bash bench/opencl_device.sh python3 bench/gpu.py --kernels      (carry: .whl)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
mkdir -p /tmp/icd && echo /usr/local/nvidia/lib64/libnvidia-opencl.so.1 > /tmp/icd/nvidia.icd
export OCL_ICD_VENDORS=/tmp/icd
args=(-e .)
for p in plugins/*/; do [ -f "$p/pyproject.toml" ] && args+=(-e "$p"); done
python3 -m pip install -q --no-deps --no-build-isolation --no-index "${args[@]}" >/tmp/pip.log 2>&1 \
    || { tail -5 /tmp/pip.log; export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins/backend_opencl; }
export PYTHONUNBUFFERED=1
"$@"
