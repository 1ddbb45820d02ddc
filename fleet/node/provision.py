"""`fleet node prepare` as values: the plan for one node from its check (`plan_for`: the packages it lacks and
the other changes prepare makes), the one script that carries it out with apt (`prepare_script`), and the parser
of that script's output (`parse_prepared`). No I/O here; fleet.engine.preflight runs them.

Offline (`offline_plan`), the controller sends .deb files (named as `apt-get download` names them) into
PACKAGES_DIR on the node and the script installs those with `apt-get install --no-download` (dpkg -i where there
is no apt-get), reaching no mirror, and removes them afterwards on every exit.

The script installs with `apt-get` (Debian 12, Ubuntu 24.04) non-interactively, with a `policy-rc.d` that keeps
apt from starting any service by itself; the policy file is removed afterwards on every exit (success, a failed
apt, a signal), and one that was there before is left as it was. The packages' own services for what fleet runs
itself (HAProxy, keepalived, etcd) are disabled; containerd's is enabled and started. Every step is idempotent:
a node that lacks nothing gets no script at all.

Where PID 1 is not systemd (a container, a chroot, the lab's fresh nodes), there is no service to start: the
script starts containerd itself, in a session of its own (setsid), its PID in CONTAINERD_PID and its output in
CONTAINERD_LOG (both under fleet's directory on the node). Nothing starts it again after a reboot or a crash:
`fleet node check` then says it is not running, and `fleet node prepare` starts it again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from fleet.core.dirs import NODE_BASE
from fleet.core.errors import ScriptOutputError
from fleet.core.shell import Script
from fleet.node.preflight import CONTAINERD_LOG, CONTAINERD_PID, CONTAINERD_SOCKET, NEEDS, NodeCheck

POLICY_RC_D = "/usr/sbin/policy-rc.d"
SYSCTL_FILE = "/etc/sysctl.d/60-fleet.conf"
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")
# NAME_VERSION_ARCH.deb as apt-get download writes it (an epoch's colon as %3a).
DEB_RE = re.compile(r"^([a-z0-9][a-z0-9.+-]{0,63})_[A-Za-z0-9.+~%:-]{1,100}_[a-z0-9-]{1,20}\.deb$")
# Where the .deb files sent for an offline prepare wait on the node (removed once installed, or not).
PACKAGES_DIR = f"{NODE_BASE}/packages"
# The packages fleet itself asks for: a .deb in an offline directory that is none of them is a dependency.
FLEET_PACKAGES = frozenset(n.package for n in NEEDS) | {"containernetworking-plugins"}
# The changes besides packages, in the order the script makes them, and how a plan names them.
FIXES = {"dirs": f"create {NODE_BASE}", "ip-forward": "set net.ipv4.ip_forward = 1",
         "start-containerd": "start containerd"}
# Packages whose own service stays off: fleet starts HAProxy, keepalived and etcd itself, with its own configs.
FLEET_RUNS = {"haproxy": "haproxy", "keepalived": "keepalived", "etcd-server": "etcd"}


@dataclass(frozen=True)
class Plan:
    """What `fleet node prepare` will do on one node: `packages` to install, `fixes` (keys of FIXES), and what it
    cannot change (`left`: clock, disk, a /run that is not tmpfs, a login without become...)."""

    node: str
    packages: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    error: str | None = None
    # Offline: the .deb files (names in the offline directory) sent and installed instead of reaching a mirror;
    # `blocked`: why the plan cannot be carried out (a package with no .deb there).
    debs: tuple[str, ...] = ()
    blocked: str | None = None

    @property
    def nothing(self) -> bool:
        return self.error is None and not self.packages and not self.fixes

    def describe(self) -> str:
        """The plan in one line: `install containerd runc; start containerd` or `nothing to do`."""
        if self.error is not None:
            return f"cannot check: {self.error}"
        if self.blocked is not None:
            return f"cannot prepare: {self.blocked}"
        offline = f" from {len(self.debs)} .deb file(s) sent by this controller" if self.debs else ""
        parts = ([f"install {' '.join(self.packages)}{offline}"] if self.packages else []) + [
            FIXES[f] for f in self.fixes]
        text = "; ".join(parts) if parts else "nothing to do"
        return text + (f"; cannot fix: {'; '.join(self.left)}" if self.left else "")


def plan_for(check: NodeCheck) -> Plan:
    """The plan for a checked node: a package for each missing tool, a fix for each other missing item prepare
    can make, containerd started when it is installed now on a worker."""
    if check.error is not None:
        return Plan(check.node, error=check.error)
    packages = sorted({i.package for i in check.missing if i.package})
    fixes = {i.fix for i in check.missing if i.fix}
    if "containerd" in packages and "worker" in check.roles:
        fixes.add("start-containerd")
    left = tuple(f"{i.name}: {i.detail}" for i in check.missing if not i.package and not i.fix)
    return Plan(check.node, tuple(packages), tuple(f for f in FIXES if f in fixes), left)


def deb_package(filename: str) -> str | None:
    """The package a .deb file is named for (`runc_1.1.5+ds1-1+deb12u1_amd64.deb` -> runc), None if it is not
    named as apt-get download names them."""
    m = DEB_RE.match(filename)
    return m[1] if m else None


def offline_plan(plan: Plan, files: Sequence[str], where: str,
                 manifest: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> Plan:
    """`plan` carried out from the .deb files `files` (names in the directory `where`) instead of a mirror.

    Where `fleet node prepare --download` filled the directory for this node (its `manifest` entry), exactly the
    files apt chose for it then: its packages and the dependencies it lacked. Otherwise the file of each package
    it installs, plus every file that is none of fleet's packages (their dependencies, which the user downloaded
    beside them). A package or listed file that is not there blocks the plan, saying how to get it."""
    if plan.error is not None or not plan.packages:
        return plan
    entry = (manifest or {}).get(plan.node)
    if entry is not None:
        if not set(plan.packages) <= set(entry["packages"]):
            return replace(plan, blocked=f"{where} was filled for {', '.join(entry['packages'])} on {plan.node}; it "
                                         f"now needs {', '.join(plan.packages)} (run `fleet node prepare --download "
                                         f"{where} {plan.node}` again)")
        absent = [f for f in entry["files"] if f not in files]
        if absent:
            return replace(plan, blocked=f"{', '.join(absent)} listed for {plan.node} is not in {where} (run `fleet "
                                         f"node prepare --download {where} {plan.node}` again)")
        return replace(plan, debs=tuple(entry["files"]))
    by_package: dict[str, str] = {}
    for name in sorted(files):
        package = deb_package(name)
        if package is not None:
            by_package.setdefault(package, name)
    missing = [p for p in plan.packages if p not in by_package]
    if missing:
        return replace(plan, blocked=f"no .deb file for {', '.join(missing)} in {where} (on a machine with the "
                                     f"node's distribution: `apt-get download {' '.join(missing)}` and their "
                                     "dependencies)")
    debs = [by_package[p] for p in plan.packages]
    debs += [n for p, n in sorted(by_package.items()) if p not in FLEET_PACKAGES and n not in debs]
    return replace(plan, debs=tuple(debs))


PREPARE_TEXT = r"""set -u
say() { printf '@@%s\t%s\n' "$1" "$2"; }
fail() { say failed "$1"; exit 1; }
has() { case " $FIXES " in *" $1 "*) return 0 ;; esac; return 1; }
log=$(mktemp) || fail "mktemp failed"
ours=0
cleanup() { if [ "$ours" = 1 ]; then rm -f "$POLICY"; fi; rm -f "$log"; [ -z "$OFFLINE" ] || rm -rf "$OFFLINE"; }
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
if [ "$#" -gt 0 ]; then
  if [ -n "$OFFLINE" ]; then
    command -v dpkg >/dev/null 2>&1 || fail "no dpkg: prepare installs .deb files (Debian 12, Ubuntu 24.04)"
  else
    command -v apt-get >/dev/null 2>&1 \
      || fail "no apt-get: prepare installs with apt (Debian 12, Ubuntu 24.04); install $* yourself"
  fi
  export DEBIAN_FRONTEND=noninteractive
  # apt starts no service while this file exits 101; it is ours only if it was not there before.
  if [ ! -e "$POLICY" ]; then
    ours=1
    { printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod 755 "$POLICY"; } || fail "cannot write $POLICY"
  fi
  if [ -z "$OFFLINE" ]; then
    apt-get update -qq >"$log" 2>&1 || fail "apt-get update failed: $(tail -n 3 "$log" | tr '\n' ' ')"
    apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 \
      || fail "apt-get install $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
  elif command -v apt-get >/dev/null 2>&1; then
    # The files as the only source: apt refuses (changing nothing) when one needs what is neither installed
    # nor among them. apt 2.6 finds local files with --no-download only in its archives directory (else
    # "Pathname to install is not absolute"): theirs, for this run.
    apt-get install -y -qq --no-install-recommends --no-download -o "Dir::Cache::Archives=$OFFLINE/" "$@" \
      >"$log" 2>&1 \
      || fail "installing $PKGS from the .deb files sent failed: $(tail -n 3 "$log" | tr '\n' ' ')"
  else
    dpkg -i "$@" >"$log" 2>&1 || fail "dpkg -i of the .deb files sent failed: $(tail -n 3 "$log" | tr '\n' ' ')"
  fi
  if [ "$ours" = 1 ]; then rm -f "$POLICY"; ours=0; fi
  say changed "installed ${PKGS:-$*}"
  if [ -n "$DISABLE" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now $DISABLE >"$log" 2>&1 \
      && say changed "left the packages' own $DISABLE service(s) disabled (fleet runs its own)"
  fi
fi
if has dirs; then
  mkdir -p "$BASE" && chmod 755 "$BASE" || fail "cannot create $BASE"
  say changed "created $BASE"
fi
if has ip-forward; then
  { printf 'net.ipv4.ip_forward = 1\n' >"$SYSCTL.tmp" && mv -f "$SYSCTL.tmp" "$SYSCTL"; } || fail "cannot write $SYSCTL"
  echo 1 >/proc/sys/net/ipv4/ip_forward || fail "cannot set net.ipv4.ip_forward"
  say changed "set net.ipv4.ip_forward = 1 (and in $SYSCTL)"
fi
# containerd runs: its socket is there and, where fleet started it, the process its PID file names is containerd
# (and no zombie: where PID 1 is no init system, nothing may have reaped it yet).
ours_up() {
  p=$(cat "$CPID" 2>/dev/null) && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = containerd ] \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null
}
up() { [ -S "$CSOCK" ] && { [ ! -e "$CPID" ] && [ -z "$started" ] || ours_up; }; }
started=
if has start-containerd && ! up; then
  if [ -d /run/systemd/system ]; then
    systemctl enable --now containerd >"$log" 2>&1 \
      || fail "systemctl enable --now containerd: $(tail -n 3 "$log" | tr '\n' ' ')"
    how="started containerd"
  else
    # No init system: fleet's own containerd, detached from this session; its own shell writes its PID file
    # just before it becomes containerd. The socket file of one that died goes first, so the wait below sees
    # the new one's.
    mkdir -p "${CPID%/*}" "${CLOG%/*}" || fail "cannot create ${CPID%/*}"
    rm -f "$CPID" "$CSOCK"
    (cd / && setsid sh -c 'echo $$ >"$0" && exec containerd' "$CPID" </dev/null >>"$CLOG" 2>&1 &)
    started=1
    how="started containerd (no init system here: fleet runs it, PID file $CPID, log $CLOG)"
  fi
  i=0
  # Where fleet started it, up waits for the PID file too (written by its own process).
  while ! up && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  up || fail "containerd started but its socket did not appear within 10 s: $(tail -n 3 "$CLOG" 2>/dev/null \
    | tr '\n' ' ')"
  say changed "$how"
