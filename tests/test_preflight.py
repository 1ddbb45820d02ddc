"""`fleet node check` and `fleet node prepare` as values: the check script's parser and judge on recorded output
(tests/data/preflight, each saying where it came from), the plan a check gives, the prepare script's exact
arguments, and that script run for real here against a stand-in apt-get (labelled below): its policy-rc.d is
there while apt runs and gone afterwards, also when apt fails."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from sshserver import SSHFarm
from test_become import recording

from fleet.core.errors import ScriptOutputError
from fleet.core.model import Inventory
from fleet.core.shell import Script
from fleet.engine.preflight import check_nodes, prepare_nodes
from fleet.node.preflight import (
    NEEDS,
    Found,
    Tool,
    cgroup_version,
    check_script,
    clock_offset,
    judge,
    parse_found,
    version_of,
)
from fleet.node.provision import (
    PACKAGES_DIR,
    Plan,
    deb_package,
    offline_plan,
    parse_prepared,
    plan_for,
    prepare_script,
)
from fleet.transport import Pool

DATA = Path(__file__).parent / "data" / "preflight"
ALL_ROLES = ("worker", "lb", "records", "vip")


def recorded(name: str) -> str:
    doc = json.loads((DATA / f"{name}.json").read_text())
    assert doc["source"] and doc["script"] == check_script().name and doc["args"] == list(check_script().args)
    return str(doc["stdout"])


def items(check):  # type: ignore[no-untyped-def]
    return {i.name: i for i in check.items}


def test_check_script_is_read_only_and_asks_for_every_needed_tool() -> None:
    script = check_script()
    assert set(script.args) >= {n.tool for n in NEEDS} | {"sudo", "apt-get"}
    for verb in ("apt-get install", "mkdir", "rm ", "mv ", "systemctl", "sysctl -w", "tee"):
        assert verb not in script.text
    assert set(re.findall(r">\s*([^\s)]+)", script.text)) == {"/dev/null", "&1"}  # it writes no file
    assert script.env["BASE"] == "/var/lib/fleet" and script.env["RUN"] == "/run/fleet"


def test_versions_read_from_each_tools_own_version_line() -> None:
    assert version_of("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3") == (1, 6, 20)
    assert version_of("Keepalived v2.2.7 (01/16,2022)") == (2, 2, 7)
    assert version_of("etcd Version: 3.4.23") == (3, 4, 23)
    assert version_of("HAProxy version 2.6.12-1+deb12u4 2026/10/17") == (2, 6, 12)
    assert version_of("no digits") is None


def test_a_debian_node_with_everything_names_each_tool_and_version() -> None:
    found = parse_found(recorded("debian12_root"))
    assert found.os == "debian 12" and found.uid == 0 and found.login == "root"
    assert found.tools["containerd"].version == (1, 6, 20) and found.tools["runc"].version == (1, 1, 5)
    assert found.cni == ("bridge", "host-local", "portmap", "loopback")
    check = judge("n1", ALL_ROLES, found, offset=0.004)
    got = items(check)
    assert got["containerd"].ok and got["containerd"].detail == "1.6.20 at /usr/bin/containerd"
    assert got["haproxy"].detail.startswith("2.6.12 ") and got["keepalived"].ok and got["etcdctl"].ok
    assert got["cni plugins"].ok and got["cgroup"].detail == "v1 hybrid" and got["login"].detail == "root"
    assert got["clock"].ok and got["clock"].detail == "+0.004 s from this controller"
    # Recorded on the lab machine itself: its containerd runs only inside lab nodes, forwarding is off, and its
    # /run is on disk; each is named, with what prepare does about it (nothing for /run).
    assert {i.name for i in check.missing} == {"containerd running", "ip_forward", "tmpfs run"}
    plan = plan_for(check)
    assert plan.packages == () and plan.fixes == ("ip-forward", "start-containerd")
    assert plan.left == ("tmpfs run: /run on ext2/ext3 (fleet keeps secret env files on tmpfs only)",)


def test_a_bare_node_lacks_every_tool_and_the_plan_installs_the_packages_of_its_roles() -> None:
    found = parse_found(recorded("bare_path"))
    assert found.tools == {} and found.cni == () and not found.base_exists
    worker = judge("n1", ("worker",), found, offset=0.0)
    assert [i.name for i in worker.missing] == ["containerd", "ctr", "runc", "ip", "cni plugins", "ip_forward",
                                                "tmpfs run", "fleet dirs"]
    assert items(worker)["sshfs"].optional and not items(worker)["sshfs"].missing
    assert "containerd running" not in items(worker)  # asked only where containerd is installed
    plan = plan_for(worker)
    assert plan.packages == ("containerd", "containernetworking-plugins", "iproute2", "runc")
    assert plan.fixes == ("dirs", "ip-forward", "start-containerd")
    lb = plan_for(judge("lb1", ("lb", "records"), found, offset=0.0))
    assert lb.packages == ("etcd-client", "etcd-server", "haproxy", "socat")
    assert "keepalived" not in lb.packages  # only with a virtual IP
    assert "keepalived" in plan_for(judge("lb1", ("lb", "vip"), found, offset=0.0)).packages
    assert plan.describe().startswith("install containerd containernetworking-plugins iproute2 runc; create "
                                      "/var/lib/fleet; set net.ipv4.ip_forward = 1; start containerd")


def _found(**changes: object) -> Found:
    base = parse_found(recorded("debian12_root"))
    return replace(base, run_fs="tmpfs", run_dir="/run/fleet", ip_forward=True, containerd_socket=True,
                   **changes)  # type: ignore[arg-type]


def test_a_ready_node_has_nothing_to_do() -> None:
    check = judge("n1", ALL_ROLES, _found(), offset=-0.2)
    assert check.ok and check.missing == []
    plan = plan_for(check)
    assert plan.nothing and plan.describe() == "nothing to do"


def test_a_version_older_than_fleet_needs_is_named_with_the_minimum() -> None:
    tools = dict(_found().tools)
    tools["containerd"] = Tool("/usr/bin/containerd", (1, 5, 9), "containerd 1.5.9")
    tools["haproxy"] = Tool("/usr/sbin/haproxy", None, "")
    check = judge("n1", ALL_ROLES, _found(tools=tools), offset=0.0)
    got = items(check)
    assert got["containerd"].detail == "1.5.9 at /usr/bin/containerd is older than fleet needs (1.6 or newer)"
    assert got["haproxy"].missing and "version unknown" in got["haproxy"].detail
    assert plan_for(check).packages == ("containerd", "haproxy")


def test_clock_disk_and_login_problems_are_named_and_left_to_the_user() -> None:
    found = _found(free_kib=1024, uid=1000, login="deploy")
    check = judge("n1", ("worker",), found, offset=3.25)
    got = items(check)
    assert got["clock"].missing and got["clock"].detail.startswith("+3.250 s from this controller (more than 1 s")
    assert got["disk"].missing and "1 MiB free under /var/lib/fleet" in got["disk"].detail
    assert got["login"].missing and "set `become: true`" in got["login"].detail
    plan = plan_for(check)
    assert plan.packages == () and plan.fixes == () and len(plan.left) == 3 and plan.nothing
    assert plan.describe().startswith("nothing to do; cannot fix: login: logged in as deploy")
    become = judge("n1", ("worker",), _found(), offset=0.0, become=True)
    assert items(become)["sudo"].ok and items(become)["sudo"].detail.startswith("passwordless `sudo -n` to root")


def test_clock_offset_is_the_nodes_time_at_the_end_against_when_its_output_arrived() -> None:
    found = _found(now=1000.5)
    assert clock_offset(found, 1000.2) == pytest.approx(0.3)
    assert clock_offset(replace(found, now=None), 1000.2) is None


@pytest.mark.parametrize(("fstype", "version"), [("cgroup2fs", "v2"), ("tmpfs", "v1"), ("tmpfs hybrid", "v1 hybrid"),
                                                 ("", "unknown (no /sys/fs/cgroup)")])
def test_cgroup_version_from_the_filesystem_type(fstype: str, version: str) -> None:
    assert cgroup_version(fstype) == version


def test_a_cut_check_output_is_refused() -> None:
    text = recorded("debian12_root")
    with pytest.raises(ScriptOutputError, match="ended early"):
        parse_found(text[: text.index("@@end")])


def test_node_check_failure_is_not_a_plan_to_change_anything() -> None:
    from fleet.node.preflight import NodeCheck

    plan = plan_for(NodeCheck("n1", ("worker",), error="n1: cannot connect"))
    assert plan.error and not plan.nothing and plan.packages == () and plan.describe().startswith("cannot check")


# ---- the prepare script -------------------------------------------------------------------------------------


def test_prepare_script_carries_packages_as_arguments_and_names_the_services_to_keep_off() -> None:
    plan = Plan("lb1", ("etcd-client", "etcd-server", "haproxy"), ("dirs",))
    script = prepare_script(plan)
    assert script.args == ("etcd-client", "etcd-server", "haproxy")
    assert dict(script.env) == {"POLICY": "/usr/sbin/policy-rc.d", "SYSCTL": "/etc/sysctl.d/60-fleet.conf",
                                "BASE": "/var/lib/fleet", "FIXES": "dirs", "DISABLE": "etcd haproxy", "OFFLINE": "",
                                "PKGS": "etcd-client etcd-server haproxy",
                                "CPID": "/var/lib/fleet/containerd/containerd.pid",
                                "CLOG": "/var/lib/fleet/containerd/containerd.log",
                                "CSOCK": "/run/containerd/containerd.sock"}
    assert "DEBIAN_FRONTEND=noninteractive" in script.text and "--no-install-recommends" in script.text
    with pytest.raises(ValueError, match="not a package name"):
        prepare_script(Plan("n1", ("ok", "bad;rm")))
    with pytest.raises(ValueError, match="unknown change"):
        prepare_script(Plan("n1", (), ("reboot",)))


def _fake_apt(tmp_path: Path, fail_install: bool) -> Path:
    """A stand-in apt-get (a fake: real apt cannot install on this shared machine): it records whether the
    policy-rc.d file was in place and denying while it ran, then succeeds or fails."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    apt = bindir / "apt-get"
    apt.write_text(f"""#!/bin/sh
echo "$* policy=$( [ -x "$POLICY" ] && "$POLICY" >/dev/null 2>&1; echo $? )" >>{tmp_path}/apt.log
case "$1" in install) {"echo 'E: Unable to locate package nope' >&2; exit 100" if fail_install else "exit 0"} ;; esac
exit 0
""")
    apt.chmod(apt.stat().st_mode | stat.S_IXUSR)
    return bindir


