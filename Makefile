# The two commands of the README's quick start, and what they need.
#   make demo   serve the demo on http://127.0.0.1:8000
#   make test   lint, type-check and run the whole test suite with branch coverage
# And for CI's version matrix:
#   make test-oldest   the drop-in, endpoint and testing tests on the oldest versions we claim

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed

.PHONY: demo test test-oldest bench system-deps clean

$(STAMP): pyproject.toml benchmarks/requirements.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,redis,demo]" -r benchmarks/requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m wsendpoints $(ARGS)

system-deps:
	bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	# The broker tests again with redis-py's pure-Python parser, as without the `redis` extra's hiredis.
	$(BIN)/coverage run -m pytest -p tests.without_hiredis $(PYTEST_ARGS) tests/brokers
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

# The floors of pyproject.toml (Starlette, anyio, uvicorn), pinned in constraints-oldest.txt. Old stacks
# warn about their own dependencies' deprecations, so DeprecationWarning is not an error here; the point
# is behaviour, and `make test` checks warnings on the newest versions.
$(OLDEST_STAMP): pyproject.toml constraints-oldest.txt Makefile
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -e ".[test,redis,demo]" httpx -c constraints-oldest.txt
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pip list 2>/dev/null | grep -iE "^(starlette|anyio|uvicorn) "
	$(OLDEST_VENV)/bin/python -m pytest -p no:cacheprovider -W "ignore::DeprecationWarning" $(PYTEST_ARGS) \
		tests/compat tests/endpoints tests/test_testing.py tests/test_server.py tests/hostile/test_send_timeout.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .coverage .coverage.* .mypy_cache .ruff_cache .pytest_cache
