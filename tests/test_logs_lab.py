"""Disk hygiene and confinement on the real lab: a chatty container's log rotated at its configured size by its
own logger while `fleet logs -f` follows it and no fleet run happens (the files stay bounded, the follower sees
every line in order across the rotations); a change of security settings (read-only root, capabilities,
no-new-privileges) rolled under load through HAProxy with no failed request, the new replicas confined as the
playbook says.

Services are named `lr-*`, lb ports 18860-18869 (the lab is shared with other test files); each test destroys
what it created in `finally`.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import IN_REPLICA, demo_env, start_fleet, wait_until
from loadgen import Load
from test_netns_lab import fleet, on_node, playbook

from fleet.node.paths import DEFAULT as NODE_PATHS

pytestmark = pytest.mark.lab

PAD = "x" * 1000
# 20 numbered lines of 1 KiB (each its own write) every 0.1 s: 64 KiB in about a third of a second.
CHATTY = ["awk", f'BEGIN {{ for (i = 0; ; i++) {{ print "n " i " {PAD}"; fflush(); '
          'if (i % 20 == 19) system("sleep 0.1") } }']
# busybox httpd on port 80 serving a page written to /tmp (a tmpfs: the root may be read-only); binding port 80
# needs CAP_NET_BIND_SERVICE, which `cap_drop: [ALL]` must give back.
WEB_80 = ["sh", "-c", 'echo "version=$(cat /etc/demo-version) replica=$FLEET_REPLICA" >/tmp/index.html '
          "&& exec httpd -f -p 80 -h /tmp"]
# CapEff of Docker's default set (containerd's default spec) and of NET_BIND_SERVICE (bit 10) alone.
CAPS_DEFAULT, CAPS_BIND_ONLY = "00000000a80425fb", "0000000000000400"


@pytest.fixture(scope="module")
def env(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return demo_env(lab.inventory_path, tmp_path_factory.mktemp("logslab"), versions=("v1",))


def replicas(env: dict[str, Any], name: str) -> list[dict[str, Any]]:
    doc = json.loads(fleet(env, "ps", "--json").stdout)
    return sorted((c for c in doc["containers"] if c.get("service") == name), key=lambda c: c["replica"])


def log_files(lab: Any, node: str, log: str) -> dict[str, tuple[int, int]]:
    """The container's log files on its node: name → (size, inode)."""
    out = on_node(lab, node, f"stat -c '%n %s %i' {log} {log}.[0-9]* 2>/dev/null")
    return {Path(n).name: (int(s), int(i)) for n, s, i in (line.split() for line in out.splitlines())}


def test_log_rotated_at_its_size_between_runs_while_fleet_logs_follows(lab, env):
    name, size = "lr-chatty", 64 * 1024
    service = {"image": "fleet.local/demo:v1", "command": CHATTY, "resources": {"cpu": 0.2, "memory": "32MiB"},
               "logs": {"max_size": "64KiB", "max_files": 2}, "stop_grace_period": "1s"}
    follow_out = Path(env["dir"]) / "follow.txt"
    try:
        out = fleet(env, "apply", playbook(env, {name: service}))
        assert out.returncode == 0, out.stdout + out.stderr
        (c,) = replicas(env, name)
        log = f"{NODE_PATHS.logs_dir}/fleet/{c['id']}.log"
        base = Path(log).name
        # From here on no fleet run happens (no apply, reconcile or watch): only the container's logger rotates.
        with follow_out.open("w") as sink:
            follower = start_fleet("logs", name, "-f", "--tail", "-1", env=env["env"], stdout=sink,
                                   stderr=subprocess.DEVNULL)
        inodes: list[int] = []  # the live file's, each time it changed (a freed inode number comes back)
        # One replica: its lines as written, no prefix. The first may be the end of a line split by a rotation.
        whole = re.compile(rf"n (\d+) {PAD}")

        def numbers() -> list[int]:
            return [int(m.group(1)) for ln in follow_out.read_text().splitlines()[1:] if (m := whole.fullmatch(ln))]

        try:
            def bounded_and_followed_across_two_rotations() -> bool | None:
                files = log_files(lab, c["node"], log)
                assert set(files) <= {base, f"{base}.1"}, files  # max_files 2: the live file and one rotated
                assert all(s <= size for s, _ in files.values()), files
                if base in files and inodes[-1:] != [files[base][1]]:
                    inodes.append(files[base][1])
                # Three live files in turn: two rotations at least; lines that span more than two files' bytes
                # were read across two rotations at least (each file holds at most `size`).
                return (len(inodes) >= 3 and len(numbers()) * (len(PAD) + 10) > 2 * size) or None

            wait_until(bounded_and_followed_across_two_rotations, 60, 0.1, "two rotations, followed")
        finally:
            follower.terminate()
            follower.wait(timeout=10)
        lines = follow_out.read_text().splitlines()
        seen = numbers()
        # Every line in order, none lost at a rotation, none twice; a line split between two files is whole.
        assert seen == list(range(seen[0], seen[0] + len(seen))), (
            [b for a, b in itertools.pairwise(seen) if b != a + 1][:5])
        assert len(seen) == len(lines) - 1, [ln for ln in lines[1:] if not whole.fullmatch(ln)][:3]
    finally:
        fleet(env, "destroy", name, "--grace", "1")


