"""Pure rendering of the lab's files: node layout, sshd and containerd configs, the node init script, the inventory."""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

import yaml

from fleet.core.errors import LabError
from fleet.lab.rootfs import SUDO_USER
from fleet.node.paths import DEFAULT as NODE_PATHS

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
SIZE_RE = re.compile(r"^[1-9][0-9]{0,5}[kmg]?$")
ZONES = ("a", "b", "c")
# Containers run with --net-host, so every process of a node lives in the node's network namespace,
# and fleet's own files on a node live under this one directory, bind-mounted privately per node.
NODE_STATE_DIR = NODE_PATHS.base
# What a Debian node has on its /run: a tmpfs, where fleet keeps secret env files. A lab node's /run is a
# directory on this machine's disk, so each node gets its own tmpfs here, mounted in its mount namespace only.
NODE_RUN_TMPFS = NODE_PATHS.run


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str
    roles: tuple[str, ...]
    zone: str
    cpu: float | None
    memory: str | None

    def netns(self, prefix: str) -> str:
        return f"{prefix}-{self.name}"

    def veth(self, prefix: str) -> str:
        # Interface names are limited to 15 bytes.
        return f"{prefix}-{self.name}"[:15]


@dataclass(frozen=True)
class LabConfig:
    """What a lab is: a name prefix, a subnet, how many worker and lb nodes, where its files live."""

    prefix: str = "fl"
    subnet: str = "10.231.0.0/24"
    nodes: int = 3
    lb: int = 1
    root: str = "/var/lib/fleet-lab"
    restart_interval: str = "2s"
    run_tmpfs_size: str = "16m"
    # Fresh nodes: each its own copy of a minimal Debian root filesystem (fleet.lab.rootfs) with only sshd and a
    # sudo user; nothing of fleet's (no containerd, runc, HAProxy, etcd) until `fleet node prepare` installs it.
    fresh: bool = False

    def __post_init__(self) -> None:
        if not PREFIX_RE.match(self.prefix):
            raise LabError(f"lab prefix {self.prefix!r}: 1-6 lowercase letters and digits, starting with a letter")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise LabError(f"lab subnet {self.subnet!r}: {exc}") from None
        if self.nodes < 1 or self.lb < 0:
            raise LabError("a lab needs at least 1 worker node and 0 or more lb nodes")
        if self.nodes + self.lb + 10 > net.num_addresses - 2:
            raise LabError(f"subnet {self.subnet} is too small for {self.nodes + self.lb} nodes")
        if not SIZE_RE.match(self.run_tmpfs_size):
            raise LabError(f"run tmpfs size {self.run_tmpfs_size!r}: a number with an optional k, m or g")

    @property
    def dir(self) -> str:
        return f"{self.root}/{self.prefix}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.subnet).network_address + 1)

    @property
    def virtual_ip(self) -> str:
        """The lb nodes' shared address when there are two or more of them."""
        return str(ipaddress.IPv4Network(self.subnet).network_address + 10)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def layout(self) -> list[LabNode]:
        """Workers n1..nN (zones a, b, c in turn; sizes vary so bin packing has something to do), then lb1..lbM."""
        base = ipaddress.IPv4Network(self.subnet).network_address
        out = []
        for i in range(self.nodes):
            big = i % 3 == 0
            out.append(LabNode(f"n{i + 1}", str(base + 11 + i), ("worker",), ZONES[i % len(ZONES)],
                               2.0 if big else 1.0, "2GiB" if big else "1GiB"))
        for j in range(self.lb):
            out.append(LabNode(f"lb{j + 1}", str(base + 11 + self.nodes + j), ("lb",), ZONES[j % len(ZONES)],
                               None, None))
        return out


def node_dir(cfg: LabConfig, node: LabNode) -> str:
    return f"{cfg.dir}/nodes/{node.name}"


def sshd_config(cfg: LabConfig, node: LabNode) -> str:
    d = node_dir(cfg, node)
    return "\n".join([
        f"ListenAddress {node.address}",
        "Port 22",
        f"HostKey {d}/ssh/ssh_host_ed25519_key",
        f"PidFile {d}/sshd.pid",
        f"AuthorizedKeysFile {cfg.dir}/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # authorized_keys may live under a world-writable parent in tests; the lab owns every file here.
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxStartups 256:30:512",
        "MaxSessions 128",
        "Subsystem sftp internal-sftp",
        # Where fleet writes a storage node's Match block for its storage user (fleet.node.storage_access): beside
        # this file, never in this machine's /etc/ssh, which every lab node shares.
        f"Include {d}/sshd_config.d/*.conf",
        "",
    ])


def containerd_config(cfg: LabConfig) -> str:
    # CRI is not needed by ctr and slows start; the restart monitor interval is shortened from 10s so
    # self-healing is quick in the lab (production nodes keep their own setting).
    return "\n".join([
        "version = 2",
        'root = "/var/lib/containerd"',
        'state = "/run/containerd"',
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        '  address = "/run/containerd/containerd.sock"',
        '[plugins."io.containerd.internal.v1.restart"]',
        f'  interval = "{cfg.restart_interval}"',
        "",
    ])


# Each lab node's memory cgroup (cgroup v1), under this directory of the memory hierarchy: the node is started
# inside it, in its own cgroup namespace, and mounts the memory hierarchy again, so the node sees its cgroup as
# the root (as a container- or VM-like node does) and its containers' cgroups land beneath it.
MEMORY_HIERARCHY = "/sys/fs/cgroup/memory"
CGROUP_ROOT = "fleet-lab"


