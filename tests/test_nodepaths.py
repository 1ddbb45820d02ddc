"""fleet.node.paths: every node path from one value, and its file-writing scripts run for real with /bin/sh on a
temporary directory (atomic replace, in-place update under a concurrent reader, secrets on tmpfs, the sweep)."""

from __future__ import annotations

import ast
import collections
import contextlib
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import fleet.node.paths as nodepaths
from fleet.core.shell import Script
from fleet.node.paths import (
    DEFAULT,
    NOT_TMPFS_EXIT,
    NodePaths,
    parse_swept,
    parse_update,
    sweep_secrets,
    update_in_place,
    write_file,
    write_secret_file,
)


def sh(script: Script, stdin: bytes | str = b"", timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a Script exactly as the transport sends it: its rendered command line through /bin/sh."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(["/bin/sh", "-c", script.render()], input=data, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def leftovers(directory: pathlib.Path, name: str) -> list[str]:
    """Temp files a script staged beside `name` and did not remove."""
    return sorted(p for p in os.listdir(directory) if p.startswith(f".{name}.") and not p.endswith(".lock"))


# --- the paths ---------------------------------------------------------------------------------------------------


def test_default_paths_are_fleets_directories_on_a_node():
    p = DEFAULT
    assert (p.base, p.run) == ("/var/lib/fleet", "/run/fleet")
    assert p.logs_dir == "/var/lib/fleet/logs"
    assert p.hosts_file == "/var/lib/fleet/hosts"
    assert p.resolv_conf == "/var/lib/fleet/resolv.conf"
    assert p.host_netns == "/var/lib/fleet/netns/host"
    assert p.volume("web", "data") == "/var/lib/fleet/volumes/web/data"
    assert p.secrets_dir == "/run/fleet/secrets"
    assert p.secret_file("web-0-ab12.env") == "/run/fleet/secrets/web-0-ab12.env"
    assert p.haproxy_dir == "/var/lib/fleet/haproxy"
    assert p.haproxy_config == "/var/lib/fleet/haproxy/haproxy.cfg"
    assert p.haproxy_admin_socket == "/var/lib/fleet/haproxy/run/admin.sock"
    assert p.haproxy_master_socket == "/var/lib/fleet/haproxy/run/master.sock"
    assert p.haproxy_state_file == "/var/lib/fleet/haproxy/server-state"
    assert (p.records_dir, p.lease_file) == ("/var/lib/fleet/records", "/var/lib/fleet/lease")
    assert p.runtime_version_cache("ctr") == "/var/lib/fleet/facts.ctr.version"
    assert p.containerd_pid_cache == "/var/lib/fleet/facts.containerd.pid"
    assert p.probe_cache == "/var/lib/fleet/facts.probe"


def _every_path(p: NodePaths) -> dict[str, str]:
    out = {}
    for name in dir(NodePaths):
        value = getattr(p, name)
        if isinstance(value, str) and isinstance(getattr(NodePaths, name), property):
            out[name] = value
    out.update(volume=p.volume("s", "v"), secret_file=p.secret_file("f"), version=p.runtime_version_cache("ctr"),
               haproxy_pid=p.haproxy.pid_file, haproxy_log=p.haproxy.log_file)
    return out


def test_every_path_moves_with_the_base_and_secrets_stay_on_the_run_dir():
    moved = NodePaths(base="/srv/n1/fleet", run="/dev/shm/n1")
    paths = _every_path(moved)
    assert len(paths) >= 20
    for name, path in paths.items():
        root = "/dev/shm/n1" if name.startswith("secret") else "/srv/n1/fleet"
        assert path.startswith(root + "/"), (name, path)
    assert moved.roots == ("/srv/n1/fleet", "/dev/shm/n1")
    assert len(set(paths.values())) == len(paths), "no two uses share a path"


@pytest.mark.parametrize("bad", ["relative", "/", "/srv/", "/srv//x", "/srv/../etc", "/srv/./x", "/srv/a b",
                                 "/srv/$(reboot)", "/srv/a,b", ""])
def test_bad_base_refused(bad):
    with pytest.raises(ValueError, match="node base dir"):
        NodePaths(base=bad)
    with pytest.raises(ValueError, match="node run dir"):
        NodePaths(run=bad)


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "-x", ".hidden", "a b", "x" * 200])
def test_bad_names_refused(bad):
    with pytest.raises(ValueError):
        DEFAULT.volume("web", bad)
    with pytest.raises(ValueError):
        DEFAULT.volume(bad, "data")
    with pytest.raises(ValueError):
        DEFAULT.secret_file(bad)


