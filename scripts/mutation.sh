#!/usr/bin/env bash
# Mutation testing of the core modules (docs/testing.md): `make mutation` runs them all; `scripts/mutation.sh
# PATTERN...` runs the mutants whose names match (e.g. 'pyrawan.eval.stats.*'). A tool, not a CI gate.
# Config: [tool.mutmut] in pyproject.toml. Results stay in mutants/ (a rerun skips mutants already judged;
# delete mutants/ after changing code or tests). MUTATION_CHILDREN: parallel mutants (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
patterns=("$@")
if [ ${#patterns[@]} -eq 0 ]; then
  patterns=('pyrawan.pyramid.*' 'pyrawan.train.dmd.*' 'pyrawan.train.loss.*'
            'pyrawan.commands.distill_dmd.x_generator_update__mutmut_*' 'pyrawan.commands.distill_dmd.x_fake_update__mutmut_*'
            'pyrawan.eval.stats.*' 'pyrawan.eval.compare.x_[!p]*' 'pyrawan.eval.compare.x_p[!l]*'   # not plot()
            'pyrawan.manifest.*' 'pyrawan.outputs.*')
fi
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q "mutmut>=3.3,<4"
start=$(date +%s)
.venv/bin/mutmut run --max-children "${MUTATION_CHILDREN:-1}" "${patterns[@]}"
echo "mutmut run: $(( $(date +%s) - start )) s wall"
.venv/bin/python scripts/mutation_report.py "${patterns[@]}"
