#!/usr/bin/env bash
# The main job on the built-in default model (the `tiny` preset until a trained one ships):
# convert it into a 3-stage pyramid, sample a video, check the artifacts and count FLOPs.
# Everything lands in runs/demo/ (replaced on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
py=.venv/bin/pyrawan
mkdir -p runs/demo
"$py" convert tiny -o runs/demo/pyramid --overwrite
"$py" sample --model runs/demo/pyramid --prompt "a red square moving left" --seed 0 -o runs/demo/samples --overwrite
"$py" verify runs/demo/samples
"$py" lineage runs/demo/samples
"$py" eval flops runs/demo/pyramid
echo "demo: video in runs/demo/samples/videos/; the paper's setting: .venv/bin/pyrawan eval flops wan1.3b"
