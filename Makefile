# One command each; both set up .venv (scripts/setup.sh) on first use.
.PHONY: setup test test-fast test-random demo bench results

PYTEST = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest
# The options every run shares (pyproject.toml's addopts) less the fixed order, for test-random.
RANDOM_OPTS = -ra --disable-socket --allow-unix-socket --timeout=600

setup:
	bash scripts/setup.sh

# Everything, two workers (one per core): what CI runs.
test: setup
	$(PYTEST) -n 2 $(PYTEST_ARGS)

# Everything but the tests marked slow (multi-process runs, kills, the demo, long trainings): the quick
# loop while editing. Two workers, and no test may take more than 60 s.
test-fast: setup
	PYRAWAN_FUZZ_EXAMPLES=30 $(PYTEST) -m "not slow" -n 2 --timeout=60 $(PYTEST_ARGS)

# The fast tier in a random order (pytest-randomly prints its seed; repeat an order with PYTEST_ARGS=--randomly-seed=N).
test-random: setup
	PYRAWAN_FUZZ_EXAMPLES=30 $(PYTEST) -o addopts="$(RANDOM_OPTS)" -m "not slow" -n 2 $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh

bench: setup
	.venv/bin/python benchmarks/pyramid_ops.py

# Re-render the tables of docs/results.md and docs/toy-world.md from docs/data/*.json (scripts/render_results.py;
# `python scripts/render_results.py --check` only compares). Plain Python, no setup needed.
results:
	python3 scripts/render_results.py

# Mutation testing of the core modules with mutmut (docs/testing.md): a tool, not a CI gate; hours on 2 cores.
.PHONY: mutation
mutation: setup
	bash scripts/mutation.sh
