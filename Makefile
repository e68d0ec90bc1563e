# Two commands on a fresh machine with only Python 3.11+ and make:
#   make demo   — create .venv, install, run `flexmarket demo`
#   make test   — create .venv, install with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test check lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/pip-upgrade.log 2>&1 || (cat $(VENV)/pip-upgrade.log; exit 1)

# pip's and setuptools' chatter (e.g. the editable-install notice) goes to a log shown only on failure.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "installing flexmarket and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --quiet -e '.[test]' > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/flexmarket demo

# The pure cores: no web framework, database, task queue or HTTP client (import-linter holds that), and
# typed strictly. ARCHITECTURE.md lists them; keep this list, pyproject.toml's contract and it in step.
PURE_CORES := grid bpp/scheduler bpp/plan.py bpp/lp.py bpp/storage.py bpp/battery.py bpp/domain.py bpp/signal_providers.py \
	bpp/agent_config.py bpp/provider_file.py bpp/agent.py bpp/storage_agent.py bpp/planner.py bpp/offers.py bpp/decisions.py bpp/baselines.py bpp/workload.py bpp/forecast.py bpp/schedule.py \
	ledger/chain.py ledger/merkle.py ledger/canonical.py ledger/settlement.py ledger/baseline.py ledger/allocation.py \
	ledger/transfers.py ledger/cft.py ledger/accounts.py ledger/proofs.py ledger/statement_csv.py ledger/errors.py \
	ledger/agreements.py \
	beckn/signing.py bap/differences.py bap/permissions.py bap/openadr_events.py bap/policy.py \
	bap/procurement_choice.py bap/procurement_baselines.py schemas/outcome.py

test: install check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Static checks (also the first half of `make test`): lint, format, types, architecture contracts.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict --follow-imports=silent $(PURE_CORES)
	$(BIN)/lint-imports

lint: check

clean:
	rm -rf $(VENV) .flexmarket .pytest_cache
