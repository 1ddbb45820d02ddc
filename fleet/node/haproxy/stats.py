"""Pure parsers for HAProxy 2.6 CLI output: `show stat` CSV, `show servers state`, master `show proc`.

Columns are found by the header's names, not by position, so a newer HAProxy adding columns parses the same.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Literal

from fleet.core.errors import StatsParseError

ServerHealth = Literal["up", "down", "maint", "drain", "nocheck", "unknown"]

# srv_admin_state bits (FACTS §6.3, src/server.h SRV_ADMF_*).
ADMIN_FMAINT = 0x01
ADMIN_IMAINT = 0x02
ADMIN_CMAINT = 0x04
ADMIN_FDRAIN = 0x08
ADMIN_IDRAIN = 0x10
ADMIN_RMAINT = 0x20
ADMIN_HMAINT = 0x40
_MAINT = ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT | ADMIN_HMAINT
_DRAIN = ADMIN_FDRAIN | ADMIN_IDRAIN

OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}


@dataclass(frozen=True)
class StatRow:
    """One line of `show stat`: a frontend, backend or server, with the counters fleet uses."""

    proxy: str
    name: str
    kind: Literal["frontend", "backend", "server", "listener"]
    status: str
    weight: int
    scur: int
    stot: int
    econ: int
    eresp: int
    wretr: int
    wredis: int
    hrsp_5xx: int
    req_tot: int
    check_status: str
    check_code: int | None
    check_desc: str
    address: str

    @property
    def health(self) -> ServerHealth:
        """Status folded to one word; `UP 1/3` (failing, not yet down) is up, an UP server of weight 0 drains."""
        word = self.status.split(" ", 1)[0]
        if self.status == "no check":
            return "up" if self.weight else "drain"
        if word == "UP":
            return "up" if self.weight else "drain"
        if word in ("DRAIN", "NOLB"):
            return "drain"
        if word == "MAINT":
            return "maint"
        if word == "DOWN":
            return "down"
        return "unknown"

    @property
    def checked(self) -> bool:
        return self.status != "no check"

    @property
    def check_running(self) -> bool:
        """A check is in progress: HAProxy marks its status `* `, and its code reads 0 until it ends (the last
        result is read between two checks)."""
        return self.check_status.startswith("* ")


_KINDS: dict[str, Literal["frontend", "backend", "server", "listener"]] = {
    "0": "frontend", "1": "backend", "2": "server", "3": "listener",
}


def _int(value: str) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0


def parse_show_stat(text: str) -> list[StatRow]:
    """Every row of `show stat` (or `show stat -1 4 -1` for servers only), in HAProxy's order."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname,svname,"):
        raise StatsParseError(f"not `show stat` CSV: {text[:80]!r}")
    header = lines[0][2:].split(",")
    rows = []
    for record in csv.reader(io.StringIO("\n".join(ln for ln in lines[1:] if ln.strip()))):
        if len(record) < len(header) - 1:
            raise StatsParseError(f"short `show stat` row: {','.join(record)[:80]!r}")
        col = dict(zip(header, record, strict=False))
        code = col.get("check_code", "")
        rows.append(StatRow(
            proxy=col["pxname"],
            name=col["svname"],
            kind=_KINDS.get(col.get("type", ""), "server"),
            status=col.get("status", ""),
            weight=_int(col.get("weight", "")),
            scur=_int(col.get("scur", "")),
            stot=_int(col.get("stot", "")),
            econ=_int(col.get("econ", "")),
            eresp=_int(col.get("eresp", "")),
            wretr=_int(col.get("wretr", "")),
            wredis=_int(col.get("wredis", "")),
            hrsp_5xx=_int(col.get("hrsp_5xx", "")),
            req_tot=_int(col.get("req_tot", "")),
            check_status=col.get("check_status", ""),
            check_code=int(code) if code.isdigit() else None,
            check_desc=col.get("check_desc", ""),
            address=col.get("addr", ""),
        ))
    return rows


