"""Container security settings (`user`, `read_only`, `cap_add`/`cap_drop`, `no_new_privileges`): the playbook's
fields, the hash, the exact runtime flags (`user` on ctr through fleet's runc wrapper: tests/test_runas.py), and
(lab) what a container started by the ctr driver on a private containerd can and cannot do, and as whom it runs."""

from __future__ import annotations

import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_containerd import Containerd, available, local_containerd

from fleet.config.spec import ServiceSpec, from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.config.spec.security import DEFAULT_CAPABILITIES, SecuritySpec
from fleet.core.errors import SpecError
from fleet.core.model import CommandResult, Resources
from fleet.core.shell import Script
from fleet.engine.runspec import run_spec
from fleet.image.demo import build_demo
from fleet.node.runtime.base import Mount, RunSpec
from fleet.node.runtime.ctr import LACKS, CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.plan.reconcile import demand_for
from fleet.plan.scheduler import Assignment, NodeState, place


def service(extra: str, name: str = "web") -> tuple[str, str]:
    text = f"services:\n  {name}:\n    image: registry.local/web:v1\n" + textwrap.indent(textwrap.dedent(extra), "    ")
    return text, "pb.yaml"


def one(extra: str = "") -> ServiceSpec:
    return parse_playbook(*service(extra)).services[0]


def test_settings_resolve_and_capabilities_are_the_exact_difference_from_the_default():
    spec = one("""
        user: "1000:1000"
        read_only: true
        cap_drop: [ALL]
        cap_add: [cap_net_bind_service]
        no_new_privileges: false
    """)
    sec = spec.security
    assert sec == SecuritySpec("1000:1000", True, ("NET_BIND_SERVICE",), ("ALL",), False)
    assert sec.capabilities() == {"NET_BIND_SERVICE"}
    added, dropped = sec.cap_changes()
    assert added == ()
    assert set(dropped) == {f"CAP_{c}" for c in DEFAULT_CAPABILITIES - {"NET_BIND_SERVICE"}}
    assert SecuritySpec(cap_add=("NET_ADMIN",), cap_drop=("NET_RAW",)).cap_changes() == (
        ("CAP_NET_ADMIN",), ("CAP_NET_RAW",))


def test_defaults_keep_the_hash_and_each_setting_changes_it():
    base = one()
    assert base.security == SecuritySpec()
    assert "security" not in base.hash_input()
    assert one("no_new_privileges: true\ncap_drop: []\n").spec_hash() == base.spec_hash()
    hashes = {one(x).spec_hash() for x in ('user: "1000"', "read_only: true", "cap_drop: [NET_RAW]",
                                           "cap_add: [NET_ADMIN]", "no_new_privileges: false")}
    assert len(hashes) == 5 and base.spec_hash() not in hashes
    # The same capabilities written two ways are the same container.
    every = "[" + ", ".join(sorted(DEFAULT_CAPABILITIES)) + "]"
    assert one("cap_drop: [ALL]").spec_hash() == one(f"cap_drop: {every}").spec_hash()


@pytest.mark.parametrize(("extra", "fragment"), [
    ('user: "root; rm -rf /"', "services.web.user: expected uid[:gid] or a user name"),
    ("cap_add: [ALL]", "services.web.cap_add: unknown capability 'ALL'"),
    ("cap_drop: [CAP_BOGUS]", "services.web.cap_drop: unknown capability 'CAP_BOGUS'"),
    ('read_only: "yes"', "services.web.read_only"),
])
def test_bad_settings_are_refused_naming_file_line_and_field(extra: str, fragment: str):
    with pytest.raises(SpecError) as exc:
        parse_playbook(*service(extra))
    assert f"pb.yaml:4: {fragment}" in str(exc.value)


def test_history_round_trip_keeps_the_settings():
    spec = one('user: app\nread_only: true\ncap_drop: [NET_RAW]\ncap_add: [NET_ADMIN]\nno_new_privileges: false\n')
    back = from_playbook_dict("web", to_playbook_dict(spec))
    assert back.security == spec.security and back.spec_hash() == spec.spec_hash()


