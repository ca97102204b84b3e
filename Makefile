# The verbs a person (and CI) uses. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -o errexit -o nounset -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= 1
export PY_COLORS ?= 1

.PHONY: help setup engine images release lab lab-up lab-down lab-purge provision test lint unit molecule smoke bench clean

help: ## List the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Install what is missing: Debian packages, Docker engine, Python tools
	@lab/bin/host-packages
	@lab/bin/engine

$(VENV)/.installed: requirements.txt
	@lab/bin/host-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

images: setup ## Build the offline base image (the lab builds the others)
	@lab/bin/base-image

lab-up: images ## Bring the local lab up (idempotent)
	ansible-playbook playbooks/lab.yml

lab-down: setup ## Remove the lab's containers, network and volumes (keeps images and secrets)
	ansible-playbook playbooks/lab.yml -e lab_state=absent

lab-purge: setup ## lab-down, and forget generated keys and secrets
	ansible-playbook playbooks/lab.yml -e lab_state=absent -e lab_purge=true

provision: ## Provision the lab servers (site.yml)
	ansible-playbook site.yml

release: ## Build the site image VERSION=x, publish it to the lab registry, print its REF
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x" >&2; exit 2; }
	@lab/bin/release "$(VERSION)"

lab: lab-up provision ## The main job: set up, bring the lab up, provision dev.site and site.com

lint: setup ## yamllint, ansible-lint (production profile), ruff
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .

unit: setup ## Unit tests (modules, helpers, the site)
	pytest

molecule: images lab-up ## Every role's Molecule scenario
	@for s in $$(ls molecule); do echo "== molecule: $$s"; molecule test -s $$s || exit 1; done

smoke: lab-up ## Lab smoke test: provision twice (idempotent), SQL through the container
	pytest tests/e2e -m lab -p no:cacheprovider

test: lint unit molecule smoke ## Everything CI runs

bench: lab-up ## Benchmarks (print figures)
	python benchmarks/provision.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
