"""What a replica's container is, as a value: its run spec from the service spec and its placement, and what a
worker node needs before fleet's containers run there (hosts file, resolv.conf copy, pinned host netns)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from fleet.config.spec import SecretRef, ServiceSpec
from fleet.core import labels as L
from fleet.core.shell import Script
from fleet.node import cni
from fleet.node.logrotate import ROTATE_SH, rotate_env
from fleet.node.paths import DEFAULT, FILE_FUNCTIONS, SWEEP_SECRETS_SH
from fleet.node.runtime.base import Mount, RunSpec
from fleet.node.storage import CONTAINER_MOUNT_OPTIONS
from fleet.node.storage import mountpoint as sshfs_mountpoint
from fleet.plan.scheduler import Assignment

PATHS = DEFAULT
HOSTS_FILE = PATHS.hosts_file
RESOLV_FILE = PATHS.resolv_conf
HOST_NETNS = PATHS.host_netns
# Secret env files left by a controller that was killed are removed by the next run that holds the lease, once
# they are this old: the holder renews every ttl/3 (10 s), so a file of a live run is never that stale.
SECRET_SWEEP_AGE = 20

SWEEP_FILES_SH = r"""
# Under the fleet's lease, with the node's containers as this run observed them ($SWEEP=1): the secret files of
# containers that are gone, and config sets no container on the node uses any more.
if [ "${SWEEP:-}" = 1 ]; then
  for d in "$SF"/*; do
    [ -d "$d" ] || continue
    case " $KEEP " in *" ${d##*/} "*) ;; *) rm -rf "$d" ;; esac
  done
  for d in "$CF"/*/*; do
    [ -d "$d" ] || continue
    s=${d%/*}
    case " $KEEPC " in *" ${s##*/}/${d##*/} "*) ;; *) rm -rf "$d" ;; esac
  done
fi
"""

# Prepares a node for fleet's containers: the hosts file (stdin) and a copy of the node's resolv.conf, which
# running containers bind-mount (same inode), so they are updated in place with one write and never truncated
# (fleet.node.paths.update_in_place); and the node's own network namespace pinned to a file that containers
# join: host networking, with fleet's hosts file rather than the node's. The secrets sweep rides along: one
# round trip per worker.
PREPARE_NODE = FILE_FUNCTIONS + cni.CNI_FUNCTIONS + ROTATE_SH + r"""
set -e
mkdir -p "${HOSTS%/*}" "${NETNS%/*}"
fleet_update "$HOSTS" "$SIZE" || exit 1
if [ -r /etc/resolv.conf ]; then
  fleet_update "$RESOLV" </etc/resolv.conf || exit 1
else
  : | fleet_update "$RESOLV" || exit 1
fi
if [ "$(stat -f -c %T "$NETNS" 2>/dev/null)" != nsfs ]; then
  : >"$NETNS"
  mount --bind /proc/self/ns/net "$NETNS"
fi
""" + SWEEP_FILES_SH + r"""
# The network namespaces (and their CNI rules and addresses) of replicas that are gone (fleet.node.cni).
if [ "${SWEEP:-}" = 1 ]; then
""" + cni.SWEEP_BODY + r"""
fi
# Last, under the fleet's lease: secret env files this old were left by a run that was killed.
""" + SWEEP_SECRETS_SH


def prepare_node_script(hosts: str, containers: Iterable[tuple[str, str, str]] | None = None) -> Script:
    """PREPARE_NODE for this hosts file content (sent on stdin; its size guards against a cut-short send).

    `containers`: every container on the node as (id, service, spec hash), as observed under the lease; the
    secret files and config sets of any other are removed. None (the node was not read) removes none."""
    env = {"HOSTS": HOSTS_FILE, "RESOLV": RESOLV_FILE, "NETNS": HOST_NETNS, "SIZE": str(len(hosts.encode())),
           "D": PATHS.secrets_dir, "AGE": str(SECRET_SWEEP_AGE), **cni.cni_env(), **rotate_env(PATHS.logs_dir)}
    if containers is not None:
        env.update(_sweep_env(containers, PATHS.secret_mounts_dir, PATHS.configs_dir))
    return Script(PREPARE_NODE, env, name="fleet-prepare-node")


def _sweep_env(containers: Iterable[tuple[str, str, str]], secret_files: str, configs: str) -> dict[str, str]:
    seen = list(containers)
    return {"SWEEP": "1", "SF": secret_files, "CF": configs, "KEEP": " ".join(sorted({c for c, _, _ in seen})),
            "KEEPC": " ".join(sorted({f"{s}/{h}" for _, s, h in seen}))}


def sweep_files_script(containers: Iterable[tuple[str, str, str]], *, secret_files: str = PATHS.secret_mounts_dir,
                       configs: str = PATHS.configs_dir) -> Script:
    """SWEEP_FILES_SH alone (PREPARE_NODE runs it): keeps the secret files and config sets of `containers`."""
    return Script(SWEEP_FILES_SH, _sweep_env(containers, secret_files, configs), name="fleet-sweep-files")


def secret_env_path(service: str, replica: int, suffix: str) -> str:
    return PATHS.secret_file(f"{service}-{replica}-{suffix}.env")


def hosts_text(lb_address: str | None, services: Sequence[str]) -> str:
    """The hosts file every container gets: each load-balanced service's name → the lb address."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if lb_address is not None:
        lines += [f"{lb_address}\t{name}.fleet {name}" for name in sorted(set(services))]
    return "\n".join(lines) + "\n"


def volume_dir(service: str, name: str) -> str:
    return PATHS.volume(service, name)


def config_file(spec: ServiceSpec, index: int) -> str:
    """Where the node keeps the `index`th config of `spec` (per service and spec hash)."""
    return PATHS.config_file(spec.name, spec.spec_hash(), index)


def secret_mount(container: str, index: int) -> str:
    """Where the node keeps the `index`th secret file of one container (on tmpfs)."""
    return PATHS.secret_mount(container, index)


def run_spec(spec: ServiceSpec, revision: int, a: Assignment, env_file: str | None,
             now: float | None = None, container: str | None = None) -> RunSpec:
    """The container of replica `a.replica` of `spec` at `revision` (ID `container`, else a new one): labels
    (fleet's record of it), env, mounts (configs and secret files read-only, from the node files the engine
    wrote; volumes nosuid,nodev), limits; restart=always (containerd's restart monitor brings a crashed one back)."""
    labels = L.build_labels(spec.name, revision=revision, replica=a.replica, spec_hash=spec.spec_hash(),
                            cpu=spec.resources.cpu, memory=spec.resources.memory, port=a.port, node=a.node)
    labels[L.CREATED] = f"{now if now is not None else time.time():.0f}"
    # The LB settings at start: HAProxy follows the accepted spec in the fleet's records; these labels only
    # serve a service that has no record (started by an older fleet).
    if spec.lb is not None and spec.lb.port is not None:
        labels[L.LB] = L.lb_label(spec.lb.port, spec.lb.mode, spec.lb.balance)
    if spec.health is not None:
        h = spec.health
        labels[L.HEALTH] = L.health_label(h.kind, h.path, h.interval, h.timeout, h.failure_threshold,
                                          h.success_threshold)
    bridged = spec.network == "bridge"
    host_ports = spec.host_ports(a.port)
    if host_ports:
        labels[L.PORTS] = L.ports_label(host_ports)
    env = {k: v for k, v in spec.env.items() if not isinstance(v, SecretRef)}
    # In its own namespace the replica listens on its container port; HAProxy reaches it through the host port.
    env.update({"PORT": str(spec.port if bridged else a.port), "FLEET_SERVICE": spec.name, "FLEET_NODE": a.node,
                "FLEET_REPLICA": str(a.replica), "FLEET_REVISION": str(revision)})
    mounts = [Mount("bind", "/etc/hosts", HOSTS_FILE, readonly=True),
              Mount("bind", "/etc/resolv.conf", RESOLV_FILE, readonly=True)]
    for v in spec.volumes:
        if v.type == "tmpfs":
            mounts.append(Mount("tmpfs", v.target, "tmpfs", options=(f"size={v.size}",) if v.size else ()))
        elif v.type == "volume":
            mounts.append(Mount("bind", v.target, volume_dir(spec.name, v.source or ""), v.readonly,
                                CONTAINER_MOUNT_OPTIONS))
        elif v.type == "sshfs":
            continue  # mounted on the node per container (below), when the container's ID is known
        else:
            mounts.append(Mount("bind", v.target, v.source or "", v.readonly))
    cid = container or L.container_id(spec.name, a.replica)
    mounts += [Mount("bind", c.target, config_file(spec, i), readonly=True) for i, c in enumerate(spec.configs)]
    mounts += [Mount("bind", f.target, secret_mount(cid, i), readonly=True) for i, f in enumerate(spec.secret_files)]
    mounts += [Mount("bind", v.target, sshfs_mountpoint(cid, v.source or ""), v.readonly, CONTAINER_MOUNT_OPTIONS)
               for v in spec.volumes if v.type == "sshfs"]
    cap_add, cap_drop = spec.security.cap_changes()
    return RunSpec(id=cid, image=spec.image_ref, command=spec.command, env=env,
                   env_file=env_file, mounts=tuple(mounts), cpu=spec.resources.cpu, memory=spec.resources.memory,
                   labels=labels, netns=cni.netns_path(cid) if bridged else HOST_NETNS,
                   net_host=not bridged, restart="always",
                   ports=((a.port, spec.port), *((host_ports[n], c) for n, c in spec.ports if c != spec.port))
                   if bridged else (),
                   user=spec.security.user, read_only=spec.security.read_only, cap_add=cap_add, cap_drop=cap_drop,
                   no_new_privileges=spec.security.no_new_privileges, log_max_size=spec.logs.max_size,
                   log_max_files=spec.logs.max_files)
