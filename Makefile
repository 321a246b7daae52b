# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint test demo bench gpu-check gpu-wheels clean

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

# The GPU readiness check (docs/gpu.md): every CUDA path, results/gpu_check.json. `make test` runs its CPU mode.
gpu-check: install
	$(PY) scripts/gpu_check.py --device cuda

# Wheels the check needs on an offline GPU machine beyond its torch and numpy (scripts/gpu_requirements.txt),
# for that machine's Python and platform; then proof that they resolve there without a network.
GPU_PYTHON_VERSION ?= 3.12
GPU_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
GPU_WHEELS ?= gpu-wheels
gpu-wheels: install
	rm -rf $(GPU_WHEELS)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
		--python-version $(GPU_PYTHON_VERSION) $(addprefix --platform ,$(GPU_PLATFORMS)) \
		-d $(GPU_WHEELS) -r scripts/gpu_requirements.txt
	$(PY) scripts/gpu_check_wheels.py $(GPU_WHEELS) --python-version $(GPU_PYTHON_VERSION) \
		$(addprefix --platform ,$(GPU_PLATFORMS))

clean:
	rm -rf $(VENV) build *.egg-info plugin/*.egg-info .pytest_cache demo outputs
