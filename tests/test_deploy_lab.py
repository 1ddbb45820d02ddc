"""Deploying services on the real lab through the CLI: apply, plan, scale, destroy, refusals and discovery.

Every test writes its own playbooks with service names `dp-*` and lb ports 18100-18199 (the lab is shared with
other test files) and destroys each service it created in `finally`.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from helpers import run_fleet, wait_until

from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.image.oci import ImageArchive

pytestmark = pytest.mark.lab
HAPROXY_CFG = "/var/lib/fleet/haproxy/haproxy.cfg"
PAGE_RE = re.compile(r"version=(\S+) host=(\S+) replica=(\d+)")
T = TypeVar("T")


def cli(lab: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS -i INVENTORY` as a subprocess (the inventory option goes before a `--`)."""
    return run_fleet(*args, inventory=lab.inventory_path, columns=250, timeout=timeout)


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def service(image: str, replicas: int, lb_port: int, **extra: Any) -> dict[str, Any]:
    """A demo service tuned for tests: fast checks, no min_ready wait, a short stop grace."""
    return {"image": image, "replicas": replicas, "resources": {"cpu": 0.1, "memory": "32MiB"},
            "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s"},
            "update": {"min_ready": "0s"}, "stop_grace_period": "3s", "lb": {"port": lb_port}, **extra}


def write_playbook(path: Path, services: dict[str, dict[str, Any]]) -> str:
    path.write_text(yaml.safe_dump({"services": services}, sort_keys=False))
    return str(path)


def destroy(lab: Any, *names: str) -> None:
    for name in names:
        out = cli(lab, "destroy", name, "--grace", "2")
        assert out.returncode == 0, out.stderr


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return str(resp.read().decode())


