"""Secrets sealed with age in the fleet's shared state (fleet.store.sealed) on a real etcd, reached as a controller
reaches a record node's member: `etcdctl` over SSH (an in-process asyncssh server running /bin/sh). Two
controllers, each with its own identity file, share a secret and the digest key (same digests: no roll); a
controller removed cannot open what is set after; a damaged box is refused by the secret's name; no plaintext is
in etcd's data, nor in any command the record node was sent."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from etcd_local import ETCD, ETCDCTL, LocalEtcd
from helpers import run_fleet
from keyring.backends import fail
from sshserver import SSHFarm
from test_bad_input import Listener, assert_refused, inventory_for
from test_etcd_store import etcd as etcd
from test_secret_files import MemoryKeyring
from test_secret_files import use_keyring as use_keyring

from fleet.config.spec import SecretRef, ServiceSpec
from fleet.core.errors import SecretMissing, SecretStoreError, SecretUnreadable
from fleet.node import etcd as E
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.roster import Seen
from fleet.store.sealed import DIGEST_KEY, VALUES, SecretKeeper, open_secrets, unseal
from fleet.store.secrets import (
    LEGACY_DIGEST_ENTRY,
    Secret,
    init_identity,
    legacy_digest_key,
    load_identity,
    stamped,
    stamped_for,
)
from fleet.transport import Pool

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")


@pytest.fixture
async def store(etcd: LocalEtcd, farm: SSHFarm) -> AsyncIterator[EtcdStore]:
    async with Pool(connect_attempts=1) as pool:
        yield EtcdStore(pool, farm.nodes[:1], port=etcd.port)


class Controller:
    """One controller: its own home directory, identity file, keeper and reads."""

    def __init__(self, store: EtcdStore, home: Path, name: str) -> None:
        home.mkdir(mode=0o700)
        self.file = str(home / "identity")
        self.identity, made = init_identity(self.file)
        assert made and os.stat(self.file).st_mode & 0o777 == 0o600
        self.store = store
        self.seen = Seen(home / "seen.json")
        self.keeper = SecretKeeper(store, command="fleet secret", name=name, identity_file=self.file, wait=10,
                                   seen=self.seen)

    async def secrets(self):  # type: ignore[no-untyped-def]
        return await open_secrets(self.store, self.file, seen=self.seen)


def web(*secrets: str) -> ServiceSpec:
    return ServiceSpec(name="web", image="localhost/web:v1", env={s.upper(): SecretRef(s) for s in secrets})


async def raw(etcd: LocalEtcd) -> str:
    """Every key and value under /fleet/ as etcd stores it, read with a local etcdctl (not through fleet)."""
    done = subprocess.run([ETCDCTL or "etcdctl", f"--endpoints=127.0.0.1:{etcd.port}", "get", "--prefix", "/fleet/"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_two_controllers_share_a_secret_and_the_digest_key_so_nothing_rolls(
        store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    bob = Controller(store, tmp_path / "bob", "bob")
    assert alice.identity.public != bob.identity.public
    # The first controller to write registers itself and makes the digest key.
    box = await alice.keeper.set("db", Secret("hunter2"))
    assert box.readers == ("alice",)
    # Bob is not a controller yet: he can neither write nor open.
    with pytest.raises(SecretStoreError, match=rf"not one of the fleet's controllers \(alice\).*controller add "
                                               rf"NAME {bob.identity.public}"):
        await bob.keeper.set("db", Secret("mine"))
    with pytest.raises(SecretStoreError, match=r"not one of the fleet's controllers \(alice\)"):
        (await bob.secrets())("db")

    await alice.keeper.add_controller("bob", bob.identity.public)
    a, b = await alice.secrets(), await bob.secrets()
    assert a("db") == b("db") == "hunter2"
    assert a.digest_key() == b.digest_key() and len(a.digest_key()) == 32
    assert b("nothing") is None
    # Bob sets one for both; the services stamped on either controller are the same spec: no roll.
    await bob.keeper.set("api", Secret("tok-1"))
    a, b = await alice.secrets(), await bob.secrets()
    assert a("api") == "tok-1"
    (on_a,), (on_b,) = stamped([web("db", "api")], a), stamped([web("db", "api")], b)
    assert on_a.secret_digests == on_b.secret_digests and on_a.spec_hash() == on_b.spec_hash()
    assert set(on_a.secret_digests) == {"db", "api"}
    view = await alice.keeper.view()
    assert [c.name for c in view.controllers] == ["alice", "bob"]
    assert {s.name: s.readers for s in view.secrets} == {"api": ("alice", "bob"), "db": ("alice", "bob")}
    assert [s.set_by for s in view.secrets] == ["bob", "alice"]
    # A rotated value is a changed digest (its replicas roll), on both controllers alike.
    await alice.keeper.set("api", Secret("tok-2"))
    (rotated,) = stamped([web("db", "api")], await bob.secrets())
    assert rotated.secret_digests["api"] != on_a.secret_digests["api"]
    assert rotated.secret_digests["db"] == on_a.secret_digests["db"]
    # The event log says who did what, never a value.
    events = [e.value for e in await SharedState(store, EtcdLease(store, command="x")).events()]
    assert [(e["what"], e["by"]) for e in events] == [
        ("controller bootstrap", "alice"), ("secret set", "alice"), ("controller add", "alice"),
        ("secret set", "bob"), ("secret set", "alice")]
    assert "hunter2" not in json.dumps(events) and "tok-" not in json.dumps(events)


async def test_a_removed_controller_cannot_open_what_is_set_after(store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    bob = Controller(store, tmp_path / "bob", "bob")
    await alice.keeper.set("db", Secret("before"))
    await alice.keeper.add_controller("bob", bob.identity.public)
    assert (await bob.secrets())("db") == "before"
    with pytest.raises(SecretStoreError, match="already one of the fleet's"):
        await alice.keeper.add_controller("bob2", bob.identity.public)

    await alice.keeper.rm_controller("bob")
    await alice.keeper.set("db", Secret("after"))
    await alice.keeper.set("new", Secret("also-after"))
    theirs = await bob.secrets()
    for name in ("db", "new"):
        with pytest.raises(SecretStoreError, match="not one of the fleet's controllers"):
            theirs(name)
    with pytest.raises(SecretStoreError, match="not one of the fleet's controllers"):
        theirs.digest_key()
    # Nor could he open them with his identity: they are sealed to alice alone.
    with pytest.raises(SecretUnreadable, match=r"secret 'db': cannot be opened .* sealed to alice"):
        unseal(bob.identity, (await alice.keeper.view()).secrets[0], "secret 'db'")
    with pytest.raises(SecretStoreError, match="not one of the fleet's controllers"):
        await bob.keeper.set("db", Secret("bob's"))
    mine = await alice.secrets()
    assert (mine("db"), mine("new")) == ("after", "also-after")
    assert [c.name for c in (await alice.keeper.view()).controllers] == ["alice"]
    with pytest.raises(SecretStoreError, match="the fleet's last"):
        await alice.keeper.rm_controller("alice")
    with pytest.raises(SecretStoreError, match=r"no controller 'bob' \(the fleet's: alice\)"):
        await alice.keeper.rm_controller("bob")
    assert await alice.keeper.rm("new") and not await alice.keeper.rm("new")
    assert (await alice.secrets())("new") is None


async def test_a_damaged_or_moved_box_is_refused_by_name_and_nothing_acts_on_it(
        store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    await alice.keeper.set("db", Secret("v1"))
    await alice.keeper.set("api", Secret("v2"))
    record = json.loads((await store.get(VALUES + "db")).value)  # type: ignore[union-attr]
    data = bytearray(base64.b64decode(record["box"]))
    data[-5] ^= 0xFF
    api = (await store.get(VALUES + "api")).value  # type: ignore[union-attr]

    async def put(key: str, value: str) -> None:
        await store.txn([], [E.Put(key, value)])

    await put(VALUES + "db", json.dumps(record | {"box": base64.b64encode(bytes(data)).decode()}))
    await put(VALUES + "other", api.replace('"name":"api"', '"name":"other"'))
    await put(VALUES + "junk", "{not json")
    await put(VALUES + "text", json.dumps(record | {"name": "text", "box": "@@@ not base64"}))
    bad = await alice.secrets()
    # A changed box, a box moved under another name, or a damaged one: their MAC (name and box, with the
    # controller list's key) no longer verifies.
    for name in ("db", "other", "text"):
        with pytest.raises(SecretUnreadable, match=rf"^secret '{name}': its MAC does not verify"):
            bad(name)
    with pytest.raises(SecretUnreadable, match=r"^secret 'junk': not a sealed record"):
        bad("junk")
    assert bad("api") == "v2", "the others are still read"

    # Nothing acts on it: apply refuses before any change, reconcile leaves that service out and names why.
    plain = ServiceSpec(name="plain", image="localhost/web:v1")
    with pytest.raises(SecretUnreadable, match="secret 'db'"):
        stamped([web("db")], bad)
    kept, skipped = stamped_for([web("db"), plain], "reconcile", bad)
    assert kept == [plain] and "secret 'db'" in skipped["web"]
    # Re-sealing to a new controller stops before writing anything, naming what it cannot open.
    carol = Controller(store, tmp_path / "carol", "carol")
    with pytest.raises(SecretUnreadable, match="junk"):
        await alice.keeper.add_controller("carol", carol.identity.public)
    assert [c.name for c in (await alice.keeper.view()).controllers] == ["alice"]
    # A controller's record that does not decode stops every write: sealing without it would shut it out unseen.
    await put("/fleet/controllers/dave", '{"name": "dave"}')
    with pytest.raises(SecretUnreadable, match=r"/fleet/controllers/dave: not a sealed record \(missing field 'key'\)"):
        await alice.keeper.set("api", Secret("v3"))
    assert (await alice.secrets())("api") == "v2"
    # A damaged digest key is refused too.
    digest = json.loads((await store.get(DIGEST_KEY)).value)  # type: ignore[union-attr]
    await put(DIGEST_KEY, json.dumps(digest | {"box": record["box"]}))
    with pytest.raises(SecretUnreadable, match="digest key"):
        (await alice.secrets()).digest_key()


async def test_no_plaintext_in_etcd_or_in_any_command_sent(store: EtcdStore, farm: SSHFarm, etcd: LocalEtcd,
                                                           tmp_path: Path) -> None:
    # etcdctl (sshd forwarding nothing), so that every value sent is on a command's line or stdin, read here.
    for server in farm.servers.values():
        server.forwarding = False
    alice = Controller(store, tmp_path / "alice", "alice")
    bob = Controller(store, tmp_path / "bob", "bob")
    value = "pl41n-" + os.urandom(8).hex()
    await alice.keeper.set("db", Secret(value))
    await alice.keeper.add_controller("bob", bob.identity.public)
    await bob.keeper.set("api", Secret(value + "-2"))
    await alice.keeper.rm_controller("bob")
    assert (await alice.secrets())("api") == value + "-2"
    data = await raw(etcd)
    assert "/fleet/secrets/values/db" in data and "/fleet/controllers/alice" in data
    assert value not in data, "etcd holds only ciphertext"
    digest = (await alice.secrets()).digest_key()
    assert digest.hex() not in data and base64.b64encode(digest).decode() not in data
    sent = "\n".join(c for server in farm.servers.values() for c in server.commands)
    assert "etcdctl" in sent and value not in sent and digest.hex() not in sent
    # What is stored is an ordinary age file: the `age` CLI opens it with the identity file.
    box = base64.b64decode(json.loads((await store.get(VALUES + "api")).value)["box"])  # type: ignore[union-attr]
    opened = subprocess.run(["age", "-d", "-i", alice.file], input=box, capture_output=True, timeout=20)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == {"secret": "api", "value": value + "-2"}


def test_an_identity_file_readable_by_others_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    identity, made = init_identity(str(path))
    again, made_again = init_identity(str(path))
    assert made and not made_again and again.public == identity.public
    assert "AGE-SECRET-KEY" not in repr(identity) and identity.public in repr(identity)
    os.chmod(path, 0o640)
    with pytest.raises(SecretStoreError, match=rf"identity file {path}: readable by group or others \(mode 0640\); "
                                               rf"run `chmod 600 {path}`"):
        init_identity(str(path))
    os.chmod(path, 0o600)
    path.write_text("# nothing here\n")
    with pytest.raises(SecretStoreError, match=rf"identity file {path}: expected one AGE-SECRET-KEY"):
        init_identity(str(path))
    with pytest.raises(SecretStoreError, match=r"identity file .*/none: not found; create it with `fleet controller "
                                               r"init --identity-file"):
        load_identity(str(tmp_path / "none"))
    # An identity made by age-keygen is one fleet reads.
    keygen = tmp_path / "keygen"
    subprocess.run(["age-keygen", "-o", str(keygen)], check=True, capture_output=True, timeout=20)
    assert init_identity(str(keygen))[0].public.startswith("age1")


def test_no_getter_and_no_secret_store_refuses_services_with_secrets() -> None:
    with pytest.raises(SecretStoreError, match="no secret store"):
        stamped([web("db")], None)
    assert stamped([ServiceSpec(name="p", image="x")], None) == [ServiceSpec(name="p", image="x")]


async def test_unreachable_shared_state_is_kept_and_raised_where_a_secret_is_used(tmp_path: Path) -> None:
    file = str(tmp_path / "identity")
    init_identity(file)
    missing = await open_secrets(None, file)
    with pytest.raises(SecretStoreError, match="no record node"):
        missing("db")
    with pytest.raises(SecretStoreError, match="no record node"):
        missing.digest_key()


async def test_a_controller_without_identity_learns_what_is_missing_and_is_refused_the_rest(
        store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    await alice.keeper.set("db", Secret("v1"))
    nobody = await open_secrets(store, str(tmp_path / "absent"))
    assert nobody("not-set") is None, "a secret the fleet lacks is reported as missing, as for any controller"
    assert nobody.present("db")
    with pytest.raises(SecretMissing, match=r"identity file .*/absent: not found"):
        nobody("db")
    with pytest.raises(SecretMissing):
        nobody.digest_key()


def test_cli_controller_init_and_bad_names_or_keys_refused_before_any_node_is_contacted(tmp_path: Path) -> None:
    node = Listener()
    try:
        inv = inventory_for(tmp_path, node)
        env = {**os.environ, "COLUMNS": "400", "FLEET_LAB_ROOT": "/nonexistent", "HOME": str(tmp_path)}
        env.pop("FLEET_IDENTITY_FILE", None)
        path = tmp_path / "ctl" / "identity"
        path.parent.mkdir()
        made = run_fleet("controller", "init", "--identity-file", str(path), env=env)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert key.startswith("age1") and "made a new age identity" in made.stderr and f"controller add NAME {key}" \
            in made.stderr.replace("\n", " ")
        assert os.stat(path).st_mode & 0o777 == 0o600 and key in path.read_text()
        again = run_fleet("controller", "init", "--identity-file", str(path), env=env)
        assert again.returncode == 0 and again.stdout.strip() == key and "has an age identity" in again.stderr
        os.chmod(path, 0o644)
        loose = run_fleet("controller", "init", env={**env, "FLEET_IDENTITY_FILE": str(path)})
        assert loose.returncode == 1 and f"identity file {path}: readable by group or others" in loose.stderr
        for args, expected in (
                (("secret", "set", "bad name", "-i", inv), "secret name 'bad name': letters, digits"),
                (("controller", "add", "ci", "not-a-key", "-i", inv), "public key 'not-a-key': not an age X25519"),
                (("controller", "add", "c/i", key, "-i", inv), "controller name 'c/i'")):
            refused = run_fleet(*args, env=env, input="value")
            assert_refused(refused, expected)
        assert node.offered() == 0, "no node was contacted"
    finally:
        node.sock.close()


async def test_the_first_controller_keeps_the_digest_key_its_keyring_held_so_nothing_rolls_on_upgrade(
        store: EtcdStore, tmp_path: Path, use_keyring) -> None:  # type: ignore[no-untyped-def]
    old = os.urandom(32)
    kr = use_keyring(MemoryKeyring())
    kr.set_password("fleet", LEGACY_DIGEST_ENTRY, "not hex")
    assert legacy_digest_key() is None
    kr.set_password("fleet", LEGACY_DIGEST_ENTRY, old.hex())
    assert legacy_digest_key() == Secret(old.hex())
    alice = Controller(store, tmp_path / "alice", "alice")
    await alice.keeper.set("db", Secret("v1"))
    assert (await alice.secrets()).digest_key() == old, "the digests an earlier apply recorded stay the same"
    use_keyring(fail.Keyring())
    assert legacy_digest_key() is None
