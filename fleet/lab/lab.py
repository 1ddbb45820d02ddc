"""The local lab: real nodes on this machine, each a network namespace plus a private mount and UTS namespace
running its own sshd and containerd. Found again by name prefix, so `down` works after any crash."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, replace

from fleet.core.errors import LabError
from fleet.core.units import parse_memory
from fleet.lab import fresh, render
from fleet.lab.render import LabConfig, LabNode, node_dir
from fleet.lab.rootfs import ensure_rootfs

REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "containerd", "ctr", "runc", "ssh-keygen", "/usr/sbin/sshd")


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    roles: tuple[str, ...]
    netns: bool
    holder_pid: int | None
    sshd: bool
    containerd: bool
    run_tmpfs: bool = False
    memory_cgroup: bool = True
    # A fresh node has no containerd until `fleet node prepare` installs it: it is ready without one.
    fresh: bool = False

    @property
    def ready(self) -> bool:
        return (self.netns and self.holder_pid is not None and self.sshd and (self.containerd or self.fresh)
                and self.run_tmpfs and self.memory_cgroup)


def _run(argv: list[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _netns_list() -> set[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _fstype_at(pid: int | None, mountpoint: str) -> str | None:
    """The filesystem type mounted last at `mountpoint` in the mount namespace of `pid`, None if none is."""
    if not pid:
        return None
    found = None
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) >= 5 and fields[4] == mountpoint and right:
                    found = right.split()[0]
    except OSError:
        return None
    return found


def _port_open(address: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH")
    except OSError:
        return False


def _pids_in_netns(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _task_ids(cfg: LabConfig, node_name: str) -> list[tuple[str, str]]:
    """(containerd namespace, container id) of every task bundle a node's containerd left on disk (a fresh node's
    /run is its own tmpfs: read while it runs)."""
    run = f"{cfg.dir}/nodes/{node_name}/run"
    if cfg.fresh:
        run = fresh.in_node(_read_pid(f"{cfg.dir}/nodes/{node_name}/holder.pid"), "/run")
    base = f"{run}/containerd/io.containerd.runtime.v2.task"
    out = []
    if os.path.isdir(base):
        for ns in os.listdir(base):
            if os.path.isdir(f"{base}/{ns}"):
                out += [(ns, cid) for cid in os.listdir(f"{base}/{ns}")]
    return out


def _cgroup_dirs(ns: str, cid: str) -> list[str]:
    root = "/sys/fs/cgroup"
    if os.path.exists(f"{root}/cgroup.controllers"):
        return [f"{root}/{ns}/{cid}"]
    try:
        hierarchies = os.listdir(root)
    except OSError:
        return []
    return [f"{root}/{h}/{ns}/{cid}" for h in hierarchies if os.path.isdir(f"{root}/{h}/{ns}/{cid}")]


def _cgroup_pids(ns: str, cid: str) -> list[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(ns, cid):
        try:
            with open(f"{d}/cgroup.procs") as fh:
                pids |= {int(p) for p in fh.read().split()}
        except OSError:
            continue
    return sorted(pids)


def _memory_cgroups() -> bool:
    """Lab nodes get their own memory cgroup where this machine runs cgroup v1 with a memory hierarchy (FACTS §0);
    elsewhere (cgroup v2, not verified here) they run without one, and read the machine's memory as their own."""
    return (os.path.isfile(f"{render.MEMORY_HIERARCHY}/memory.limit_in_bytes")
            and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"))


def _memory_cgroup_of(pid: int | None) -> str | None:
    """The memory cgroup of `pid` as this process sees it (/proc/<pid>/cgroup, v1), None when unknown."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    return path
    except (OSError, ValueError):
        return None
    return None


def _remove_cgroup(path: str) -> None:
    """Kill every process in a cgroup and its descendants, then remove them, deepest first (a crashed run's
    leftover included). A directory that is not there is not an error."""
    if not os.path.isdir(path):
        return
    dirs = [root for root, _, _ in os.walk(path, topdown=False)]
    pids: set[int] = set()
    for d in dirs:
        try:
            with open(f"{d}/cgroup.procs") as fh:
                pids |= {int(p) for p in fh.read().split()}
        except OSError:
            continue
    pids.discard(os.getpid())
    _kill_and_wait(sorted(pids))
    for d in dirs:
        # A killed process leaves its cgroup a moment after it is reaped: retry briefly.
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(f"cannot remove cgroup {d}") from None
                time.sleep(0.02)


def _kill_and_wait(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _remove_node(cfg: LabConfig, node: LabNode, namespaces: set[str] | None = None) -> None:
    """Kill every process of the node (its netns and its containers' cgroups), then its links and netns.

    A function of the lab's config, not a method: `down` uses it for nodes the record no longer lists."""
    ns = node.netns(cfg.prefix)
    present = ns in (_netns_list() if namespaces is None else namespaces)
    tasks = _task_ids(cfg, node.name)
    pids = set(_pids_in_netns(ns)) if present else set()
    holder = _read_pid(f"{node_dir(cfg, node)}/holder.pid")
    if holder and _alive(holder) and os.path.exists(f"/run/netns/{ns}"):
        try:
            if os.stat(f"/proc/{holder}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino:
                pids.add(holder)
        except OSError:
            pass
    for tns, cid in tasks:
        pids |= set(_cgroup_pids(tns, cid))
    pids.discard(os.getpid())
    _kill_and_wait(sorted(pids))
    for tns, cid in tasks:
        for d in _cgroup_dirs(tns, cid):
            with contextlib.suppress(OSError):
                os.rmdir(d)
    _remove_cgroup(render.node_cgroup(cfg, node))
    if _link_exists(node.veth(cfg.prefix)):
        _run(["ip", "link", "del", node.veth(cfg.prefix)], check=False)
    if present:
        _run(["ip", "netns", "del", ns], check=False)


def _recorded_fresh(cfg: LabConfig) -> bool:
    with contextlib.suppress(OSError, ValueError), open(f"{cfg.dir}/lab.json") as fh:
        return bool(json.load(fh).get("fresh"))
    return False


def _sshd_pid(cfg: LabConfig, node: LabNode) -> int | None:
    """The node's sshd PID from its PID file (a fresh node's is on its own /run)."""
    d = node_dir(cfg, node)
    return _read_pid(fresh.in_node(_read_pid(f"{d}/holder.pid"), "/run/sshd.pid") if cfg.fresh else f"{d}/sshd.pid")


def _node_files(cfg: LabConfig, node: LabNode, rootfs: str | None) -> str | None:
    """A node's directory made ready for its init (its own /etc or, fresh, its overlay's seed; its host key,
    config files and memory cgroup, no stale PID file); returns the cgroup (None without memory cgroups)."""
    d = node_dir(cfg, node)
    for sub in ("ssh",) if rootfs else ("run/sshd", "containerd", "root/.ssh", "state", "ssh"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    if not rootfs:
        os.chmod(f"{d}/root", 0o700)
        # The node's own /etc, a copy of this machine's taken when the node is made and bind-mounted over /etc
        # in its mount namespace: a user, a sudoers entry or an sshd drop-in made on a node (by fleet or by a
        # test) stays on that node and goes with the lab, and no file the host shares is ever written.
        shutil.rmtree(f"{d}/etc", ignore_errors=True)
        _run(["cp", "-a", "/etc", f"{d}/etc"])
    hostkey = f"{d}/ssh/ssh_host_ed25519_key"
    if not os.path.exists(hostkey):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.name, "-f", hostkey])
    if rootfs:
        fresh.seed(cfg, node, rootfs)
    cgroup = render.node_cgroup(cfg, node) if _memory_cgroups() else None
    if cgroup is not None:
        _remove_cgroup(cgroup)  # a crashed run's leftover
        os.makedirs(cgroup)
        if node.memory is not None:
            with open(f"{cgroup}/memory.limit_in_bytes", "w") as fh:
                fh.write(str(parse_memory(node.memory)))
    files = {"init.sh": render.fresh_init_script(cfg, node, rootfs, cgroup is not None)} if rootfs else {
        "sshd_config": render.sshd_config(cfg, node), "containerd.toml": render.containerd_config(cfg),
        "init.sh": render.init_script(cfg, node, memory_cgroup=cgroup is not None)}
    for name, text in files.items():
        with open(f"{d}/{name}", "w") as fh:
            fh.write(text)
    for stale in ("sshd.pid", "containerd.pid", "holder.pid"):
        if os.path.exists(f"{d}/{stale}"):
            os.unlink(f"{d}/{stale}")
    return cgroup


class Lab:
    """Builds, inspects and removes one lab, named by its prefix."""

    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = replace(cfg, fresh=True) if _recorded_fresh(cfg) else cfg  # a fresh lab stays one
        # The seconds this `up` spent building the fresh nodes' root filesystem (0: it was cached).
        self.rootfs_seconds = 0.0

    # --- paths -------------------------------------------------------------------------------------------
    @property
    def inventory_path(self) -> str:
        return f"{self.cfg.dir}/inventory.yaml"

    @property
    def record_path(self) -> str:
        return f"{self.cfg.dir}/lab.json"

    # --- status ------------------------------------------------------------------------------------------
    def node_status(self, node: LabNode, namespaces: set[str] | None = None) -> NodeStatus:
        namespaces = _netns_list() if namespaces is None else namespaces
        d = node_dir(self.cfg, node)
        holder = _read_pid(f"{d}/holder.pid")
        own = fresh.in_node(holder, "") if self.cfg.fresh else d
        return NodeStatus(
            name=node.name,
            address=node.address,
            roles=node.roles,
            netns=node.netns(self.cfg.prefix) in namespaces,
            holder_pid=holder if _alive(holder) else None,
            sshd=_alive(_sshd_pid(self.cfg, node)) and _port_open(node.address, 22),
            containerd=((self.cfg.fresh or _alive(_read_pid(f"{d}/containerd.pid")))
                        and os.path.exists(f"{own}/run/containerd/containerd.sock")),
            run_tmpfs=_alive(holder) and _fstype_at(holder, "/run" if self.cfg.fresh else render.NODE_RUN_TMPFS)
            == "tmpfs",
            fresh=self.cfg.fresh,
            memory_cgroup=not _memory_cgroups() or (
                _alive(holder) and _memory_cgroup_of(holder) == render.node_cgroup(self.cfg, node).removeprefix(
                    render.MEMORY_HIERARCHY)),
        )

    def status(self) -> list[NodeStatus]:
        namespaces = _netns_list()
        return [self.node_status(n, namespaces) for n in self.recorded_layout()]

    def recorded_layout(self) -> list[LabNode]:
        """The nodes the running lab was built with (its record), else the configured layout."""
        try:
            with open(self.record_path) as fh:
                rec = json.load(fh)
            return [LabNode(n["name"], n["address"], tuple(n["roles"]), n["zone"], n["cpu"], n["memory"])
                    for n in rec["nodes"]]
        except (OSError, ValueError, KeyError):
            return self.cfg.layout()

    # --- up ----------------------------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> list[NodeStatus]:
        """Build the lab, or repair it: nodes that are already whole are left as they are."""
        self._preflight()
        existed = os.path.exists(self.record_path)
        try:
            return self._up(timeout)
        except BaseException:
            if not existed:
                self.down()
            raise

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network and mount namespaces)")
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")

    def _up(self, timeout: float) -> list[NodeStatus]:
        cfg = self.cfg
        os.makedirs(cfg.dir, exist_ok=True)
        for mountpoint in ("/var/lib/containerd", render.NODE_STATE_DIR):
            os.makedirs(mountpoint, exist_ok=True)
        key = f"{cfg.dir}/id_ed25519"
        if not os.path.exists(key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fleet-lab-{cfg.prefix}", "-f", key])
        shutil.copyfile(f"{key}.pub", f"{cfg.dir}/authorized_keys")
        self._bridge()
        rootfs, self.rootfs_seconds = ensure_rootfs() if cfg.fresh else (None, 0.0)
        layout = cfg.layout()
        self._write_record(layout)
        namespaces = _netns_list()
        started = []
        for node in layout:
            if self.node_status(node, namespaces).ready:
                continue
            _remove_node(self.cfg, node)
            self._create_node(node, rootfs)
            started.append(node)
        deadline = time.monotonic() + timeout
        pending = list(started)
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = [n for n in pending if not self.node_status(n).ready]
        if pending:
            details = "; ".join(self._why_not_ready(n) for n in pending)
            raise LabError(f"nodes not ready after {timeout:.0f}s: {details}")
        self._write_known_hosts(layout)
        with open(self.inventory_path, "w") as fh:
            fh.write(render.inventory_yaml(cfg))
        return self.status()

    def _why_not_ready(self, node: LabNode) -> str:
        st = self.node_status(node)
        d = node_dir(self.cfg, node)
        parts = [f"{node.name}: netns={st.netns} holder={st.holder_pid} sshd={st.sshd} containerd={st.containerd} "
                 f"run_tmpfs={st.run_tmpfs}"]
        for log in ("init.log", "sshd.log", "containerd.log", "upper/var/log/sshd.log"):
            try:
                with open(f"{d}/{log}") as fh:
                    tail = fh.read()[-300:].strip()
                if tail:
                    parts.append(f"{log}: {tail}")
            except OSError:
                pass
        return " ".join(parts)

    def _bridge(self) -> None:
        cfg = self.cfg
        if not _link_exists(cfg.bridge):
            _run(["ip", "link", "add", "name", cfg.bridge, "type", "bridge"])
        addrs = _run(["ip", "-o", "-4", "addr", "show", "dev", cfg.bridge]).stdout
        if f" {cfg.gateway}/" not in addrs:
            _run(["ip", "addr", "add", f"{cfg.gateway}/{cfg.prefixlen}", "dev", cfg.bridge])
        _run(["ip", "link", "set", cfg.bridge, "up"])

    def _create_node(self, node: LabNode, rootfs: str | None = None) -> None:
        cfg = self.cfg
        ns, veth, d = node.netns(cfg.prefix), node.veth(cfg.prefix), node_dir(cfg, node)
        cgroup = _node_files(cfg, node, rootfs)
        _run(["ip", "netns", "add", ns])
        # A MAC derived from the address keeps the host's neighbour cache right when a node is rebuilt;
        # with a fresh random MAC the host sends to the old one until its entry goes stale (many seconds).
        mac = "02:fe:" + ":".join(f"{int(b):02x}" for b in node.address.split("."))
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", ns])
        _run(["ip", "neigh", "flush", "to", node.address, "dev", cfg.bridge], check=False)
        _run(["ip", "link", "set", veth, "master", cfg.bridge, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{node.address}/{cfg.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "route", "add", "default", "via", cfg.gateway])
        with open(f"{d}/init.log", "ab") as log:
            # setsid -f detaches the node from this process; init.sh records its own PID (the holder's:
            # nsenter and unshare exec in place, and the script ends by exec'ing its holding sleep). With a memory
            # cgroup, the node joins it first and then gets its own cgroup namespace, rooted there.
            enter = ["sh", "-c", 'echo $$ >"$0" && exec "$@"', f"{cgroup}/cgroup.procs"] if cgroup else []
            subprocess.run(
                ["setsid", "-f", *enter, "nsenter", f"--net=/run/netns/{ns}", "unshare", "--mount", "--uts",
                 *(["--cgroup"] if cgroup else []), "--propagation", "private", "sh", f"{d}/init.sh"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True, check=True,
            )

    def _write_known_hosts(self, layout: list[LabNode]) -> None:
        lines = []
        for node in layout:
            with open(f"{node_dir(self.cfg, node)}/ssh/ssh_host_ed25519_key.pub") as fh:
                keytype, key = fh.read().split()[:2]
            lines.append(f"{node.address} {keytype} {key}\n")
        with open(f"{self.cfg.dir}/known_hosts", "w") as fh:
            fh.writelines(lines)

    def _write_record(self, layout: list[LabNode]) -> None:
        rec = {"prefix": self.cfg.prefix, "subnet": self.cfg.subnet, "bridge": self.cfg.bridge,
               "fresh": self.cfg.fresh, "nodes": [asdict(n) for n in layout]}
        with open(self.record_path, "w") as fh:
            json.dump(rec, fh, indent=1)

    # --- down --------------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything this lab made, found by its prefix even when its record is lost; returns what went."""
        cfg = self.cfg
        removed = []
        known = {n.name: n for n in [*self.cfg.layout(), *self.recorded_layout()]}
        namespaces = _netns_list()
        for ns in sorted(namespaces):
            if ns.startswith(f"{cfg.prefix}-"):
                name = ns[len(cfg.prefix) + 1:]
                known.setdefault(name, LabNode(name, "", (), "", None, None))
        cgroups = f"{render.MEMORY_HIERARCHY}/{render.CGROUP_ROOT}/{cfg.prefix}"
        with contextlib.suppress(OSError):
            for name in os.listdir(cgroups):
                if os.path.isdir(f"{cgroups}/{name}"):
                    known.setdefault(name, LabNode(name, "", (), "", None, None))
        for node in known.values():
            ns = node.netns(cfg.prefix)
            had = ns in namespaces or _link_exists(node.veth(cfg.prefix)) or _task_ids(cfg, node.name)
            _remove_node(cfg, node, namespaces)
            if had:
                removed.append(node.name)
        if _link_exists(cfg.bridge):
            _run(["ip", "link", "del", cfg.bridge], check=False)
            removed.append(cfg.bridge)
        # Other labs may still use the shared parent: it goes only once empty.
        for d in (cgroups, os.path.dirname(cgroups)):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if os.path.isdir(cfg.dir) and os.path.realpath(cfg.dir).startswith(os.path.realpath(cfg.root) + "/"):
            shutil.rmtree(cfg.dir, ignore_errors=True)
        return removed

    # --- reaching into a node (tests and repairs) ----------------------------------------------------------
    def node(self, name: str) -> LabNode:
        for n in self.recorded_layout():
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in lab {self.cfg.prefix!r}")

    def exec_in(self, name: str, argv: list[str], *, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside a node's namespaces from the host, without SSH."""
        node = self.node(name)
        holder = _read_pid(f"{node_dir(self.cfg, node)}/holder.pid")
        if not _alive(holder):
            raise LabError(f"node {name} has no holder process; run `fleet lab up` to repair it")
        # Inside the node's memory cgroup and cgroup namespace too, when it has them: what runs here (sshd started
        # again, a test's ctr) counts on this node, as it would over SSH.
        cgroup = render.node_cgroup(self.cfg, node)
        enter = ["sh", "-c", 'echo $$ >"$0" && exec "$@"', f"{cgroup}/cgroup.procs"] if os.path.isdir(cgroup) else []
        return _run([*enter, "nsenter", "-t", str(holder), "-n", "-m", "-u", *(["-C"] if enter else []), "--", *argv],
                    check=check, input=input)

    def stop_sshd(self, name: str) -> None:
        """Stop a node's sshd (by its recorded PID), leaving containerd and containers running."""
        pid = _sshd_pid(self.cfg, self.node(name))
        if pid and _alive(pid):
            _kill_and_wait([pid])

    def start_sshd(self, name: str) -> None:
        d = node_dir(self.cfg, self.node(name))
        self.exec_in(name, ["/usr/sbin/sshd", "-E", "/var/log/sshd.log"] if self.cfg.fresh
                     else ["/usr/sbin/sshd", "-f", f"{d}/sshd_config", "-E", f"{d}/sshd.log"])
        deadline = time.monotonic() + 10
        while not _port_open(self.node(name).address, 22) and time.monotonic() < deadline:
            time.sleep(0.05)

    def power_off(self, name: str, comms: tuple[str, ...] = ("sshd", "haproxy", "keepalived")) -> list[int]:
        """A node that dies at once: SIGKILL its processes named `comms` together and take its link down (a dead
        machine answers nothing, not even ARP for an address it held). The holder and containerd stay, so the
        node can come back with `power_on`. Returns the PIDs killed."""
        ns = self.node(name).netns(self.cfg.prefix)
        pids = []
        for pid in _pids_in_netns(ns):
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() in comms:
                        pids.append(pid)
            except OSError:
                continue
        # The link first: a moment with the processes dead and the link up would answer connects with resets.
        _run(["ip", "-n", ns, "link", "set", "eth0", "down"])
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _kill_and_wait(pids)
        return pids

    def power_on(self, name: str) -> None:
        """The node after a reboot: only its own address on eth0 (addresses added at run time, such as a virtual
        IP it held, are gone), link up, sshd started. fleet starts HAProxy and keepalived again on its next run."""
        node = self.node(name)
        ns = node.netns(self.cfg.prefix)
        _run(["ip", "-n", ns, "addr", "flush", "dev", "eth0"])
        _run(["ip", "-n", ns, "addr", "add", f"{node.address}/{self.cfg.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "route", "replace", "default", "via", self.cfg.gateway])
        self.start_sshd(name)
