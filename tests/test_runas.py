"""fleet's runc wrapper for a service's `user:` under ctr (fleet.node.runtime.runas), run by sh against a stand-in
runc that records its arguments and the files it was given: what it changes in a bundle's config.json and in an
exec's process file, how it looks a name up in the image, and that anything else reaches runc untouched. The real
runc under containerd: tests/test_runtime_security.py (lab)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fleet.node.runtime.runas import runas_script

# The head of a config.json as containerd writes it (compact), with the image's user and its groups.
SPEC = {"ociVersion": "1.0.2-dev", "process": {"user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 27]},
                                               "args": ["sleep", "60"], "env": ["user=x"], "cwd": "/"},
        "root": {"path": "rootfs"}, "annotations": {"user": "{not this one}"}}


def wrapper(tmp: Path, user: str) -> tuple[Path, dict[str, str]]:
    """The wrapper for `user` under tmp, and an environment whose `runc` records its argv and the spec it got."""
    _, text = runas_script(user)
    script = tmp / "runc-as"
    script.write_text(text)
    script.chmod(0o755)
    bin_ = tmp / "bin"
    bin_.mkdir()
    runc = bin_ / "runc"
    runc.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >"$OUT/argv"\n'
                    'for f in "$BUNDLE/config.json" "$PROC"; do [ -f "$f" ] && cp "$f" "$OUT/seen.json"; done\n'
                    'exit 0\n')
    runc.chmod(0o755)
    bundle = tmp / "bundle"
    (bundle / "rootfs" / "etc").mkdir(parents=True)
    (bundle / "rootfs" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
                                                      "app:x:1500:1600::/app:/bin/sh\n")
    (bundle / "rootfs" / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (bundle / "config.json").write_text(json.dumps(SPEC, separators=(",", ":")))
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "OUT": str(tmp), "BUNDLE": str(bundle),
           "PROC": str(tmp / "process.json")}
    return script, env


def create(tmp: Path, user: str) -> subprocess.CompletedProcess[str]:
    script, env = wrapper(tmp, user)
    return subprocess.run([str(script), "--root", "/run/r", "--log", "/x/log.json", "create", "--bundle",
                           str(tmp / "bundle"), "--pid-file", "/x/init.pid", "web-1-abc"],
                          env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize(("user", "uid", "gid"), [("2000", 2000, 0), ("2000:3000", 2000, 3000), ("1500", 1500, 1600),
                                                 ("app", 1500, 1600), ("nobody:staff", 65534, 50), ("0", 0, 0)])
def test_create_sets_the_process_user_and_nothing_else(tmp_path: Path, user: str, uid: int, gid: int) -> None:
    out = create(tmp_path, user)
    assert out.returncode == 0, out.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["process"]["user"] == {"uid": uid, "gid": gid}
    assert {**seen, "process": {**seen["process"], "user": SPEC["process"]["user"]}} == SPEC
    assert (tmp_path / "argv").read_text().split("\n")[:5] == ["--root", "/run/r", "--log", "/x/log.json", "create"]


@pytest.mark.parametrize(("user", "words"), [("ghost", "user ghost is not in the image's /etc/passwd"),
                                             ("app:wheel", "group wheel is not in the image's /etc/group")])
def test_a_name_the_image_lacks_fails_before_runc_runs(tmp_path: Path, user: str, words: str) -> None:
    out = create(tmp_path, user)
    assert out.returncode == 1 and words in out.stderr
    assert not (tmp_path / "argv").exists()
    assert json.loads((tmp_path / "bundle" / "config.json").read_text()) == SPEC


def test_exec_sets_the_user_in_the_process_file_found_from_the_shims_directory(tmp_path: Path) -> None:
    script, env = wrapper(tmp_path, "app")
    (tmp_path / "process.json").write_text(json.dumps(SPEC["process"], separators=(",", ":")) + "\n")
    out = subprocess.run([str(script), "--root", "/run/r", "exec", "--process", str(tmp_path / "process.json"),
                          "--detach", "web-1-abc"], env=env, cwd=tmp_path / "bundle", capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "seen.json").read_text())["user"] == {"uid": 1500, "gid": 1600}


@pytest.mark.parametrize("args", [["start", "web-1-abc"], ["delete", "--force", "web-1-abc"],
                                  ["kill", "web-1-abc", "15"], ["state", "create"]])
def test_other_commands_reach_runc_untouched(tmp_path: Path, args: list[str]) -> None:
    script, env = wrapper(tmp_path, "2000")
    out = subprocess.run([str(script), "--root", "/run/r", *args], env=env, capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "argv").read_text().split("\n")[:-1] == ["--root", "/run/r", *args]
    assert json.loads((tmp_path / "bundle" / "config.json").read_text()) == SPEC


def test_the_user_goes_into_the_script_only_as_checked() -> None:
    for bad in ("a b", "x'y", "1000:", ":1000", "$(id)", "a" * 33):
        with pytest.raises(ValueError, match="user"):
            runas_script(bad)
    assert runas_script("1000")[0] != runas_script("1001")[0]