def eventually(probe: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """probe() until it returns something (not None, not empty); OSError and AssertionError count as not yet."""
    return wait_until(probe, timeout, 0.2, what, ignore=(OSError, AssertionError))


def pages(url: str, n: int) -> list[tuple[str, str, int]]:
    """(version, host, replica) of n successive requests."""
    out = []
    for _ in range(n):
        m = PAGE_RE.search(fetch(url))
        assert m, "no version/host/replica on the page"
        out.append((m.group(1), m.group(2), int(m.group(3))))
    return out


def serves_replicas(url: str, replicas: set[int], timeout: float = 15.0) -> list[tuple[str, str, int]]:
    """Wait until a round of requests reaches exactly these replica numbers; returns that round."""
    def probe() -> list[tuple[str, str, int]] | None:
        got = pages(url, 3 * len(replicas))
        return got if {r for _, _, r in got} == replicas else None
    return eventually(probe, timeout, f"{url} to be served by replicas {sorted(replicas)}")


def lb_url(lab: Any, port: int) -> str:
    return f"http://{lab.inventory.node('lb1').address}:{port}/"


def status_of(lab: Any, name: str) -> dict[str, Any] | None:
    doc = json.loads(cli(lab, "status", "--json").stdout)
    return next((s for s in doc["services"] if s["service"] == name), None)


def all_up(lab: Any, name: str, replicas: set[int]) -> dict[str, Any] | None:
    """The service's status once exactly `replicas` run and each is "up" in lb1, else None."""
    s = status_of(lab, name)
    if s is None or {r["replica"] for r in s["replicas"]} != replicas or len(s["replicas"]) != len(replicas):
        return None
    return s if all(r["running"] and r["lb"] == {"lb1": "up"} for r in s["replicas"]) else None


def containers(lab: Any) -> set[tuple[str, str]]:
    out = ok(cli(lab, "ps", "--json"))
    return {(c["node"], c["id"]) for c in json.loads(out.stdout)["containers"]}


def haproxy_cfg(lab: Any) -> str:
    return str(lab.lab.exec_in("lb1", ["cat", HAPROXY_CFG], check=False).stdout)


def outcomes(stdout: str) -> dict[str, dict[str, Any]]:
    """The final `{"outcomes": …}` document of `fleet apply --json` (after the one-line events)."""
    doc = json.loads(stdout[stdout.index('{\n  "outcomes"'):])
    return {o["service"]: o for o in doc["outcomes"]}


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"event"')]


@pytest.fixture(scope="module")
def demo(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageArchive]:
    """A demo image with a tag of this module's own, shipped to every worker with `fleet image push`."""
    archive = build_demo(f"dp{L.random_suffix(6)}", tmp_path_factory.mktemp("img") / "demo.tar")
    ok(cli(lab, "image", "push", archive.path))
    yield archive


def test_two_services_served_through_lb_spread_and_reapply_is_noop(lab, demo, tmp_path):
    web, api = "dp-web", "dp-api"
    pb = write_playbook(tmp_path / "two.yaml", {web: service(demo.name, 3, 18101),
                                                api: service(demo.name, 2, 18102)})
    try:
        first = ok(cli(lab, "apply", pb, "--json"))
        done = outcomes(first.stdout)
        assert (done[web]["ok"], done[web]["started"], done[api]["started"]) == (True, 3, 2), done
        seen = serves_replicas(lb_url(lab, 18101), {0, 1, 2})
        assert len({host for _, host, _ in seen}) >= 2, seen
        assert {v for v, _, _ in seen} == {demo.name.split(":")[1]}
        api_seen = serves_replicas(lb_url(lab, 18102), {0, 1})
        assert len({host for _, host, _ in api_seen}) == 2, api_seen
        again_plan = cli(lab, "plan", pb)
        assert again_plan.returncode == 0, again_plan.stdout + again_plan.stderr
        assert "nothing to do" in again_plan.stdout
        again = outcomes(ok(cli(lab, "apply", pb, "--json")).stdout)
        assert [(o["ok"], o["started"], o["stopped"]) for o in again.values()] == [(True, 0, 0)] * 2
    finally:
        destroy(lab, web, api)
    assert status_of(lab, web) is None and status_of(lab, api) is None


def test_scale_up_routes_new_replicas_and_apply_scales_down_highest_first(lab, demo, tmp_path):
    name, port = "dp-scale", 18111
    pb = write_playbook(tmp_path / "scale.yaml", {name: service(demo.name, 2, port)})
    try:
        ok(cli(lab, "apply", pb))
        eventually(lambda: all_up(lab, name, {0, 1}), what="2 replicas up")
        up = outcomes(ok(cli(lab, "scale", name, "4", "-f", pb, "--json")).stdout)[name]
        assert (up["ok"], up["started"], up["stopped"]) == (True, 2, 0)
        st = eventually(lambda: all_up(lab, name, {0, 1, 2, 3}), what="4 replicas up in HAProxy")
        ids = {r["replica"]: r["id"] for r in st["replicas"]}
        serves_replicas(lb_url(lab, port), {0, 1, 2, 3})
        # The playbook still says 2: the next apply returns to it, retiring replicas 3 and 2 (numbered from 0).
        down = ok(cli(lab, "apply", pb, "--json"))
        assert outcomes(down.stdout)[name]["stopped"] == 2
        steps = [(e["step"], e["container"]) for e in events(down.stdout) if e["step"] in ("drain", "stop")]
        assert sorted(steps) == sorted((step, ids[i]) for i in (2, 3) for step in ("drain", "stop")), steps
        assert all(steps.index(("drain", ids[i])) < steps.index(("stop", ids[i])) for i in (2, 3)), steps
        eventually(lambda: all_up(lab, name, {0, 1}), what="2 replicas left")
        serves_replicas(lb_url(lab, port), {0, 1})
        assert ids[2] not in haproxy_cfg(lab) and ids[3] not in haproxy_cfg(lab)
    finally:
        destroy(lab, name)


def test_unschedulable_request_fails_with_reason_and_changes_nothing(lab, demo, tmp_path):
    name = "dp-big"
    pb = write_playbook(tmp_path / "big.yaml", {name: service(demo.name, 2, 18121,
                                                              resources={"cpu": 8, "memory": "32MiB"})})
    before = containers(lab)
    try:
        planned = cli(lab, "plan", pb)
        assert planned.returncode == 1 and "cannot place" in planned.stdout, planned.stdout
        out = cli(lab, "apply", pb)
        assert out.returncode != 0
        assert "needs cpu 8" in out.stderr, out.stderr
        assert re.search(r"most free on an eligible node: cpu \d+m \(n\d\)", out.stderr), out.stderr
        assert "nothing was changed" in out.stderr
        assert containers(lab) == before
    finally:
        destroy(lab, name)


def test_bad_playbook_names_file_line_field_exit_2_nothing_changes(lab, demo, tmp_path):
    pb = tmp_path / "bad.yaml"
    pb.write_text(f"services:\n  dp-bad:\n    image: {demo.name}\n    replicas: three\n    colour: blue\n"
                  "    lb: {port: 18131}\n")
    before = containers(lab)
    try:
        for cmd in ("plan", "apply"):
            out = cli(lab, cmd, str(pb))
            assert out.returncode == 2, (cmd, out.stdout, out.stderr)
            assert f"{pb}:4: services.dp-bad.replicas: expected an integer, got 'three'" in out.stderr
            assert f"{pb}:5: services.dp-bad.colour: unknown field" in out.stderr
        assert containers(lab) == before
    finally:
        destroy(lab, "dp-bad")


def test_unreachable_node_reported_and_replicas_placed_elsewhere(lab, demo, tmp_path):
    name, port = "dp-away", 18141
    pb = write_playbook(tmp_path / "away.yaml", {name: service(demo.name, 3, port)})
    lab.lab.stop_sshd("n3")
    try:
        planned = cli(lab, "plan", pb)
        assert planned.returncode == 3 and "n3" in planned.stdout and "placed elsewhere" in planned.stdout
        out = cli(lab, "apply", pb)
        assert out.returncode in (0, 1), out.stdout + out.stderr
        assert "n3" in out.stdout + out.stderr, "the unreachable node is not reported"
        st = status_of(lab, name)
        assert st is not None and len(st["replicas"]) == 3
        assert {r["node"] for r in st["replicas"]} <= {"n1", "n2"}, st
        seen = serves_replicas(lb_url(lab, port), {0, 1, 2})
        assert {host for _, host, _ in seen} == {"n1", "n2"}
    finally:
        lab.lab.start_sshd("n3")
        destroy(lab, name)


@pytest.mark.parametrize("services", [
    {"web\n  bind :1": {"lb": {"port": 18151}}},
    {"web;rm": {"lb": {"port": 18152}}},
    {"dp-evil": {"lb": {"port": 18153}, "health": {"http": "/healthz\r\nX: y"}}},
], ids=["newline-name", "semicolon-name", "crlf-health-path"])
def test_malicious_name_or_health_path_refused_haproxy_untouched(lab, demo, tmp_path, services):
    name, body = next(iter(services.items()))
    pb = write_playbook(tmp_path / "evil.yaml", {name: {"image": demo.name, **body}})
    cfg = haproxy_cfg(lab)
    before = containers(lab)
    out = cli(lab, "apply", pb)
    try:
        assert out.returncode == 2, out.stdout + out.stderr
        what = "invalid service name" if "health" not in body else "services.dp-evil.health.http: expected a URL path"
        assert f"{pb}:" in out.stderr and what in out.stderr, out.stderr
        assert haproxy_cfg(lab) == cfg
        assert containers(lab) == before
    finally:
        if name == "dp-evil":
            destroy(lab, name)


def test_service_reaches_another_by_name_through_the_lb(lab, demo, tmp_path):
    a, b = "dp-a", "dp-b"
    pb = write_playbook(tmp_path / "ab.yaml", {
        a: service(demo.name, 1, 18161, placement={"require": {"zone": "a"}}),
        b: service(demo.name, 1, 18162, placement={"require": {"zone": "b"}}),
    })
    try:
        ok(cli(lab, "apply", pb))
        st = eventually(lambda: all_up(lab, b, {0}), what=f"{b} up")
        assert st["replicas"][0]["port"] != 18162, "the test must go through the lb port, not the replica's"

        def page() -> str | None:
            out = cli(lab, "exec", a, "--", "wget", "-q", "-O-", f"http://{b}.fleet:18162/")
            return out.stdout if out.returncode == 0 else None
        got = eventually(page, what=f"{b}.fleet from inside {a}")
        m = PAGE_RE.search(got)
        assert m and (m.group(2), m.group(3)) == ("n2", "0"), got
    finally:
        destroy(lab, a, b)
