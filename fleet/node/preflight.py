"""`fleet node check` as values: what each role needs on a node (`NEEDS`), the read-only script that finds what a
node has in one round trip (`check_script`), and the pure parser and judge of its output (`parse_found`, `judge`).

The script prints one `@@KEY<TAB>VALUE` line per fact and `@@end` last with the node's time (a cut output is
refused); it needs only POSIX sh, coreutils, grep and awk. A node's roles for this purpose are its inventory
roles plus `records` (it keeps the fleet's shared state: etcd) and `vip` (an lb node with a virtual IP:
keepalived).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleet.core.dirs import NODE_BASE, NODE_RUN
from fleet.core.errors import ScriptOutputError
from fleet.core.shell import Script
from fleet.core.units import format_memory

# Below these, check says so: disk free under fleet's directory, and the node's clock against the controller's.
MIN_FREE_DISK = 2 * 1024**3
MAX_CLOCK_OFFSET = 1.0
CNI_DIR = "/usr/lib/cni"
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CNI_PACKAGE = "containernetworking-plugins"
# containerd as fleet runs it where there is no init system to (fleet.node.provision): its PID file (checked against
# /proc/PID/comm, so a PID used again by another process after a reboot is not taken for it) and its log.
CONTAINERD_PID = f"{NODE_BASE}/containerd/containerd.pid"
CONTAINERD_LOG = f"{NODE_BASE}/containerd/containerd.log"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"


@dataclass(frozen=True)
class Need:
    """A command a role needs on a node, the Debian/Ubuntu package that provides it, and the oldest version fleet
    works with (None: any)."""

    tool: str
    package: str
    role: str
    why: str
    minimum: tuple[int, ...] | None = None
    optional: bool = False


NEEDS: tuple[Need, ...] = (
    Need("containerd", "containerd", "worker", "runs the replicas", (1, 6)),
    Need("ctr", "containerd", "worker", "fleet's client of containerd", (1, 6)),
    Need("runc", "runc", "worker", "containerd's runtime", (1, 1)),
    Need("ip", "iproute2", "worker", "network namespaces and addresses"),
    Need("sshfs", "sshfs", "worker", "mounts network volumes (only services that use them)", optional=True),
    Need("haproxy", "haproxy", "lb", "the load balancer", (2, 6)),
    Need("socat", "socat", "lb", "HAProxy's admin socket"),
    Need("keepalived", "keepalived", "vip", "the virtual IP", (2, 0)),
    Need("etcd", "etcd-server", "records", "the fleet's shared state (lease, records)", (3, 4)),
    Need("etcdctl", "etcd-client", "records", "etcd's client", (3, 4)),
)
# Every tool the script asks for (sudo and apt-get for the sudo and prepare items).
TOOLS = tuple(dict.fromkeys([n.tool for n in NEEDS] + ["sudo", "apt-get"]))

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def version_of(text: str) -> tuple[int, ...] | None:
    """The first dotted version in a tool's version line (`containerd github.com/... 1.6.20~ds1` -> (1, 6, 20))."""
    m = _VERSION.search(text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def dotted(version: Sequence[int]) -> str:
    return ".".join(str(p) for p in version)


CHECK_TEXT = r"""set -u
p() { printf '@@%s\t%s\n' "$1" "$2"; }
p uid "$(id -u) $(id -un)"
if [ -r /etc/os-release ]; then p os "$(. /etc/os-release; echo "${ID:-?} ${VERSION_ID:-?}")"; fi
p cgroup "$(stat -fc %T /sys/fs/cgroup 2>/dev/null) $([ -d /sys/fs/cgroup/unified ] && echo hybrid)"
r=/run; [ -d "$RUN" ] && r=$RUN
p run "$(stat -fc %T "$r" 2>/dev/null) $r"
d=$BASE; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
p disk "$(df -Pk "$d" 2>/dev/null | awk 'NR == 2 {print $4}') $d"
p base "$([ -d "$BASE" ] && echo yes || echo no)"
p ip_forward "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"
p containerd_socket "$([ -S /run/containerd/containerd.sock ] && echo yes || echo no)"
if c=$(cat "$CPID" 2>/dev/null); then
  a=gone
  if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = containerd ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$c/status"; then
    a=alive
  fi
  p containerd_pid "$c $a"
fi
p init "$(cat /proc/1/comm 2>/dev/null)$([ -d /run/systemd/system ] && echo ' systemd')"
for t in "$@"; do
  path=$(command -v "$t" 2>/dev/null) || { p tool "$t"; continue; }
  case $t in
    haproxy) v=$(haproxy -v 2>&1) ;;
    etcdctl) v=$(ETCDCTL_API=3 etcdctl version 2>&1) ;;
    socat) v=$(socat -V 2>&1) ;;
    sudo) v="" ;;  # `sudo -V` resolves the host name: seconds where that is slow
    ip) v=$(ip -V 2>&1) ;;
    sshfs) v=$(sshfs --version 2>&1 | grep -i sshfs) ;;
    *) v=$("$t" --version 2>&1) ;;
  esac
  p tool "$t $path $(printf '%s\n' "$v" | grep -m1 -E '[0-9]+\.[0-9]+' | tr '\t' ' ')"
done
for c in $CNI; do [ -x "$CNI_DIR/$c" ] && p cni "$c"; done
p end "$(date +%s.%N)"
"""


# What a service may need on a worker that the facts script reports absent (fleet.node.facts `lacks`), as a plan
# names it: the words, and whether `fleet node prepare` installs "it" or "them".
LACKS = {"runc": ("runc (containerd's runtime)", "it"), "cni": ("CNI plugins", "them"),
         "sshfs": ("sshfs (network volumes)", "it")}


def lack_text(node: str, need: str) -> str:
    """`lacks CNI plugins (fleet node prepare n3 installs them)`: why `node` takes no replica needing `need`."""
    what, them = LACKS.get(need, (need, "it"))
    return f"lacks {what} (fleet node prepare {node} installs {them})"


def check_script() -> Script:
    """The read-only script `fleet node check` runs on each node (one round trip; changes nothing)."""
    return Script(CHECK_TEXT, env={"BASE": NODE_BASE, "RUN": NODE_RUN, "CNI_DIR": CNI_DIR,
                                   "CNI": " ".join(CNI_PLUGINS), "CPID": CONTAINERD_PID}, args=TOOLS,
                  name="fleet-node-check")


@dataclass(frozen=True)
class Tool:
    path: str
    version: tuple[int, ...] | None
    line: str


@dataclass(frozen=True)
class Found:
    """What the check script found on one node (a parse of its output, nothing judged yet)."""

    now: float | None
    uid: int
    login: str
    os: str
    cgroup: str
    run_fs: str
    run_dir: str
    free_kib: int | None
    free_dir: str
    base_exists: bool
    ip_forward: bool
    containerd_socket: bool
    tools: dict[str, Tool] = field(default_factory=dict)
    cni: tuple[str, ...] = ()
    # PID 1's name, plus ` systemd` when systemd runs the node ('' from an older check script).
    init: str = ""
    # The containerd fleet started itself (no init system): its PID and whether that process is still containerd.
    containerd_pid: int | None = None
    containerd_alive: bool = False


def parse_found(stdout: str) -> Found:
    """The check script's output as a `Found`; ScriptOutputError when it is cut short or not the script's."""
    facts: dict[str, str] = {}
    tools: dict[str, Tool] = {}
    cni: list[str] = []
    ended = False
    for line in stdout.splitlines():
        if not line.startswith("@@"):
            continue
        key, _, value = line[2:].partition("\t")
        if key == "tool":
            name, _, rest = value.partition(" ")
            path, _, vline = rest.partition(" ")
            if path:
                tools[name] = Tool(path, version_of(vline), vline.strip())
        elif key == "cni":
            cni.append(value)
        elif key == "end":
            ended = True
            facts["now"] = value
        else:
            facts[key] = value
    if not ended or "uid" not in facts:
        raise ScriptOutputError("the node check script's output ended early (no @@end)")
    uid, _, login = facts["uid"].partition(" ")
    run_fs, _, run_dir = facts.get("run", "").partition(" ")
    free, _, free_dir = facts.get("disk", "").partition(" ")
    try:
        now: float | None = float(facts.get("now", ""))
    except ValueError:
        now = None
    cpid, _, alive = facts.get("containerd_pid", "").partition(" ")
    return Found(
        now=now, uid=int(uid) if uid.isdigit() else -1, login=login, os=facts.get("os", "?"),
        cgroup=facts.get("cgroup", "").strip(), run_fs=run_fs, run_dir=run_dir,
        free_kib=int(free) if free.isdigit() else None, free_dir=free_dir,
        base_exists=facts.get("base") == "yes", ip_forward=facts.get("ip_forward", "").strip() == "1",
        containerd_socket=facts.get("containerd_socket") == "yes", tools=tools, cni=tuple(cni),
        init=facts.get("init", "").strip(), containerd_pid=int(cpid) if cpid.isdigit() else None,
        containerd_alive=alive == "alive",
    )


@dataclass(frozen=True)
class Item:
    """One thing a node has or lacks. `package`: what `fleet node prepare` installs for it; `fix`: what else
    prepare does for it (`start-containerd`, `ip-forward`, `dirs`); neither: prepare cannot fix it (named only).
    An `optional` item that is absent does not make the node fail."""

    name: str
    ok: bool
    detail: str
    package: str | None = None
    fix: str | None = None
    optional: bool = False

    @property
    def missing(self) -> bool:
        return not self.ok and not self.optional


@dataclass(frozen=True)
class NodeCheck:
    """What one node has and lacks for its roles, or why it could not be checked (`error`)."""

    node: str
    roles: tuple[str, ...]
    items: tuple[Item, ...] = ()
    os: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing

    @property
    def missing(self) -> list[Item]:
        return [i for i in self.items if i.missing]


def _tool_item(need: Need, found: Found) -> Item:
    tool = found.tools.get(need.tool)
    if tool is None:
        return Item(need.tool, False, f"missing ({need.why})", need.package, optional=need.optional)
    where = f"at {tool.path}"
    if need.minimum is not None:
        if tool.version is None:
            return Item(need.tool, False, f"{where}, its version unknown ({tool.line or 'no version output'}); "
                                          f"fleet needs {dotted(need.minimum)} or newer", need.package)
        if tool.version < need.minimum:
            return Item(need.tool, False, f"{dotted(tool.version)} {where} is older than fleet needs "
                                          f"({dotted(need.minimum)} or newer)", need.package)
    shown = dotted(tool.version) + " " if tool.version is not None else ""
    return Item(need.tool, True, f"{shown}{where}", optional=need.optional)


def _worker_items(found: Found) -> list[Item]:
    items = []
    lacking = [c for c in CNI_PLUGINS if c not in found.cni]
    items.append(Item("cni plugins", not lacking, f"{', '.join(CNI_PLUGINS)} in {CNI_DIR}" if not lacking
                      else f"missing {', '.join(lacking)} in {CNI_DIR}", None if not lacking else CNI_PACKAGE))
    if "containerd" in found.tools:
        items.append(_containerd_item(found))
    items.append(Item("ip_forward", found.ip_forward, "net.ipv4.ip_forward = 1" if found.ip_forward
                      else "net.ipv4.ip_forward = 0 (bridge networking needs 1)",
                      fix=None if found.ip_forward else "ip-forward"))
    return items


def _containerd_item(found: Found) -> Item:
    """Whether containerd runs: its socket, and where fleet started it itself (no init system), its process."""
    systemd = found.init.endswith(" systemd")
    no_init = "" if systemd or not found.init else f"; no init system here (PID 1 is {found.init}): "
    if found.containerd_pid is not None:
        if found.containerd_alive and found.containerd_socket:
            return Item("containerd running", True, f"yes, started by fleet (PID {found.containerd_pid}, log "
                                                     f"{CONTAINERD_LOG})")
        return Item("containerd running", False, f"no: fleet started it (PID {found.containerd_pid}) and it is gone"
                                                 f" (its log: {CONTAINERD_LOG}); `fleet node prepare` starts it "
                                                 "again", fix="start-containerd")
    if found.containerd_socket:
        return Item("containerd running", True, f"yes ({CONTAINERD_SOCKET})")
    how = f"{no_init}`fleet node prepare` starts it itself" if no_init else ""
    return Item("containerd running", False, f"no: installed but {CONTAINERD_SOCKET} is missing{how}",
                fix="start-containerd")


def _login_item(found: Found, become: bool, become_user: str) -> Item:
    if become:
        sudo = found.tools.get("sudo")
        version = f" (sudo {dotted(sudo.version)})" if sudo and sudo.version else ""
        return Item("sudo", found.uid == 0 or become_user != "root",
                    f"passwordless `sudo -n` to {become_user} works{version}")
    if found.uid == 0:
        return Item("login", True, "root")
    return Item("login", False, f"logged in as {found.login} (uid {found.uid}), not root, without become: set "
                                "`become: true` (ansible_become=true) and give it passwordless sudo")


def _clock_item(offset: float | None) -> Item:
    if offset is None:
        return Item("clock", False, "the node's time could not be read (date +%s.%N)")
    text = f"{offset:+.3f} s from this controller"
    if abs(offset) > MAX_CLOCK_OFFSET:
        return Item("clock", False, f"{text} (more than {MAX_CLOCK_OFFSET:g} s: run an NTP client, e.g. "
                                    "systemd-timesyncd or chrony)")
    return Item("clock", True, text)


def cgroup_version(fstype: str) -> str:
    """`stat -fc %T /sys/fs/cgroup` (plus `hybrid` when cgroup2 is also mounted) as a version: v2, v1, v1 hybrid."""
    kind, _, hybrid = fstype.partition(" ")
    if kind == "cgroup2fs":
        return "v2"
    if kind == "tmpfs":
        return "v1 hybrid" if hybrid == "hybrid" else "v1"
    return f"unknown ({kind or 'no /sys/fs/cgroup'})"


def judge(node: str, roles: Sequence[str], found: Found, *, offset: float | None, become: bool = False,
          become_user: str = "root") -> NodeCheck:
    """What `node` (with `roles`, records and vip included) has and lacks; `offset`: its clock minus the
    controller's, in seconds (None when it could not be measured)."""
    items = [_login_item(found, become, become_user)]
    for need in NEEDS:
        if need.role in roles:
            items.append(_tool_item(need, found))
    if "worker" in roles:
        items += _worker_items(found)
    cgroup = cgroup_version(found.cgroup)
    items.append(Item("cgroup", not cgroup.startswith("unknown"), cgroup))
    items.append(Item("tmpfs run", found.run_fs == "tmpfs",
                      f"{found.run_dir} on {found.run_fs or '?'}" + (
                          "" if found.run_fs == "tmpfs" else " (fleet keeps secret env files on tmpfs only)")))
    if found.free_kib is None:
        items.append(Item("disk", False, f"free space under {found.free_dir or NODE_BASE} unknown"))
    else:
        free = found.free_kib * 1024
        low = free < MIN_FREE_DISK
        items.append(Item("disk", not low, f"{format_memory(free)} free under {found.free_dir}" + (
            f" (fleet wants {format_memory(MIN_FREE_DISK)} for images and volumes)" if low else "")))
    items.append(Item("fleet dirs", found.base_exists, NODE_BASE if found.base_exists else f"{NODE_BASE} missing",
                      fix=None if found.base_exists else "dirs"))
    items.append(_clock_item(offset))
    return NodeCheck(node, tuple(roles), tuple(items), os=found.os)


def clock_offset(found: Found, received: float) -> float | None:
    """The node's clock minus the controller's: its time as the script ended (`now`) against when the output
    arrived here. Its error is the way back, milliseconds; the way out (connecting, sudo) does not count."""
    return None if found.now is None else found.now - received
