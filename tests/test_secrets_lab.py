"""Secrets end to end on the lab: stored in the keyring, delivered to the container's environment, and found
nowhere else: not in the playbook, the history, labels, the CLI's output, logs or files left on the node."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.node.paths import DEFAULT

pytestmark = pytest.mark.lab
FLEET = [sys.executable, "-m", "fleet.cli.main"]
TESTS = str(pathlib.Path(__file__).parent)


@pytest.fixture()
def env(lab, tmp_path):
    return {**os.environ, "FLEET_INVENTORY": lab.inventory_path, "FLEET_STATE_DIR": str(tmp_path / "state"),
            "FLEET_TEST_KEYRING": str(tmp_path / "keyring.json"), "PYTHON_KEYRING_BACKEND": "keyring_file.FileKeyring",
            "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}


def fleet(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_secret_reaches_the_container_and_nothing_else(lab, env, tmp_path):
    value = f"tok-{L.random_suffix(12)}"
    archive = build_demo(f"sc{L.random_suffix(6)}", str(tmp_path / "demo.tar"))
    assert fleet(env, "image", "push", archive.path).returncode == 0
    pb = tmp_path / "pb.yaml"
    pb.write_text(f"""services:
  sc-app:
    image: {archive.name}
    replicas: 1
    resources: {{cpu: 0.05, memory: 32MiB}}
    env:
      API_TOKEN: {{secret: sc-token}}
      PLAIN: visible
    health: {{http: /healthz, interval: 500ms}}
    update: {{min_ready: 0s}}
""")
    outputs: list[str] = []
    try:
        missing = fleet(env, "apply", str(pb))
        assert missing.returncode == 1 and "secret 'sc-token' for env API_TOKEN is not in the keyring" in missing.stdout
        assert fleet(env, "ps", "--json").stdout.count("sc-app") == 0, "nothing was started"
        stored = fleet(env, "secret", "set", "sc-token", stdin=value + "\n")
        assert stored.returncode == 0, stored.stderr
        check = fleet(env, "secret", "check", str(pb), "--json")
        assert json.loads(check.stdout)["secrets"] == [{"service": "sc-app", "secret": "sc-token", "present": True}]
        applied = fleet(env, "apply", str(pb))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        applied_json = fleet(env, "apply", str(pb), "--json")
        ps = fleet(env, "ps", "--json")
        (row,) = [c for c in json.loads(ps.stdout)["containers"] if c.get("service") == "sc-app"]
        seen = fleet(env, "exec", row["id"], "--", "sh", "-c", 'echo "$API_TOKEN"')
        assert seen.stdout.strip() == value, "the container has the secret in its environment"
        assert fleet(env, "exec", row["id"], "--", "sh", "-c", 'echo "$PLAIN"').stdout.strip() == "visible"
        logs = fleet(env, "logs", "sc-app", "--tail", "50")
        history = fleet(env, "history", "sc-app", "--json")
        outputs = [missing.stdout, missing.stderr, stored.stdout, check.stdout, applied.stdout, applied.stderr,
                   applied_json.stdout, ps.stdout, logs.stdout, history.stdout, pb.read_text()]
        for text in outputs:
            assert value not in text
        db = pathlib.Path(env["FLEET_STATE_DIR"]) / "history.db"
        assert value.encode() not in db.read_bytes()
        node = row["node"]
        info = lab.lab.exec_in(node, ["ctr", "-n", "fleet", "containers", "info", row["id"]]).stdout
        assert value not in json.dumps(json.loads(info)["Labels"])
        # No env file left behind (where secrets go, /run/fleet/secrets on tmpfs, nor the old place on disk), and
        # nothing under fleet's directory on the node's disk (logs, hosts file, volumes) holds the value.
        script = 'find "$2" "$3" -mindepth 1 2>/dev/null; grep -rls -- "$1" "$4" || true'
        leftovers = lab.lab.exec_in(node, ["sh", "-c", script, "sh", value, DEFAULT.secrets_dir,
                                           f"{DEFAULT.base}/secrets", DEFAULT.base]).stdout
        assert leftovers.strip() == "", "no env file left behind, no file under fleet's directory holds the secret"
    finally:
        fleet(env, "destroy", "sc-app", "--grace", "1")
