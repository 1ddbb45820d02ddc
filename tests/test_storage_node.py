"""Volumes on a node, below the lab: the listing parser on recorded output, the scripts run by a real /bin/sh on
temporary directories, the storage node's host key picked from known_hosts (plain, hashed, [host]:port), a backup
streamed into a file and restored from it over a real in-process SSH server, and refusals before any node is
contacted (an unknown storage host through the CLI: exit 2, no connection)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from sshserver import SSHFarm
from test_bad_input import Listener, assert_refused, cli, inventory_for, node, write  # noqa: F401

from fleet.config.spec import ServiceSpec, VolumeSpec
from fleet.core.errors import ScriptOutputError, StorageError, VolumeError
from fleet.core.model import Node, Resources
from fleet.core.shell import Script
from fleet.engine import volumes as V
from fleet.engine.nodes import READY, NodeReport
from fleet.engine.runspec import run_spec
from fleet.engine.volumes import StorageAccess, VolumeListing, VolumeRow, backup, find, restore, split_ref
from fleet.node import storage as S
from fleet.node import storage_access as A
from fleet.node.runtime.ctr import CtrDriver
from fleet.plan.scheduler import Assignment
from fleet.transport import Pool


def sh(script: Script, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["/bin/sh", "-c", script.render()], input=stdin, capture_output=True, timeout=30)


# --- listing -----------------------------------------------------------------------------------------------------

def test_the_listing_script_prints_what_the_parser_reads(tmp_path: Path) -> None:
    local, export = tmp_path / "volumes", tmp_path / "storage"
    (local / "web" / "data").mkdir(parents=True)
    (local / "web" / "data" / "f").write_bytes(b"x" * 5000)
    (local / "db" / "pg").mkdir(parents=True)
    (local / "db" / "Not A Volume").mkdir(parents=True)
    (export / "web" / "shared").mkdir(parents=True)
    script = S.list_script(sizes=True, export=str(export))
    script = Script(script.text, {**script.env, "LOCAL": str(local)}, name=script.name)
    out = sh(script)
    assert out.returncode == 0, out.stderr
    rows = S.parse_list(out.stdout.decode())
    assert [(r.kind, r.service, r.name) for r in rows] == [
        ("local", "db", "pg"), ("local", "web", "data"), ("sshfs", "web", "shared")]
    sizes = {r.name: r.size for r in rows}
    assert sizes["data"] is not None and sizes["data"] >= 5000


def test_without_sizes_the_listing_measures_nothing() -> None:
    rows = S.parse_list("local\tweb\tdata\t-\n")
    assert rows == [S.VolumeDir("local", "web", "data", None)]


@pytest.mark.parametrize("line", ["garbage", "local\tweb\tdata", "remote\tweb\tdata\t4"])
def test_a_foreign_listing_line_is_refused(line: str) -> None:
    with pytest.raises(ScriptOutputError):
        S.parse_list(line + "\n")


# --- paths and refs ----------------------------------------------------------------------------------------------

def test_paths_refuse_names_that_could_escape() -> None:
    assert S.local_dir("web", "data") == "/var/lib/fleet/volumes/web/data"
    assert S.mountpoint("web-0-abc", "shared") == "/run/fleet/mnt/web-0-abc/shared"
    for bad in ("..", "a/b", "", "A"):
        with pytest.raises(ValueError):
            S.local_dir("web", bad)
    with pytest.raises(ValueError):
        S.mountpoint("../x", "data")


def test_a_volume_is_named_service_slash_name() -> None:
    assert split_ref("web/data") == ("web", "data")
    for bad in ("web", "web/", "/data", "web/da ta", "web/../x"):
        with pytest.raises(VolumeError, match="SERVICE/NAME"):
            split_ref(bad)


def test_find_asks_for_a_node_when_a_volume_is_on_several() -> None:
    rows = tuple(VolumeRow(n, "local", "web", "data", 1, S.local_dir("web", "data")) for n in ("n1", "n2"))
    listing = VolumeListing(rows)
    with pytest.raises(VolumeError, match=r"on several nodes \(n1, n2\): choose one with --node"):
        find(listing, "web/data")
    assert find(listing, "web/data", "n2").node == "n2"
    with pytest.raises(VolumeError, match="no volume web/other"):
        find(listing, "web/other")


# --- scripts on a real shell ---------------------------------------------------------------------------------------

def test_restore_refuses_a_volume_that_holds_data_and_fills_an_empty_one(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("one")
    archive = subprocess.run(["/bin/sh", "-c", S.archive_script(str(src)).render()], capture_output=True,
                             check=True).stdout
    target = tmp_path / "new" / "vol"
    assert sh(S.restore_script(str(target)), archive).returncode == 0
    assert (target / "a").read_text() == "one"
    again = sh(S.restore_script(str(target)), archive)
    assert again.returncode == 3 and b"is not empty" in again.stderr


def _member(name: str, kind: bytes, *, uid: int = 0, mode: int = 0o644, data: bytes = b"",
            link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.uid, info.gid, info.mode, info.linkname = kind, uid, uid, mode, link
    info.size = len(data)
    return info, data


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring owners needs root, as on a node")
def test_restore_keeps_numeric_owners_and_modes_and_drops_setuid_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside-tool"  # a setuid file a restored symlink points at: never touched
    outside.write_bytes(b"#!/bin/sh\n")
    outside.chmod(0o4755)
    buf = tmp_path / "backup.tar"
    with tarfile.open(buf, "w") as tar:
        for info, data in (
                _member(".", tarfile.DIRTYPE, uid=999, mode=0o755),
                _member("./pgdata", tarfile.DIRTYPE, uid=999, mode=0o700),
                _member("./pgdata/PG_VERSION", tarfile.REGTYPE, uid=999, mode=0o600, data=b"16\n"),
                _member("./bin", tarfile.DIRTYPE, uid=1000, mode=0o2775),
                _member("./bin/tool", tarfile.REGTYPE, uid=1000, mode=0o4755, data=b"#!/bin/sh\n"),
                _member("./bin/gtool", tarfile.REGTYPE, uid=1000, mode=0o2711, data=b"#!/bin/sh\n"),
                _member("./tool-link", tarfile.SYMTYPE, link="bin/tool"),
                _member("./escape", tarfile.SYMTYPE, link=str(outside))):
            tar.addfile(info, io.BytesIO(data) if data else None)
    target = tmp_path / "new" / "vol"
    out = sh(S.restore_script(str(target)), buf.read_bytes())
    assert out.returncode == 0, out.stderr

    def owner_mode(p: Path) -> tuple[int, int, int]:
        st = p.lstat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode(target / "pgdata") == (999, 999, 0o700), "a database directory stays the database's"
    assert owner_mode(target / "pgdata" / "PG_VERSION") == (999, 999, 0o600)
    assert owner_mode(target / "bin" / "tool") == (1000, 1000, 0o755), "owner kept, setuid bit gone"
    assert owner_mode(target / "bin" / "gtool") == (1000, 1000, 0o711), "setgid bit gone"
    assert owner_mode(target / "bin") == (1000, 1000, 0o775)
    assert owner_mode(target) == (999, 999, 0o755), "the volume directory itself is the archive's '.'"
    assert (target / "tool-link").is_symlink() and os.readlink(target / "tool-link") == "bin/tool"
    assert (target / "escape").is_symlink() and os.readlink(target / "escape") == str(outside)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o4755, "chmod never followed a link out of the volume"


def test_the_restore_script_keeps_owners_by_number_and_strips_setuid_without_following_links() -> None:
    text = S.restore_script("/var/lib/fleet/volumes/db/data").text
    assert "--no-same-owner" not in text
    assert 'tar -C "$D" --same-owner --numeric-owner -xpf -' in text
    assert "find -P \"$D\" -perm /6000 ! -type l -exec chmod ug-s -- {} +" in text


def test_volumes_are_mounted_into_containers_nosuid_nodev_and_host_binds_as_asked() -> None:
    spec = ServiceSpec(name="db", image="img", volumes=(
        VolumeSpec("volume", "/data", "data"), VolumeSpec("sshfs", "/shared", "shared", readonly=True),
        VolumeSpec("bind", "/host", "/srv/host")))
    run = run_spec(spec, 1, Assignment("db", 0, "n1", 18080, Resources(0.1, 64 << 20), "new"), None, now=0,
                   container="db-0-abc")
    by_target = {m.target: m for m in run.mounts}
    assert by_target["/data"].options == ("nosuid", "nodev")
    assert by_target["/shared"].options == ("nosuid", "nodev") and by_target["/shared"].readonly
    assert by_target["/host"].options == (), "a host path is mounted as the spec says"
    argv = CtrDriver("fleet", None).run_argv(run)
    assert "type=bind,src=/var/lib/fleet/volumes/db/data,dst=/data,options=rbind:rw:nosuid:nodev" in argv
    assert "type=bind,src=/run/fleet/mnt/db-0-abc/shared,dst=/shared,options=rbind:ro:nosuid:nodev" in argv


def test_archiving_a_missing_directory_says_so(tmp_path: Path) -> None:
    out = sh(S.archive_script(str(tmp_path / "nope")))
    assert out.returncode == 3 and b"no such volume directory" in out.stderr


def test_release_without_mounts_is_a_no_op_and_removes_empty_mountpoints(tmp_path: Path) -> None:
    script = S.release_script("web-0-abc")
    assert sh(script).returncode == 0  # nothing mounted for this container
    d = tmp_path / "web-0-abc"
    (d / "shared").mkdir(parents=True)
    out = sh(Script(script.text, {"D": str(d)}))
    assert out.returncode == 0 and not d.exists()


def test_the_mount_command_pins_the_key_and_the_host_and_allows_other_users() -> None:
    script = S.mount_script("/run/fleet/mnt/c1/shared", user="root", address="10.0.0.5", port=2222,
                            remote="/srv/web/shared", key="/run/fleet/storage/st.key",
                            known_hosts="/run/fleet/storage/st.known_hosts")
    assert script.env["DEST"] == "root@10.0.0.5:/srv/web/shared" and script.env["PORT"] == "2222"
    for needle in ("StrictHostKeyChecking=yes", "BatchMode=yes", "IdentitiesOnly=yes", "allow_other,uid=0,gid=0",
                   'timeout -k 2 "$T" sshfs'):
        assert needle in script.text
    assert S.mount_script("/m/c/x", user="u", address="fd00::5", port=22, remote="/r", key="k",
                          known_hosts="h").env["DEST"] == "u@[fd00::5]:/r"


def test_a_worker_without_fuse_or_sshfs_is_told_so(tmp_path: Path) -> None:
    script = S.mount_script(str(tmp_path / "mp"), user="root", address="127.0.0.1", port=1, remote="/r",
                            key="k", known_hosts="h")
    env = {**os.environ, "PATH": str(tmp_path)}  # no sshfs on this PATH
    out = subprocess.run(["/bin/sh", "-c", script.render()], env=env, capture_output=True, timeout=30)
    assert out.returncode == S.MISSING_EXIT and b"sshfs is not installed" in out.stderr


def test_a_worker_makes_its_storage_key_once_on_tmpfs_and_never_on_disk(tmp_path: Path) -> None:
    """The worker's own key: made on tmpfs (0600), the same public key printed again on the next run; a directory
    on disk is refused (exit 3) with nothing written."""
    shm = Path(tempfile.mkdtemp(prefix="fleet-test-key-", dir="/dev/shm"))
    try:
        script = A.worker_key_script(str(shm / "storage" / "st.key"))
        first, second = sh(script), sh(script)
        assert first.returncode == 0, first.stderr
        public = A.parse_public_key(first.stdout.decode())
        assert A.parse_public_key(second.stdout.decode()) == public, "made once, then reused"
        assert oct((shm / "storage" / "st.key").stat().st_mode & 0o777) == "0o600"
    finally:
        shutil.rmtree(shm)
    refused = sh(A.worker_key_script(str(tmp_path / "st.key")))
    assert refused.returncode == 3 and b"not tmpfs" in refused.stderr and not list(tmp_path.iterdir())
    with pytest.raises(ScriptOutputError):
        A.parse_public_key("Permission denied\n")


def test_the_storage_scripts_refuse_what_could_escape_sshd_config_or_the_export() -> None:
    pub = "ssh-ed25519 " + "A" * 68
    ok = A.prepare_script("/var/lib/fleet/storage", ["web/shared"], worker="n1", public_key=pub)
    assert ok.env["U"] == "fleet-sftp" and ok.env["EXPORT"] == "/var/lib/fleet/storage" and ok.args == ("web/shared",)
    for kwargs, match in [
        ({"export": "/srv/a b"}, "storage export"), ({"export": "/srv/%h"}, "storage export"),
        ({"export": "/srv/../etc"}, "storage export"), ({"export": "/"}, "storage export"),
        ({"dirs": ["web/../etc"]}, "volume name"), ({"user": "root\nMatch all"}, "storage user"),
        ({"user": "Fleet"}, "storage user"), ({"worker": "n1 x", "public_key": pub}, "worker name"),
        ({"worker": "n1", "public_key": pub + "\nssh-ed25519 B"}, "public key"),
        ({"worker": "n1"}, "go together"),
    ]:
        args: dict[str, Any] = {"export": "/srv/storage", "dirs": [], **kwargs}
        with pytest.raises(ValueError, match=match):
            A.prepare_script(args.pop("export"), args.pop("dirs"), **args)
    with pytest.raises(ValueError, match="worker name"):
        A.revoke_script("../n1")
    assert A.parse_prepared("x\n@@fleet user fleet-sftp 998 997\n") == ("fleet-sftp", 998, 997)
    assert A.parse_revoked("@@fleet revoked\n") and not A.parse_revoked("@@fleet absent\n")
    for bad in ("", "sshd: no\n"):
        with pytest.raises(ScriptOutputError):
            A.parse_prepared(bad)
        with pytest.raises(ScriptOutputError):
            A.parse_revoked(bad)


# --- the storage node's host key ---------------------------------------------------------------------------------

def _hashed(host: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_host_keys_are_found_plain_hashed_and_with_a_port() -> None:
    text = "\n".join([
        "# comment",
        "10.0.0.5,st ssh-ed25519 AAAAplain",
        f"{_hashed('10.0.0.5')} ecdsa-sha2-nistp256 AAAAhashed",
        "[10.0.0.5]:2222 ssh-ed25519 AAAAport",
        "@cert-authority 10.0.0.5 ssh-ed25519 AAAAca",
        "10.0.0.6 ssh-ed25519 AAAAother",
    ])
    assert S.known_host_lines(text, "10.0.0.5", 22) == [
        "10.0.0.5 ssh-ed25519 AAAAplain", "10.0.0.5 ecdsa-sha2-nistp256 AAAAhashed"]
    assert S.known_host_lines(text, "10.0.0.5", 2222) == ["[10.0.0.5]:2222 ssh-ed25519 AAAAport"]
    assert S.known_host_lines(text, "10.0.0.7", 22) == []


# --- over SSH: streaming a backup, restoring it, a storage node that is down ----------------------------------------

async def test_a_backup_streams_into_a_file_and_restores_into_a_new_volume(farm: SSHFarm, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    blob = os.urandom(3 * 1024 * 1024)  # bigger than one SSH window: the stream is read in chunks
    (src / "blob").write_bytes(blob)
    report = NodeReport(farm.node("n1", roles=("worker",)), READY, None, None, 0.0)
    row = VolumeRow("n1", "local", "web", "data", None, str(src))
    seen: list[int] = []
    async with Pool() as pool:
        size = await backup(pool, [report], row, str(tmp_path / "b.tar"), on_progress=seen.append)
        assert size == os.path.getsize(tmp_path / "b.tar") and seen and seen[-1] == size
        with tarfile.open(tmp_path / "b.tar") as tar:
            assert tar.extractfile("./blob").read() == blob  # type: ignore[union-attr]
        target = tmp_path / "restored" / "web" / "data"
        monkeypatch.setattr(V.S, "local_dir", lambda service, name: str(target))
        await restore(pool, [report], "web/data", "n1", str(tmp_path / "b.tar"))
        assert (target / "blob").read_bytes() == blob
        with pytest.raises(VolumeError, match="is not empty"):
            await restore(pool, [report], "web/data", "n1", str(tmp_path / "b.tar"))
        row_missing = VolumeRow("n1", "local", "web", "gone", None, str(tmp_path / "gone"))
        with pytest.raises(VolumeError, match="no such volume directory"):
            await backup(pool, [report], row_missing, str(tmp_path / "c.tar"))
        assert not (tmp_path / "c.tar").exists() and not (tmp_path / "c.tar.part").exists()
    assert os.path.getsize(tmp_path / "b.tar") > len(blob)


async def test_a_storage_node_that_is_down_is_named_with_its_address(farm: SSHFarm, tmp_path: Path) -> None:
    down = await farm.add("st", listen=False)
    storage = Node("st", "127.0.0.1", port=down.port, key_files=down.key_files, known_hosts=down.known_hosts,
                   roles=("storage",))
    async with Pool(connect_attempts=1, connect_timeout=5) as pool:
        with pytest.raises(StorageError, match=rf"storage node st \(127\.0\.0\.1:{down.port}\) could not be used"):
            await StorageAccess(pool).mount(farm.node("n1"), storage, "web", "shared", "web-0-abc")


def test_an_unknown_storage_host_is_refused_by_the_cli_before_any_node_is_contacted(
        tmp_path: Path, node: Listener) -> None:  # noqa: F811
    pb = write(tmp_path, "pb.yaml", """
        services:
          web:
            image: fleet.local/demo:v1
            volumes:
              - {type: sshfs, source: shared, target: /shared, storage: nas}
    """)
    result = cli("plan", "-i", inventory_for(tmp_path, node), pb)
    assert_refused(result, "pb.yaml:5: services.web.volumes[0]: unknown storage host 'nas'")
    assert node.offered() == 0


def test_a_storage_only_node_without_a_runtime_still_has_its_volumes_listed() -> None:
    from fleet.engine.nodes import NO_RUNTIME

    storage = NodeReport(Node("st", "10.0.0.5", roles=("storage",)), NO_RUNTIME, "no containerd", None, 0.0)
    worker = NodeReport(Node("w1", "10.0.0.6", roles=("worker",)), NO_RUNTIME, "no containerd", None, 0.0)
    both = NodeReport(Node("wb", "10.0.0.7", roles=("worker", "storage")), NO_RUNTIME, "no containerd", None, 0.0)
    assert [n.name for n in V._listed_nodes([storage, worker, both])] == ["st"]


def test_volume_ls_renders_type_node_size_and_users() -> None:
    from rich.console import Console

    from fleet.cli.volume import row_json, table

    rows = (VolumeRow("n1", "local", "web", "data", 5 * 1024 * 1024, S.local_dir("web", "data"), ("n1/web-0-ab",)),
            VolumeRow("lb1", "sshfs", "web", "shared", None, "/var/lib/fleet/storage/web/shared"))
    con = Console(record=True, width=100)
    con.print(table(VolumeListing(rows)))
    text = con.export_text()
    assert "VOLUME" in text and "USED BY" in text
    [first, second] = [line.split() for line in text.splitlines()[1:3]]
    assert first == ["web/data", "local", "n1", "5M", "n1/web-0-ab"]
    assert second == ["web/shared", "sshfs", "lb1", "-", "-"]
    assert row_json(rows[0]) == {"volume": "web/data", "service": "web", "name": "data", "type": "local",
                                 "node": "n1", "size": 5 * 1024 * 1024, "path": "/var/lib/fleet/volumes/web/data",
                                 "used_by": ["n1/web-0-ab"]}


def test_the_config_of_the_serving_sshd_is_read_from_its_arguments_or_its_rewritten_title() -> None:
    """sshd rewrites its process title into one string (`sshd: /usr/sbin/sshd -f FILE [listener] …`): the
    storage script finds `-f FILE` in it as in plain arguments, and falls back to /etc/ssh/sshd_config."""
    cases = {
        ("bash", "-c", 'exec -a "sshd: /usr/sbin/sshd -f /lab/n1/sshd_config [listener] 0 of 10" sleep 30'):
            "/lab/n1/sshd_config",
        ("sh", "-c", "sleep 30", "-f", "/srv/ssh/sshd_config"): "/srv/ssh/sshd_config",
        ("sh", "-c", "sleep 30", "-f/etc/alt"): "/etc/alt",
        ("sh", "-c", "sleep 30", "-D"): "/etc/ssh/sshd_config",
    }
    for argv, want in cases.items():
        proc = subprocess.Popen(argv)
        try:
            time.sleep(0.2)
            out = subprocess.run(["/bin/sh", "-c", A._SSHD_SH + 'sshd_config_of "$0"', str(proc.pid)],
                                 capture_output=True, text=True, timeout=10)
            assert out.stdout.strip() == want, (argv, out.stdout, out.stderr)
        finally:
            proc.kill()
            proc.wait()


async def test_a_storage_node_labelled_with_an_export_sshd_cannot_take_is_an_error_naming_it() -> None:
    """Checked before anything is contacted (the pool is never used): the label's path would go into sshd's
    config as ChrootDirectory."""
    storage = Node("st", "192.0.2.1", roles=("storage",), labels={"fleet.storage.dir": "/srv/my storage"})
    with pytest.raises(StorageError, match=r"storage node st: storage export: .*'/srv/my storage'"):
        await StorageAccess(None).mount(Node("n1", "192.0.2.2"), storage, "web", "shared", "web-0-abc")  # type: ignore[arg-type]


def test_prune_removes_the_keys_of_workers_no_longer_in_the_inventory_only(tmp_path: Path) -> None:
    """The prune script's work on a keys file (its sshd lookup stood in for: the config is in tmp_path)."""
    keys = tmp_path / "fleet-sftp.authorized_keys"
    pub = "ssh-ed25519 " + "A" * 68
    keys.write_text(f"restrict {pub} fleet-sftp@n1\nrestrict {pub} fleet-sftp@n10\nrestrict {pub} fleet-sftp@gone\n"
                    f"restrict {pub} someone@else\n")
    script = A.prune_script(["n1", "n2"])
    stub = f'sshd_listener() {{ echo 1; }}\nsshd_config_of() {{ echo "{tmp_path}/sshd_config"; }}\n'
    text = script.text.replace(A._SSHD_SH, stub)
    assert text != script.text and script.args == ("n1", "n2")
    done = subprocess.run(["/bin/sh", "-c", text, "x", *script.args], capture_output=True, text=True,
                          env={**script.env, "PATH": "/usr/bin:/bin"}, timeout=30)
    assert done.returncode == 0, done.stderr
    assert A.parse_pruned(done.stdout) == ["n10", "gone"]
    assert keys.read_text() == f"restrict {pub} fleet-sftp@n1\nrestrict {pub} someone@else\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o644"
    again = subprocess.run(["/bin/sh", "-c", text, "x", *script.args], capture_output=True, text=True,
                           env={**script.env, "PATH": "/usr/bin:/bin"}, timeout=30)
    assert A.parse_pruned(again.stdout) == [] and keys.read_text().count("\n") == 2
    with pytest.raises(ValueError):
        A.prune_script(["n1", "../x"])
    with pytest.raises(ScriptOutputError):
        A.parse_pruned("")


