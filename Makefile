# facelab: `make test` and `make book` set up a fresh machine by themselves (venv, pinned install,
# Jupyter kernel, assets) and then run the tests / the main job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements/lock.txt
STAMP := $(VENV)/.facelab-installed
RUN ?= runs/main
PYTEST_ARGS ?=

.PHONY: setup assets test book lab chapters clean-book lock help

help:
	@echo "make test   - set up (venv, pinned install, kernel, assets) and run the whole test suite"
	@echo "make book   - set up, run every chapter at default parameters into $(RUN)/, build _build/html"
	@echo "make lab    - open the chapters in JupyterLab with the project's kernel"
	@echo "make setup  - only the set-up step; make assets - only fetch + verify the pinned assets"

$(STAMP): $(LOCK) pyproject.toml tools/setup_system.sh
	bash tools/setup_system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=77"
	# one resolve installs the pinned torch/torchvision pair together with everything else
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name facelab --display-name "Python (facelab)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

assets: $(STAMP)
	$(PY) -m facelab assets fetch

# pytest's config (pyproject.toml) runs tests/ and nbval (--nbval-lax) over notebooks/*.ipynb with the
# facelab kernel; the browser test (tests/test_book_browser.py) builds the book and saves screenshots
# to test-artifacts/.
test: assets
	$(PY) -m pytest $(PYTEST_ARGS)

chapters: assets
	$(PY) -m facelab run all --root "$(CURDIR)" --out $(RUN)

# the HTML book from the fresh runs: _build/html/index.html (build time in _build/book-build.json)
book: chapters
	$(PY) -m facelab book --root "$(CURDIR)" --runs $(RUN)

lab: assets
	$(VENV)/bin/jupyter lab notebooks/

clean-book:
	rm -rf _build

# Regenerate the lock and environment.yml from the current venv (maintainers only).
lock:
	$(PY) -m pip freeze --exclude-editable --exclude facelab | sort -f > $(LOCK)
	$(PY) tools/make_environment_yml.py
