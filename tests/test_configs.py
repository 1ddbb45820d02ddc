"""Configs and secret files in playbooks, as values: read relative to the playbook, part of the spec hash, round
trip through the history, named by `fleet plan`; every bad input is a `file:line` problem (loading is pure, so
nothing changed). A rotated secret (a new keyed digest) is a changed intent for `reconcile`."""

from __future__ import annotations

import os
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.config.spec import (
    MAX_CONFIG_BYTES,
    ConfigSpec,
    SecretFileSpec,
    from_playbook_dict,
    load_playbooks,
    to_playbook_dict,
    with_secret_digests,
)
from fleet.core.errors import SpecError
from fleet.plan.rollout.decide import ServiceState, config_changes, decide, intent_hash


def book(tmp_path: Path, body: str, files: dict[str, str | bytes] | None = None) -> Path:
    for name, content in (files or {}).items():
        f = tmp_path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content.encode() if isinstance(content, str) else content)
    path = tmp_path / "web.yaml"
    path.write_text("services:\n  web:\n    image: localhost/web:v1\n" + textwrap.indent(textwrap.dedent(body), "    "))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_playbooks([str(path)])
    return [str(p) for p in info.value.problems]


def test_config_read_relative_to_the_playbook_with_its_mode(tmp_path):
    path = book(tmp_path, """\
        configs:
          - {source: conf/app.conf, target: /etc/app/app.conf, mode: '0440'}
          - {content: "inline=1\\n", target: /etc/app/extra.conf}
        secrets:
          - {secret: db-pass}
          - {secret: api, file: /etc/app/api.key, mode: '644'}
    """, {"conf/app.conf": "a=1\n"})
    (spec,) = load_playbooks([str(path)])
    assert spec.configs == (ConfigSpec("/etc/app/app.conf", "a=1\n", "0440"),
                            ConfigSpec("/etc/app/extra.conf", "inline=1\n", "0444"))
    assert spec.configs[0].source == "conf/app.conf"
    assert spec.secret_files == (SecretFileSpec("db-pass", "/run/secrets/db-pass", "0400"),
                                 SecretFileSpec("api", "/etc/app/api.key", "0644"))
    assert spec.secret_names() == ("api", "db-pass")
    assert "a=1" not in repr(spec.configs[0]), "a config's content is not in its repr (it may be long)"


def test_config_content_and_mode_are_in_the_spec_hash_and_round_trip_through_the_history(tmp_path):
    path = book(tmp_path, "configs: [{source: app.conf, target: /etc/app.conf}]\n", {"app.conf": "a=1\n"})
    (first,) = load_playbooks([str(path)])
    (same,) = load_playbooks([str(path)])
    assert same.spec_hash() == first.spec_hash()
    (tmp_path / "app.conf").write_text("a=2\n")
    (edited,) = load_playbooks([str(path)])
    assert edited.spec_hash() != first.spec_hash()
    assert replace(first, configs=(replace(first.configs[0], mode="0400"),)).spec_hash() != first.spec_hash()
    back = from_playbook_dict("web", to_playbook_dict(edited))
    assert back == edited and back.spec_hash() == edited.spec_hash()
    assert intent_hash(edited) != intent_hash(first), "reconcile sees an edited config as a changed playbook"


def test_a_service_without_configs_or_secret_files_keeps_its_spec_hash(tmp_path):
    (spec,) = load_playbooks([str(book(tmp_path, "env: {A: b}\n"))])
    assert set(spec.hash_input()) == {"v", "image", "command", "env", "cpu", "memory", "port", "volumes",
                                      "health_exec"}


def test_secret_digests_change_the_hash_and_the_intent_and_round_trip(tmp_path):
    (spec,) = load_playbooks([str(book(tmp_path, "env: {TOKEN: {secret: tok}}\nsecrets: [{secret: db}]\n"))])
    one = with_secret_digests(spec, {"tok": "1" * 32, "db": "2" * 32, "unused": "3" * 32})
    assert dict(one.secret_digests) == {"tok": "1" * 32, "db": "2" * 32}
    two = with_secret_digests(spec, {"tok": "1" * 32, "db": "4" * 32})
    assert len({spec.spec_hash(), one.spec_hash(), two.spec_hash()}) == 3
    assert from_playbook_dict("web", to_playbook_dict(two)) == two
    # reconcile follows the accepted revision while the intent is the same, and tries the playbook once a secret
    # was rotated (its digest, hence the intent, changed).
    state = ServiceState(accepted=3, decision="applied", intent=intent_hash(one))
    assert decide("reconcile", one, state, one).heal
    rotated = decide("reconcile", two, state, one)
    assert not rotated.heal and rotated.spec == two


def test_plan_names_the_changed_config_and_the_rotated_secret(tmp_path):
    path = book(tmp_path, """\
        configs: [{source: a.conf, target: /etc/a.conf}, {content: x, target: /etc/b.conf}]
        secrets: [{secret: db}]
    """, {"a.conf": "1"})
    (spec,) = load_playbooks([str(path)])
    old = with_secret_digests(spec, {"db": "1" * 32})
    new = replace(old, configs=(replace(old.configs[0], content="2"), ConfigSpec("/etc/c.conf", "y")),
                  secret_digests={"db": "2" * 32})
    assert config_changes(old, new) == ["config /etc/a.conf changed", "config /etc/b.conf removed",
                                        "config /etc/c.conf added", "secret db changed"]
    assert config_changes(old, replace(old, configs=(replace(old.configs[0], mode="0400"), old.configs[1]))) == [
        "config /etc/a.conf changed"]
    assert config_changes(old, old) == []
    assert config_changes(spec, old) == ["secret db: its rotation is now tracked"]
    moved = replace(old, secret_files=(SecretFileSpec("db", "/run/secrets/other"),))
    assert config_changes(old, moved) == ["secret file /run/secrets/db removed",
                                          "secret file /run/secrets/other added"]
    assert all("1" * 32 not in line and "2" * 32 not in line for line in config_changes(old, new))