def test_run_spec_carries_the_settings():
    spec = one('read_only: true\ncap_drop: [NET_RAW]\nno_new_privileges: false\n')
    run = run_spec(spec, 3, Assignment("web", 0, "n1", 20000, Resources(0.1, 1 << 20), "new"), None, now=0)
    assert (run.read_only, run.cap_add, run.cap_drop, run.no_new_privileges, run.user) == (
        True, (), ("CAP_NET_RAW",), False, None)


def test_ctr_flags_exact_and_user_through_the_runc_wrapper():
    d = CtrDriver(logger="/srv/f/bin/logger-x")
    run = RunSpec(id="a-1-x", image="img", read_only=True, cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_NET_RAW",),
                  no_new_privileges=False)
    argv = d.run_argv(run)
    assert argv[argv.index("--read-only"):argv.index("img")] == [
        "--read-only", "--cap-add", "CAP_NET_ADMIN", "--cap-drop", "CAP_NET_RAW", "--allow-new-privs"]
    assert not {"--read-only", "--allow-new-privs", "--cap-add", "--runc-binary"} & set(
        d.run_argv(RunSpec(id="a-1-x", image="i")))
    user = RunSpec(id="a-1-x", image="img", user="1000")
    path, text = d.runas("1000")
    assert path.startswith("/srv/f/bin/runc-as-") and "U='1000'" in text
    argv = d.run_argv(user)
    assert argv[argv.index("--runc-binary") + 1] == path
    script = d.run(user).command
    assert isinstance(script, Script) and script.env["RUNAS"] == path and script.env["RUNAS_SH"] == text
    assert d.runas("1000:1000")[0] != path
    with pytest.raises(ValueError, match="user"):
        d.runas("x'; rm -rf /")


def test_nerdctl_flags_exact():
    d = NerdctlDriver()
    argv = d.run_argv(RunSpec(id="a-1-x", image="img", user="1000:1000", read_only=True, cap_drop=("CAP_NET_RAW",)))
    assert argv[argv.index("--user"):argv.index("--log-opt")] == [
        "--user", "1000:1000", "--read-only", "--cap-drop", "CAP_NET_RAW", "--security-opt", "no-new-privileges"]
    plain = d.run_argv(RunSpec(id="a-1-x", image="img", no_new_privileges=False))
    assert "--security-opt" not in plain and "--user" not in plain


def test_a_ctr_node_takes_a_service_with_a_user():
    spec = one('user: "1000"\nreplicas: 2\nresources: {cpu: 0.1, memory: 16MiB}\n')
    assert dict(LACKS) == {}
    ctr_node = NodeState("n1", Resources(2, 1 << 30), lacks={n: f"{n}: {why}" for n, why in LACKS.items()})
    assert len(place([ctr_node], [], [demand_for(spec)]).assignments) == 2


# --- lab: a private containerd (tests/local_containerd.py), the command lines run with `sh -c`


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Containerd, CtrDriver, str]]:
    if reason := available():
        pytest.skip(reason)
    with local_containerd() as c:
        d = CtrDriver(namespace=c.namespace, address=c.address, log_dir=str(c.dir / "logs"),
                      logger=str(c.dir / "logger"))
        archive = build_demo("uid1000", c.dir / "demo.tar", user="1000")
        call = d.image_import(archive.path)
        proc = c.sh(call.line(), stdin_path=call.stdin_path)
        call.parse(CommandResult("local", proc.returncode, proc.stdout, proc.stderr, 0.0))
        yield c, d, archive.name


