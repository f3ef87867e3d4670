#!/usr/bin/env bash
# The main job on the toy world with the shipped toy teacher: toy dataset -> calibrate -> convert ->
# finetune (short) -> sample -> ToyBench + FLOPs, printing a results table (the demo prints its estimate
# first; README gives measured times). Everything lands in runs/demo/, replaced by the next `make demo`;
# DEMO_ARGS=--quick (the CI-sized run) writes runs/demo-quick/ instead and leaves runs/demo/ alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
py=.venv/bin/pyrawan
out=runs/demo
case " ${DEMO_ARGS:-} " in *" --quick "*) out=runs/demo-quick ;; esac
"$py" demo -o "$out" --overwrite ${DEMO_ARGS:-}
"$py" verify "$out/finetuned"
"$py" lineage "$out/eval-2"
echo "demo: results in $out/results.json; the paper's setting: .venv/bin/pyrawan eval flops wan1.3b"
