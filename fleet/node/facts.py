"""Node facts in one round trip: a POSIX sh script that only reads files (one `grep` and one `df`),
and a pure parser of its output. No `ctr` is started per round: the runtime's version is cached on the node,
and containerd's health is read from /proc (its cached PID's state), with a bounded `ctr version` probe at most
once a minute while it answers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fleet.core.model import Resources
from fleet.node.paths import DEFAULT

# The script names every file it wants and lets a single `grep -sH ''` print them as `path:line`, so the
# node starts two small processes per round whatever the number of containers. Task state comes from the
# shim bundle directories containerd keeps under /run and from /proc/<pid>/stat; usage from cgroup files.
FACTS_SCRIPT = r"""
NS=${NS:-fleet}
T=/run/containerd/io.containerd.runtime.v2.task/$NS
set -- /proc/sys/kernel/hostname /proc/meminfo /proc/loadavg /proc/uptime /proc/self/status
# Listening ports only when asked (planning): reading /proc/net/tcp walks the kernel's whole TCP hash,
# ~7 ms per read on this machine against under 1 ms for the other files together.
if [ -n "${PORTS:-}" ]; then set -- "$@" /proc/net/tcp /proc/net/tcp6; fi
# What a service may need that the node lacks (planning only: fleet.node.preflight.lacks names them); builtins.
if [ -n "${PORTS:-}" ]; then
  L=
  for t in runc sshfs; do command -v $t >/dev/null 2>&1 || L="$L $t"; done
  for c in bridge host-local portmap loopback; do [ -x "/usr/lib/cni/$c" ] || { L="$L cni"; break; }; done
  echo "@lacks=$L"
fi
RT=
if command -v nerdctl >/dev/null 2>&1; then RT=nerdctl; elif command -v ctr >/dev/null 2>&1; then RT=ctr; fi
echo "@runtime=$RT"
if [ -n "$RT" ]; then
  C=$FLEET_DIR/facts.$RT.version
  B=$(command -v $RT)
  if [ ! -s "$C" ] || [ "$B" -nt "$C" ]; then
    mkdir -p "$FLEET_DIR" && "$RT" --version >"$C.tmp" 2>/dev/null && mv "$C.tmp" "$C"
  fi
  set -- "$@" "$C"