@pytest.mark.parametrize(("body", "files", "expected"), [
    ("configs: [{source: ../outside.conf, target: /etc/a}]\n", {},
     "4: services.web.configs[0].source: '../outside.conf' is outside the playbook's directory"),
    ("configs: [{source: link.conf, target: /etc/a}]\n", {},
     "4: services.web.configs[0].source: 'link.conf' is outside the playbook's directory"),
    ("configs: [{source: /etc/passwd, target: /etc/a}]\n", {},
     "4: services.web.configs[0]: source: expected a file path relative to the playbook's directory"),
    ("configs: [{source: missing.conf, target: /etc/a}]\n", {},
     "4: services.web.configs[0].source: no such file: 'missing.conf'"),
    ("configs: [{source: big.conf, target: /etc/a}]\n", {"big.conf": "x" * (MAX_CONFIG_BYTES + 1)},
     f"4: services.web.configs[0].source: 'big.conf' is {MAX_CONFIG_BYTES + 1} bytes; a config can be at most"),
    ("configs: [{source: bin.conf, target: /etc/a}]\n", {"bin.conf": b"\xff\xfe"},
     "4: services.web.configs[0].source: 'bin.conf' is not UTF-8 text"),
    ("configs: [{source: sub, target: /etc/a}]\n", {"sub/x": "1"},
     "4: services.web.configs[0].source: 'sub' is not a regular file"),
    ("configs:\n  - {content: a, target: /etc/a}\n  - {content: b, target: /etc//a}\n", {},
     "6: services.web.configs[1].target: services.web.configs[0].target already mounts a file at /etc/a"),
    ("configs: [{content: a, target: /run/secrets/db}]\nsecrets: [{secret: db}]\n", {},
     "5: services.web.secrets[0].file: services.web.configs[0].target already mounts a file at /run/secrets/db"),
    ("configs: [{content: a, target: /etc/a}, {content: b, target: /etc/a/b}]\n", {},
     "4: services.web.configs[1].target: /etc/a/b and services.web.configs[0].target's /etc/a are nested"),
    ("volumes: [{type: tmpfs, target: /etc/app}]\nconfigs: [{content: a, target: /etc/app/a.conf}]\n", {},
     "5: services.web.configs[0].target: /etc/app/a.conf is inside the volume at /etc/app"),
    ("configs: [{content: a, target: /etc/a, mode: 0444}]\n", {},
     "4: services.web.configs[0].mode: write the mode as a quoted octal string such as '0444' (got the number 292"),
    ("configs: [{content: a, target: /etc/a, mode: '4755'}]\n", {},
     "4: services.web.configs[0].mode: expected a mode of three octal digits such as '0444'"),
    ("secrets: [{secret: db, mode: '0999'}]\n", {},
     "4: services.web.secrets[0].mode: expected a mode of three octal digits"),
    ("configs: [{content: a, source: a.conf, target: /etc/a}]\n", {"a.conf": "a"},
     "4: services.web.configs[0]: give exactly one of source: FILE (relative to the playbook) or content: TEXT"),
    ("configs: [{content: a, target: /etc/hosts}]\n", {},
     "4: services.web.configs[0].target: cannot mount over /etc/hosts"),
    ("configs: [{content: a, target: 'etc/a'}]\n", {},
     "4: services.web.configs[0].target: expected an absolute path"),
    ("secrets: [{secret: 'bad name'}]\n", {},
     "4: services.web.secrets[0].secret: invalid secret name 'bad name'"),
    ("secret_digests: {db: " + "a" * 64 + "}\n", {},
     "4: services.web.secret_digests: fleet records this itself"),
])
def test_bad_config_or_secret_file_is_a_file_line_problem(tmp_path, body, files, expected):
    (tmp_path / "pb").mkdir()
    (tmp_path / "outside.conf").write_text("secret-ish\n")
    os.symlink(tmp_path / "outside.conf", tmp_path / "pb" / "link.conf")
    path = book(tmp_path / "pb", body, files)
    found = problems(path)
    assert any(p.startswith(f"{path}:{expected}") for p in found), found


def test_all_configs_of_a_service_together_are_limited(tmp_path):
    files = {f"c{i}.conf": "x" * MAX_CONFIG_BYTES for i in range(5)}
    body = "configs:\n" + "".join(f"  - {{source: c{i}.conf, target: /etc/c{i}}}\n" for i in range(5))
    path = book(tmp_path, body, files)
    assert problems(path) == [f"{path}:4: services.web.configs: the configs of one service add up to "
                              f"{5 * MAX_CONFIG_BYTES} bytes; at most 262144 (256 KiB)"]


def test_a_recorded_spec_must_carry_its_configs_content():
    with pytest.raises(SpecError) as info:
        from_playbook_dict("web", {"image": "localhost/web:v1", "configs": [{"source": "a.conf", "target": "/a"}]})
    assert "a recorded config carries its content" in str(info.value)
