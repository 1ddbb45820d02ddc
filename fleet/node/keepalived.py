"""keepalived on the lb nodes: the pure config for the fleet's virtual IP, and the sh scripts that write it,
start or reload keepalived, tell who holds the address, and stop it.

Every lb node runs the same VRRPv3 instance in state BACKUP with `nopreempt`: the first to come up takes the
address, and a node that returns after a failure does not take it back (a second move would cut connections
again). A node whose HAProxy is not running (the check script) goes to FAULT and gives the address up.

The check runs as `nobody` (keepalived's `script_user`), not root: it connects to HAProxy's stats frontend on
the node's loopback (`check_command`: socat, which lb nodes have for HAProxy's admin socket), which every
HAProxy config of fleet has and which answers only while HAProxy serves. It reads no file of HAProxy's (the pid
file stays in its root-only directory); the script itself is root's, 0755, in a root-owned 0711 directory, as
keepalived's script security asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.core.errors import ScriptOutputError
from fleet.core.model import Vrrp
from fleet.core.ports import STATS_PORT
from fleet.core.shell import Script, join
from fleet.node.haproxy.scripts import parse_script_output
from fleet.node.paths import DEFAULT, FILE_FUNCTIONS

RESULTS = ("unchanged", "invalid", "started", "start-failed", "reloaded", "locked", "missing", "missing-socat")
# keepalived's own bound: a priority is 1-254 (255 is the address owner's).
TOP_PRIORITY = 200
PRIORITY_STEP = 10
# Who keepalived runs the check as: a user every Debian/Ubuntu system has, owning nothing of fleet's.
CHECK_USER = "nobody"


def check_command(socat: str, port: int = STATS_PORT) -> list[str]:
    """The check: connect to HAProxy's stats frontend on loopback and close (exit 0 only when HAProxy accepts).
    Nothing is sent, so HAProxy answers nothing and logs nothing."""
    return [socat, "-u", "OPEN:/dev/null", f"TCP4:127.0.0.1:{port},connect-timeout=1"]


@dataclass(frozen=True)
class KeepalivedFiles:
    """keepalived's files on an lb node, in one directory beside HAProxy's."""

    dir: str = f"{DEFAULT.base}/keepalived"

    @property
    def config(self) -> str:
        return f"{self.dir}/keepalived.conf"

    @property
    def check(self) -> str:
        return f"{self.dir}/check-haproxy"

    @property
    def pid_file(self) -> str:
        return f"{self.dir}/keepalived.pid"

    @property
    def vrrp_pid_file(self) -> str:
        return f"{self.dir}/vrrp.pid"

    @property
    def log_file(self) -> str:
        return f"{self.dir}/keepalived.log"

    def env(self, vrrp: Vrrp | None) -> dict[str, str]:
        """The scripts' variables; without `vrrp` (the inventory has none any more) only the files'."""
        files = {"D": self.dir, "CFG": self.config, "CHECK": self.check, "PIDF": self.pid_file,
                 "VPIDF": self.vrrp_pid_file, "LOG": self.log_file}
        if vrrp is None:
            return files
        return {**files, "IFACE": vrrp.interface, "VIP": vrrp.virtual_ip, "VIPCIDR": vrrp.cidr}


def priority(index: int) -> int:
    """The VRRP priority of the lb node at `index` (inventory order): distinct, so an election never ties."""
    return max(TOP_PRIORITY - PRIORITY_STEP * index, 1)


def render(vrrp: Vrrp, node: str, index: int, files: KeepalivedFiles = KeepalivedFiles()) -> str:
    """keepalived.conf for lb node `node`, the `index`-th lb node of the inventory."""
    advert = f"{vrrp.advert_int:g}"
    return "\n".join([
        "# Written by fleet: the fleet's virtual IP (VRRPv3). fleet overwrites changes made here.",
        "global_defs {",
        f"    router_id {node}",
        "    vrrp_version 3",
        "    enable_script_security",
        f"    script_user {CHECK_USER}",
        "    vrrp_garp_master_repeat 3",
        "    vrrp_garp_master_refresh 10",
        "}",
        "vrrp_script fleet_haproxy {",
        f"    script \"{files.check}\"",
        "    interval 1",
        "    timeout 1",
        "    fall 2",
        "    rise 1",
        "}",
        "vrrp_instance fleet {",
        "    state BACKUP",
        "    nopreempt",
        f"    interface {vrrp.interface}",
        f"    virtual_router_id {vrrp.router_id}",
        f"    priority {priority(index)}",
        f"    advert_int {advert}",
        "    virtual_ipaddress {",
        f"        {vrrp.cidr} dev {vrrp.interface}",
        "    }",
        "    track_script {",
        "        fleet_haproxy",
        "    }",
        "}",
        "",
    ])


_COMMON = r"""
set -u
umask 077
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
# keepalived's PID, if it runs in this network namespace (lab nodes share one PID namespace).
kpid() {
  p=$(cat "$PIDF" 2>/dev/null) && [ -n "$p" ] && alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = keepalived ] \
    && [ "/proc/$p/ns/net" -ef /proc/self/ns/net ] && echo "$p"
}
holds() { ip -o -4 addr show dev "$IFACE" 2>/dev/null | grep -q " $VIP/"; }
"""

APPLY = _COMMON + FILE_FUNCTIONS + r"""
command -v keepalived >/dev/null 2>&1 || { echo "@@fleet result missing"; exit 0; }
socat=$(command -v socat) || { echo "@@fleet result missing-socat"; exit 0; }
# 0711: the check's user may run the script by its path, and list, read or change nothing here.
mkdir -p "$D" && chmod 0711 "$D" || exit 3
exec 9>>"$D/lock"
if command -v flock >/dev/null 2>&1; then flock -w 30 9 || { echo "@@fleet result locked"; exit 0; }; fi
if [ "$(wc -c <"$LOG" 2>/dev/null || echo 0)" -gt 1048576 ]; then : >"$LOG"; fi
# The HAProxy check keepalived runs every second as CHECK_USER (nobody): root's, 0755 (keepalived's script security
# refuses a script others could change). $CHECKCMD is quoted; its first word is replaced by socat's path here.
printf '#!/bin/sh\nexec %s %s\n' "$socat" "${CHECKCMD#* }" >"$CHECK.new" && chmod 0755 "$CHECK.new" \
  && mv -f "$CHECK.new" "$CHECK" || exit 3