@dataclass(frozen=True)
class ServerState:
    """One row of `show servers state`: the runtime state HAProxy carries across a reload."""

    backend_id: int
    backend: str
    server_id: int
    server: str
    address: str
    port: int | None
    op_state: int
    admin_state: int
    user_weight: int
    initial_weight: int
    check_status: int
    check_result: int

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & _MAINT)

    @property
    def draining(self) -> bool:
        return bool(self.admin_state & _DRAIN)

    @property
    def running(self) -> bool:
        return self.op_state == 2

    @property
    def state(self) -> Literal["ready", "drain", "maint"]:
        """The admin state as `set server … state` names it; a weight of 0 counts as drain."""
        if self.maint:
            return "maint"
        return "drain" if self.draining or self.user_weight == 0 else "ready"


def parse_servers_state(text: str) -> list[ServerState]:
    """Rows of `show servers state [backend]` (format version 1)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# be_id "):
        raise StatsParseError(f"not `show servers state` output (version 1): {text[:80]!r}")
    header = lines[1][2:].split()
    out = []
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 19:
            raise StatsParseError(f"short `show servers state` row: {line[:80]!r}")
        col = dict(zip(header, fields, strict=False))
        port = col.get("srv_port", "0")
        out.append(ServerState(
            backend_id=int(col["be_id"]),
            backend=col["be_name"],
            server_id=int(col["srv_id"]),
            server=col["srv_name"],
            address=col["srv_addr"],
            port=int(port) if port.isdigit() and port != "0" else None,
            op_state=int(col["srv_op_state"]),
            admin_state=int(col["srv_admin_state"]),
            user_weight=int(col["srv_uweight"]),
            initial_weight=int(col["srv_iweight"]),
            check_status=int(col["srv_check_status"]),
            check_result=int(col["srv_check_result"]),
        ))
    return out


@dataclass(frozen=True)
class Process:
    """One line of master `show proc`."""

    pid: int
    kind: str
    reloads: int
    uptime: float
    version: str


@dataclass(frozen=True)
class ProcTable:
    """The master CLI's `show proc`: the master, current workers and workers still finishing after a reload."""

    master: Process
    failed_reloads: int
    workers: tuple[Process, ...]
    old_workers: tuple[Process, ...]

    @property
    def worker_pids(self) -> tuple[int, ...]:
        return tuple(w.pid for w in self.workers)


_UPTIME = re.compile(r"^(\d+)d(\d+)h(\d+)m(\d+)s$")
_MASTER = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]\s+(\S+)\s+(\S+)")
_WORKER = re.compile(r"^(\d+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)")


def _uptime(text: str) -> float:
    m = _UPTIME.match(text)
    if not m:
        raise StatsParseError(f"bad uptime {text!r}")
    d, h, mi, s = (int(g) for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def parse_show_proc(text: str) -> ProcTable:
    """Parse master `show proc`; sections are `# workers`, `# old workers` and `# programs`."""
    master: Process | None = None
    failed = 0
    sections: dict[str, list[Process]] = {"workers": [], "old workers": [], "programs": []}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#<PID>"):
            continue
        if line.startswith("#"):
            section = line[1:].strip()
            continue
        if master is None and (m := _MASTER.match(line)):
            master = Process(int(m[1]), "master", int(m[2]), _uptime(m[4]), m[5])
            failed = int(m[3])
            continue
        m = _WORKER.match(line)
        if not m or section not in sections:
            raise StatsParseError(f"unexpected `show proc` line: {line[:80]!r}")
        sections[section].append(Process(int(m[1]), m[2], int(m[3]), _uptime(m[4]), m[5]))
    if master is None:
        raise StatsParseError(f"no master line in `show proc` output: {text[:80]!r}")
    return ProcTable(master, failed, tuple(sections["workers"]), tuple(sections["old workers"]))
