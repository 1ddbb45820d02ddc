"""Real servers on the lab: fleet logs in as a non-root user with passwordless sudo (`become: true`) on nodes whose
sshd refuses root, checks them, finds nothing to prepare, and deploys and rolls the demo service under load; a user
without passwordless sudo gets the error naming node and sudoers line, and nothing changes.

One module fixture changes the session's lab for these tests and puts everything back in `finally`, on the nodes
only (each lab node has its own copy of /etc; nothing on this machine is written): on every node two users made
for the test, a sudoers.d file for one of them, the node's host name in its /etc/hosts as a real server has it
(sudo looks the host name up: without it every sudo waits for DNS), ip_forward set inside its network namespace,
and its sshd restarted with `PermitRootLogin no` and `AllowUsers` those two users; afterwards the users and the
sudoers file are removed, the hosts file and ip_forward set back, and sshd restarted with its own config."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import TEST_LAB
from helpers import demo_playbook, poll, roll_under_load, run_fleet

from fleet.image.demo import build_demo
from fleet.lab.lab import node_dir
from fleet.node.storage_access import SFTP_USER

pytestmark = pytest.mark.lab

SUDO_USER = f"fleet{TEST_LAB.prefix}s"
NOPW_USER = f"fleet{TEST_LAB.prefix}p"
SUDOERS = "/etc/sudoers.d/fleet-test"


def _port_open(address: str) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, 22), timeout=0.5) as s:
        return s.recv(4).startswith(b"SSH")
    return False


def _restart_sshd(lab, name: str, config: str) -> None:
    d = node_dir(lab.lab.cfg, lab.lab.node(name))
    lab.lab.stop_sshd(name)
    lab.lab.exec_in(name, ["/usr/sbin/sshd", "-f", config, "-E", f"{d}/sshd.log"])
    assert poll(lambda: _port_open(lab.lab.node(name).address), 10, 0.05), f"sshd of {name} did not come back"


def _remove_users(lab, name: str) -> None:
    lab.lab.exec_in(name, ["rm", "-f", SUDOERS])
    for user in (SUDO_USER, NOPW_USER):
        if lab.lab.exec_in(name, ["id", "-u", user], check=False).returncode == 0:
            lab.lab.exec_in(name, ["userdel", user])


def _add_users(lab, name: str) -> None:
    for user in (SUDO_USER, NOPW_USER):
        # `*`: no password, but not locked (sshd without PAM refuses a locked account even with a key).
        lab.lab.exec_in(name, ["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
                               "-p", "*", user])
    lab.lab.exec_in(name, ["sh", "-c", f'umask 337 && printf "%s\\n" "$0" >{SUDOERS}.tmp && visudo -c -q -f '
                                       f"{SUDOERS}.tmp && mv -f {SUDOERS}.tmp {SUDOERS}",
                           f"{SUDO_USER} ALL=(root) NOPASSWD: ALL"])


@contextlib.contextmanager
def _servers(lab) -> Iterator[None]:
    """The lab as real servers: see the module's docstring; everything undone on the way out."""
    names = [n.name for n in lab.inventory.nodes]
    forward: dict[str, str] = {}
    hosts: dict[str, str] = {}
    touched: list[str] = []
    switched: list[str] = []
    try:
        for name in names:
            d = node_dir(lab.lab.cfg, lab.lab.node(name))
            assert os.path.isdir(f"{d}/etc"), "the lab node has no /etc of its own"
            touched.append(name)
            _remove_users(lab, name)  # a crashed run's
            _add_users(lab, name)
            hosts[name] = Path(f"{d}/etc/hosts").read_text()
            Path(f"{d}/etc/hosts").write_text(hosts[name] + f"127.0.1.1 {name}\n")
            forward[name] = lab.lab.exec_in(name, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
            lab.lab.exec_in(name, ["sh", "-c", "echo 1 >/proc/sys/net/ipv4/ip_forward"])
            config = Path(f"{d}/sshd_config").read_text()
            assert "PermitRootLogin prohibit-password\n" in config
            Path(f"{d}/sshd_config.servers").write_text(
                config.replace("PermitRootLogin prohibit-password\n", "PermitRootLogin no\n")
                + f"AllowUsers {SUDO_USER} {NOPW_USER} {SFTP_USER}\n")
            switched.append(name)
            _restart_sshd(lab, name, f"{d}/sshd_config.servers")
        yield
    finally:
        for name in switched:
            lab.lab.stop_sshd(name)
            lab.lab.start_sshd(name)
        for name, text in hosts.items():
            Path(f"{node_dir(lab.lab.cfg, lab.lab.node(name))}/etc/hosts").write_text(text)
        for name, value in forward.items():
            lab.lab.exec_in(name, ["sh", "-c", f"echo {value} >/proc/sys/net/ipv4/ip_forward"], check=False)
        for name in touched:
            _remove_users(lab, name)


def _inventory(lab, path: Path, user: str, only: str | None = None) -> str:
    doc = yaml.safe_load(Path(lab.inventory_path).read_text())
    doc["defaults"].update({"user": user, "become": True})
    if only is not None:
        doc["nodes"] = {only: doc["nodes"][only]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def servers(lab, tmp_path_factory):
    d = tmp_path_factory.mktemp("servers")
    with _servers(lab):
        environ = {**os.environ, "FLEET_STATE_DIR": str(d / "state"), "FLEET_LEASE_TTL": "5",
                   "FLEET_INVENTORY": _inventory(lab, d / "sudo.yaml", SUDO_USER)}
        nopw = _inventory(lab, d / "nopw.yaml", NOPW_USER, only="n3")
        for v in ("v1", "v2"):
            # Pushed as the sudo user: the image travels on sudo's stdin.
            out = run_fleet("image", "push", build_demo(v, str(d / f"demo-{v}.tar")).path, env=environ, timeout=180)
            assert out.returncode == 0, out.stdout + out.stderr
        yield {"env": environ, "dir": d, "nopw": nopw}


def fleet(servers, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=servers["env"], timeout=timeout)


def test_the_sudo_user_checks_every_node_clean_and_root_may_not_log_in(lab, servers):
    out = fleet(servers, "node", "check", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["node"]: c for c in json.loads(out.stdout)}
    assert list(checks) == ["n1", "n2", "n3", "lb1"] and all(c["ok"] for c in checks.values())
    items = {name: {i["name"]: i for i in c["items"]} for name, c in checks.items()}
    for name in checks:
        assert items[name]["sudo"]["ok"] and items[name]["sudo"]["detail"].startswith("passwordless `sudo -n` to root")
    assert items["n1"]["containerd"]["detail"].startswith("1.6.") and items["n1"]["cni plugins"]["ok"]
    assert items["n1"]["containerd running"]["ok"] and "haproxy" not in items["n1"]
    # The lab names n1 its record node (etcd there); lb1 is an lb node only.
    assert checks["n1"]["roles"] == ["worker", "records"] and items["n1"]["etcd"]["detail"].startswith("3.4.")
    assert checks["lb1"]["roles"] == ["lb"] and "etcd" not in items["lb1"]
    assert items["lb1"]["haproxy"]["detail"].startswith("2.6.")
    assert items["n2"]["tmpfs run"]["detail"] == "/run/fleet on tmpfs"
    text = fleet(servers, "node", "check", "lb1")
    assert text.returncode == 0 and "lb1 (lb; debian 12): ok" in text.stdout, text.stdout
    assert "✓ haproxy             2.6." in text.stdout
    root = run_fleet("node", "check", "n1", "-i", lab.inventory_path, env=servers["env"])
    assert root.returncode == 1 and "n1 (worker, records): not checked" in root.stdout
    assert "authentication failed" in root.stdout, root.stdout


def test_prepare_on_ready_nodes_has_nothing_to_do(servers):
    out = fleet(servers, "node", "prepare", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "plan:" and lines[1:5] == [f"  {n}: nothing to do" for n in ("n1", "n2", "n3", "lb1")]
    assert lines[5:] == [f"{n}: nothing to do (ready)" for n in ("n1", "n2", "n3", "lb1")]


def _playbook(servers, name: str, port: int, version: str) -> str:
    return demo_playbook(Path(servers["dir"]), name, port, version, placement="{spread_by: zone}")


def test_the_sudo_user_deploys_and_rolls_under_load_with_no_failed_request(lab, servers):
    name, port = "sv-roll", 19591
    try:
        replicas = roll_under_load(lambda *a: fleet(servers, *a), lab.inventory.node("lb1").address, port, name,
                                   _playbook(servers, name, port, "v1"), _playbook(servers, name, port, "v2"))
        assert len(replicas) == 2
        # Run as root through sudo: the containers are in root's containerd, in fleet's namespace.
        node = replicas[0]["node"]
        tasks = [line.split()[0] for line in lab.lab.exec_in(node, ["ctr", "-n", "fleet", "tasks", "ls"]).stdout
                 .splitlines()[1:] if line.startswith(name)]
        assert tasks, f"no task of {name} on {node}"
        # A stream (exec) through sudo too: its output comes back and so does the command's exit status.
        execd = fleet(servers, "exec", f"{node}/{tasks[0]}", "--", "sh", "-c", "echo through-sudo; exit 3")
        assert execd.returncode == 3 and "through-sudo" in execd.stdout, execd.stdout + execd.stderr
    finally:
        fleet(servers, "destroy", name)


def _state(lab, name: str) -> tuple[list[tuple[str, int]], str]:
    """What a node holds that a fleet command would change: its fleet files (names, sizes) and its containers."""
    base = f"{node_dir(lab.lab.cfg, lab.lab.node(name))}/state"
    files = sorted((os.path.relpath(os.path.join(root, f), base), os.path.getsize(os.path.join(root, f)))
                   for root, _, fs in os.walk(base) for f in fs)
    return files, lab.lab.exec_in(name, ["ctr", "-n", "fleet", "containers", "ls", "-q"]).stdout


def test_a_user_without_passwordless_sudo_gets_node_and_sudoers_line_and_nothing_changes(lab, servers):
    before = _state(lab, "n3")
    line = f"`{NOPW_USER} ALL=(root) NOPASSWD: ALL`"
    check = run_fleet("node", "check", "-i", servers["nopw"], env=servers["env"])
    assert check.returncode == 1
    assert f"n3 (worker, records): not checked: {NOPW_USER}@" in check.stdout, check.stdout
    assert line in check.stdout and "sudo: a password is required" in check.stdout
    apply = run_fleet("apply", _playbook(servers, "sv-nopw", 19592, "v1"), "-i", servers["nopw"],
                      env=servers["env"], timeout=120)
    assert apply.returncode != 0, apply.stdout
    assert "n3" in apply.stdout + apply.stderr and line in apply.stdout + apply.stderr, apply.stdout + apply.stderr
    prepare = run_fleet("node", "prepare", "--yes", "-i", servers["nopw"], env=servers["env"])
    assert prepare.returncode == 1 and line in prepare.stdout, prepare.stdout
    assert _state(lab, "n3") == before


# What n3 gets of its own for the offline prepare, over this machine's directories in n3's mount namespace only:
# dpkg's and apt's state and logs, and /usr/sbin (policy-rc.d), as overlays whose changes stay in the test's
# directory; /usr/lib/cni is an empty directory of the test's (the CNI plugins hidden).
PRIVATE = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt", "/var/log", "/usr/sbin")
CNI_PACKAGE = "containernetworking-plugins"


def _host_dpkg() -> str:
    return subprocess.run(["sha256sum", "/var/lib/dpkg/status"], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def _stat(path: str) -> tuple[int, int, int] | None:
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size, st.st_mode
    return None


def _fake_cni_deb(d: Path) -> Path:
    """A trivial package built here: the CNI plugins fleet checks for, each a script that exits 0."""
    root = d / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {CNI_PACKAGE}\nVersion: 9.9.9-fleettest\nArchitecture: all\n"
        "Maintainer: fleet tests <tests@example.invalid>\nDescription: stand-in CNI plugins (fleet's lab test)\n")
    (root / "usr/lib/cni").mkdir(parents=True)
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        (root / "usr/lib/cni" / plugin).write_text("#!/bin/sh\nexit 0\n")
        (root / "usr/lib/cni" / plugin).chmod(0o755)
    debs = d / "debs"
    debs.mkdir()
    out = debs / f"{CNI_PACKAGE}_9.9.9-fleettest_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
                   capture_output=True, check=True)
    return debs


@contextlib.contextmanager
def _n3_without_cni(lab, d: Path) -> Iterator[None]:
    """n3 with its CNI plugins hidden and dpkg/apt state of its own, the installed CNI package unknown to that
    state (so installing the test's package there is a fresh install that touches no file of this machine);
    everything unmounted in `finally`, after the test's package is removed again."""
    mounted: list[str] = []
    try:
        (d / "cni").mkdir()
        lab.lab.exec_in("n3", ["mount", "--bind", str(d / "cni"), "/usr/lib/cni"])
        mounted.append("/usr/lib/cni")
        for i, path in enumerate(PRIVATE):
            up, work = d / f"up{i}", d / f"work{i}"
            up.mkdir()
            work.mkdir()
            lab.lab.exec_in("n3", ["mount", "-t", "overlay", "overlay", "-o",
                                   f"lowerdir={path},upperdir={up},workdir={work}", path])
            mounted.append(path)
        lab.lab.exec_in("n3", ["sh", "-c", f"""set -e
awk -v RS= -v ORS='\\n\\n' '!/^Package: {CNI_PACKAGE}\\n/' /var/lib/dpkg/status >/var/lib/dpkg/status.fleettest
mv /var/lib/dpkg/status.fleettest /var/lib/dpkg/status
rm -f /var/lib/dpkg/info/{CNI_PACKAGE}.*"""])
        yield
    finally:
        lab.lab.exec_in("n3", ["dpkg", "-r", CNI_PACKAGE], check=False)
        for path in reversed(mounted):
            lab.lab.exec_in("n3", ["umount", path], check=False)


def test_a_node_lacking_cni_plugins_is_left_out_of_the_plan_and_prepare_offline_installs_them(lab, servers):
    d = Path(servers["dir"]) / f"offline-{time.monotonic_ns()}"
    d.mkdir()
    debs = _fake_cni_deb(d)
    host_status = _host_dpkg()
    policy = _stat("/usr/sbin/policy-rc.d")  # this machine has one of its own (its image's): left as it is
    name = "sv-needs"  # planned only: nothing is started
    with _n3_without_cni(lab, d):
        assert not os.listdir(d / "cni")
        check = fleet(servers, "node", "check", "n3", "--json")
        assert check.returncode == 1 and json.loads(check.stdout)[0]["missing"] == ["cni plugins"], check.stdout
        book = _playbook(servers, name, 19593, "v1")
        Path(book).write_text(Path(book).read_text().replace("replicas: 2", "replicas: 3"))
        # The plan (read-only, as apply makes it): three replicas on n1 and n2, n3 named with prepare.
        out = fleet(servers, "plan", book, "--json")
        assert out.returncode == 3, out.stdout + out.stderr  # changes pending
        doc = json.loads(out.stdout)
        lacks = f"lacks CNI plugins (fleet node prepare n3 installs them): no replica of {name} starts there"
        assert doc["lacking"] == {"n3": lacks}, doc
        starts = next(s for s in doc["services"] if s["service"] == name)["start"]
        assert len(starts) == 3 and {x["node"] for x in starts} == {"n1", "n2"}, starts
        # Offline: the controller sends the test's package (through sudo) and n3 installs it with no mirror.
        prep = fleet(servers, "node", "prepare", "n3", "--offline", str(debs), "--yes")
        assert prep.returncode == 0, prep.stdout + prep.stderr
        assert (f"  n3: install {CNI_PACKAGE} from 1 .deb file(s) sent by this controller"
                in prep.stdout.splitlines()), prep.stdout
        assert f"n3: installed {CNI_PACKAGE}; ready" in prep.stdout.splitlines(), prep.stdout
        assert sorted(os.listdir(d / "cni")) == ["bridge", "host-local", "loopback", "portmap"]
        there = lab.lab.exec_in("n3", ["dpkg-query", "-W", "-f", "${Version}", CNI_PACKAGE]).stdout
        assert there == "9.9.9-fleettest"
        assert lab.lab.exec_in("n3", ["ls", "-A", "/var/lib/fleet/packages"], check=False).returncode != 0
        assert fleet(servers, "node", "check", "n3").returncode == 0
    assert not os.listdir(d / "cni"), "dpkg -r removed the test's package on n3"
    # This machine's dpkg state and files are as they were.
    assert _host_dpkg() == host_status and _stat("/usr/sbin/policy-rc.d") == policy
    assert os.access("/usr/lib/cni/bridge", os.X_OK) and os.path.getsize("/usr/lib/cni/bridge") > 1000
    host = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", CNI_PACKAGE], capture_output=True, text=True)
    assert host.stdout != "9.9.9-fleettest"


def test_the_sudo_user_mounts_a_network_volume_as_root_on_the_worker(lab, servers):
    """sshfs with become: the mount script runs through sudo, so sshfs is root's on the worker (its key on the
    worker's tmpfs is root's), and the storage node is reached as the confined storage user."""
    inv = Path(servers["dir"]) / "storage.yaml"
    doc = yaml.safe_load(Path(servers["env"]["FLEET_INVENTORY"]).read_text())
    doc["nodes"]["lb1"]["roles"] = [*doc["nodes"]["lb1"]["roles"], "storage"]
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**servers["env"], "FLEET_INVENTORY": str(inv)}
    name = "sv-sshfs"
    book = Path(servers["dir"]) / f"{name}.yaml"
    book.write_text(f"""services:
  {name}:
    image: fleet.local/demo:v1
    replicas: 1
    resources: {{cpu: 0.05, memory: 32MiB}}
    stop_grace_period: 1s
    volumes:
      - {{type: sshfs, source: data, target: /data}}
""")
    try:
        out = run_fleet("apply", str(book), env=env, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        # The storage node was asked for keys of nodes that left the inventory, through sudo too.
        assert "not checked for keys" not in out.stdout + out.stderr, out.stdout + out.stderr
        doc = json.loads(run_fleet("status", "--json", env=env).stdout)
        (replica,) = next(s for s in doc["services"] if s["service"] == name)["replicas"]
        node = replica["node"]
        tasks = [line.split()[0] for line in lab.lab.exec_in(node, ["ctr", "-n", "fleet", "tasks", "ls"]).stdout
                 .splitlines()[1:] if line.startswith(name)]
        wrote = run_fleet("exec", f"{node}/{tasks[0]}", "--", "sh", "-c", "echo through-sudo >/data/hello",
                          env=env)
        assert wrote.returncode == 0, wrote.stdout + wrote.stderr
        mounts = lab.lab.exec_in(node, ["sh", "-c", "grep ' fuse.sshfs ' /proc/mounts"]).stdout
        assert f"{SFTP_USER}@" in mounts and "user_id=0" in mounts, mounts
        export = Path(node_dir(lab.lab.cfg, lab.lab.node("lb1"))) / "state/storage" / name / "data"
        assert (export / "hello").read_text() == "through-sudo\n"
        owner = lab.lab.exec_in("lb1", ["stat", "-c", "%U", f"/var/lib/fleet/storage/{name}/data/hello"]).stdout
        assert owner.strip() == SFTP_USER
        # A worker that left the inventory (its key still authorized on the storage node) loses it at the next
        # apply; the keys of the inventory's workers stay.
        keys = Path(node_dir(lab.lab.cfg, lab.lab.node("lb1"))) / f"{SFTP_USER}.authorized_keys"
        before = keys.read_text()
        assert f" {SFTP_USER}@{node}\n" in before
        keys.write_text(before + f"restrict ssh-ed25519 {'A' * 68} {SFTP_USER}@gone9\n")
        again = run_fleet("apply", str(book), env=env, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "lb1: storage key of gone9 revoked (gone9 is no longer in the inventory)" in again.stdout, again.stdout
        assert keys.read_text() == before
    finally:
        run_fleet("destroy", name, env=env)
        lab.lab.exec_in("lb1", ["rm", "-rf", f"/var/lib/fleet/storage/{name}"], check=False)