fleet_stage "$CFG" 0600 "${SIZE:-}" || exit 3
new=$fleet_staged
pid=$(kpid) || pid=
if [ -n "$pid" ] && cmp -s "$new" "$CFG"; then fleet_unstage; echo "@@fleet result unchanged"; exit 0; fi
echo "@@fleet check"
# keepalived 2.2.7's -t kills itself (SIGTERM) when script_user is not root: it checks the script as its VRRP
# child would and finds no keepalived parent. The copy it tests differs from the config in that line only.
sed 's/^    script_user .*/    script_user root/' "$new" >"$new.t" && keepalived -t -f "$new.t" 2>&1; rc=$?
rm -f "$new.t"
if [ "$rc" != 0 ]; then fleet_unstage; echo "@@fleet result invalid"; exit 0; fi
mv -f "$new" "$CFG"; fleet_staged=; fleet_sname=
if [ -n "$pid" ]; then kill -HUP "$pid"; echo "@@fleet result reloaded"; exit 0; fi
rm -f "$PIDF" "$VPIDF"
# keepalived is not running, so this node must not hold the address: one left behind by a keepalived that was
# killed would answer ARP beside the real holder.
if holds; then ip addr del "$VIPCIDR" dev "$IFACE" 2>/dev/null || :; echo "@@fleet stale-address-removed"; fi
off=$(wc -c <"$LOG" 2>/dev/null || echo 0)
setsid keepalived -n -l -D -P -f "$CFG" -p "$PIDF" -r "$VPIDF" </dev/null >>"$LOG" 2>&1 9>&- &
kp=$!
result=start-failed; i=0
while [ "$i" -lt 100 ]; do
  if ! alive "$kp"; then break; fi
  if [ -s "$VPIDF" ]; then result=started; break; fi
  sleep 0.05; i=$((i + 1))
done
echo "@@fleet log"; tail -c "+$((off + 1))" "$LOG" 2>/dev/null | tail -n 20
echo "@@fleet result $result"
"""

STATUS = _COMMON + r"""
pid=$(kpid) || pid=
if holds; then h=1; else h=0; fi
echo "@@fleet holds $h"
if [ -z "$pid" ]; then echo "@@fleet result stopped"; exit 0; fi
echo "@@fleet pid $pid"
echo "@@fleet result running"
"""

# SIGTERM to this node's keepalived, waited for up to 5 s; `$pid` is left set, still alive if it did not stop.
_TERM = r"""
pid=$(kpid) || pid=
if [ -z "$pid" ]; then echo "@@fleet result not-running"; exit 0; fi
kill -TERM "$pid"
i=0
while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
"""

STOP = _COMMON + _TERM + r"""
if alive "$pid"; then kill -KILL "$pid"; echo "@@fleet result killed"; exit 0; fi
echo "@@fleet result stopped"
"""

# keepalived left running by a virtual IP the inventory no longer has: stopped (on SIGTERM it gives the address up
# itself), and its config removed so nothing starts it again. Nothing to do is the common case: one `cat`.
RETIRE = _COMMON + _TERM + r"""
if alive "$pid"; then kill -KILL "$pid"; fi
rm -f "$CFG" "$CHECK"
echo "@@fleet result retired"
"""


def apply_script(vrrp: Vrrp, size: int, files: KeepalivedFiles = KeepalivedFiles()) -> Script:
    """Reads keepalived.conf on stdin (`size` bytes), checks it with `keepalived -t`, starts or reloads."""
    return Script(APPLY, {**files.env(vrrp), "SIZE": str(size), "CHECKCMD": join(check_command("socat"))},
                  name="fleet-keepalived-apply")


def status_script(vrrp: Vrrp, files: KeepalivedFiles = KeepalivedFiles()) -> Script:
    return Script(STATUS, files.env(vrrp), name="fleet-keepalived-status")


def stop_script(vrrp: Vrrp, files: KeepalivedFiles = KeepalivedFiles()) -> Script:
    return Script(STOP, files.env(vrrp), name="fleet-keepalived-stop")


def retire_script(files: KeepalivedFiles = KeepalivedFiles()) -> Script:
    """Stop fleet's keepalived if it runs on this node and forget its config (the inventory has no `vrrp:`)."""
    return Script(RETIRE, files.env(None), name="fleet-keepalived-retire")


@dataclass(frozen=True)
class VrrpState:
    """One lb node's side of the virtual IP: keepalived running or not, and whether it holds the address."""

    running: bool
    holds: bool


def parse_status(text: str) -> VrrpState:
    out = parse_script_output(text)
    if out.result not in ("running", "stopped") or out.values.get("holds") not in ("0", "1"):
        raise ScriptOutputError(f"unexpected keepalived status output: {text[-200:]!r}")
    return VrrpState(out.result == "running", out.values["holds"] == "1")
