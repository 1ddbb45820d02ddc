"""Configs and secret files on the real lab (issue 11), under load through HAProxy on lb1.

One playbook, two services: `cf-app` (2 replicas behind HAProxy) mounts a config file read from beside the
playbook and a keyring secret as a file; `cf-peer` has neither. The config reaches the container with its mode,
read-only; the peer cannot read it. The secret is readable at its path and nowhere else: no process's argv or
environment on the machine (the lab's nodes share its PID namespace), no file under the node's /var/lib/fleet or
/var/lib/containerd, not in `ctr containers info`, labels, logs, the history or any `fleet` output (nor its plain
sha256). Editing the config (`apply`) and rotating the secret (`apply`, then again with `reconcile`) each roll the
service (`fleet plan` names the change) with not one request failed, and the files of the replaced containers
leave the node.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from loadgen import Load

from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.node import etcd as E
from fleet.node.paths import DEFAULT
from fleet.store.nodes import record_nodes

pytestmark = pytest.mark.lab
FLEET = [sys.executable, "-m", "fleet.cli.main"]
TESTS = str(pathlib.Path(__file__).parent)
PORT = 19581
CONFIG = "/etc/app/app.conf"
SECRET = "/run/secrets/cf-token"


@pytest.fixture()
def env(lab, lab_etcd, tmp_path):
    lab_etcd.clear()  # this test's controller (its own keyring) is the first of the fleet's secrets
    return {**os.environ, "FLEET_INVENTORY": lab.inventory_path, "FLEET_STATE_DIR": str(tmp_path / "state"),
            "FLEET_TEST_KEYRING": str(tmp_path / "keyring.json"), "PYTHON_KEYRING_BACKEND": "keyring_file.FileKeyring",
            "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200",
            "FLEET_LEASE_TTL": "5"}


class Cli:
    """Runs `fleet` and keeps every output, to grep them for the secret at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.outputs: list[str] = []

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*FLEET, *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=180)
        self.outputs += [out.stdout, out.stderr]
        if ok:
            assert out.returncode == 0, f"fleet {' '.join(args)}: {out.stdout}{out.stderr}"
        return out

    def replicas(self) -> dict[str, list[dict[str, Any]]]:
        """The running containers of cf-app and cf-peer, from one `fleet ps --json`."""
        rows = json.loads(self("ps", "--json").stdout)["containers"]
        return {s: [r for r in rows if r.get("service") == s] for s in ("cf-app", "cf-peer")}

    def inside(self, container: str, script: str) -> str:
        """stdout of `script` in the container; not kept with the outputs (it reads the secret on purpose)."""
        out = subprocess.run([*FLEET, "exec", container, "--", "sh", "-c", script], capture_output=True, text=True,
                             env=self.env, timeout=60)
        self.outputs.append(out.stderr)
        assert out.stdout or out.returncode == 0, f"fleet exec {container}: {out.returncode} {out.stderr}"
        return out.stdout


def playbook(path: pathlib.Path, image: str) -> None:
    health = "{http: /healthz, interval: 500ms, timeout: 1s, failure_threshold: 2}"
    path.write_text(f"""services:
  cf-app:
    image: {image}
    replicas: 2
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {health}
    lb: {{port: {PORT}}}
    stop_grace_period: 1s
    update: {{max_surge: 2, max_unavailable: 0, ready_deadline: 20s, min_ready: 500ms}}
    configs:
      - {{source: conf/app.conf, target: {CONFIG}, mode: '0440'}}
    secrets:
      - {{secret: cf-token, mode: '0400'}}
  cf-peer:
    image: {image}
    replicas: 1
    resources: {{cpu: 0.05, memory: 32MiB}}
    update: {{min_ready: 0s}}
""")


def apply_under_load(lab, fleet: Cli, pb: pathlib.Path, command: str = "apply") -> None:
    with Load(lab.inventory.node("lb1").address, PORT, clients=4, max_seconds=90) as load:
        fleet(command, str(pb))
    assert load.result.failed == 0, load.result.failures[:5]
    assert load.result.ok > 0