fi
S=/run/containerd/containerd.sock
if [ -S $S ]; then echo "@socket=1"; else echo "@socket=0"; fi
# containerd's PID: cached ($FLEET_DIR/facts.containerd.pid) and checked with shell builtins only (alive,
# named containerd, in this network namespace: lab nodes share one PID namespace); searched for only when
# stale, as the owner of the socket's listening inode (/proc/net/unix is per network namespace). Empty: nothing
# listens on the socket (containerd is not running); `?`: cannot tell (not root, /proc of others unreadable).
ours() {
  [ -n "$1" ] && [ -r "/proc/$1/comm" ] && read -r c 2>/dev/null <"/proc/$1/comm" && [ "$c" = containerd ] &&
    [ "/proc/$1/ns/net" -ef /proc/self/ns/net ]
}
owner() {
  ino=$(awk -v s=$S '$8 == s && $4 == "00010000" { print $7; exit }' /proc/net/unix 2>/dev/null)
  [ -n "$ino" ] || return 0
  # Processes named containerd first; any process only when none of them holds it (a renamed binary).
  d=
  for x in $(grep -lx containerd /proc/[0-9]*/comm 2>/dev/null); do d="$d ${x%comm}fd"; done
  f=
  [ -z "$d" ] || f=$(find $d -lname "socket:\[$ino\]" -print -quit 2>/dev/null)
  [ -n "$f" ] || f=$(find /proc/[0-9]*/fd -lname "socket:\[$ino\]" -print -quit 2>/dev/null)
  f=${f#/proc/}; echo "${f%%/*}"
}
CP=
if [ -S $S ]; then
  U=
  while read -r k v _; do if [ "$k" = Uid: ]; then U=$v; break; fi; done </proc/self/status
  PF=$FLEET_DIR/facts.containerd.pid
  if [ "$U" != 0 ]; then CP="?"
  else
    read -r CP 2>/dev/null <"$PF" || CP=
    if ! ours "$CP"; then
      CP=$(owner)
      if [ -n "$CP" ]; then mkdir -p "$FLEET_DIR" && echo "$CP" >"$PF"; fi
    fi
  fi
fi
echo "@containerd=$CP"
case $CP in ''|*[!0-9]*) ;; *)
  st=
  read -r line 2>/dev/null <"/proc/$CP/stat" && { st=${line##*) }; st=${st%% *}; }
  echo "@containerd_state=$st"
  # A containerd that is alive but hung (not stopped) may show nothing in /proc: ask it, bounded to $PROBE s, at
  # most once a minute while it answers (the time of the last good answer, in seconds of uptime, is cached), and
  # at once when it is in uninterruptible sleep (D: stuck in I/O, or frozen by a cgroup freezer).
  P=$FLEET_DIR/facts.probe
  read -r up _ </proc/uptime; now=${up%%.*}
  last=; read -r last 2>/dev/null <"$P" || last=
  case $last in ''|*[!0-9]*) last=-1000;; esac
  if [ "$st" != T ] && [ "$st" != t ] &&
      { [ "$st" = D ] || [ "$last" -gt "$now" ] || [ $((now - last)) -ge 60 ]; } &&
      command -v timeout >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1; then
    timeout "${PROBE:-3}" ctr version >/dev/null 2>&1; rc=$?
    if [ $rc = 0 ]; then echo "@probe=ok"; echo "$now" >"$P"
    elif [ $rc = 124 ]; then echo "@probe=timeout"
    else echo "@probe=failed $rc"; fi
  fi;;
esac
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then CG=2; else CG=1; fi
echo "@cgroup=$CG"
# The node's own memory when the node is a memory-limited cgroup (a container- or VM-like node, which sees its
# cgroup as the root of the hierarchy, as the lab's nodes do): the files at the root of what this node sees. On a
# machine's own root they say "no limit" and /proc/meminfo is the node's.
if [ $CG = 1 ]; then
  R=/sys/fs/cgroup/memory
  set -- "$@" $R/memory.limit_in_bytes $R/memory.usage_in_bytes $R/memory.stat
else
  set -- "$@" /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.current /sys/fs/cgroup/memory.stat
fi
for d in "$T"/*/; do
  [ -f "${d}init.pid" ] || continue
  id=${d%/}; id=${id##*/}
  echo "@task=$id"
  set -- "$@" "${d}init.pid"
  pid=
  read pid <"${d}init.pid" || true
  [ -n "$pid" ] && set -- "$@" "/proc/$pid/stat"
  if [ $CG = 1 ]; then
    M=/sys/fs/cgroup/memory/$NS/$id
    set -- "$@" "$M/memory.usage_in_bytes" "$M/memory.limit_in_bytes" "$M/memory.oom_control" \
      "/sys/fs/cgroup/cpuacct/$NS/$id/cpuacct.usage" \
      "/sys/fs/cgroup/cpu/$NS/$id/cpu.cfs_quota_us" "/sys/fs/cgroup/cpu/$NS/$id/cpu.cfs_period_us"
  else
    G=/sys/fs/cgroup/$NS/$id
    set -- "$@" "$G/memory.current" "$G/memory.max" "$G/memory.events" "$G/cpu.stat" "$G/cpu.max"
  fi
