"""Simulated nodes for bench/sim_reconcile.py: real asyncssh servers (tests/sshserver.py) whose handler answers the
commands fleet's engine sends by recognising them, from a per-node in-memory container table.

Answered in-process, from the table (the output has the shape the real scripts print, recorded on containerd
1.6.20): the facts script, the container listing (each container's `ctr containers info` JSON is the recorded
one of tests/data/ctr/list.json with this container's id, image, labels), both in one command (fleet.node.look:
the facts, then the listing its gate lets run, as on a node whose containerd answers), `ctr run` (the container
is added, running), stop and remove (it goes), `ctr tasks ls`, `ctr images ls`, the node-prepare script (its stdin is
read), the volume listing (none), the etcd member's start and status (it runs: it is the bench's local etcd). Run
for real: the controller's shared state, against a real etcd on loopback: its JSON gateway through direct-tcpip
channels the servers forward to it as sshd does (counted: `tunnel`), and `etcdctl` where used; and the old records'
reader with /bin/sh in a directory per node under the farm's (its base directory, the first argument,
rewritten). Anything else answers rc 0 and nothing, and is counted (`unknown`), so the benchmark can say it is
all covered.

    python bench/_sim_node.py --count 1000 --dir D --image REF=DIGEST
serves until stdin closes, printing one JSON line with the nodes once ready (like tests/sshserver.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import re
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sshserver import SSHFarm, _pump  # noqa: E402

from fleet.node.look import LIST_MARK, RC_MARK  # noqa: E402
from fleet.node.paths import DEFAULT  # noqa: E402

_RECORDED = json.loads((ROOT / "tests" / "data" / "ctr" / "list.json").read_text())["stdout"]
_INFO = json.loads(_RECORDED.split("@@container web-1-rec001\n", 1)[1].split("\n@@oom", 1)[0])
_CNI_RESULT = json.loads((ROOT / "tests" / "data" / "cni" / "attach.json").read_text())["stdout"]
MEM_TOTAL_KB = 16 * 1024 * 1024  # a 16 GiB, 8-CPU node
# What a real node's facts also print (recorded on the lab, tests/data/facts): the rest of /proc/meminfo and the
# memory cgroup root's files (no limit there: the machine's own memory is the node's), so parsing costs as much.
_FACTS = ROOT / "tests" / "data" / "facts"
_MEMINFO_REST = [ln for ln in json.loads((_FACTS / "lab_node_idle.json").read_text())["stdout"].splitlines()
                 if ln.startswith("/proc/meminfo:") and not ln.startswith(("/proc/meminfo:MemTotal:",
                                                                            "/proc/meminfo:MemFree:",
                                                                            "/proc/meminfo:MemAvailable:"))]
_CGROUP_ROOT = ["/sys/fs/cgroup/memory/memory.limit_in_bytes:9223372036854771712",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes:1879048192"] + [
    ln for ln in json.loads((_FACTS / "lab_node_cgroup_hog.json").read_text())["stdout"].splitlines()
    if ln.startswith("/sys/fs/cgroup/memory/memory.stat:")]
VERSION_CACHE = DEFAULT.runtime_version_cache("ctr")
TASKS = "/run/containerd/io.containerd.runtime.v2.task/fleet"
BTIME = int(time.time()) - 100_000


@dataclass
class Ctr:
    id: str
    image: str
    labels: dict[str, str]
    pid: int
    info: str  # `ctr containers info` output, rendered once
    memory_limit: int
    port: int | None = None


@dataclass
class SimNode:
    name: str
    workdir: Path
    containers: dict[str, Ctr] = field(default_factory=dict)
    next_pid: int = 1000
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, cid: str, image: str, labels: dict[str, str], memory_limit: int) -> None:
        self.next_pid += 1
        info = copy.deepcopy(_INFO)
        info.update(ID=cid, Image=image, SnapshotKey=cid, Labels={**info["Labels"], **labels})
        port = labels.get("fleet.port")
        self.containers[cid] = Ctr(cid, image, labels, self.next_pid, json.dumps(info, indent=4), memory_limit,
                                   int(port) if port and port.isdigit() else None)

    # --- answers ------------------------------------------------------------------------------------------
    def facts(self, ports: bool) -> str:
        out = ["@runtime=ctr", "@socket=1", "@containerd=77", "@containerd_state=S", "@cgroup=1"]
        files = [f"/proc/sys/kernel/hostname:{self.name}", f"/proc/meminfo:MemTotal:       {MEM_TOTAL_KB} kB",
                 f"/proc/meminfo:MemFree:        {MEM_TOTAL_KB - 2_000_000} kB",
                 f"/proc/meminfo:MemAvailable:   {MEM_TOTAL_KB - 1_000_000} kB",
                 "/proc/loadavg:0.10 0.12 0.09 1/180 4242", "/proc/uptime:100000.00 700000.00",
                 "/proc/self/status:Uid:\t0\t0\t0\t0", "/proc/self/status:Cpus_allowed_list:\t0-7",
                 f"{VERSION_CACHE}:ctr github.com/containerd/containerd 1.6.20~ds1", *_MEMINFO_REST, *_CGROUP_ROOT]
        listen = []
        for c in self.containers.values():
            out.append(f"@task={c.id}")
            m, cg = f"/sys/fs/cgroup/memory/fleet/{c.id}", f"/sys/fs/cgroup/cpu/fleet/{c.id}"
            files += [f"{TASKS}/{c.id}/init.pid:{c.pid}", f"/proc/{c.pid}/stat:{c.pid} (httpd) S 1 {c.pid} 0",
                      f"{m}/memory.usage_in_bytes:1703936", f"{m}/memory.limit_in_bytes:{c.memory_limit}",
                      f"{m}/memory.oom_control:oom_kill_disable 0", f"{m}/memory.oom_control:oom_kill 0",
                      f"/sys/fs/cgroup/cpuacct/fleet/{c.id}/cpuacct.usage:123456789",
                      f"{cg}/cpu.cfs_quota_us:10000", f"{cg}/cpu.cfs_period_us:100000"]
            if c.port is not None:
                listen.append(f"/proc/net/tcp:   1: 00000000:{c.port:04X} 00000000:0000 0A 00000000:00000000 "
                              "00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0")
        if ports:
            files += ["/proc/net/tcp:  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
                      "   uid  timeout inode", *listen]
        out += ["@df", "Filesystem     1024-blocks     Used Available Capacity Mounted on",
                "/dev/vda         264212084 23182044  83208868      22% /var/lib/containerd", "@files", *files]
        return "\n".join(out) + "\n"

    def listing(self, cut_spec: bool) -> str:
        """The list script's output; `cut_spec`: the script cuts each info where "Spec" begins (its `sed`)."""
        parts = []
        for c in self.containers.values():
            info = c.info.split('\n    "Spec": ', 1)[0] + "\n" if cut_spec else c.info
            parts.append(f"@@container {c.id}\n{info}\n\n@@oom {c.id} 0\n")
        parts.append("@@tasks\nTASK PID STATUS\n")
        parts += [f"{c.id} {c.pid} RUNNING\n" for c in self.containers.values()]
        parts.append(f"@@proc {BTIME} 100\n")
        parts += [f"{c.pid} 5000\n" for c in self.containers.values()]
        return "".join(parts)

    def look(self, ports: bool, cut_spec: bool) -> str:
        """The facts and the listing in one command (fleet.node.look): this node's facts say containerd answers
        (runtime ctr, its socket there, pid 77 in state S, no probe this round), so the script's gate lets the
        ctr listing run; the list script exits 0 here."""
        return f"{self.facts(ports)}{LIST_MARK}ctr\n{self.listing(cut_spec)}\n{RC_MARK}0\n"

    def images(self) -> str:
        refs = sorted({c.image for c in self.containers.values()} | set(IMAGES))
        return "REF TYPE DIGEST SIZE PLATFORMS LABELS\n" + "".join(
            f"{r} application/vnd.oci.image.manifest.v1+json {IMAGES.get(r, 'sha256:' + '0' * 64)} 1.0 MiB "
            "linux/amd64 -\n" for r in refs)