def test_nodepaths_is_pure():
    tree = ast.parse(pathlib.Path(nodepaths.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    assert imported <= {"__future__", "re", "dataclasses", "fleet.core.dirs", "fleet.core.shell"}, imported


def test_scripts_carry_paths_and_sizes_in_env_never_in_the_text():
    odd = "/srv/it's $(x)/f"
    for script in (write_file(odd, size=3), update_in_place(odd, size=3), write_secret_file(odd, size=3)):
        assert odd not in script.text and script.env["F"] == odd and script.env["SIZE"] == "3"
    assert sweep_secrets(5, "/srv/s").env == {"D": "/srv/s", "AGE": "5"}
    assert "ALLOW_DISK" not in write_secret_file("/run/fleet/secrets/x").env


@pytest.mark.parametrize("call", [
    lambda: write_file("relative"), lambda: write_file("/x/"), lambda: write_file("/x/../y"),
    lambda: write_file("/x", "644x"), lambda: write_file("/x", "0888"), lambda: write_file("/x", size=-1),
    lambda: update_in_place("/x\n"), lambda: write_secret_file("x"), lambda: sweep_secrets(-1),
    lambda: sweep_secrets(True),  # type: ignore[arg-type]
])
def test_bad_script_arguments_refused(call):
    with pytest.raises(ValueError):
        call()


# --- write_file: atomic replace ---------------------------------------------------------------------------------


def test_write_file_replaces_the_target_with_the_mode_set_before_any_content(tmp_path):
    target = tmp_path / "conf" / "app.cfg"
    assert sh(write_file(str(target), "0600"), "old\n").returncode == 0
    old_inode = target.stat().st_ino
    new = b"x" * 5000
    with subprocess.Popen(["/bin/sh", "-c", write_file(str(target), "0640", size=len(new)).render()],
                          stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write(new[:100])
            proc.stdin.flush()
            deadline = time.monotonic() + 10
            while (not (staged := leftovers(target.parent, "app.cfg"))
                   or (target.parent / staged[0]).stat().st_size == 0) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (target.parent / staged[0]).stat().st_size == 100, "the temp file holds what was sent so far"
            # Mid-write: the temp file already has its final mode; the target is the old file, whole.
            assert stat.S_IMODE((target.parent / staged[0]).stat().st_mode) == 0o640
            assert target.read_text() == "old\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
            proc.stdin.write(new[100:])
            proc.stdin.close()
            assert proc.wait(10) == 0
        finally:
            proc.kill()
    assert target.read_bytes() == new
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.stat().st_ino != old_inode
    assert leftovers(target.parent, "app.cfg") == []


def test_write_file_cut_short_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "hosts"
    target.write_text("old\n")
    # What a controller killed mid-send looks like on the node: stdin ends early, normally.
    result = sh(write_file(str(target), size=100), "only part")
    assert result.returncode == 1 and "file is unchanged" in result.stderr
    assert target.read_text() == "old\n" and leftovers(tmp_path, "hosts") == []


def test_write_file_stdin_read_error_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "hosts"
    target.write_text("old\n")
    fd = os.open(tmp_path, os.O_RDONLY)  # reading a directory fails with EISDIR
    try:
        proc = subprocess.run(["/bin/sh", "-c", write_file(str(target)).render()], stdin=fd, capture_output=True,
                              timeout=20)
    finally:
        os.close(fd)
    assert proc.returncode == 1
    assert target.read_text() == "old\n" and leftovers(tmp_path, "hosts") == []


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the group (an orphan waits for init to reap it)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in "ZX" and int(fields[2]) == pgid:
                return True
    return False


def _wait_group_gone(pgid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still running"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_write_file_stopped_midway_removes_its_temp_file(tmp_path, sig):
    """Signalled as sshd's session would be, then stdin closed: the shell runs its trap once its current
    command ends (a signal that lands before `cat` starts is acted on when `cat` sees the end of stdin)."""
    target = tmp_path / "cfg"
    target.write_text("old\n")
    script = write_file(str(target))
    # The script's own shell (what the rendered line execs), so no parent shell dies first and leaves an orphan.
    with subprocess.Popen(["/bin/sh", "-c", script.text, script.name], env={**os.environ, **script.env},
                          stdin=subprocess.PIPE, start_new_session=True) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write(b"half of the new")
            proc.stdin.flush()
            deadline = time.monotonic() + 10
            while not leftovers(tmp_path, "cfg") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert leftovers(tmp_path, "cfg"), "the script is mid-write"
            os.killpg(proc.pid, sig)
            proc.stdin.close()
            assert proc.wait(10) != 0
            _wait_group_gone(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert target.read_text() == "old\n" and leftovers(tmp_path, "cfg") == []


# --- update_in_place: same inode, never truncated ----------------------------------------------------------------

A = "127.0.0.1\tlocalhost\n10.0.0.9\tweb.fleet web\n"
B = "".join(f"10.0.0.{i}\tsvc{i}.fleet svc{i}\n" for i in range(40))


def test_update_in_place_creates_then_updates_the_same_inode(tmp_path):
    target = tmp_path / "d" / "hosts"
    first = sh(update_in_place(str(target), "0644", size=len(A)), A)
    assert (first.returncode, parse_update(first.stdout)) == (0, "created")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    inode = target.stat().st_ino
    sizes = [target.stat().st_size]
    for content, expect in [(B, "updated"), (A, "updated"), (A, "unchanged"), (A + "\n\n", "unchanged"),
                            (B + "# more\n" * 10, "updated"), ("", "updated")]:
        out = sh(update_in_place(str(target), size=len(content)), content)
        assert (out.returncode, parse_update(out.stdout)) == (0, expect), out.stderr
        assert target.stat().st_ino == inode
        assert target.read_text().rstrip("\n") == content.rstrip("\n")
        sizes.append(target.stat().st_size)
    assert sizes == sorted(sizes), "the file never shrinks"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert leftovers(target.parent, "hosts") == []


def test_update_in_place_cut_short_changes_nothing(tmp_path):
    target = tmp_path / "hosts"
    assert sh(update_in_place(str(target)), A).returncode == 0
    result = sh(update_in_place(str(target), size=len(B)), B[:50])
    assert result.returncode == 1 and target.read_text() == A and leftovers(tmp_path, "hosts") == []


def test_update_in_place_refuses_a_directory(tmp_path):
    (tmp_path / "hosts").mkdir()
    result = sh(update_in_place(str(tmp_path / "hosts")), A)
    assert result.returncode == 1 and "not a regular file" in result.stderr


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize(("old", "new"), [(B, A), (A, B)], ids=["shorter", "longer"])
def test_update_in_place_writes_the_content_with_one_write_and_never_truncates(tmp_path, old, new):
    target = tmp_path / "hosts"
    assert sh(update_in_place(str(target)), old).returncode == 0
    log = tmp_path / "trace"
    # -ff: one trace file per process, so a write is never split into "<unfinished ...>" and "<... resumed>"
    # lines by another process's syscall (the padding's `head | tr` runs two processes at once).
    proc = subprocess.run(["strace", "-ff", "-qq", "-y", "-s", "100000", "-o", str(log),
                           "-e", "trace=open,openat,creat,write,truncate,ftruncate",
                           "/bin/sh", "-c", update_in_place(str(target)).render()],
                          input=new.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for part in sorted(tmp_path.glob("trace.*")) for ln in part.read_text().splitlines()]
    assert not [ln for ln in lines if "unfinished" in ln or "resumed" in ln]
    here = [ln for ln in lines if f"<{target}>" in ln or f'"{target}"' in ln]
    opens = [ln for ln in here if re.search(r"\bopen(at)?\(", ln)]
    assert opens and not [ln for ln in opens if "O_TRUNC" in ln]
    assert not [ln for ln in lines if "truncate(" in ln]
    writes = [ln for ln in here if re.search(rf"\bwrite\(\d+<{re.escape(str(target))}>", ln)]
    content = [w for w in writes if not re.search(r', "(\\n)+", \d+\) = \d+$', w)]
    assert len(content) == 1, writes
    size = target.stat().st_size
    assert content[0].endswith(f", {size}) = {size}"), "the whole file in one write() at offset 0"
    if len(new) > len(old):
        assert len(writes) > 1, "the file grew by appended blank lines before the write"
    assert target.read_text().rstrip("\n") == new.rstrip("\n")


def _read_whole(path: pathlib.Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _hammer(path: pathlib.Path, write: Callable[[str], None], contents: tuple[str, str], *, max_writes: int,
            stop_when: Callable[[collections.Counter[bytes]], bool]) -> tuple[collections.Counter[bytes], int]:
    """A reader thread reads `path` as fast as it can (at most 2 million times, 60 s) while the writer alternates
    the two contents `max_writes` times or until `stop_when(reads)`; returns the reads and the writes done."""
    reads: collections.Counter[bytes] = collections.Counter()
    done = threading.Event()

    def reader() -> None:
        deadline = time.monotonic() + 60
        n = 0
        while not done.is_set() and n < 2_000_000 and time.monotonic() < deadline:
            reads[_read_whole(path)] += 1
            n += 1

    thread = threading.Thread(target=reader)
    thread.start()
    writes = 0
    try:
        while writes < max_writes and thread.is_alive() and not stop_when(reads):
            write(contents[writes % 2])
            writes += 1
    finally:
        done.set()
        thread.join(70)
    return reads, writes


def test_update_in_place_reader_never_sees_an_empty_or_truncated_file(tmp_path):
    """Thousands of reads while the writer alternates two contents of different lengths: every read is the old
    or the new content whole, except that Linux does not lock buffered reads against a write() on ext4 or tmpfs,
    so a read racing the kernel's copy of the one write can see a byte mix of the two (same length as the file;
    a plain pwrite() tears the same way). Never an empty file, never a short one."""
    target = tmp_path / "hosts"
    assert sh(update_in_place(str(target)), A).returncode == 0
    whole = {A.rstrip("\n"), B.rstrip("\n")}

    def write(content: str) -> None:
        assert sh(update_in_place(str(target), size=len(content)), content).returncode == 0

    reads, writes = _hammer(target, write, (B, A), max_writes=100, stop_when=lambda r: False)
    total = sum(reads.values())
    assert writes == 100 and total >= 2000, (writes, total)
    assert target.stat().st_size == len(B), "the file grew to the longer content and stayed there"
    seen = collections.Counter({r.decode(errors="replace").rstrip("\n"): n for r, n in reads.items()})
    assert not [r for r in reads if not r], "no read was empty"
    raced = {r: n for r, n in reads.items() if r.decode(errors="replace").rstrip("\n") not in whole}
    assert all(len(r) == len(B) for r in raced), "no read was truncated: a mix is only a race with the one write"
    assert sum(raced.values()) * 100 < total, "reads that raced the write are rare"
    assert seen[A.rstrip("\n")] > 0 and seen[B.rstrip("\n")] > 0, "the reader saw both contents"


def test_the_reader_catches_truncate_and_rewrite(tmp_path):
    """The same reader against the old way (`cat >file`) sees empty or truncated files: the test above can fail."""
    target = tmp_path / "hosts"
    target.write_text(A)

    def write(content: str) -> None:
        subprocess.run(["/bin/sh", "-c", 'cat >"$1"', "sh", str(target)], input=content.encode(), check=True)

    def bad(reads: collections.Counter[bytes]) -> bool:
        return any(len(r) not in (len(A), len(B)) for r in reads)

    reads, _ = _hammer(target, write, (B, A), max_writes=500, stop_when=bad)
    assert bad(reads)


# --- secrets ------------------------------------------------------------------------------------------------------


@pytest.fixture()
def shm_dir() -> Iterator[pathlib.Path]:
    if subprocess.run(["stat", "-f", "-c", "%T", "/dev/shm"], capture_output=True, text=True).stdout.strip() != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    d = pathlib.Path(tempfile.mkdtemp(prefix="fleet-test-", dir="/dev/shm"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_secret_file_on_tmpfs_is_0600_from_the_start(shm_dir):
    path = shm_dir / "secrets" / "web-0-ab.env"
    body = "API_TOKEN=tok\n"
    result = sh(write_secret_file(str(path), size=len(body)), body)
    assert result.returncode == 0, result.stderr
    assert path.read_text() == body and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert leftovers(path.parent, path.name) == []


def test_secret_file_refused_off_tmpfs_unless_allowed(tmp_path):
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    if fs in ("tmpfs", "ramfs"):
        pytest.skip("the test's temporary directory is on tmpfs here")
    path = tmp_path / "secrets" / "s.env"
    refused = sh(write_secret_file(str(path)), "K=v\n")
    assert refused.returncode == NOT_TMPFS_EXIT
    assert f"{path.parent}: it is on {fs}, not tmpfs" in refused.stderr
    assert not path.parent.exists(), "a refusal creates nothing"
    allowed = sh(write_secret_file(str(path), allow_disk=True), "K=v\n")
    assert allowed.returncode == 0 and path.read_text() == "K=v\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sweep_removes_only_files_older_than_max_age(shm_dir):
    old = time.time() - 600
    for name in ("old.env", ".old-temp.AbC123", "fresh.env", "ten-s.env"):
        (shm_dir / name).write_text("K=v\n")
    (shm_dir / "olddir").mkdir()
    for name in ("old.env", ".old-temp.AbC123", "olddir"):
        os.utime(shm_dir / name, (old, old))
    os.utime(shm_dir / "ten-s.env", (time.time() - 10, time.time() - 10))
    result = sh(sweep_secrets(60, str(shm_dir)))
    assert result.returncode == 0, result.stderr
    assert sorted(parse_swept(result.stdout)) == [".old-temp.AbC123", "old.env"]
    assert sorted(os.listdir(shm_dir)) == ["fresh.env", "olddir", "ten-s.env"]
    again = sh(sweep_secrets(5, str(shm_dir)))
    assert parse_swept(again.stdout) == ["ten-s.env"]
    assert sh(sweep_secrets(0, str(shm_dir / "missing"))).returncode == 0
