"""The demo image is deterministic and valid; archive reading refuses corrupt tars; (lab) its knobs behave."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, wait_until
from local_containerd import Containerd, available, local_containerd

from fleet.core.model import CommandResult
from fleet.image import demo
from fleet.image.oci import ImageArchiveError, read_archive
from fleet.node.runtime.base import RunSpec
from fleet.node.runtime.ctr import CtrDriver

FAKE_BUSYBOX = b"\x7fELF not really busybox" * 100


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _retar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_two_builds_give_the_same_bytes_and_digest(tmp_path: Path):
    a = demo.build_demo("v1", tmp_path / "a.tar")
    b = demo.build_demo("v1", tmp_path / "b.tar")
    assert a.digest == b.digest and a.digest.startswith("sha256:")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert a.name == "fleet.local/demo:v1" and a.size == (tmp_path / "a.tar").stat().st_size


def test_versions_differ_but_share_the_base_layer():
    v1, d1 = demo.build_demo_bytes("v1", FAKE_BUSYBOX)
    v2, d2 = demo.build_demo_bytes("v2", FAKE_BUSYBOX)
    assert d1 != d2
    blobs1 = {n for n in _members(v1) if n.startswith("blobs/")}
    blobs2 = {n for n in _members(v2) if n.startswith("blobs/")}
    assert len(blobs1 & blobs2) == 1


def test_archive_layout_names_the_image_with_the_containerd_annotation():
    data, digest = demo.build_demo_bytes("2.0.1", FAKE_BUSYBOX)
    members = _members(data)
    index = json.loads(members["index.json"])
    desc = index["manifests"][0]
    assert desc["digest"] == digest
    assert desc["annotations"]["io.containerd.image.name"] == "fleet.local/demo:2.0.1"
    assert json.loads(members["manifest.json"])[0]["RepoTags"] == ["fleet.local/demo:2.0.1"]
    manifest = json.loads(members[f"blobs/sha256/{digest[7:]}"])
    config = json.loads(members["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["/start.sh"]
    app = gzip.decompress(members["blobs/sha256/" + manifest["layers"][1]["digest"][7:]])
    with tarfile.open(fileobj=io.BytesIO(app)) as tar:
        assert all(m.mtime == 0 and m.uid == 0 for m in tar)
        assert tar.getmember("start.sh").mode == 0o755


def test_padding_reaches_the_target_size(tmp_path: Path):
    small = demo.build_demo("v1", tmp_path / "s.tar")
    big = demo.build_demo("v1", tmp_path / "b.tar", size_mb=3)
    assert big.size - small.size >= 3 * 1024 * 1024
    assert big.digest != small.digest
    assert big.digest == demo.build_demo("v1", tmp_path / "c.tar", size_mb=3).digest


@pytest.mark.parametrize("version", ["", "v 1", "../x", "v1:latest", "-v1"])
def test_bad_versions_are_refused(version: str):
    with pytest.raises(ValueError):
        demo.build_demo_bytes(version, FAKE_BUSYBOX)


def test_read_archive_lists_name_and_digest(tmp_path: Path):
    built = demo.build_demo("v3", tmp_path / "d.tar")
    info = read_archive(built.path)
    assert (info.format, info.names, info.digest) == ("oci", [built.name], built.digest)
    assert info.size == built.size


def _corrupt(tmp_path: Path, change: Any) -> Path:
    data, digest = demo.build_demo_bytes("v1", FAKE_BUSYBOX)
    members = _members(data)
    change(members, digest)
    path = tmp_path / "bad.tar"
    path.write_bytes(_retar(members))
    return path


def _flip_layer_byte(members: dict[str, bytes], digest: str) -> None:
    manifest = json.loads(members[f"blobs/sha256/{digest[7:]}"])
    name = "blobs/sha256/" + manifest["layers"][0]["digest"][7:]
    blob = bytearray(members[name])
    blob[100] ^= 0xFF
    members[name] = bytes(blob)


def _drop_config(members: dict[str, bytes], digest: str) -> None:
    manifest = json.loads(members[f"blobs/sha256/{digest[7:]}"])
    del members["blobs/sha256/" + manifest["config"]["digest"][7:]]


def _break_index(members: dict[str, bytes], digest: str) -> None:
    members["index.json"] = b"{not json"


def _no_metadata(members: dict[str, bytes], digest: str) -> None:
    del members["index.json"]
    del members["manifest.json"]


@pytest.mark.parametrize(("change", "message"), [
    (_flip_layer_byte, "corrupt"),
    (_drop_config, "missing"),
    (_break_index, "not valid JSON"),
    (_no_metadata, "neither index.json"),
])
def test_damaged_archives_are_refused(tmp_path: Path, change: Any, message: str):
    with pytest.raises(ImageArchiveError, match=message):
        read_archive(_corrupt(tmp_path, change))


def test_truncated_gzipped_and_non_tar_files_are_refused(tmp_path: Path):
    data, _ = demo.build_demo_bytes("v1", FAKE_BUSYBOX)
    cases = {
        "truncated.tar": (data[: len(data) // 2], "truncated|not a valid tar|missing"),
        "image.tar.gz": (gzip.compress(data), "gzip"),
        "junk.tar": (b"hello" * 200, "not a valid tar|neither"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageArchiveError, match=message):
            read_archive(tmp_path / name)
    with pytest.raises(ImageArchiveError, match="cannot read"):
        read_archive(tmp_path / "absent.tar")


def test_docker_archive_names_come_from_repotags(tmp_path: Path):
    members = {
        "cfg.json": b"{}", "layer.tar": b"x" * 10,
        "manifest.json": json.dumps([{"Config": "cfg.json", "RepoTags": ["a/b:1", "a/b:latest"],
                                      "Layers": ["layer.tar"]}]).encode(),
    }
    (tmp_path / "d.tar").write_bytes(_retar(members))
    info = read_archive(tmp_path / "d.tar")
    assert (info.format, info.names, info.digest) == ("docker", ["a/b:1", "a/b:latest"], None)
    del members["layer.tar"]
    (tmp_path / "d.tar").write_bytes(_retar(members))
    with pytest.raises(ImageArchiveError, match="missing"):
        read_archive(tmp_path / "d.tar")


# --- lab: the image in a private containerd


class Runner:
    def __init__(self, c: Containerd, d: CtrDriver) -> None:
        self.c, self.d = c, d

    def run(self, env: dict[str, str], cid: str) -> None:
        call = self.d.run(RunSpec(id=cid, image="fleet.local/demo:lab", env=env))
        proc = self.c.sh(call.line())
        call.parse(CommandResult("local", proc.returncode, proc.stdout, proc.stderr, 0.0))

    def remove(self, cid: str) -> None:
        self.c.sh(self.d.remove(cid).line())


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with local_containerd() as c:
        d = CtrDriver(namespace=c.namespace, address=c.address, log_dir=str(c.dir / "logs"),
                      logger=str(c.dir / "logger"))
        built = demo.build_demo("lab", c.dir / "lab.tar")
        proc = c.sh(d.image_import(built.path).line(), stdin_path=built.path)
        assert proc.returncode == 0, proc.stderr
        ls = c.sh(d.image_list().line())
        assert d.image_list().parse(CommandResult("l", ls.returncode, ls.stdout, ls.stderr, 0)) == {
            built.name: built.digest}
        yield Runner(c, d)


def _status(port: int, path: str = "/") -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _wait_up(port: int, timeout: float = 10) -> None:
    wait_until(lambda: _status(port, "/healthz") is not None, timeout, 0.1, "the demo to listen")


@pytest.mark.lab
def test_demo_health_fail_knob_fails_healthz_only(runner: Runner):
    port = free_port()
    runner.run({"PORT": str(port), "DEMO_HEALTH": "fail"}, "health-1-lab001")
    try:
        _wait_up(port)
        assert _status(port, "/healthz") == 404
        assert _status(port) == 200
    finally:
        runner.remove("health-1-lab001")


@pytest.mark.lab
@pytest.mark.parametrize(("rate", "low", "high"), [("0", 0, 0), ("100", 40, 40), ("50", 8, 32)])
def test_demo_error_rate_knob(runner: Runner, rate: str, low: int, high: int):
    port = free_port()
    cid = f"err{rate}-1-lab002"
    runner.run({"PORT": str(port), "DEMO_ERROR_RATE": rate}, cid)
    try:
        _wait_up(port)
        statuses = [_status(port) for _ in range(40)]
        assert set(statuses) <= {200, 500}
        assert low <= statuses.count(500) <= high
        assert _status(port, "/healthz") == 200
    finally:
        runner.remove(cid)


@pytest.mark.lab
def test_demo_start_delay_knob(runner: Runner):
    port = free_port()
    t0 = time.monotonic()
    runner.run({"PORT": str(port), "DEMO_START_DELAY": "2"}, "slow-1-lab003")
    try:
        time.sleep(1)
        assert _status(port, "/healthz") is None
        _wait_up(port)
        assert 2 <= time.monotonic() - t0 < 8
    finally:
        runner.remove("slow-1-lab003")