IMAGES: dict[str, str] = {}
_ENV_RE = re.compile(r"^((?:[A-Z_][A-Z0-9_]*=(?:'[^']*'|[^ ']*) )*)/bin/sh -c ")


def _env(command: str) -> dict[str, str]:
    """The `NAME=value` prefix of a rendered Script (fleet.core.shell.with_env), parsed."""
    m = _ENV_RE.match(command)
    if not m or not m.group(1):
        return {}
    return dict(tok.split("=", 1) for tok in shlex.split(m.group(1)))


def _run_argv(command: str) -> list[str]:
    """The `ctr run -d …` line inside a run script."""
    argv = shlex.split(command)
    text = argv[argv.index("/bin/sh") + 2]
    line = next(ln for ln in text.splitlines() if " run -d " in ln)
    return shlex.split(line)


def _parse_run(argv: list[str]) -> tuple[dict[str, str], str, str, int]:
    """(labels, image, id, memory limit) of a `ctr run -d` argv."""
    labels, i, limit = {}, argv.index("run") + 2, 9223372036854771712
    rest: list[str] = []
    while i < len(argv):
        a = argv[i]
        if a in ("--label",):
            k, _, v = argv[i + 1].partition("=")
            labels[k] = v
            i += 2
        elif a in ("--log-uri", "--env", "--env-file", "--mount", "--cpus", "--memory-limit", "--with-ns"):
            if a == "--memory-limit":
                limit = int(argv[i + 1])
            i += 2
        elif a.startswith("--"):
            i += 1
        else:
            rest.append(a)
            i += 1
    return labels, rest[0], rest[1], limit


