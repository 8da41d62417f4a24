# The two commands a new user needs:  `make run`  and  `make test`.
# While developing: `make test-fast` (no slow or browser tests; CI still runs `make test`, all of them).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: setup run test test-fast clean

$(BIN)/face-emotion: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test,dev]'
	touch $@

# The page's in-browser runtime (onnxruntime-web, pinned in web/package-lock.json), copied into the
# static folder so the browser loads it from the page's own origin.
ORT_VENDOR := src/face_emotion/server/static/vendor/onnxruntime-web

$(ORT_VENDOR)/.installed: web/package.json web/package-lock.json web/vendor_runtime.py
	$(PYTHON) web/vendor_runtime.py
	touch $@

setup: $(BIN)/face-emotion $(ORT_VENDOR)/.installed

run: setup
	$(BIN)/face-emotion serve --host $(HOST) --port $(PORT)

test: setup
	bash scripts/install_browser_deps.sh
	$(BIN)/ruff check src tests benchmarks scripts web
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	bash scripts/check_base_install.sh

FAST_TESTS := -m "not slow and not browser"
test-fast: setup
	$(BIN)/ruff check src tests benchmarks scripts web
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(FAST_TESTS)

clean:
	rm -rf $(VENV) .pytest_cache web/node_modules $(ORT_VENDOR)
