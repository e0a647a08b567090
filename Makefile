# Two commands do everything on a fresh machine:
#   make demo   - the offline CPU recipe (recipes/mini_spoken_squad, quick profile), end to end
#   make test   - the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.py funasr_clsr/version.py | cksum | cut -d' ' -f1)
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: test demo full venv system-deps clean

$(STAMP): setup.py funasr_clsr/version.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first: a plain "torch" requirement would fetch a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,recipe]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# espeak-ng synthesises the recipe's and some tests' speech; sox resamples it; chromium + its driver
# run the web page's browser test (Debian's builds: downloaded browser builds fail here).
SYSTEM_PACKAGES := espeak-ng sox chromium chromium-driver
system-deps:
	@missing=; for c in espeak-ng sox chromium chromedriver; do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null; }; \
	  else echo "missing system packages and no apt-get: install $(SYSTEM_PACKAGES)" >&2; exit 1; fi; fi

# Two pytest workers (pytest-xdist), a test file per worker: most tests spend their time in one
# single-threaded process (imports, tiny models), so two of them fill the two cores of a CI machine.
TEST_WORKERS ?= 2
test: venv system-deps
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

demo: venv system-deps
	bash recipes/mini_spoken_squad/run.sh --profile quick

full: venv system-deps
	bash recipes/mini_spoken_squad/run.sh --profile full

clean:
	rm -rf $(VENV) *.egg-info