def _run(script: Script, bindir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**script.env, **env}
    return subprocess.run(["/bin/sh", "-c", script.text, script.name, *script.args], capture_output=True, text=True,
                          env={"PATH": f"{bindir}:/usr/bin:/bin", **full}, timeout=30)


@pytest.mark.parametrize("fail_install", [False, True])
def test_prepare_script_keeps_services_from_starting_during_apt_and_removes_its_policy_after(
        tmp_path: Path, fail_install: bool) -> None:
    bindir = _fake_apt(tmp_path, fail_install)
    policy, base = tmp_path / "policy-rc.d", tmp_path / "var" / "fleet"
    script = prepare_script(Plan("n1", ("containerd", "runc"), ("dirs",)))
    done = _run(script, bindir, POLICY=str(policy), BASE=str(base), DISABLE="")
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log[0] == "update -qq policy=101"
    assert log[1] == "install -y -qq --no-install-recommends containerd runc policy=101"
    assert not policy.exists()
    prepared = parse_prepared(done.stdout, done.returncode, done.stderr)
    if fail_install:
        assert done.returncode == 1 and prepared.changed == ()
        assert prepared.error is not None and "apt-get install containerd runc failed" in prepared.error
        assert "Unable to locate package nope" in prepared.error and not base.exists()
    else:
        assert done.returncode == 0 and prepared.error is None
        assert prepared.changed == ("installed containerd runc", f"created {base}")
        assert base.is_dir()


