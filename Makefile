# Pressroom developer entry points. Every target sets up what it needs first (scripts/setup.sh
# is idempotent and quick when nothing changed).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
SETUP       := bash scripts/setup.sh
FLASK       := $(VENV)/bin/flask --app wsgi
PORT        ?= 8000
PYTEST_ARGS ?=
FLOWER      ?=
# The Procfile's flower line runs only with FLOWER=1 (any value but empty or 0).
PROCESSES   := web worker webhooks publisher beat $(if $(filter-out 0,$(FLOWER)),flower)

export FLASK_APP := wsgi
export PORT

.PHONY: help run test bench migrate messages clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## set up, migrate, run web + workers + beat (honcho) on PORT; FLOWER=1 adds Flower
	$(SETUP) venv redis
	$(FLASK) db upgrade
	$(FLASK) users bootstrap
	exec $(VENV)/bin/honcho start -f Procfile $(PROCESSES)

test: ## lint (ruff), then the test suite (TEST_DATABASE_URL for PostgreSQL; PYTEST_ARGS)
	$(SETUP) venv-dev redis-bin chromium
	$(VENV)/bin/ruff check .
	@# The fast unit suite first: a broken rule fails in seconds, before any worker starts.
	$(VENV)/bin/python -m pytest -q tests/unit
	$(VENV)/bin/python -m pytest --ignore=tests/unit $(PYTEST_ARGS)

bench: ## run the benchmarks in bench/
	$(SETUP) venv-dev redis-bin wrk
	$(VENV)/bin/python bench/run.py

migrate: ## apply database migrations (flask db upgrade)
	$(SETUP) venv
	$(FLASK) db upgrade

messages: ## extract the interface's strings and merge them into every language's catalog
	$(SETUP) venv
	@# --ignore-dirs: by default Babel skips folders that start with _ (templates/_partials).
	$(VENV)/bin/pybabel extract -F webapp/translations/babel.cfg -k _l -k lazy_gettext \
		--ignore-dirs '.*' \
		-k lazy_ngettext:1,2 --no-location --sort-output -o webapp/translations/messages.pot .
	$(VENV)/bin/pybabel update -i webapp/translations/messages.pot -d webapp/translations \
		--no-fuzzy-matching --ignore-obsolete
	$(VENV)/bin/pybabel compile -d webapp/translations

clean: ## remove caches and test artefacts (keeps .venv and instance/)
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .hypothesis test-artifacts .coverage htmlcov
