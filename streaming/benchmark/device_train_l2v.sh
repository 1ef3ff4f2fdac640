#!/usr/bin/env bash
# Train L2V on a GPU host that has torch + CUDA but no facecast install, no PyAV/dlib and no network.
# Needs beside the repository: .whl/ (diffusers and its missing requirements, see device_check.py's notes, beside
# this script) and a pack of the training clips (`facecast pack-data runs/data --out PACK --max-frames 400`).
#   usage: streaming/benchmark/device_train_l2v.sh PACK OUT_DIR [RUN_CONFIG]
# Writes OUT_DIR/model (config.json, autoencoder + l2v weights, l2v.train.json) and OUT_DIR/train.log; the
# autoencoder is the bundled default's, since L2V works in its latent space.
set -euo pipefail
pack=$1 out=$2 config=${3:-configs/gpu.json}
repo=$(cd "$(dirname "$0")/../.." && pwd)
site=/tmp/facecast-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$repo"/.whl/*.whl
# The package layout that pyproject.toml's package-dir mapping gives an install: facecast.engine -> engine/, ...
mkdir -p "$site/facecast"
cp "$repo/facecast/__init__.py" "$site/facecast/"
for sub in engine export streaming; do ln -sfn "$repo/$sub" "$site/facecast/$sub"; done
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out/model"
cp "$repo/engine/weights/default/autoencoder.safetensors" "$repo/engine/weights/default/config.json" "$out/model/"
python3 - "$pack" "$out/model" "$config" <<'EOF' 2>&1 | tee "$out/train.log"
import sys

import torch
from safetensors.torch import load_file, save_file

from facecast.engine.training.train import train

pack, model_dir, config = sys.argv[1:4]
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
summary = train("l2v", pack, model_dir, config)
print(f"l2v: {summary['steps']} steps in {summary['seconds']} s, final loss {summary['history'][-1]['loss']:.4f}")
# A half-precision copy too: small enough for any transfer limit (the fp32 file is about 16 MB).
weights = load_file(f"{model_dir}/l2v.safetensors")
save_file({k: v.half() for k, v in weights.items()}, f"{model_dir}/l2v.fp16.safetensors")
EOF
