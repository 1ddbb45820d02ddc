"""Test helper: a private containerd (own root, state, socket, namespace) that is torn down in `finally`.

Started as `containerd --root D/root --state D/state --address D/c.sock --config D/config.toml` with the CRI
plugin disabled and a 1 s restart-monitor interval. Only the process started here is killed, by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG = """version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[plugins."io.containerd.internal.v1.restart"]
  interval = "1s"
"""


def available() -> str | None:
    """None when a private containerd can run here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class Containerd:
    dir: Path
    address: str
    namespace: str
    pid: int

    def ctr(
        self, *args: str, check: bool = True, stdin: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `ctr -a SOCK -n NS ARGS` and return its completed process (text output)."""
        argv = ["ctr", "-a", self.address, "-n", self.namespace, *args]
        proc = subprocess.run(
            argv,
            input=stdin.decode("latin-1") if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr}")
        return proc

    def exec_ctr(self, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """`ctr tasks exec` of argv in `cid` (a fresh exec ID each run), run again, up to twice, when it printed
        nothing at all: containerd 1.6's ctr may drop a short command's output (fleet.node.runtime.ctr_sh.EXEC_SH),
        and a check that reads it must not fail for that. Only for commands that may run twice."""
        for attempt in range(3):
            done = self.ctr("tasks", "exec", "--exec-id", f"t{os.getpid()}-{time.monotonic_ns()}", cid, *argv,
                            check=False)
            if done.stdout or done.stderr or attempt == 2:
                return done
        raise AssertionError("unreachable")

    def sh(
        self,
        script: str,
        env: dict[str, str] | None = None,
        stdin_path: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command line locally (what the SSH transport would run remotely)."""
        with contextlib.ExitStack() as stack:
            stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
            return subprocess.run(
                ["sh", "-c", script],
                stdin=stdin,
                capture_output=True,
                timeout=timeout,
                env={**os.environ, **(env or {})},
                check=False,
                text=True,
                errors="replace",
            )

    def cleanup_containers(self) -> None:
        """Kill and delete every container in the namespace (shims exit once their task is deleted)."""
        ids = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        for cid in ids:
            self.ctr("containers", "label", cid, "containerd.io/restart.status=", check=False)
        for cid in ids:
            self.ctr("tasks", "rm", "-f", cid, check=False)
            self.ctr("containers", "rm", cid, check=False)


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(str(root) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)


def _remove_cgroups(namespace: str) -> None:
    """runc leaves the empty `/<namespace>` cgroup in each hierarchy; remove it (rmdir fails if in use)."""
    for base in Path("/sys/fs/cgroup").glob(f"*/{namespace}"):
        for sub in sorted(base.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
    with contextlib.suppress(OSError):
        Path(f"/sys/fs/cgroup/{namespace}").rmdir()


@contextlib.contextmanager
def local_containerd(namespace: str | None = None) -> Iterator[Containerd]:
    """Start a private containerd in a temp dir; yield it; delete its containers, stop it, remove the dir."""
    reason = available()
    if reason:
        raise RuntimeError(f"cannot start containerd: {reason}")
    d = Path(tempfile.mkdtemp(prefix="fleet-ctrd-"))
    ns = namespace or f"fleettest{os.getpid()}{int(time.time()) % 100000}"
    (d / "config.toml").write_text(CONFIG)
    sock = str(d / "c.sock")
    log = open(d / "containerd.log", "wb")  # noqa: SIM115 - closed in finally
    proc: subprocess.Popen[bytes] | None = None
    ctrd: Containerd | None = None
    try:
        proc = subprocess.Popen(
            [
                "containerd",
                "--root",
                str(d / "root"),
                "--state",
                str(d / "state"),
                "--address",
                sock,
                "--config",
                str(d / "config.toml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ctrd = Containerd(d, sock, ns, proc.pid)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                output = (d / "containerd.log").read_text()
                raise RuntimeError(f"containerd exited {proc.returncode}: {output}")
            if os.path.exists(sock) and ctrd.ctr("version", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("containerd did not come up in 20 s")
            time.sleep(0.05)
        yield ctrd
    finally:
        try:
            if ctrd is not None and proc is not None and proc.poll() is None:
                ctrd.cleanup_containers()
        finally:
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            log.close()
            _remove_cgroups(ns)
            _unmount_under(d)
            shutil.rmtree(d, ignore_errors=True)


def _save(
    out: Path,
    name: str,
    source: str,
    argv: Sequence[str] | str,
    proc: subprocess.CompletedProcess[str],
    expect: object,
) -> None:
    record = {
        "source": source,
        "argv": argv if isinstance(argv, str) else list(argv),
        "exit_status": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "expect": expect,
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def record(out: Path) -> None:
    """Re-record tests/data/ctr/*.json from a private containerd; `expect` is what the scenario set up."""
    from fleet.image.demo import build_demo
    from fleet.node.runtime.base import RunSpec
    from fleet.node.runtime.ctr import CtrDriver

    out.mkdir(parents=True, exist_ok=True)
    src = (
        f"recorded by `python tests/local_containerd.py record` ({run_text(['ctr', '--version']).strip()}, "
        "runc 1.1.5, cgroup v1, Debian 12) against a private containerd; the command line was run by "
        "`sh -c`, as the SSH transport runs it"
    )
    with local_containerd(namespace="fleetrec") as c:
        d = CtrDriver(namespace=c.namespace, address=c.address, log_dir="/var/log/fleet", logger=str(c.dir / "logger"))
        archive = build_demo("v1", c.dir / "demo-v1.tar")

        def sh(call_line: str, stdin_path: str | None = None) -> subprocess.CompletedProcess[str]:
            return c.sh(call_line, stdin_path=stdin_path)

        imp = d.image_import(archive.path)
        _save(
            out,
            "images_import",
            src,
            imp.line(),
            sh(imp.line(), archive.path),
            [{"name": archive.name, "digest": archive.digest}],
        )
        _save(
            out,
            "images_ls",
            src,
            d.image_list().line(),
            sh(d.image_list().line()),
            {archive.name: archive.digest},
        )
        d.log_dir = str(c.dir / "logs")
        specs = {
            "web-1-rec001": RunSpec(
                id="web-1-rec001",
                image=archive.name,
                env={"PORT": "18461", "FLEET_REPLICA": "1"},
                labels={
                    "fleet.managed": "true",
                    "fleet.service": "web",
                    "fleet.replica": "1",
                    "note": "a b,c=d 'q' \"dq\" $(x)\nline2",
                },
                cpu=0.5,
                memory=64 * 1024 * 1024,
                restart="always",
            ),
            "stubborn-1-rec002": RunSpec(
                id="stubborn-1-rec002",
                image=archive.name,
                env={"PORT": "18462", "DEMO_IGNORE_TERM": "1"},
                labels={"fleet.managed": "true", "fleet.service": "stubborn"},
            ),
            "exit3-1-rec003": RunSpec(
                id="exit3-1-rec003", image=archive.name, command=("sh", "-c", "exit 3")
            ),
            "oom-1-rec004": RunSpec(
                id="oom-1-rec004",
                image=archive.name,
                memory=16 * 1024 * 1024,
                command=("dd", "if=/dev/zero", "of=/dev/null", "bs=64M"),
            ),
        }
        for spec in specs.values():
            proc = sh(d.run(spec).line())
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr)
        # A container without a task: what a bare failed `ctr run -d` leaves behind (FACTS §2.2).
        c.ctr("run", "-d", "--null-io", archive.name, "notask-1-rec005", "/nonexistent", check=False)
        time.sleep(1.5)
        tasks = {line.split()[0]: line.split() for line in c.ctr("tasks", "ls").stdout.splitlines()[1:]}
        _save(
            out,
            "tasks_ls",
            src,
            shlex.join([*d.base(), "tasks", "ls"]),
            c.ctr("tasks", "ls"),
            {k: {"pid": int(v[1]), "status": v[2]} for k, v in tasks.items()},
        )
        listing = d.list_containers()
        _save(
            out,
            "list",
            src,
            listing.line(),
            sh(listing.line()),
            [
                {
                    "id": "exit3-1-rec003",
                    "image": archive.name,
                    "status": "STOPPED",
                    "pid": int(tasks["exit3-1-rec003"][1]),
                    "oom_killed": False,
                    "labels": {},
                },
                {
                    "id": "notask-1-rec005",
                    "image": archive.name,
                    "status": "CREATED",
                    "pid": None,
                    "oom_killed": False,
                    "labels": {},
                },
                {
                    "id": "oom-1-rec004",
                    "image": archive.name,
                    "status": "STOPPED",
                    "pid": int(tasks["oom-1-rec004"][1]),
                    "oom_killed": True,
                    "labels": {},
                },
                {
                    "id": "stubborn-1-rec002",
                    "image": archive.name,
                    "status": "RUNNING",
                    "pid": int(tasks["stubborn-1-rec002"][1]),
                    "oom_killed": False,
                    "labels": dict(specs["stubborn-1-rec002"].labels),
                },
                {
                    "id": "web-1-rec001",
                    "image": archive.name,
                    "status": "RUNNING",
                    "pid": int(tasks["web-1-rec001"][1]),
                    "oom_killed": False,
                    "labels": {**specs["web-1-rec001"].labels, "containerd.io/restart.status": "running"},
                },
            ],
        )
        m = d.metrics("web-1-rec001")
        _save(
            out,
            "metrics",
            src,
            m.line(),
            sh(m.line()),
            {"memory_limit": 64 * 1024 * 1024, "oom_kills": 0, "min_pids": 2},
        )
        m = d.metrics("oom-1-rec004")
        _save(
            out,
            "metrics_oom",
            src,
            m.line(),
            sh(m.line()),
            {"memory_limit": 16 * 1024 * 1024, "oom_kills": 1},
        )
        m = d.metrics("gone-1-rec009")
        _save(out, "metrics_missing", src, m.line(), sh(m.line()), {"error": "ContainerNotFound"})
        for name, cid, grace, expect in [
            ("stop_term", "web-1-rec001", 5, {"found": True, "exit_code": 0, "killed": False}),
            ("stop_killed", "stubborn-1-rec002", 1, {"found": True, "exit_code": 137, "killed": True}),
            ("stop_exited", "exit3-1-rec003", 1, {"found": True, "exit_code": 3, "killed": False}),
            ("stop_notask", "notask-1-rec005", 1, {"found": True, "exit_code": None, "killed": False}),
            ("stop_missing", "gone-1-rec009", 1, {"found": False, "exit_code": None, "killed": False}),
        ]:
            call = d.stop(cid, grace)
            _save(out, name, src, call.line(), sh(call.line()), expect)
        dup = RunSpec(id="oom-1-rec004", image=archive.name)
        _save(out, "run_exists", src, d.run(dup).line(), sh(d.run(dup).line()), {"error": "ContainerExists"})
        noimg = RunSpec(id="noimg-1-rec006", image="fleet.local/demo:v9")
        _save(
            out, "run_no_image", src, d.run(noimg).line(), sh(d.run(noimg).line()), {"error": "ImageNotFound"}
        )
        badcmd = RunSpec(id="badcmd-1-rec007", image=archive.name, command=("/nonexistent",))
        _save(
            out,
            "run_bad_command",
            src,
            d.run(badcmd).line(),
            sh(d.run(badcmd).line()),
            {"error": "RuntimeCommandError", "left_behind": c.ctr("containers", "ls", "-q").stdout.split()},
        )


def run_text(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if sys.argv[1:] != ["record"]:
        raise SystemExit("usage: python tests/local_containerd.py record")
    record(Path(__file__).resolve().parent / "data" / "ctr")