class Farm:
    """The simulated nodes, keyed by their server's port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.by_port: dict[int, SimNode] = {}
        self.facts_cache: dict[str, bool] = {}

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        port = process.get_extra_info("sockname")[1]
        node = self.by_port[port]
        command = process.command or ""
        try:
            kind, rc, out = self.answer(node, command)
            node.counts[kind] = node.counts.get(kind, 0) + 1
            if kind in ("real", "etcdctl", "etcd-probe"):
                await self.real(node, process, command)
                return
            if kind == "prepare":
                await process.stdin.read()  # the hosts file, on stdin
        except Exception:
            traceback.print_exc()
            node.counts["error"] = node.counts.get("error", 0) + 1
            process.exit(1)
            return
        process.stdout.write(out.encode())
        process.exit(rc)

    def answer(self, node: SimNode, command: str) -> tuple[str, int, str]:
        if command.endswith(" fleet-prepare-node"):
            return "prepare", 0, ""
        if command.endswith(" fleet-volumes"):
            return "volumes", 0, ""  # no volume directories: these services have no volumes
        if command.endswith(" fleet-facts") and LIST_MARK in command and "fleet_lists()" in command:
            return "look", 0, node.look("PORTS=1 " in command, '/^    "Spec": /q;p' in command)
        if command.endswith(" fleet-facts"):
            return "facts", 0, node.facts("PORTS=1 " in command)
        if "@@container" in command and "@@tasks" in command:
            return "list", 0, node.listing(cut_spec='/^    "Spec": /q;p' in command)
        if "@@found" in command:
            cid = _env(command)["ID"]
            gone = node.containers.pop(cid, None)
            if gone is None:
                return "stop", 0, "@@found false\n"
            return "stop", 0, "@@found true\n@@task true\n@@taskrm\n@@containerrm\n@@rc 0\n"
        if " run -d " in command and "already exists" in command:
            labels, image, cid, limit = _parse_run(_run_argv(command))
            if cid in node.containers:
                return "run", 17, ""
            node.add(cid, image, labels, limit)
            # With its network namespace (fleet.node.cni.attach_and): the CNI result recorded on this machine.
            return "run", 0, _CNI_RESULT if "@@cni-result" in command else ""
        if 'rm -f "$LOG"' in command:
            node.containers.pop(_env(command)["ID"], None)
            return "remove", 0, ""
        if command.endswith(" tasks ls"):
            return "tasks", 0, "TASK PID STATUS\n" + "".join(
                f"{c.id} {c.pid} RUNNING\n" for c in node.containers.values())
        if " images ls" in command:
            return "images", 0, node.images()
        if re.search(r"^(timeout -k \S+ \S+ )?etcdctl ", command):
            return "etcdctl", 0, ""
        if " fleet-etcd-listening " in command:
            return "etcd-probe", 0, ""  # run for real: this machine's socket table has the bench's etcd
        if re.search(r" fleet-etcd-(start|status)$", command):
            return "etcd-member", 0, "@@fleet result unchanged\n"  # the member is the bench's local etcd
        if re.search(r" fleet-records-read ", command):
            return "real", 0, ""
        return "unknown:" + command[:60].replace("\n", " "), 0, ""

    async def real(self, node: SimNode, process: asyncssh.SSHServerProcess[bytes], command: str) -> None:
        """etcdctl, run for real against the bench's etcd (its port is the controller's $FLEET_ETCD_PORT), and the
        old records' reader (a fleet's first run looks for them), in the node's own directory (its first argument)."""
        argv = shlex.split(command)
        env: dict[str, str] = {}
        if "/bin/sh" in argv:
            at = argv.index("/bin/sh")
            env = dict(tok.split("=", 1) for tok in argv[:at])
            argv = argv[at:]
            argv[4] = str(node.workdir / "fleet")  # /bin/sh -c TEXT NAME BASE_DIR …
        proc = await asyncio.create_subprocess_exec(
            *argv, env={"PATH": "/usr/bin:/bin", **env}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin and proc.stdout and proc.stderr

        async def feed() -> None:
            assert proc.stdin
            try:
                await _pump(process.stdin, proc.stdin)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        await asyncio.gather(feed(), _pump(proc.stdout, process.stdout), _pump(proc.stderr, process.stderr))
        process.exit(await proc.wait())


async def serve(count: int, directory: str, images: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    base = Path(directory)
    farm = Farm(base)
    IMAGES.update(images)
    async with SSHFarm(base / "keys", farm.handle) as ssh:
        nodes = await ssh.start(count)
        for n in nodes:
            workdir = base / "nodes" / n.name
            workdir.mkdir(parents=True, exist_ok=True)
            farm.by_port[n.port] = SimNode(n.name, workdir)
        print(json.dumps({"nodes": [{"name": n.name, "port": n.port} for n in nodes],
                          "known_hosts": str(ssh.known_hosts_path), "client_key": str(ssh.client_key_path)}),
              flush=True)
        # One request per line on stdin, one JSON answer per line; EOF stops the farm.
        #   counts       the commands answered since the last `counts`, by kind, and the containers held
        #   drop N       remove N containers (every 100th, spread over the nodes) behind fleet's back
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            op, *rest = line.split()
            if op == "drop":
                every = [(s, c) for s in farm.by_port.values() for c in list(s.containers)]
                step = max(1, len(every) // int(rest[0]))
                dropped = [f"{s.name}/{c}" for s, c in every[::step][:int(rest[0])]]
                for s, c in every[::step][:int(rest[0])]:
                    del s.containers[c]
                print(json.dumps({"dropped": dropped}), flush=True)
                continue
            counts: dict[str, int] = {}
            for s in farm.by_port.values():
                for k, v in s.counts.items():
                    counts[k] = counts.get(k, 0) + v
                s.counts.clear()
            for server in ssh.servers.values():
                server.commands.clear()  # the farm keeps every command line; not needed here
                if server.tunnels:  # direct-tcpip channels opened (to the bench's etcd: its JSON gateway)
                    counts["tunnel"] = counts.get("tunnel", 0) + server.tunnels
                    server.tunnels = 0
            total = sum(len(s.containers) for s in farm.by_port.values())
            print(json.dumps({"counts": counts, "containers": total}), flush=True)


def main() -> None:
    import resource

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--image", action="append", default=[], help="REF=DIGEST present on every node")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(args.dir, exist_ok=True)
    asyncio.run(serve(args.count, args.dir, dict(i.split("=", 1) for i in args.image)))


if __name__ == "__main__":
    main()