class _PrunePool:
    """A stand-in pool (a fake: what a storage node answers to the prune script), recording the workers kept."""

    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers
        self.kept: dict[str, tuple[str, ...]] = {}

    async def run(self, target: Node, script: Script, **_: Any) -> Any:
        from fleet.core.model import CommandResult

        self.kept[target.name] = script.args
        status, out = self.answers[target.name]
        return CommandResult(target.name, status, out, "" if status == 0 else "fleet: no OpenSSH sshd", 0.01)


async def test_the_next_apply_revokes_keys_of_nodes_that_left_and_names_a_storage_node_it_cannot_ask() -> None:
    from fleet.engine.nodes import UNREACHABLE

    s1, s2, s3 = (Node(n, f"10.0.0.{i}", roles=("storage",)) for i, n in enumerate(("s1", "s2", "s3"), 1))
    reports = [NodeReport(Node("n1", "10.0.0.9"), READY, None, None, 0.1),
               NodeReport(s1, READY, None, None, 0.1), NodeReport(s2, READY, None, None, 0.1),
               NodeReport(s3, UNREACHABLE, "connect: timed out", None, 0.1)]
    pool = _PrunePool({"s1": (0, "@@fleet revoked n4\n@@fleet kept\n"), "s2": (6, "")})
    revoked, errors = await V.revoke_departed(pool, reports)  # type: ignore[arg-type]
    assert revoked == {"s1": ["n4"]} and pool.kept["s1"] == ("n1", "s1", "s2", "s3")
    assert errors == {"s2": "fleet: no OpenSSH sshd", "s3": "unreachable: connect: timed out"}
    # No storage node: nothing is asked.
    none = _PrunePool({})
    assert await V.revoke_departed(none, reports[:1]) == ({}, {}) and none.kept == {}  # type: ignore[arg-type]


@pytest.mark.parametrize(("allow", "ok"), [(None, True), ("deploy fleet-sftp", True), ("deploy fleet-*", True),
                                           ("deploy fleet-sftp@10.0.0.*", True), ("deploy admin", False)])
def test_sshds_allow_users_must_let_the_storage_user_in(allow: str | None, ok: bool) -> None:
    """The prepare script's AllowUsers check on what `sshd -T` prints (a glob in the list is not expanded)."""
    eff = "chrootdirectory /x\n" + (f"allowusers {allow}\n" if allow else "") + "permittty no\n"
    done = subprocess.run(["/bin/sh", "-c", A._ALLOWED_SH + 'allowed "$1" /etc/ssh/sshd_config', "x", eff],
                          capture_output=True, text=True, env={"U": "fleet-sftp", "PATH": "/usr/bin:/bin"},
                          cwd="/", timeout=10)
    assert (done.returncode == 0) == ok, done.stderr
    if not ok:
        assert done.stderr.strip() == ("fleet: sshd (/etc/ssh/sshd_config) lets only AllowUsers deploy admin log "
                                       "in: add fleet-sftp to it (the workers mount as fleet-sftp)")
