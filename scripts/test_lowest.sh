#!/bin/sh
# The non-lab tests against the lowest dependency versions pyproject.toml allows, all at once, each pinned to its
# `>=` bound (their own dependencies at the newest they allow), in a throwaway venv: shows the bounds are true.
# Extra arguments go to pytest (e.g. a test file). Snapshot tests are left out: their pictures follow one Textual.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${FLEET_LOWEST_VENV:-/tmp/fleet-lowest-venv}
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
pins=$("$PY" -c 'import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(re.sub(r">=", "==", d) for d in deps))')
"$VENV/bin/pip" install -q --disable-pip-version-check $pins pytest pytest-asyncio pytest-timeout hypothesis
# The package itself without its dependencies, so the pins above stay; the `fleet` command some tests run.
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps .
"$VENV/bin/pip" list --disable-pip-version-check 2>/dev/null | grep -i -E "^(asyncssh|rich|textual|pyyaml|pydantic|keyring|typer|acme) "
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -m "not lab and not slow" --ignore tests/test_tui_snapshots.py "$@"