def web(security: dict[str, Any], lb_port: int) -> dict[str, Any]:
    return {"image": "fleet.local/demo:v1", "command": WEB_80, "port": 80, "replicas": 2,
            "resources": {"cpu": 0.05, "memory": "32MiB"}, "volumes": [{"type": "tmpfs", "target": "/tmp"}],
            "health": {"http": "/index.html", "interval": "500ms", "timeout": "1s"}, "lb": {"port": lb_port},
            "stop_grace_period": "2s",
            "update": {"max_surge": 1, "max_unavailable": 0, "ready_deadline": "20s", "min_ready": "1s"},
            **security}


def confinement(lab: Any, c: dict[str, Any]) -> tuple[str, str, bool]:
    """The replica's effective capabilities, its no-new-privileges flag and whether its root took a write."""
    script = (f"{IN_REPLICA} {c['id']} sh -c "
              "'grep -E \"^(CapEff|NoNewPrivs)\" /proc/1/status; "
              "touch /probe 2>/dev/null && echo wrote || echo refused'")
    done = lab.lab.exec_in(c["node"], ["sh", "-c", script + "; echo \"exec exit $?\" >&2; ctr -n fleet tasks ls"],
                           check=False)
    words = done.stdout.split("TASK", 1)[0].split()
    assert len(words) == 5 and (words[0], words[2]) == ("CapEff:", "NoNewPrivs:"), (words, done.stderr, done.stdout)
    return words[1], words[3], words[4] == "wrote"


def test_security_settings_change_rolled_under_load_and_landed(lab, env):
    name, port = "lr-sec", 18861
    confined = {"read_only": True, "cap_drop": ["ALL"], "cap_add": ["NET_BIND_SERVICE"], "no_new_privileges": True}
    try:
        out = fleet(env, "apply", playbook(env, {name: web({"no_new_privileges": False}, port)}))
        assert out.returncode == 0, out.stdout + out.stderr
        before = replicas(env, name)
        assert [confinement(lab, c) for c in before] == [(CAPS_DEFAULT, "0", True)] * 2
        with Load(str(lab.inventory.node("lb1").address), port, clients=4, max_seconds=90) as load:
            wait_until(lambda: load.result.ok > 20 or None, 20, 0.2, "requests served")
            out = fleet(env, "apply", playbook(env, {name: web(confined, port)}))
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout + out.stderr
        r = load.result
        assert r.failed == 0 and r.ok > 50, (r.ok, r.errors, r.failures[:5])
        after = replicas(env, name)
        assert len(after) == 2 and not {c["id"] for c in after} & {c["id"] for c in before}, "replicas replaced"
        assert [confinement(lab, c) for c in after] == [(CAPS_BIND_ONLY, "1", False)] * 2
    finally:
        fleet(env, "destroy", name, "--grace", "1")
