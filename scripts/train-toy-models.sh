#!/usr/bin/env bash
# Train the shipped toy VAE and teacher (docs/toy-world.md, "How the current models were made").
# One training process at a time; every step resumes, or is skipped when its output is complete, so
# running this script again continues where it stopped. Takes about 8 h of CPU on 2 cores.
#   THREADS=2 nohup nice -n 10 scripts/train-toy-models.sh >> runs/toytrain/train.log 2>&1 &
# Then ship: python -m pyrawan.toy.ship --vae runs/toytrain/vae2 --transformer runs/toytrain/teacher-p1c
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=.venv/bin/python
T=runs/toytrain
FIRST_VAE_COMMIT=7a86e02   # the last commit that shipped the first VAE (vae16full), the start of vae2

vae() {  # vae OUT ARGS...: train (or resume) unless OUT/report.json exists, then bench 96 held-out clips
  local out=$1; shift
  if [ ! -f "$out/report.json" ]; then
    if [ -f "$out/train_state.pt" ]; then $PY -m pyrawan.toy.train_vae --out "$out" "$@" --resume
    else $PY -m pyrawan.toy.train_vae --out "$out" "$@"; fi
  fi
  [ -f "$T/bench/$(basename "$out")/bench.json" ] || \
    $PY -m pyrawan.toy.train_vae --out "$T/bench/$(basename "$out")" --init "$out" --bench-only --holdout 96 --seed 2
}

teacher() {  # teacher OUT RECIPE OVERRIDES...: finetune (or resume) unless OUT is a finished artifact
  local out=$1; shift
  [ -f "$out/manifest.json" ] && return
  if ls "$out.run/checkpoints" 2>/dev/null | grep -q step-; then .venv/bin/pyrawan finetune "$@" -o "$out" --resume
  else .venv/bin/pyrawan finetune "$@" -o "$out"; fi
}

echo "== first VAE from git $(date -u)"
if [ ! -f $T/vae16full/vae.safetensors ]; then
  mkdir -p $T/vae16full
  git show $FIRST_VAE_COMMIT:pyrawan/toy/weights/vae.safetensors > $T/vae16full/vae.safetensors
  git show $FIRST_VAE_COMMIT:pyrawan/toy/weights/weights.json | \
    $PY -c "import json, sys; print(json.dumps(json.load(sys.stdin)['vae']['config'], indent=1))" > $T/vae16full/config.json
fi
echo "== vae crops $(date -u)"
vae $T/vae2-crops --init $T/vae16full --minutes 0 --steps 4000 --pool 512 --batch 8 --crop 32 --lr 5e-4 --loss l1 \
  --edge-weight 1 --object-boost 10 --kl-weight 1e-5 --seed 3 --save-every 5 --holdout 96
echo "== vae whole frames $(date -u)"
vae $T/vae2 --init $T/vae2-crops --minutes 0 --steps 2000 --pool 512 --batch 4 --crop 64 --lr 3e-4 --loss l1 \
  --edge-weight 1 --object-boost 3 --kl-weight 1e-5 --seed 4 --save-every 5 --holdout 96
echo "== dataset $(date -u)"
[ -f $T/data4k/manifest.json ] || .venv/bin/pyrawan toy make-dataset $T/data4k --n 4096 --seed 300 --height 64 --width 64 \
  --short-captions 0.3 -q
[ -d $T/base-p1-vae2 ] || $PY -m pyrawan.toy.ship --write-base $T/base-p1-vae2 --patch 1 --base-vae $T/vae2
echo "== teacher $(date -u)"
teacher $T/teacher-p1 toy-teacher base=$T/base-p1-vae2 data.root=$T/data4k data.cache=$T/cache4k-vae2 \
  train.steps=12000 train.validation.holdout=64
echo "== teacher, second cosine $(date -u)"
teacher $T/teacher-p1b toy-teacher base=$T/teacher-p1 train.from_scratch=false train.steps=12000 \
  train.optimizer.lr=3e-4 data.root=$T/data4k data.cache=$T/cache4k-vae2 train.validation.holdout=64
echo "== teacher, third cosine $(date -u)"
teacher $T/teacher-p1c toy-teacher base=$T/teacher-p1b train.from_scratch=false train.steps=8000 \
  train.optimizer.lr=3e-4 data.root=$T/data4k data.cache=$T/cache4k-vae2 train.validation.holdout=64
echo "== done $(date -u)"