done
echo "@df"
df -Pk /var/lib/containerd 2>/dev/null || df -Pk / 2>/dev/null
echo "@files"
grep -sH '' "$@"
exit 0
"""

UNLIMITED = 1 << 62
# Seconds the facts script gives `ctr version` to answer when it probes containerd (the script's PROBE).
PROBE_TIMEOUT = 3


@dataclass(frozen=True)
class TaskFacts:
    """One container task on a node, as its files show it."""

    id: str
    pid: int | None
    running: bool
    mem_usage: int
    mem_limit: int | None
    cpu_ns: int
    cpu_limit: float | None
    oom_kills: int


@dataclass(frozen=True)
class NodeFacts:
    hostname: str
    ncpu: int
    mem_total: int
    mem_available: int
    load: tuple[float, float, float]
    uptime_s: float
    disk_total: int
    disk_free: int
    runtime: str | None
    runtime_version: str | None
    runtime_socket: bool
    cgroup: int
    tasks: tuple[TaskFacts, ...]
    listening: frozenset[int] = frozenset()
    # containerd's process: its PID (None: nothing listens on the socket, or not known), its state letter from
    # /proc/<pid>/stat (R, S, D, T = stopped, t = traced, Z), and the last `ctr version` probe's outcome this
    # round (ok, timeout, failed N; None: not probed). `runtime_known` is False when the node could not tell.
    runtime_pid: int | None = None
    runtime_state: str | None = None
    runtime_probe: str | None = None
    runtime_known: bool = False
    # Memory in use on the node by everything (fleet's containers, foreign ones, host processes), measured: the
    # working set of the node's cgroup when `scope` is "cgroup" (the node is a memory-limited cgroup: `mem_total`
    # is its limit), else MemTotal - MemAvailable from /proc/meminfo ("host").
    mem_used: int = 0
    scope: str = "host"
    # What services may need that the node lacks (`runc`, `sshfs`, `cni`: a CNI plugin fleet uses), read when
    # planning (ports asked) only; see fleet.node.preflight.LACKS.
    lacks: frozenset[str] = frozenset()

    @property
    def size(self) -> Resources:
        return Resources(float(self.ncpu), self.mem_total)

    @property
    def cpu_in_use(self) -> float | None:
        """CPU in use on the node, measured: the load it has sustained, the lowest of its 1-, 5- and 15-minute load
        averages, at most the node's CPUs. A burst (a backup, a build) raises the 1-minute average alone and is not
        counted, so it cannot make every rollout refuse its node; a load held for a quarter of an hour is. None for a
        node that is a cgroup: the load average it reads is the whole host's, not its own."""
        return None if self.scope == "cgroup" else min(*self.load, float(self.ncpu))

    @cached_property
    def requested(self) -> Resources:
        """What the running containers in fleet's namespace reserve: fleet runs each replica with its request as
        its limit (cpu quota, memory limit), so these are fleet's reservations on the node."""
        return Resources(sum(t.cpu_limit or 0.0 for t in self.running),
                         sum(t.mem_limit or 0 for t in self.running))

    @cached_property
    def others(self) -> Resources:
        """Measured use that fleet's reservations do not cover, which the scheduler adds to them.

        Memory: the node's measured use minus what each of fleet's containers uses within its reservation (floored
        at 0), so a container is never counted twice and one above its reservation (none set) is still counted.
        CPU: the load beyond fleet's CPU reservations, as a container's CPU rate is not measured in one round;
        reservations plus this is the larger of the two. Host processes, foreign containers and the runtime
        itself are all in these figures."""
        covered = sum(min(t.mem_usage, t.mem_limit or 0) for t in self.running)
        load = self.cpu_in_use
        cpu = 0.0 if load is None else max(0.0, load - self.requested.cpu)
        return Resources(round(cpu, 3), max(0, self.mem_used - covered))

    @property
    def running(self) -> tuple[TaskFacts, ...]:
        return tuple(t for t in self.tasks if t.running)

    @property
    def used_memory(self) -> int:
        return sum(t.mem_usage for t in self.running)

    @property
    def used_cpu_ns(self) -> int:
        return sum(t.cpu_ns for t in self.running)


def _cpu_count(cpus_allowed_list: str) -> int:
    count = 0
    for part in cpus_allowed_list.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            count += int(hi) - int(lo) + 1 if hi.isdigit() else 1
    return max(count, 1)


def _kb(value: str) -> int:
    """`   24684084 kB` (the part of a /proc/meminfo line after the colon) in bytes."""
    return _int(value) * 1024


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(str(text).split()[0])
    except (ValueError, IndexError):
        return default


def _task(tid: str, own: dict[str, list[str]], files: dict[str, list[str]]) -> TaskFacts:
    """One task's facts from its own files (grouped by name) and its /proc/<pid>/stat."""

    def first(name: str) -> str | None:
        lines = own.get(name)
        return lines[0] if lines else None

    pid = _int(first("init.pid"), 0)
    stat_lines = files.get(f"/proc/{pid}/stat") if pid else None
    running = bool(stat_lines) and stat_lines is not None and stat_lines[0].rsplit(") ", 1)[-1][:1] not in ("Z", "X")
    usage = _int(first("memory.usage_in_bytes") or first("memory.current"))
    limit: int | None = None
    if (v1_limit := first("memory.limit_in_bytes")) is not None:
        lim = _int(v1_limit, UNLIMITED)
        limit = None if lim >= UNLIMITED else lim
    elif (v2_limit := first("memory.max")) is not None:
        limit = None if v2_limit.strip() == "max" else _int(v2_limit)
    cpu_ns = _int(first("cpuacct.usage"))
    for line in own.get("cpu.stat", []):
        if line.startswith("usage_usec"):
            cpu_ns = _int(line.split()[1]) * 1000
    ooms = 0
    for line in own.get("memory.oom_control", []) + own.get("memory.events", []):
        if line.startswith("oom_kill "):
            ooms = _int(line.split()[1])
    cpu_limit: float | None = None
    quota, period = _int(first("cpu.cfs_quota_us"), -1), _int(first("cpu.cfs_period_us"))
    if quota > 0 and period:
        cpu_limit = quota / period
    if (v2_cpu := first("cpu.max")) is not None:
        q, _, p = v2_cpu.partition(" ")
        if q != "max" and _int(p):
            cpu_limit = _int(q) / _int(p)
    return TaskFacts(tid, pid or None, running, usage, limit, cpu_ns, cpu_limit, ooms)


def _listening(files: dict[str, list[str]]) -> frozenset[int]:
    """TCP ports in LISTEN state (st 0A) from /proc/net/tcp and tcp6."""
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in files.get(path, []):
            cols = line.split()
            if len(cols) > 3 and cols[3] == "0A" and ":" in cols[1]:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return frozenset(ports)


