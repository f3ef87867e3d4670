#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install pyrawan into it.
#
#   scripts/setup.sh            -> .venv (or $PYRAWAN_VENV), pyrawan + test extras
#
# torch: if the environment already has torch (a GPU user's CUDA build, say), it is kept.
# Otherwise, on a machine without an NVIDIA GPU, the CPU wheel torch==$PYRAWAN_TORCH is installed
# first, so that no dependency can pull a multi-GB CUDA build. With a GPU and no torch, install
# the torch build you want first (https://pytorch.org), then rerun this script.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PYRAWAN_VENV:-.venv}"
torch_version="${PYRAWAN_TORCH:-2.13.0}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv"
  "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
stamp="$venv/.pyrawan-installed"

# find_spec looks torch up without importing it (an import takes seconds).
if ! "$vpy" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "setup: a GPU is present but $venv has no torch; install your CUDA build of torch into $venv first" >&2
    exit 2
  fi
  echo "setup: installing the CPU build of torch==$torch_version"
  "$vpy" -m pip install -q --disable-pip-version-check "torch==$torch_version"
fi

# Reinstall only when the project's dependency list changed.
want=$(sha256sum pyproject.toml | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pyrawan and its dependencies into $venv"
  "$vpy" -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
