# facelab: `make test` and `make book` set up a fresh machine by themselves (venv, pinned install,
# Jupyter kernel, assets) and then run the tests / the main job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements/lock.txt
STAMP := $(VENV)/.facelab-installed
RUN ?= runs/main
PYTEST_ARGS ?=

.PHONY: setup assets test book lab chapters clean-book lock help mutation mutation-tool mutation-known mutation-recheck bench-setup bench

help:
	@echo "make test   - set up (venv, pinned install, kernel, assets) and run the whole test suite"
	@echo "make book   - set up, run every chapter at default parameters into $(RUN)/, build _build/html"
	@echo "make lab    - open the chapters in JupyterLab with the project's kernel"
	@echo "make setup  - only the set-up step; make assets - only fetch + verify the pinned assets"
	@echo "make bench  - install the bench extra (make bench-setup) and run benchmarks/ (not part of make test)"

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

# Benchmarks against torchattacks / foolbox / ART and ONNX Runtime (issue 18; not part of `make test`).
# bench-setup installs pyproject.toml's `bench` extra into the venv under the lock's pins; torchattacks goes in
# with --no-deps (its requests~=2.25.1 pin would downgrade the lock's requests; it is only for its dataset
# downloads). Each script runs at its defaults and writes its table to benchmarks/results/.
BENCH_STAMP := $(VENV)/.facelab-bench-installed
BENCH_PINS = $(shell $(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
BENCH_SCRIPTS := benchmarks/bench_attacks.py benchmarks/bench_zoo_onnx.py \
	$(wildcard benchmarks/bench_instance_gradients.py benchmarks/bench_line_search.py)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -c $(LOCK) $(filter-out torchattacks%,$(BENCH_PINS))
	$(PY) -m pip install --quiet --no-deps $(filter torchattacks%,$(BENCH_PINS))
	@# the JS originals for the zoo benchmark's JS columns (tfjs in Node, pinned by each package-lock.json)
	@if command -v npm >/dev/null 2>&1; then for d in tools/faceapi_reference tools/human_reference; do \
	  (cd $$d && npm ci --silent) || exit 1; done; \
	else echo "npm not found: bench_zoo_onnx.py will skip its JS columns"; fi
	touch $(BENCH_STAMP)

bench-setup: $(BENCH_STAMP)

bench: bench-setup assets
	@for s in $(BENCH_SCRIPTS); do echo "== $$s"; $(PY) $$s || exit 1; done

# Mutation testing (not part of `make test`; tests/MUTATION.md has the scores and the equivalent mutants).
# Installs the pinned mutmut and runs it once per module, each in a scratch copy _build/mutation/<module>/
# (facelab/, pyproject.toml's [tool.mutmut] and only that module's fastest relevant tests), so a run never
# writes into the working tree. Prints killed/mutants per module; _build/mutation/scores.txt keeps them.
# `make mutation MUTATION_MODULES=metrics` runs one module; MUTATION_JOBS sets mutmut's parallel children.
MUTMUT_PIN := mutmut==3.8.1
MUTATION_DIR := _build/mutation
# attacks run file by file, each with its own fastest tests (MUTATION_TESTS_attacks.<file>): faster than one run
# of every attack test over every attack mutant; the module's score is the sum over its files
MUTATION_ATTACK_FILES := base fgsm ffa line_search lip erf eyeglasses patch sample_sets universal_patch
MUTATION_MODULES ?= metrics $(addprefix attacks.,$(MUTATION_ATTACK_FILES)) defenses assets experiments
MUTATION_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
MUTATION_TESTS_metrics := test_metrics_detection.py test_metrics_widerface.py test_metrics_uncertainty.py \
	test_metrics_verification.py test_pass_score.py test_properties.py test_attacks_patch.py
MUTATION_TESTS_attacks := test_attacks_patch.py test_attacks_fgsm.py test_attacks_lip.py test_attacks_erf.py test_attacks_eyeglasses.py \
	test_attacks_ffa.py test_line_search.py test_properties.py
MUTATION_TESTS_defenses := test_defenses.py test_defenses_saliency_mask.py test_models_resgn.py
MUTATION_TESTS_assets := test_assets.py
# one file of a module (`make mutation-attacks.fgsm`): that file's mutants with its own tests only (a smaller stats
# run); the module's score is the sum over its files. Files without an entry use the whole module's tests.
MUTATION_TESTS_attacks.fgsm := test_attacks_fgsm.py test_properties.py test_attacks_patch.py
MUTATION_TESTS_attacks.ffa := test_attacks_ffa.py test_properties.py test_attacks_patch.py
MUTATION_TESTS_attacks.line_search := test_line_search.py
MUTATION_TESTS_attacks.lip := test_attacks_lip.py test_properties.py test_attacks_patch.py
MUTATION_TESTS_attacks.erf := test_attacks_erf.py test_attacks_lip.py test_attacks_patch.py
MUTATION_TESTS_attacks.eyeglasses := test_attacks_eyeglasses.py
MUTATION_TESTS_attacks.base := test_attacks_fgsm.py test_attacks_ffa.py test_attacks_eyeglasses.py test_attacks_patch.py
MUTATION_TESTS_attacks.patch := test_attacks_patch.py test_properties.py
MUTATION_TESTS_attacks.sample_sets := test_attacks_patch.py test_properties.py
MUTATION_TESTS_attacks.universal_patch := test_attacks_patch.py test_properties.py
# experiments: the shared experiment steps (claims, verdicts, the reproduction check, the spread's tolerances);
# the chapter modules' own steps are checked by tools/known_mutants.py (their tests train patches and nets)
MUTATION_TESTS_experiments := test_chapter_framework.py
MUTATION_COPY_experiments := notebooks

mutation-tool: $(STAMP)
	$(PY) -m pip install --quiet "$(MUTMUT_PIN)"

mutation: mutation-tool
	@mkdir -p $(MUTATION_DIR) && : > $(MUTATION_DIR)/scores.txt
	@for m in $(MUTATION_MODULES); do $(MAKE) --no-print-directory mutation-$$m || exit 1; done
	@echo "mutation score per module (killed incl. timeouts / mutants):" && cat $(MUTATION_DIR)/scores.txt
	@awk '{split($$1, p, "."); split($$2, f, "/"); k[p[1]] += f[1]; n[p[1]] += f[2]} END {for (m in n) \
	  printf "%-9s %5d/%-5d = %5.1f %%  (module total)\n", m, k[m], n[m], 100 * k[m] / n[m]}' $(MUTATION_DIR)/scores.txt
	$(MAKE) --no-print-directory mutation-known

# issue 19's hand-made mutants (models, experiment steps, metrics): each must fail the tests (tools/known_mutants.py)
mutation-known: $(STAMP)
	$(PY) tools/known_mutants.py

# re-check a finished run's survivors against the tests as they are now (`make mutation-recheck RUN=attacks.ffa`)
mutation-recheck: mutation-tool
	@test -n "$(RUN)" || { echo "RUN=<module or module.file> of a finished run in $(MUTATION_DIR)"; exit 1; }
	$(PY) tools/recheck_mutants.py $(MUTATION_DIR)/$(RUN)

mutation_tests = $(or $(MUTATION_TESTS_$(1)),$(MUTATION_TESTS_$(firstword $(subst ., ,$(1)))))

mutation-%: mutation-tool
	@test -n "$(call mutation_tests,$*)" || { echo "no MUTATION_TESTS_$* in the Makefile"; exit 1; }
	rm -rf $(MUTATION_DIR)/$* && mkdir -p $(MUTATION_DIR)/$*/tests
	cp -r facelab pyproject.toml $(MUTATION_COPY_$(firstword $(subst ., ,$*))) $(MUTATION_DIR)/$*/
	cp tests/conftest.py $(wildcard $(patsubst %,tests/%,$(call mutation_tests,$*))) $(MUTATION_DIR)/$*/tests/
	cp -r tests/golden $(MUTATION_DIR)/$*/tests/  # reference outputs some tests compare with
	find $(MUTATION_DIR)/$* -name __pycache__ -prune -exec rm -rf {} +
	cd $(MUTATION_DIR)/$* && start=$$(date +%s) \
	  && FACELAB_HYPOTHESIS_PROFILE=mutation "$(abspath $(VENV))/bin/mutmut" run --max-children $(MUTATION_JOBS) "facelab.$*.*" > run.log 2>&1 \
	  && "$(abspath $(VENV))/bin/mutmut" results --all true 2>/dev/null | grep "^ *facelab\.$*\." > results.txt; \
	  rc=$$?; end=$$(date +%s); test $$rc -eq 0 || { tail -c 2000 run.log; exit 1; }; \
	  awk -v m=$* -v t=$$((end - start)) -F': ' '{n++; s[$$2]++} END {k = s["killed"] + s["timeout"]; \
	    printf "%-9s %4d/%-4d = %5.1f %%  survived %d, no tests %d, timeout %d, suspicious %d  (%d s)\n", \
	    m, k, n, n ? 100 * k / n : 0, s["survived"], s["no tests"], s["timeout"], s["suspicious"], t}' results.txt \
	  | tee -a ../scores.txt