@pytest.mark.lab
def test_read_only_replica_running_as_uid_1000_cannot_write_its_root(ctrd: tuple[Containerd, CtrDriver, str]):
    c, d, image = ctrd
    sec = SecuritySpec(read_only=True, cap_drop=("ALL",))
    added, dropped = sec.cap_changes()
    run = RunSpec(id="sec-1-aaaaaa", image=image, command=("sleep", "60"), read_only=True, cap_add=added,
                  cap_drop=dropped, mounts=(Mount("tmpfs", "/tmp", options=("size=1m",)),))
    proc = c.sh(d.run(run).line())
    assert proc.returncode == 0, proc.stderr
    try:
        def through_ctr(script: str) -> subprocess.CompletedProcess[str]:
            return c.exec_ctr(run.id, "sh", "-c", script)

        def through_driver(script: str) -> subprocess.CompletedProcess[str]:  # runc's exec (ctr_sh.EXEC_SH)
            return c.sh(d.exec(run.id, ["sh", "-c", script]).line())

        # `fleet exec` and exec health checks (the driver) run as confined as the process ctr would exec.
        for inside in (through_ctr, through_driver):
            assert inside("id -u").stdout.strip() == "1000"
            wrote = inside("touch /x")
            assert wrote.returncode != 0 and "Read-only file system" in wrote.stdout + wrote.stderr
            assert inside("touch /tmp/y && echo ok").stdout.strip() == "ok"
            status = inside("grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status").stdout.split()
            assert status == ["CapEff:", "0000000000000000", "CapBnd:", "0000000000000000", "NoNewPrivs:", "1"]
    finally:
        c.sh(d.remove(run.id).line())


@pytest.mark.lab
@pytest.mark.parametrize(("user", "ids"), [("nobody", "65534 65534"), ("2000:3000", "2000 3000"),
                                           ("1000", "1000 0")])
def test_user_on_ctr_runs_the_main_process_and_execs_as_that_user(ctrd: tuple[Containerd, CtrDriver, str],
                                                                  user: str, ids: str):
    c, d, image = ctrd  # the image says User 1000; the service's user wins
    run = RunSpec(id=f"usr-1-{abs(hash(user)) % 10**6:06d}", image=image, command=("sleep", "60"), user=user)
    proc = c.sh(d.run(run).line())
    assert proc.returncode == 0, proc.stderr
    try:
        pid = c.ctr("tasks", "ls").stdout.split(run.id)[1].split()[0]
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split()[0] + " " + status["Gid"].split()[0] == ids
        inside = c.exec_ctr(run.id, "sh", "-c", "echo $(id -u) $(id -g)")
        assert inside.stdout.strip() == ids, inside.stdout + inside.stderr
        driver = c.sh(d.exec(run.id, ["sh", "-c", "echo $(id -u) $(id -g)"]).line())  # runc's exec
        assert driver.stdout.strip() == ids, driver.stdout + driver.stderr
    finally:
        c.sh(d.remove(run.id).line())


@pytest.mark.lab
def test_a_user_the_image_does_not_have_fails_the_start_and_leaves_nothing(ctrd: tuple[Containerd, CtrDriver, str]):
    c, d, image = ctrd
    run = RunSpec(id="usr-1-nouser", image=image, command=("sleep", "60"), user="ghost")
    proc = c.sh(d.run(run).line())
    try:
        assert proc.returncode != 0
        assert run.id not in c.ctr("containers", "ls", "-q").stdout
    finally:
        c.sh(d.remove(run.id).line())


@pytest.mark.lab
def test_the_restart_monitor_starts_a_user_container_again_as_that_user(ctrd: tuple[Containerd, CtrDriver, str]):
    c, d, image = ctrd  # the wrapper is the container's runc (its runtime options), so restarts go through it too
    run = RunSpec(id="usr-1-restart", image=image, command=("sh", "-c", "sleep 1; exit 3"), user="2000:3000",
                  restart="always")
    proc = c.sh(d.run(run).line())
    assert proc.returncode == 0, proc.stderr
    try:
        first = c.ctr("tasks", "ls").stdout.split(run.id)[1].split()[0]
        deadline = time.monotonic() + 15
        while True:
            row = c.ctr("tasks", "ls").stdout.split(run.id)
            pid = row[1].split()[:2] if len(row) > 1 else []
            if len(pid) == 2 and pid[1] == "RUNNING" and pid[0] != first:
                break
            assert time.monotonic() < deadline, "not restarted within 15 s"
            time.sleep(0.2)
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid[0]}/status").read_text().splitlines())
        assert (status["Uid"].split()[0], status["Gid"].split()[0]) == ("2000", "3000")
    finally:
        c.sh(d.remove(run.id).line())