def node_cgroup(cfg: LabConfig, node: LabNode) -> str:
    """The node's memory cgroup directory, as this machine sees it."""
    return f"{MEMORY_HIERARCHY}/{CGROUP_ROOT}/{cfg.prefix}/{node.name}"


def init_script(cfg: LabConfig, node: LabNode, memory_cgroup: bool = False) -> str:
    """Runs inside the node's fresh mount+UTS namespace: private mounts (its own copy of /etc first), a size-limited
    tmpfs on /run/fleet (gone with the namespace, so with the node), hostname, containerd, sshd, then holds. With
    `memory_cgroup` (the node was started in its own cgroup and cgroup namespace), the memory hierarchy is mounted
    again first, rooted at the node's cgroup."""
    d = shlex.quote(node_dir(cfg, node))
    run = shlex.quote(NODE_RUN_TMPFS)
    remount = (f"umount {MEMORY_HIERARCHY}\nmount -t cgroup -o memory cgroup {MEMORY_HIERARCHY}\n"
               if memory_cgroup else "")
    return f"""#!/bin/sh
set -eu
D={d}
echo $$ >"$D/holder.pid"
{remount}mount --bind "$D/etc" /etc
mount --bind "$D/run" /run
mkdir -p {run}
mount -t tmpfs -o size={cfg.run_tmpfs_size},mode=0755,nosuid,nodev,noexec fleet-run {run}
mount --bind "$D/containerd" /var/lib/containerd
mount --bind "$D/root" /root
mount --bind "$D/state" {NODE_STATE_DIR}
hostname {shlex.quote(node.name)}
ip link set lo up
containerd --config "$D/containerd.toml" --log-level warn >>"$D/containerd.log" 2>&1 &
echo $! >"$D/containerd.pid"
/usr/sbin/sshd -f "$D/sshd_config" -E "$D/sshd.log"
exec sleep infinity
"""


FRESH_RUN_SIZE = "64m"


def fresh_sshd_config(node: LabNode) -> str:
    """A fresh node's sshd drop-in (/etc/ssh/sshd_config.d/, read before the rest of Debian's own sshd_config, so
    its values win): its address, its own host key, keys only, and no root login (fleet logs in as the sudo user)."""
    return "\n".join([
        f"ListenAddress {node.address}",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PidFile /run/sshd.pid",
        "UseDNS no",
        "MaxStartups 256:30:512",
        "MaxSessions 128",
        "",
    ])


def fresh_init_script(cfg: LabConfig, node: LabNode, rootfs: str, memory_cgroup: bool = False) -> str:
    """Runs inside a fresh node's new mount+UTS namespace: its root becomes an overlay of the cached root
    filesystem (`rootfs`, read-only) and the node's own upper directory, with /proc, /sys (cgroups), /dev and a
    tmpfs /run as a booted machine has them; /var/lib/containerd is a directory of the node on this machine's disk
    (containerd's overlay snapshots cannot live on an overlay). Then pivot_root into it, its own sshd, and hold."""
    d = shlex.quote(node_dir(cfg, node))
    remount = (f"umount {MEMORY_HIERARCHY}\nmount -t cgroup -o memory cgroup {MEMORY_HIERARCHY}\n"
               if memory_cgroup else "")
    return f"""#!/bin/sh
set -eu
D={d}
R="$D/merged"
echo $$ >"$D/holder.pid"
{remount}mount -t overlay fleet-node -o lowerdir={shlex.quote(rootfs)},upperdir="$D/upper",workdir="$D/work" "$R"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount -t tmpfs -o mode=0755,nosuid,nodev,size={FRESH_RUN_SIZE} run "$R/run"
mkdir -p "$R/var/lib/containerd"
mount --bind "$D/containerd" "$R/var/lib/containerd"
hostname {shlex.quote(node.name)}
ip link set lo up
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
mkdir -p /run/sshd
/usr/sbin/sshd -E /var/log/sshd.log
exec sleep infinity
"""


# The lab's one record node (a single etcd member, as for a small fleet): the first worker, which no lab test
# powers off (they take down later workers and the lb nodes).
RECORD_NODE = "n1"


def inventory_yaml(cfg: LabConfig) -> str:
    nodes: dict[str, object] = {}
    for n in cfg.layout():
        roles = [*n.roles, "record"] if n.name == RECORD_NODE else list(n.roles)
        entry: dict[str, object] = {"address": n.address, "roles": roles, "labels": {"zone": n.zone}}
        if n.cpu is not None:
            entry["capacity"] = {"cpu": n.cpu, "memory": n.memory}
        nodes[n.name] = entry
    defaults: dict[str, object] = {"user": SUDO_USER, "become": True} if cfg.fresh else {"user": "root"}
    doc = {
        "defaults": {
            **defaults,
            "port": 22,
            "key": f"{cfg.dir}/id_ed25519",
            "known_hosts": f"{cfg.dir}/known_hosts",
            "namespace": "fleet",
            "reserved": {"cpu": 0.1, "memory": "64MiB"},
        },
        "nodes": nodes,
    }
    if cfg.lb >= 2:
        # Two or more lb nodes share one virtual IP (keepalived, VRRPv3): the service address survives the loss
        # of the lb node that holds it. base+10 is free: the gateway is base+1 and nodes start at base+11.
        doc["vrrp"] = {"virtual_ip": f"{cfg.virtual_ip}/{cfg.prefixlen}", "router_id": 51, "interface": "eth0"}
    header = f"# Written by `fleet lab up` for lab {cfg.prefix!r} ({cfg.subnet}); `fleet lab down` removes it.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)