def test_prepare_script_leaves_a_policy_file_that_was_there_before(tmp_path: Path) -> None:
    bindir = _fake_apt(tmp_path, fail_install=True)
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    done = _run(prepare_script(Plan("n1", ("runc",))), bindir, POLICY=str(policy), DISABLE="")
    assert done.returncode == 1 and policy.read_text() == "#!/bin/sh\nexit 101\n"


def test_prepare_output_cut_short_is_an_error_not_a_success() -> None:
    with pytest.raises(ScriptOutputError, match="stopped before its end"):
        parse_prepared("@@changed\tinstalled runc\n", None, "Killed")
    assert parse_prepared("@@changed\tstarted containerd\n@@end\tok\n", 0).changed == ("started containerd",)


async def test_engine_runs_the_check_and_no_prepare_script_where_nothing_is_to_do(tmp_path: Path) -> None:
    """The engine over real in-process SSH servers running /bin/sh here: the check script runs (once per node)
    and is judged for the node's roles; a plan with nothing to do sends no command at all."""
    seen: list[str] = []
    async with SSHFarm(tmp_path / "f", handler=recording(seen)) as farm:
        await farm.start(2)
        inv = Inventory("inv.yaml", (farm.node("n1"), farm.node("n2", roles=("lb",))))
        async with Pool() as pool:
            checks = await check_nodes(pool, inv, inv.nodes)
            assert len(seen) == 2 and all("fleet-node-check" in line for line in seen)
            reports = await prepare_nodes(pool, inv, [Plan("n1"), Plan("n2")])
    assert [c.node for c in checks] == ["n1", "n2"] and all(c.error is None for c in checks)
    assert checks[1].roles == ("lb", "records")  # the only lb node keeps the records
    assert items(checks[0])["containerd"].ok and "haproxy" not in items(checks[0])
    assert items(checks[1])["etcd"].ok and "containerd" not in items(checks[1])
    assert abs(float(items(checks[0])["clock"].detail.split()[0])) < 1.0
    assert len(seen) == 2 and [r.prepared for r in reports] == [None, None]
    assert all(r.ok for r in reports)


