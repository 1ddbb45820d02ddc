"""The fleet's controller list, authenticated (fleet.store.roster) on a real etcd reached over SSH: root on a record
node writes straight into etcd (past the lease and the fence, as it could) and tries to add its own key, to take a
controller out, and to replay an old list. Each is refused by name, nothing is sealed to a key the list does not
back, and `view()` (what `fleet controller ls` shows) names what is forged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sealed import Controller
from test_sealed import etcd as etcd
from test_sealed import store as store
from test_sealed import use_keyring as use_keyring

from fleet.core.errors import SecretUnreadable
from fleet.node import etcd as E
from fleet.store.etcd import EtcdStore
from fleet.store.roster import KEY_NAME, ROSTER, make, new_key, roster_key
from fleet.store.sealed import CONTROLLERS, open_secrets, seal
from fleet.store.sealed import Controller as Entry
from fleet.store.secrets import Secret, init_identity


async def put(store: EtcdStore, key: str, value: object) -> None:
    """A write as root on a record node makes it: straight into etcd, no lease, no fence."""
    await store.txn([], [E.Put(key, value if isinstance(value, str) else json.dumps(value))])


async def delete(store: EtcdStore, key: str) -> None:
    await store.txn([], [E.Delete(key)])


async def test_a_forged_registration_is_refused_by_name_and_nothing_is_sealed_to_it(
        store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    await alice.keeper.set("db", Secret("v1"))
    mallory, _ = init_identity(str(tmp_path / "mallory.key"))
    # Root on the record node registers its own key, in the format a real registration has.
    await put(store, CONTROLLERS + "mallory", Entry("mallory", mallory.public, "alice", 0.0).doc())
    box = await alice.keeper.set("db", Secret("v2"))
    assert box.readers == ("alice",)
    assert "mallory" in alice.keeper.refused and "not in the fleet's sealed controller list" in \
        alice.keeper.refused["mallory"]
    with pytest.raises(SecretUnreadable, match="cannot be opened with this controller's identity"):
        (await open_secrets(store, str(tmp_path / "mallory.key")))("db")
    view = await alice.keeper.view()
    assert list(view.forged) == ["mallory"] and view.unverified is None
    # Nor can it add itself by writing the list's next generation: it has no key of the list to MAC it with.
    forged_key = new_key()
    keys = [Entry("alice", alice.identity.public, "", 0.0), Entry("mallory", mallory.public, "", 0.0)]
    sealed = seal(KEY_NAME, Secret(forged_key.hex()), keys, "alice")
    fleet = json.loads((await store.range(ROSTER))[-1].value)["fleet"]
    await put(store, roster_key(2), make(fleet, 2, {c.name: c.key for c in keys}, sealed.doc(), "alice",
                                         forged_key).doc())
    with pytest.raises(SecretUnreadable, match=r"generation 2 of the fleet's controller list is not MACed with "
                                               r"generation 1's key .*forged, refusing it"):
        await alice.keeper.set("db", Secret("v3"))
    view = await alice.keeper.view()
    assert view.unverified is not None and "generation 2" in view.unverified
    assert (await alice.secrets())("db") == "v2"  # nothing was written


async def test_a_forged_removal_leaves_the_controller_a_reader_and_is_shown(store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    bob = Controller(store, tmp_path / "bob", "bob")
    await alice.keeper.set("db", Secret("v1"))
    await alice.keeper.add_controller("bob", bob.identity.public)
    await delete(store, CONTROLLERS + "bob")  # root on the record node takes bob out of the registrations
    box = await alice.keeper.set("db", Secret("v2"))
    assert box.readers == ("alice", "bob")
    assert (await bob.secrets())("db") == "v2"
    view = await alice.keeper.view()
    assert [c.name for c in view.unlisted] == ["bob"] and not view.forged
    # Taking the whole sealed list away stops every write rather than trusting the registrations left.
    for kv in await store.range(ROSTER):
        await delete(store, kv.key)
    with pytest.raises(SecretUnreadable, match="has no sealed generation"):
        await alice.keeper.set("db", Secret("v3"))
    # Nor does a controller that knew the list start a new one when everything is gone.
    for prefix in (CONTROLLERS, "/fleet/secrets/"):
        for kv in await store.range(prefix):
            await delete(store, kv.key)
    with pytest.raises(SecretUnreadable, match="refusing to start a new list over it"):
        await alice.keeper.set("db", Secret("v3"))


async def test_a_replay_of_an_old_list_is_refused(store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    bob = Controller(store, tmp_path / "bob", "bob")
    await alice.keeper.set("db", Secret("v1"))
    await alice.keeper.add_controller("bob", bob.identity.public)
    entry = (await store.get(CONTROLLERS + "bob")).value  # type: ignore[union-attr]
    await alice.keeper.rm_controller("bob")
    assert sorted(json.loads(kv.value)["generation"] for kv in await store.range(ROSTER)) == [1, 2, 3]
    # Bob, or root on a record node, puts back the list as it was when bob was a controller: his registration
    # and generation 2, both genuine, and generation 3 gone.
    await put(store, CONTROLLERS + "bob", entry)
    await delete(store, roster_key(3))
    with pytest.raises(SecretUnreadable, match=r"at generation 2, older than generation 3 that this controller "
                                               r"verified before: a replay of an old list"):
        await alice.keeper.set("db", Secret("v2"))
    assert {b.name: b.readers for b in (await alice.keeper.view()).secrets} == {"db": ("alice",)}
    # Generation 3 rewritten (bob's removal undone, MACed with a key bob never had) is refused too.
    await put(store, roster_key(3), make("x", 3, {"alice": alice.identity.public, "bob": bob.identity.public},
                                         {}, "alice", new_key()).doc())
    with pytest.raises(SecretUnreadable, match="refusing it"):
        await alice.keeper.set("db", Secret("v2"))
    assert (await alice.secrets())("db") == "v1"
