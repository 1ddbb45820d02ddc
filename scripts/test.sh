#!/bin/sh
# The whole test suite: lint, types, then every test (the lab tests build and remove their own lab).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
.venv/bin/ruff check fleet tests bench
.venv/bin/mypy fleet
.venv/bin/pytest "$@"
