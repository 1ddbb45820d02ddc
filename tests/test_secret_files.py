"""Secret files, configs on the node and the keyring, without a lab: keyring failures told apart (each saying what
to do), keyed digests that change with the value and never show it, the façade stamping specs with them, the
container's mounts (read-only, from fleet's node files; no value in the run spec or ctr's argv), and the node
sweep of files whose containers are gone (run with a real /bin/sh)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.errors
import pytest
from helpers import FLEET_CLI
from keyring.backend import KeyringBackend
from keyring.backends import fail
from test_bad_input import Listener, inventory_for

from fleet.api import Fleet
from fleet.config.spec import ConfigSpec, SecretFileSpec, SecretRef, ServiceSpec
from fleet.core import labels as L
from fleet.core.errors import KeyringLocked, KeyringUnavailable, SecretStoreError
from fleet.core.model import Inventory, Resources
from fleet.core.shell import Script
from fleet.engine.runspec import run_spec, sweep_files_script
from fleet.node.paths import DEFAULT
from fleet.node.runtime.base import Mount
from fleet.node.runtime.ctr import CtrDriver
from fleet.plan.scheduler import Assignment
from fleet.store import secrets as store


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.data.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.data[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.data.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


class LockedKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("collection is locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.KeyringLocked("collection is locked")


@pytest.fixture()
def use_keyring() -> Iterator[object]:
    before = keyring.get_keyring()

    def use(backend: KeyringBackend) -> KeyringBackend:
        keyring.set_keyring(backend)
        return backend

    try:
        yield use
    finally:
        keyring.set_keyring(before)


def test_keyring_failures_are_told_apart_and_say_what_to_do(use_keyring, monkeypatch):
    monkeypatch.delenv("FLEET_IDENTITY_FILE", raising=False)
    use_keyring(fail.Keyring())
    with pytest.raises(KeyringUnavailable, match=r"no keyring backend on this machine.*identity file.*"
                                                 r"FLEET_IDENTITY_FILE.*PYTHON_KEYRING_BACKEND"):
        store.load_identity()
    with pytest.raises(KeyringUnavailable, match="cannot store this controller's age identity"):
        store.init_identity()
    use_keyring(LockedKeyring())
    with pytest.raises(KeyringLocked, match="is locked: unlock it"):
        store.load_identity()
    kr = use_keyring(MemoryKeyring())
    with pytest.raises(SecretStoreError, match=r"no age identity in the keyring \(MemoryKeyring\): run `fleet "
                                               r"controller init`"):
        store.load_identity()
    made, new = store.init_identity()
    assert new and list(kr.data) == [("fleet", store.IDENTITY_ENTRY)]
    assert kr.data[("fleet", store.IDENTITY_ENTRY)].startswith("AGE-SECRET-KEY-1")
    again, new_again = store.init_identity()
    assert not new_again and again.public == made.public == store.load_identity().public
    assert "keyring" in made.where and "AGE-SECRET-KEY" not in repr(made)


def test_digests_are_keyed_change_with_the_value_and_do_not_show_it():
    key = os.urandom(32)
    a = store.secret_digest(key, "db", "hunter2")
    assert a == store.secret_digest(key, "db", "hunter2")
    assert a != store.secret_digest(key, "db", "hunter3")
    assert a != store.secret_digest(os.urandom(32), "db", "hunter2"), "another key, another digest"
    assert a != store.secret_digest(key, "other", "hunter2")
    import hashlib
    assert "hunter2" not in a and a not in hashlib.sha256(b"hunter2").hexdigest(), "not a plain hash"


class Values:
    """A secret source in memory (a SecretSource: values by name and the fleet's digest key)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.key = os.urandom(32)

    def __call__(self, name: str) -> str | None:
        return self.values.get(name)

    def digest_key(self) -> bytes:
        return self.key


def web(**kw: object) -> ServiceSpec:
    return ServiceSpec(name="web", image="localhost/web:v1", **kw)  # type: ignore[arg-type]


async def test_the_facade_stamps_specs_with_the_secrets_digests(use_keyring):
    values = Values({"tok": "one"})
    f = Fleet(Inventory("inv.yaml", ()), None, secrets=values)  # type: ignore[arg-type]
    spec = web(env={"TOKEN": SecretRef("tok")}, secret_files=(SecretFileSpec("db", "/run/secrets/db"),))
    plain = web(env={"A": "b"})
    stamped, untouched = await f.stamped([spec, plain])
    assert set(stamped.secret_digests) == {"tok"}, "a secret the fleet lacks gets no digest (it fails at start)"
    assert untouched == plain and not untouched.secret_digests
    values.values["tok"] = "two"
    (rotated, _) = await f.stamped([spec, plain])
    assert rotated.secret_digests["tok"] != stamped.secret_digests["tok"]
    assert rotated.spec_hash() != stamped.spec_hash()
    # Without a getter, the façade reads the fleet's sealed secrets with this controller's identity.
    use_keyring(fail.Keyring())
    unread = Fleet(Inventory("inv.yaml", ()), None)  # type: ignore[arg-type]
    with pytest.raises(KeyringUnavailable):
        await unread.stamped([spec])
    assert await unread.stamped([plain]) == [plain], "services without secrets need no identity"


def test_configs_and_secret_files_are_read_only_binds_of_fleets_node_files():
    spec = web(configs=(ConfigSpec("/etc/app.conf", "a=1", "0440"),),
               secret_files=(SecretFileSpec("db", "/run/secrets/db", "0400"),))
    a = Assignment("web", 2, "n1", 18080, Resources(0.1, 64 << 20), "new")
    run = run_spec(spec, 3, a, None, now=0, container="web-2-abc123")
    h = spec.spec_hash()
    assert run.id == "web-2-abc123"
    assert run.mounts[-2:] == (
        Mount("bind", "/etc/app.conf", f"/var/lib/fleet/configs/web/{h}/0", readonly=True),
        Mount("bind", "/run/secrets/db", "/run/fleet/secret-files/web-2-abc123/0", readonly=True))
    assert DEFAULT.secret_mount("web-2-abc123", 0).startswith(DEFAULT.run + "/"), "secret files live on the tmpfs"
    argv = CtrDriver("fleet", None).run_argv(run)
    assert "type=bind,src=/run/fleet/secret-files/web-2-abc123/0,dst=/run/secrets/db,options=rbind:ro" in argv
    assert not any("a=1" in arg for arg in argv), "a config's content is not in argv"
    assert run_spec(spec, 3, a, None, now=0).id.startswith("web-2-") and L.is_valid_container_id(
        run_spec(spec, 3, a, None, now=0).id)


def sh(script: Script) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", script.render()], capture_output=True, text=True, timeout=20)


def test_the_sweep_removes_files_of_containers_gone_and_keeps_the_rest(tmp_path: Path):
    sf, cf = tmp_path / "secret-files", tmp_path / "configs"
    for d in ("web-1-aaa", "web-2-bbb", "api-1-ccc"):
        (sf / d).mkdir(parents=True)
        (sf / d / "0").write_text("value")
    for d in ("web/h1", "web/h2", "api/h9"):
        (cf / d).mkdir(parents=True)
        (cf / d / "0").write_text("conf")
    (sf / "stray-file").write_text("x")  # not a container's directory: left alone
    keep = [("web-2-bbb", "web", "h2"), ("api-1-ccc", "api", "h9")]
    done = sh(sweep_files_script(keep, secret_files=str(sf), configs=str(cf)))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in sf.iterdir()) == ["api-1-ccc", "stray-file", "web-2-bbb"]
    assert sorted(str(p.relative_to(cf)) for p in cf.glob("*/*")) == ["api/h9", "web/h2"]
    assert sh(sweep_files_script([], secret_files=str(tmp_path / "none"), configs=str(tmp_path / "no"))).returncode == 0
    gone = sh(sweep_files_script([], secret_files=str(sf), configs=str(cf)))
    assert gone.returncode == 0 and [p.name for p in sf.iterdir()] == ["stray-file"] and not list(cf.glob("*/*"))


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET_CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env, "COLUMNS": "400", "FLEET_LAB_ROOT": "/nonexistent"})


