# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint test demo bench clean

install: $(STAMP)

# Re-installs only when the project or its pins change; quick otherwise.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0 -c constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check plugin tests scripts
	$(VENV)/bin/ruff format --check plugin tests scripts

# pytest exits 5 when it collected no test: a failure here, never a pass.
test: install lint
	@$(PY) -m pytest -q $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

demo: install
	$(PY) scripts/demo.py --workdir demo

bench: install
	$(PY) scripts/bench_loss.py
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_infer.py

clean:
	rm -rf $(VENV) build *.egg-info plugin/*.egg-info .pytest_cache demo outputs
