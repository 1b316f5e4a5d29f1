#!/bin/sh
# The packages the device image lacks, as Python 3.12 x86-64 wheels in .whl/ (ignored; carried by
# the device call): the recipe of /work/.library/device/README.md. The device image has torch
# 2.11, torchvision, timm, safetensors, pyyaml, pillow, numpy, scipy, pandas, einops,
# torch-geometric, tqdm, huggingface-hub (KINDS.md's list). Missing for training:
#   compressai==1.2.8     pyproject's pin; a compiled extension (pybind11, no numpy C-API), cp312
#   pytorch-msssim==1.0.0 imported by `import compressai` (compressai.losses), not in the image
#   timm==1.0.31          pyproject's pin: backbones.py imports timm's private MBConv module, and
#                         the image's timm version is not recorded
# The teacher's weights do not come as a wheel (17.4 MB): pack.py writes them into .gpu/.
# Run from the repository root:  sh tools/gpu_recipe/wheels.sh
set -eu
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' "$(git rev-parse --git-path info/exclude)" 2>/dev/null \
    || echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
PY=${PYTHON:-python3}
rm -rf .whl
$PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    compressai==1.2.8 pytorch-msssim==1.0.0 timm==1.0.31
ls -l .whl
