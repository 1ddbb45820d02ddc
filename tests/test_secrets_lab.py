"""Secrets end to end on the lab, with two controllers of separate homes: one whose identity is in its keyring,
one headless (an identity file). A secret set on the first is sealed in etcd on the record node, delivered to
the container's environment, used by the second's `reconcile` without a roll once it is added, and no longer
opened by it once it is removed; the value is found nowhere else: not in etcd's data, the playbook, the history,
labels, the CLI's output, logs or files left on the node."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.node import etcd as E
from fleet.node.paths import DEFAULT

pytestmark = pytest.mark.lab
FLEET = [sys.executable, "-m", "fleet.cli.main"]
TESTS = str(pathlib.Path(__file__).parent)


def controller(lab, home: pathlib.Path, **extra: str) -> dict[str, str]:
    """The environment of one controller: its own HOME, state directory and keyring file."""
    home.mkdir()
    return {**os.environ, "HOME": str(home), "FLEET_INVENTORY": lab.inventory_path,
            "FLEET_STATE_DIR": str(home / "state"), "FLEET_TEST_KEYRING": str(home / "keyring.json"),
            "PYTHON_KEYRING_BACKEND": "keyring_file.FileKeyring",
            "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200", **extra}


@pytest.fixture()
def env(lab, lab_etcd, tmp_path):
    lab_etcd.clear()
    return controller(lab, tmp_path / "alice")


def fleet(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_secret_reaches_the_container_and_another_controller_and_nothing_else(lab, lab_etcd, env, tmp_path):
    value = f"tok-{L.random_suffix(12)}"
    bob = controller(lab, tmp_path / "bob", FLEET_IDENTITY_FILE=str(tmp_path / "bob" / "identity"))
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

    def ps() -> dict[str, str]:
        out = fleet(env, "ps", "--json")
        return {c["id"]: c["node"] for c in json.loads(out.stdout)["containers"] if c.get("service") == "sc-app"}

    try:
        assert fleet(env, "controller", "init").returncode == 0
        missing = fleet(env, "apply", str(pb))
        assert missing.returncode == 1 and "secret 'sc-token' for env API_TOKEN is not in the keyring" in missing.stdout
        assert ps() == {}, "nothing was started"
        stored = fleet(env, "secret", "set", "sc-token", stdin=value + "\n")
        assert stored.returncode == 0 and "readable by " in stored.stdout, stored.stdout + stored.stderr
        applied = fleet(env, "apply", str(pb))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        applied_json = fleet(env, "apply", str(pb), "--json")
        (cid, node), = ps().items()
        seen = fleet(env, "exec", cid, "--", "sh", "-c", 'echo "$API_TOKEN"')
        assert seen.stdout.strip() == value, "the container has the secret in its environment"
        assert fleet(env, "exec", cid, "--", "sh", "-c", 'echo "$PLAIN"').stdout.strip() == "visible"

        # A second controller, headless: its identity in a 0600 file. Until it is added it cannot read.
        init = fleet(bob, "controller", "init")
        assert init.returncode == 0 and oct(os.stat(bob["FLEET_IDENTITY_FILE"]).st_mode & 0o777) == "0o600"
        added = fleet(env, "controller", "add", "bob-ci", init.stdout.strip())
        assert added.returncode == 0, added.stdout + added.stderr
        check = fleet(bob, "secret", "check", str(pb), "--json")
        assert check.returncode == 0 and json.loads(check.stdout)["controller"] == ["bob-ci"]
        assert json.loads(check.stdout)["secrets"] == [
            {"service": "sc-app", "secret": "sc-token", "present": True, "readable": True}]
        # Bob's reconcile computes the same digest (the shared digest key): nothing rolls.
        theirs = fleet(bob, "reconcile", str(pb))
        assert theirs.returncode == 0, theirs.stdout + theirs.stderr
        assert ps() == {cid: node}, "the second controller's reconcile replaced nothing"

        # Removed, then the value rotated: bob cannot open it, so his reconcile leaves the service as it is.
        assert fleet(env, "controller", "rm", "bob-ci").returncode == 0
        # Root on the record node registers bob again, straight into etcd: refused by name, nothing sealed to it.
        forged = json.dumps({"name": "bob-ci", "key": init.stdout.strip(), "added_by": "alice", "added_at": 0})
        lab.lab.exec_in(lab_etcd.nodes[0].name, E.etcdctl("put", "/fleet/controllers/bob-ci", forged))
        rotated = value + "-2"
        rotation = fleet(env, "secret", "set", "sc-token", stdin=rotated)
        assert rotation.returncode == 0 and "refused controller bob-ci" in rotation.stderr, rotation.stderr
        shown = fleet(env, "controller", "ls", "--json")
        assert shown.returncode == 1, shown.stdout + shown.stderr
        assert {c["name"]: c["status"] for c in json.loads(shown.stdout)["controllers"]}["bob-ci"] == "forged"
        refused = fleet(bob, "reconcile", str(pb))
        assert "not reconciled" in refused.stdout + refused.stderr and "sc-token" in refused.stdout + refused.stderr
        assert ps() == {cid: node}, "nothing acted on a secret it could not open"
        listed = fleet(env, "secret", "ls", "--json")
        (row,) = json.loads(listed.stdout)["secrets"]
        assert row["name"] == "sc-token" and len(row["readers"]) == 1 and "bob-ci" not in row["readers"]

        stored_kvs = E.parse_get(lab.lab.exec_in(lab_etcd.nodes[0].name, E.get_argv("/fleet/", prefix=True)).stdout).kvs
        assert "/fleet/secrets/values/sc-token" in {kv.key for kv in stored_kvs}
        assert not any(value in kv.value or rotated in kv.value for kv in stored_kvs), "only ciphertext in etcd"
        logs = fleet(env, "logs", "sc-app", "--tail", "50")
        history = fleet(env, "history", "sc-app", "--json")
        outputs = [missing.stdout, missing.stderr, stored.stdout, check.stdout, applied.stdout, applied.stderr,
                   applied_json.stdout, theirs.stdout, theirs.stderr, refused.stdout, refused.stderr, listed.stdout,
                   logs.stdout, history.stdout, pb.read_text()]
        for text in outputs:
            assert value not in text and rotated not in text
        for who in (env, bob):
            db = pathlib.Path(who["FLEET_STATE_DIR"]) / "history.db"
            assert not db.exists() or value.encode() not in db.read_bytes()
        info = lab.lab.exec_in(node, ["ctr", "-n", "fleet", "containers", "info", cid]).stdout
        assert value not in json.dumps(json.loads(info)["Labels"])
        # No env file left behind (where secrets go, /run/fleet/secrets on tmpfs, nor the old place on disk), and
        # nothing under fleet's directory on the node's disk (logs, hosts file, volumes) holds the value.
        script = 'find "$2" "$3" -mindepth 1 2>/dev/null; grep -rls -- "$1" "$4" || true'
        leftovers = lab.lab.exec_in(node, ["sh", "-c", script, "sh", value, DEFAULT.secrets_dir,
                                           f"{DEFAULT.base}/secrets", DEFAULT.base]).stdout
        assert leftovers.strip() == "", "no env file left behind, no file under fleet's directory holds the secret"
    finally:
        fleet(env, "destroy", "sc-app", "--grace", "1")
