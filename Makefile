# One command each; both set up .venv (scripts/setup.sh) on first use.
.PHONY: setup test test-fast demo bench

setup:
	bash scripts/setup.sh

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest $(PYTEST_ARGS)

# Everything but the multi-process and demo tests (marked slow): the quick loop while editing.
test-fast: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh

bench: setup
	.venv/bin/python benchmarks/pyramid_ops.py

# Mutation testing of the core modules with mutmut (docs/testing.md): a tool, not a CI gate; hours on 2 cores.
.PHONY: mutation
mutation: setup
	bash scripts/mutation.sh