fi
say end ok
"""


def prepare_script(plan: Plan) -> Script:
    """The script that carries out `plan` on its node (packages as arguments, fixes in FIXES)."""
    for package in plan.packages:
        if not PACKAGE_RE.match(package):
            raise ValueError(f"not a package name: {package!r}")
    for fix in plan.fixes:
        if fix not in FIXES:
            raise ValueError(f"unknown change {fix!r}")
    for deb in plan.debs:
        if deb_package(deb) is None:
            raise ValueError(f"not a .deb file name: {deb!r}")
    disable = [FLEET_RUNS[p] for p in plan.packages if p in FLEET_RUNS]
    args = tuple(f"{PACKAGES_DIR}/{d}" for d in plan.debs) if plan.debs else plan.packages
    return Script(PREPARE_TEXT, env={"POLICY": POLICY_RC_D, "SYSCTL": SYSCTL_FILE, "BASE": NODE_BASE,
                                     "FIXES": " ".join(plan.fixes), "DISABLE": " ".join(disable),
                                     "OFFLINE": PACKAGES_DIR if plan.debs else "",
                                     "PKGS": " ".join(plan.packages), "CPID": CONTAINERD_PID,
                                     "CLOG": CONTAINERD_LOG, "CSOCK": CONTAINERD_SOCKET},
                  args=args, name="fleet-node-prepare")


@dataclass(frozen=True)
class Prepared:
    """What the prepare script did on one node: its changes in order, or why it stopped (`error`)."""

    changed: tuple[str, ...]
    error: str | None = None


def parse_prepared(stdout: str, exit_status: int | None, stderr: str = "") -> Prepared:
    """The prepare script's output; a failure it named, or one it could not name (killed, cut short)."""
    changed: list[str] = []
    failed: str | None = None
    ended = False
    for line in stdout.splitlines():
        key, _, value = line.removeprefix("@@").partition("\t")
        if not line.startswith("@@"):
            continue
        if key == "changed":
            changed.append(value)
        elif key == "failed":
            failed = value
        elif key == "end":
            ended = True
    if failed is not None:
        return Prepared(tuple(changed), failed)
    if not ended or exit_status != 0:
        why = " ".join(stderr.split())[:300] or f"exit status {exit_status}"
        raise ScriptOutputError(f"the prepare script stopped before its end ({why})")
    return Prepared(tuple(changed))


def plan_lines(plans: Sequence[Plan]) -> list[str]:
    """The plan as the CLI prints it: one line per node."""
    return [f"{p.node}: {p.describe()}" for p in plans]