def _node_memory(files: dict[str, list[str]], total: int, available: int) -> tuple[int, int, str]:
    """(total, in use, scope): the node's cgroup when it has a memory limit below the machine's memory (v1 or v2
    files at the root of what the node sees), else /proc/meminfo's figures. In use is the working set (usage less
    inactive page cache), as MemAvailable also leaves reclaimable cache out."""
    for limit_path, usage_path, stat_path in (
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat"),
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat")):
        raw = files.get(limit_path)
        if not raw or raw[0].strip() == "max":
            continue
        limit = _int(raw[0], UNLIMITED)
        if not 0 < limit < UNLIMITED or (total and limit >= total):
            continue
        stat = dict(ln.split(" ", 1) for ln in files.get(stat_path, []) if " " in ln)
        inactive = _int(stat.get("total_inactive_file", stat.get("inactive_file")))
        usage = _int((files.get(usage_path) or ["0"])[0])
        return limit, min(limit, max(0, usage - inactive)), "cgroup"
    return total, max(0, total - available), "host"


_MEMINFO = frozenset({"MemTotal", "MemAvailable", "MemFree"})


def parse_facts(stdout: str) -> NodeFacts:
    """Parse the facts script's output; raises ValueError when it is not that output."""
    markers: dict[str, str] = {}
    task_ids: list[str] = []
    files: dict[str, list[str]] = {}
    df_lines: list[str] = []
    section = ""
    for line in stdout.splitlines():
        if line.startswith("@"):
            key, _, value = line[1:].partition("=")
            if key == "task":
                task_ids.append(value)
            elif key in ("df", "files"):
                section = key
            else:
                markers[key] = value
            continue
        if section == "df":
            df_lines.append(line)
        elif section == "files":
            path, sep, rest = line.partition(":")
            if sep:
                files.setdefault(path, []).append(rest)
    if "runtime" not in markers or "/proc/meminfo" not in files:
        raise ValueError("not the output of the facts script")

    def one(path: str) -> str | None:
        lines = files.get(path)
        return lines[0] if lines else None

    meminfo: dict[str, str] = {}
    for ln in files["/proc/meminfo"]:
        key, sep, value = ln.partition(":")
        if sep and key in _MEMINFO:
            meminfo[key] = value
    status = {ln.split(":")[0]: ln.split(":", 1)[1].strip() for ln in files.get("/proc/self/status", []) if ":" in ln}
    load_parts = (one("/proc/loadavg") or "0 0 0").split()
    disk_total = disk_free = 0
    for line in df_lines[1:]:
        cols = line.split()
        if len(cols) >= 4 and cols[1].isdigit():
            disk_total, disk_free = int(cols[1]) * 1024, int(cols[3]) * 1024
    runtime = markers.get("runtime") or None
    version = None
    if runtime:
        raw = one(DEFAULT.runtime_version_cache(runtime))
        if raw:
            words = raw.split()
            version = words[2] if runtime == "ctr" and len(words) >= 3 else words[-1]
    cgroup = _int(markers.get("cgroup"), 1)
    containerd = markers.get("containerd")
    # Group the per-task files by container id: `/…/<ns>/<id>/<file>` and the bundle's `init.pid`.
    per_task: dict[str, dict[str, list[str]]] = {tid: {} for tid in task_ids}
    for path, lines in files.items():
        parent, _, name = path.rpartition("/")
        tid = parent.rpartition("/")[2]
        if tid in per_task:
            per_task[tid][name] = lines
    tasks = [_task(tid, per_task[tid], files) for tid in task_ids]
    mem_total, mem_used, scope = _node_memory(
        files, _kb(meminfo.get("MemTotal", "0")), _kb(meminfo.get("MemAvailable", meminfo.get("MemFree", "0"))))
    return NodeFacts(
        hostname=(one("/proc/sys/kernel/hostname") or "").strip(),
        ncpu=_cpu_count(status.get("Cpus_allowed_list", "0")),
        mem_total=mem_total,
        mem_available=mem_total - mem_used,
        load=(float(load_parts[0]), float(load_parts[1]), float(load_parts[2])),
        uptime_s=float((one("/proc/uptime") or "0").split()[0]),
        disk_total=disk_total,
        disk_free=disk_free,
        runtime=runtime,
        runtime_version=version,
        runtime_socket=markers.get("socket") == "1",
        cgroup=cgroup,
        tasks=tuple(tasks),
        listening=_listening(files),
        runtime_pid=_int(containerd) or None if containerd else None,
        runtime_state=markers.get("containerd_state") or None,
        runtime_probe=markers.get("probe") or None,
        runtime_known=containerd is not None and containerd != "?",
        mem_used=mem_used,
        scope=scope,
        lacks=frozenset(markers.get("lacks", "").split()),
    )