def node_leaks(lab, node: str, values: list[str]) -> str:
    """Files under the node's disk paths holding any of `values` (passed on stdin, so they are in no argv)."""
    script = 'grep -rlF -f /dev/stdin /var/lib/fleet /var/lib/containerd 2>/dev/null || true'
    return lab.lab.exec_in(node, ["sh", "-c", script], input="".join(v + "\n" for v in values)).stdout.strip()


def process_leaks(values: list[str]) -> list[str]:
    """Processes on the machine (every lab node's too) whose argv or environment holds any of `values`."""
    found = []
    needles = [v.encode() for v in values]
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (proc / part).read_bytes()
            except OSError:
                continue
            found += [f"{proc.name}/{part}" for n in needles if n in data]
    return found


def files_on(lab, node: str, directory: str) -> list[str]:
    out = lab.lab.exec_in(node, ["sh", "-c", 'cd "$1" 2>/dev/null && find . -mindepth 1 | sort', "sh", directory])
    return out.stdout.split()


def test_configs_and_secret_files_land_roll_under_load_and_leak_nowhere(lab, env, tmp_path):
    fleet = Cli(env)
    first, second, third = (f"tok-{L.random_suffix(12)}" for _ in range(3))
    archive = build_demo(f"cf{L.random_suffix(6)}", str(tmp_path / "demo.tar"))
    fleet("image", "push", archive.path)
    pb = tmp_path / "pb" / "app.yaml"
    (tmp_path / "pb" / "conf").mkdir(parents=True)
    (tmp_path / "pb" / "conf" / "app.conf").write_text("greeting=one\n")
    playbook(pb, archive.name)
    try:
        fleet("secret", "set", "cf-token", stdin=first + "\n")
        fleet("apply", str(pb))
        running = fleet.replicas()
        apps = running["cf-app"]
        assert len(apps) == 2
        for r in apps:
            seen = fleet.inside(r["id"], f"""
                echo "config $(stat -c %a {CONFIG}) $(cat {CONFIG})"
                echo "secret $(stat -c %a {SECRET}) $(cat {SECRET})"
                grep -E ' ({CONFIG}|{SECRET}) ' /proc/mounts | sed 's/^/mount /'
                if (echo x >>{CONFIG}) 2>/dev/null || (echo x >>{SECRET}) 2>/dev/null; then echo writable; fi""")
            lines = [line.split() for line in seen.splitlines()]
            assert ["config", "440", "greeting=one"] in lines and ["secret", "400", first] in lines, seen
            mounts = {m[2]: m for m in lines if m[0] == "mount"}
            assert mounts[SECRET][3] == "tmpfs", "the secret file is on the node's tmpfs"
            assert mounts[CONFIG][4].split(",")[0] == "ro" and mounts[SECRET][4].split(",")[0] == "ro", seen
            assert ["writable"] not in lines
        node = apps[0]["node"]
        initial_sets = {p for p in files_on(lab, node, DEFAULT.configs_dir) if p.count("/") == 2}
        assert len(initial_sets) == 1 and next(iter(initial_sets)).startswith("./cf-app/"), initial_sets
        modes = lab.lab.exec_in(node, ["sh", "-c", 'stat -c "%a %n" "$1" "$1"/cf-app "$1"/cf-app/* "$1"/cf-app/*/0',
                                       "sh", DEFAULT.configs_dir]).stdout.split("\n")
        assert [m.split()[0] for m in modes if m][:3] == ["700", "700", "700"], modes
        assert any(m.startswith("440 ") for m in modes), modes
        (peer,) = running["cf-peer"]
        denied = fleet.inside(peer["id"], f"cat {CONFIG} || echo no-config; ls {DEFAULT.configs_dir} || echo no-dir; "
                                          f"cat {SECRET} || echo no-secret")
        assert "greeting" not in denied and first not in denied
        assert {"no-config", "no-dir", "no-secret"} <= set(denied.split()), denied

        # Editing the config: plan names it, apply rolls cf-app (only) under load.
        (tmp_path / "pb" / "conf" / "app.conf").write_text("greeting=two\n")
        planned = fleet("plan", str(pb), ok=False)
        assert planned.returncode == 3 and f"config {CONFIG} changed" in planned.stdout, planned.stdout
        apply_under_load(lab, fleet, pb)
        running = fleet.replicas()
        edited = running["cf-app"]
        assert not {r["id"] for r in edited} & {r["id"] for r in apps}, "every cf-app replica was replaced"
        assert running["cf-peer"] == [peer], "the other service was left alone"
        # Every cf-app replica is new (above); one of them shows what they all run.
        assert fleet.inside(edited[0]["id"], f"cat {CONFIG}; cat {SECRET}").split() == ["greeting=two", first]

        # Rotating the secret: plan says so, apply rolls cf-app under load, new replicas read the new value.
        fleet("secret", "set", "cf-token", stdin=second + "\n")
        planned = fleet("plan", str(pb), ok=False)
        assert planned.returncode == 3 and "secret cf-token changed" in planned.stdout, planned.stdout
        apply_under_load(lab, fleet, pb)
        rotated = fleet.replicas()["cf-app"]
        assert not {r["id"] for r in rotated} & {r["id"] for r in edited}
        assert fleet.inside(rotated[0]["id"], f"cat {SECRET}").strip() == second
        assert fleet("plan", str(pb), ok=False).returncode == 0, "nothing left to do"

        # reconcile follows the accepted revision until the intent changes: a rotated secret changes it.
        fleet("secret", "set", "cf-token", stdin=third + "\n")
        apply_under_load(lab, fleet, pb, "reconcile")
        again = fleet.replicas()["cf-app"]
        assert not {r["id"] for r in again} & {r["id"] for r in rotated}, "reconcile rolled the rotated secret"
        assert fleet.inside(again[0]["id"], f"cat {SECRET}").strip() == third
        rotated = again

        # The replaced containers' secret files left their nodes (with them); the first config set, which no
        # container used any more when the rotation's run prepared the node, was swept then.
        for n in {r["node"] for r in [*apps, *edited, *rotated]}:
            here = {r["id"] for r in rotated if r["node"] == n}
            assert {p.split("/")[1] for p in files_on(lab, n, DEFAULT.secret_mounts_dir)} == here
        assert not initial_sets & set(files_on(lab, node, DEFAULT.configs_dir))

        # Nowhere else: argv and environments, the node's disk, the container's spec and labels, logs, history,
        # every CLI output (nor the value's plain sha256).
        fleet("logs", "cf-app", "--tail", "50")
        history = fleet("history", "cf-app", "--json").stdout
        infos = "".join(lab.lab.exec_in(r["node"], ["ctr", "-n", "fleet", "containers", "info", r["id"]]).stdout
                        for r in rotated)
        assert '"ro"' in infos or "rbind" in infos, "the info was read"
        # The fleet's records as etcd keeps them on the record node, every key and value (plain, not JSON-encoded).
        keeper = record_nodes(lab.inventory)[0].name
        db = lab.lab.exec_in(keeper, ["etcdctl", f"--endpoints=127.0.0.1:{E.CLIENT_PORT}", "get", "--prefix",
                                      "/fleet/"]).stdout.encode()
        assert b"/fleet/services/cf-app/" in db, "the service's records were read"
        values = [first, second, third]
        assert process_leaks(values) == []
        for n in lab.workers():
            assert node_leaks(lab, n, values) == "", n
        for value in values:
            digest = hashlib.sha256(value.encode()).hexdigest()
            for text in [*fleet.outputs, infos, history, pb.read_text()]:
                assert value not in text and digest not in text
            assert value.encode() not in db and digest.encode() not in db

        # `fleet stop` and `fleet rm` (by hand, beside the engine) take the container's secret files with it.
        # No load here: the replicas are gone for good until the next apply, which this test does not run.
        for verb, r in zip(("stop", "rm"), rotated, strict=False):
            assert r["id"] in {p.split("/")[1] for p in files_on(lab, r["node"], DEFAULT.secret_mounts_dir)}
            fleet(verb, f"{r['node']}/{r['id']}")
            assert r["id"] not in {p.split("/")[1] for p in files_on(lab, r["node"], DEFAULT.secret_mounts_dir)}
    finally:
        fleet("destroy", "cf-app", "--grace", "1", ok=False)
        fleet("destroy", "cf-peer", "--grace", "1", ok=False)
