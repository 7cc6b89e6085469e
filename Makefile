# QTS Ops: backup-first retention. `make help` lists the targets.
#
# The first make of any target creates .venv from the pinned requirements; it is rebuilt
# only when a requirements file changes. Steps run through scripts/, which exit with the
# codes of the README's table; make reports any failing recipe as its own status 2 and
# prints the script's code ("make: *** [...] Error 75").

SHELL := /bin/bash
# Debian's python3.11 is built with PGO/LTO and runs our loops faster than most others.
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

CONFIG ?= retention.yaml
RUN ?=
POLICY ?=
TO ?=
DEST ?=
FILE ?=
PACE ?=
ALLOW_LARGE_DELETE ?=
PLAN_FILES ?=
CHAOS_SEED ?=
CHAOS_TRIALS ?= 20
POWERCUT_SEED ?=
POWERCUT_TRIALS ?= 800
# What an operator passes (make find FILE=..., CONFIG=...) reaches the scripts through the
# environment only, never through make's or the shell's parsing: each of USER_VARS is exported
# as QTS_OPS_<name>, taken with $(value) so make expands nothing in it ($HOME stays $HOME),
# and a recipe names it only as "$$QTS_OPS_<name>", which bash substitutes as one argument
# and never reads as code. Quotes, newlines, backticks and spaces arrive byte for byte.
USER_VARS := CONFIG RUN POLICY TO DEST FILE PACE ALLOW_LARGE_DELETE PLAN_FILES CHAOS_SEED CHAOS_TRIALS \
	POWERCUT_SEED POWERCUT_TRIALS
$(foreach v,$(USER_VARS),$(eval export QTS_OPS_$(v) := $$(value $(v))))
# make would also export a variable set on its command line under its own name, expanding
# it first (running any $(...) in it): these are passed as QTS_OPS_<name> only.
unexport $(USER_VARS)
# $(call opt,--option,NAME): --option="$QTS_OPS_NAME" when NAME is set, else nothing. One
# word with "=", so a value that starts with "-" is still the option's value.
opt = $(if $(value $(2)),$(1)="$$QTS_OPS_$(2)")
# IGNORE_WINDOW=1: run outside the config's maintenance window (an operator at the keyboard).
window = $(if $(filter 1,$(value IGNORE_WINDOW)),--ignore-window)

.DEFAULT_GOAL := help

$(STAMP): requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

.PHONY: help ## list the targets
help:
	@awk 'match($$0, /^\.PHONY: [a-z0-9-]+ ## /) { printf "  make %-16s %s\n", $$2, substr($$0, RLENGTH + 1) }' $(MAKEFILE_LIST)

.PHONY: venv ## create .venv from the pinned requirements (every target does this first)
venv: $(STAMP)

.PHONY: maintenance ## scan, backup, verify, clean on one run, then the scrub due; stop at the first failure (IGNORE_WINDOW=1, ALLOW_LARGE_DELETE=)
maintenance: $(STAMP)
	$(PY) scripts/maintenance.py $(call opt,--config,CONFIG) $(call opt,--pace,PACE) $(window) \
	    $(call opt,--allow-large-delete,ALLOW_LARGE_DELETE)

.PHONY: scan ## start a run: record the files whose retention expired (RUN= to name it)
scan: $(STAMP)
	$(PY) scripts/scan.py $(call opt,--config,CONFIG) $(call opt,--run,RUN) $(call opt,--pace,PACE) $(window) \
	    $(call opt,--allow-large-delete,ALLOW_LARGE_DELETE)

.PHONY: backup ## archive the newest run (or RUN=) to every destination
backup: $(STAMP)
	$(PY) scripts/backup.py $(call opt,--config,CONFIG) $(call opt,--run,RUN) $(call opt,--pace,PACE) $(window)

.PHONY: verify ## re-read the newest run's (or RUN=) archives and check every member
verify: $(STAMP)
	$(PY) scripts/verify.py $(call opt,--config,CONFIG) $(call opt,--run,RUN) $(call opt,--pace,PACE) $(window)

.PHONY: clean ## delete the newest run's (or RUN=) verified, unchanged files
clean: $(STAMP)
	$(PY) scripts/clean.py $(call opt,--config,CONFIG) $(call opt,--run,RUN) $(call opt,--pace,PACE) $(window)

