#!/usr/bin/env bash
# The main job on the toy world with the shipped toy teacher: toy dataset -> calibrate -> convert ->
# finetune (short) -> sample -> ToyBench + FLOPs, printing a results table (about 3 minutes on 2 CPU
# cores). Everything lands in runs/demo/ (replaced on every run). DEMO_ARGS=--quick: about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
py=.venv/bin/pyrawan
"$py" demo -o runs/demo ${DEMO_ARGS:-}
"$py" verify runs/demo/finetuned
"$py" lineage runs/demo/eval-2
echo "demo: results in runs/demo/results.json; the paper's setting: .venv/bin/pyrawan eval flops wan1.3b"