def test_through_the_cli_a_bad_config_and_an_unusable_keyring_change_nothing(tmp_path: Path):
    node = Listener()  # a node that only counts the connections offered to it
    try:
        inv = inventory_for(tmp_path, node)
        book = tmp_path / "web.yaml"
        book.write_text("services:\n  web:\n    image: localhost/web:v1\n"
                        "    configs: [{source: ../elsewhere.conf, target: /etc/a.conf}]\n")
        refused = cli("apply", str(book), "-i", inv)
        assert refused.returncode == 2 and f"{book}:4: services.web.configs[0].source: '../elsewhere.conf' is outside" \
            in refused.stderr, refused.stderr
        book.write_text("services:\n  web:\n    image: localhost/web:v1\n    secrets: [{secret: db}]\n")
        for args in (("apply", str(book), "-i", inv), ("plan", str(book), "-i", inv), ("secret", "check", str(book))):
            out = cli(*args, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
            assert out.returncode == 1, out.stdout + out.stderr
            assert "no keyring backend on this machine" in out.stderr and "PYTHON_KEYRING_BACKEND" in out.stderr
            assert "Traceback" not in out.stderr
        assert node.offered() == 0, "no node was contacted"
    finally:
        node.sock.close()


async def test_reconcile_without_a_keyring_converges_the_services_without_secrets_and_names_the_others(
        use_keyring, monkeypatch):
    monkeypatch.delenv("FLEET_IDENTITY_FILE", raising=False)
    f = Fleet(Inventory("inv.yaml", ()), None)  # type: ignore[arg-type]
    spec = web(secret_files=(SecretFileSpec("db", "/run/secrets/db"),))
    plain = ServiceSpec(name="api", image="localhost/web:v1")
    use_keyring(fail.Keyring())
    kept, skipped = await f.stamped_for([spec, plain], "reconcile")
    assert kept == [plain]
    assert list(skipped) == ["web"] and skipped["web"].startswith("not reconciled: ")
    assert "no keyring backend" in skipped["web"]
    with pytest.raises(KeyringUnavailable):
        await Fleet(Inventory("inv.yaml", ()), None).stamped_for([spec, plain], "apply")  # type: ignore[arg-type]
    use_keyring(MemoryKeyring())
    assert await f.stamped_for([plain], "apply") == ([plain], {})