.PHONY: plan ## show what the next run would back up and delete, and why, naming PLAN_FILES=20 files per policy; changes nothing
plan: $(STAMP)
	$(PY) scripts/plan.py $(call opt,--config,CONFIG) $(call opt,--files,PLAN_FILES)

.PHONY: status ## recent runs, each step's state, the lock holder, problems; DEST=name lists that destination's runs
status: $(STAMP)
	$(PY) scripts/status.py $(call opt,--config,CONFIG) $(call opt,--runs-on,DEST)

.PHONY: restore ## restore RUN= [POLICY=] or FILE=<original path or glob>, [TO=dir] [DEST=name]; never overwrites
restore: $(STAMP)
	$(PY) scripts/restore.py $(call opt,--config,CONFIG) $(call opt,--file,FILE) $(call opt,--run,RUN) \
	    $(call opt,--policy,POLICY) $(call opt,--to,TO) $(call opt,--dest,DEST) $(call opt,--pace,PACE) \
	    $(if $(filter 1,$(value FROM_OTHER_HOST)),--from-other-host)

.PHONY: scrub ## re-read the copies due (ALL=1: every one; DEST=name: one destination) and repair from another copy
scrub: $(STAMP)
	$(PY) scripts/scrub.py $(call opt,--config,CONFIG) $(call opt,--dest,DEST) $(call opt,--pace,PACE) $(window) \
	    $(if $(filter 1,$(value ALL)),--all)

.PHONY: catalogue-rebuild ## DEST=<name>: rebuild the catalogue from the runs that destination holds (a host that lost its state)
catalogue-rebuild: $(STAMP)
	$(PY) scripts/catalogue_rebuild.py $(call opt,--config,CONFIG) $(call opt,--dest,DEST)

.PHONY: find ## FILE=<path or glob>: where the copies of deleted files live
find: $(STAMP)
	$(PY) scripts/find.py $(call opt,--config,CONFIG) $(call opt,--file,FILE)

.PHONY: demo ## build a sandbox of aged trading data under demo/ and run the whole job on it
demo: $(STAMP)
	$(PY) scripts/demo.py

.PHONY: bench ## time the job against a shell pipeline, restic and the disk (BENCH_SCALE=small: 20x less data)
bench: $(STAMP)
	$(PY) scripts/bench.py

.PHONY: chaos ## fault campaign on the real scripts in throw-away sandboxes (CHAOS_SEED=, CHAOS_TRIALS=20)
chaos: $(STAMP)
	$(PY) scripts/chaos.py $(call opt,--seed,CHAOS_SEED) $(call opt,--trials,CHAOS_TRIALS)

.PHONY: powercut ## power cuts on a FUSE layer that forgets what was not fsynced (POWERCUT_SEED=, POWERCUT_TRIALS=800)
powercut: $(STAMP) fuse3
	$(PY) scripts/powercut.py $(call opt,--seed,POWERCUT_SEED) $(call opt,--trials,POWERCUT_TRIALS)

# libfuse3 and fusermount3 from Debian's fuse3, for the power-cut layer (make powercut and its
# slice in make test), installed once when missing, as make bench installs restic. Where it
# cannot be (no apt-get, not root), that slice is skipped and says why.
.PHONY: fuse3 ## install Debian's fuse3 when missing (the power-cut layer needs libfuse3 and fusermount3)
fuse3:
	@if ! command -v fusermount3 >/dev/null || ! /sbin/ldconfig -p | grep -q 'libfuse3\.so\.3'; then \
	  echo "fuse3 is missing: apt-get install -y fuse3"; \
	  { apt-get install -y -q fuse3 || { apt-get update -q && apt-get install -y -q fuse3; }; } >/dev/null 2>&1 \
	    || echo "fuse3 could not be installed: the power-cut tests will be skipped"; \
	fi

.PHONY: config-reference ## regenerate docs/config-reference.md and docs/retention.schema.json from the config's field table
config-reference: $(STAMP)
	$(PY) scripts/config_reference.py

.PHONY: lint ## ruff: the style gate (lint rules and formatting, pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: test ## the lint gate, then the whole test suite (both cores: most tests are real processes waiting on real I/O)
test: lint fuse3
	$(PY) -m pytest -q -n 2 tests
