#!/bin/sh
# The whole test suite: lint, types, then every test (the lab tests build and remove their own lab).
# Tests run in parallel workers (pytest-xdist), a test module's tests on one worker, each worker with a lab of its own
# (tests/conftest.py): lab tests spend most of their time waiting on nodes (SSH, containerd, etcd, HAProxy), so two
# cores serve four workers (five measured no faster); the longest modules are handed out first (LONGEST_FIRST).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
.venv/bin/ruff check fleet tests bench
.venv/bin/mypy fleet
# The tests start the `fleet` CLI hundreds of times: let Python keep its compiled modules, as an install does (an
# environment that forbids writing bytecode made every start compile the whole package again).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/pytest -n "${FLEET_TEST_WORKERS:-4}" --dist loadfile "$@"