async def test_engine_check_of_a_node_that_is_down_is_its_error_only(tmp_path: Path) -> None:
    async with SSHFarm(tmp_path / "f") as farm:
        await farm.start(1)
        down = await farm.add("down", listen=False)
        inv = Inventory("inv.yaml", (farm.node("n1"), down))
        async with Pool(backoff=0.01, connect_attempts=1) as pool:
            checks = await check_nodes(pool, inv, inv.nodes)
    assert checks[0].error is None and checks[1].error is not None and "connection refused" in checks[1].error
    assert not checks[1].ok and plan_for(checks[1]).error == checks[1].error


# ---- what the CLI prints ---------------------------------------------------------------------------------------


def test_check_render_names_present_and_missing_items_with_their_package() -> None:
    from rich.console import Console

    from fleet.cli.node import print_check

    out = Console(record=True, width=100)
    found = parse_found(recorded("bare_path"))
    print_check(out, judge("n1", ("worker",), found, offset=0.0))
    print_check(out, judge("lb1", ALL_ROLES, _found(), offset=0.0))
    text = out.export_text()
    assert "n1 (worker; debian 12): missing containerd, ctr, runc, ip, cni plugins" in text
    assert "✗ containerd          missing (runs the replicas)  → apt-get install containerd" in text
    assert "- sshfs               missing (mounts network volumes" in text
    assert "lb1 (worker, lb, records, vip; debian 12): ok" in text
    assert "✓ haproxy             2.6.12 at /usr/sbin/haproxy" in text


def test_prepare_prints_one_line_per_node_for_each_outcome() -> None:
    from fleet.cli.node import prepared_line
    from fleet.engine.preflight import PrepareReport
    from fleet.node.preflight import Item, NodeCheck
    from fleet.node.provision import Prepared

    ready = NodeCheck("n1", ("worker",), (Item("runc", True, "1.1.5"),))
    short = NodeCheck("n1", ("worker",), (Item("runc", False, "missing", "runc"),))
    plan = Plan("n1", ("runc",))
    assert prepared_line(PrepareReport("n1", Plan("n1"))) == "n1: nothing to do (ready)"
    assert prepared_line(PrepareReport("n1", plan, Prepared(("installed runc",)), ready)) == \
        "n1: installed runc; ready"
    assert prepared_line(PrepareReport("n1", plan, Prepared(("installed runc",)), short)) == \
        "n1: installed runc; still missing: runc"
    failed = PrepareReport("n1", plan, Prepared((), "apt-get install runc failed: E: no mirror"))
    assert prepared_line(failed) == "n1: failed: apt-get install runc failed: E: no mirror" and not failed.ok
    assert prepared_line(PrepareReport("n2", Plan("n2", error="n2: cannot connect"))) == \
        "n2: not prepared: cannot check it: n2: cannot connect"
    assert prepared_line(PrepareReport("n3", Plan("n3", left=("clock: +3.000 s",)))) == \
        "n3: nothing to do; cannot fix: clock: +3.000 s"
    assert PrepareReport("n1", plan, Prepared(("installed runc",)), ready).ok
    assert not PrepareReport("n3", Plan("n3", left=("clock: +3.000 s",))).ok
    blocked = PrepareReport("n4", Plan("n4", ("runc",), blocked="no .deb file for runc in ./debs"))
    assert prepared_line(blocked) == "n4: not prepared: no .deb file for runc in ./debs" and not blocked.ok


def test_cli_unknown_node_is_a_usage_error_and_a_node_that_is_down_is_named(tmp_path: Path) -> None:
    from helpers import free_port, run_fleet

    inv = tmp_path / "inv.yaml"
    inv.write_text(f"nodes:\n  n1: {{address: 127.0.0.1, port: {free_port()}, known_hosts: {tmp_path}/kh}}\n")
    (tmp_path / "kh").write_text("")
    unknown = run_fleet("node", "check", "nope", "-i", str(inv))
    assert unknown.returncode == 2 and "no node 'nope' in this inventory" in unknown.stderr
    down = run_fleet("node", "check", "--json", "-i", str(inv))
    assert down.returncode == 1
    [doc] = json.loads(down.stdout)
    assert doc["node"] == "n1" and not doc["ok"] and "connection refused" in doc["error"]
    prepare = run_fleet("node", "prepare", "-i", str(inv))
    assert prepare.returncode == 1
    assert "n1: not prepared: cannot check it: " in prepare.stdout and "not prepared: n1" in prepare.stderr
    offline = run_fleet("node", "prepare", "--offline", str(tmp_path / "no-such-dir"), "-i", str(inv))
    assert offline.returncode == 2 and f"--offline {tmp_path}/no-such-dir: No such file or directory" in offline.stderr


RUNC_DEB = "runc_1.1.5+ds1-1+deb12u1_amd64.deb"
OFFLINE_FILES = [RUNC_DEB, "containerd_1.6.20~ds1-1+b1_amd64.deb", "libseccomp2_2.5.4-1+b3_amd64.deb",
                 "haproxy_2.6.12-1+deb12u1_amd64.deb", "README.txt", "keepalived_1%3a2.2.7-1+b2_amd64.deb"]


def test_an_offline_plan_sends_the_packages_files_and_their_dependencies_and_names_what_is_missing() -> None:
    plan = Plan("n3", ("containerd", "runc"), ("dirs",))
    offline = offline_plan(plan, OFFLINE_FILES, "/srv/debs")
    # The packages' files, then the dependencies (files of no package fleet asks for); haproxy is not sent.
    assert offline.debs == ("containerd_1.6.20~ds1-1+b1_amd64.deb", RUNC_DEB, "libseccomp2_2.5.4-1+b3_amd64.deb")
    assert offline.describe() == "install containerd runc from 3 .deb file(s) sent by this controller; create " \
                                 "/var/lib/fleet"
    blocked = offline_plan(Plan("lb1", ("etcd-server", "haproxy")), OFFLINE_FILES, "/srv/debs")
    assert blocked.blocked is not None and blocked.debs == ()
    assert blocked.describe() == ("cannot prepare: no .deb file for etcd-server in /srv/debs (on a machine with the "
                                  "node's distribution: `apt-get download etcd-server` and their dependencies)")
    assert offline_plan(Plan("n1", (), ("dirs",)), [], "/x") == Plan("n1", (), ("dirs",))
    assert deb_package("keepalived_1%3a2.2.7-1+b2_amd64.deb") == "keepalived" and deb_package("x.deb") is None
    script = prepare_script(offline)
    assert script.args == tuple(f"{PACKAGES_DIR}/{d}" for d in offline.debs)
    assert script.env["OFFLINE"] == PACKAGES_DIR and script.env["PKGS"] == "containerd runc"
    with pytest.raises(ValueError, match=r"not a \.deb file name"):
        prepare_script(Plan("n1", ("runc",), debs=("../../etc/passwd",)))


@pytest.mark.parametrize("fail_install", [False, True])
def test_an_offline_prepare_installs_the_files_sent_without_apt_get_update_and_removes_them(
        tmp_path: Path, fail_install: bool) -> None:
    bindir = _fake_apt(tmp_path, fail_install)
    policy, staging = tmp_path / "policy-rc.d", tmp_path / "packages"
    staging.mkdir()
    (staging / RUNC_DEB).write_bytes(b"!<arch>\n")
    script = prepare_script(offline_plan(Plan("n1", ("runc",)), OFFLINE_FILES, "/srv/debs"))
    args = [a.replace(PACKAGES_DIR, str(staging)) for a in script.args]
    done = subprocess.run(["/bin/sh", "-c", script.text, script.name, *args], capture_output=True, text=True,
                          env={"PATH": f"{bindir}:/usr/bin:/bin", **script.env, "POLICY": str(policy),
                               "OFFLINE": str(staging), "DISABLE": ""}, timeout=30)
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log == [f"install -y -qq --no-install-recommends --no-download -o Dir::Cache::Archives={staging}/ "
                   f"{staging}/{RUNC_DEB} "
                   f"{staging}/libseccomp2_2.5.4-1+b3_amd64.deb policy=101"]
    assert not policy.exists() and not staging.exists()
    prepared = parse_prepared(done.stdout, done.returncode, done.stderr)
    if fail_install:
        assert prepared.error is not None and prepared.error.startswith(
            "installing runc from the .deb files sent failed: E: Unable to locate package nope")
    else:
        assert prepared.error is None and prepared.changed == ("installed runc",)
