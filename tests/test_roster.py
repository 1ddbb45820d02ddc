"""The fleet's controller list, authenticated (fleet.store.roster) on a real etcd reached over SSH: root on a record
node writes straight into etcd (past the lease and the fence, as it could) and tries to add its own key, to take a
controller out, and to replay an old list. Each is refused by name, nothing is sealed to a key the list does not
back, and `view()` (what `fleet controller ls` shows) names what is forged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_sealed import Controller
from test_sealed import etcd as etcd
from test_sealed import store as store
from test_sealed import use_keyring as use_keyring

from fleet.core.errors import SecretStoreError, SecretUnreadable
from fleet.node import etcd as E
from fleet.store.etcd import EtcdStore
from fleet.store.roster import KEY_NAME, ROSTER, Generation, Seen, make, new_key, roster_key, verify
from fleet.store.sealed import CONTROLLERS, DIGEST_KEY, VALUES, open_secrets, seal
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
    with pytest.raises(SecretStoreError, match="not one of the fleet's controllers"):
        (await open_secrets(store, str(tmp_path / "mallory.key"), seen=Seen(tmp_path / "mallory.json")))("db")
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
    with pytest.raises(SecretUnreadable, match=r"generation 2 .* forged"):  # nor is anything read under it
        (await alice.secrets())("db")
    await delete(store, roster_key(2))
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
    genuine = (await store.get(roster_key(3))).value  # type: ignore[union-attr]
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
    with pytest.raises(SecretUnreadable, match="refusing it"):  # nor is anything read under it
        (await alice.secrets())("db")
    await put(store, roster_key(3), genuine)
    assert (await alice.secrets())("db") == "v1"


def test_verify_walks_the_chain_from_what_this_controller_saw(tmp_path: Path) -> None:
    keys = {g: new_key() for g in (1, 2, 3)}
    sets = {1: {"alice": "age1a"}, 2: {"alice": "age1a", "bob": "age1b"}, 3: {"alice": "age1a"}}
    chain = {g: make("f1", g, sets[g], {"g": g}, "alice", keys[g - 1] if g > 1 else keys[1]) for g in (1, 2, 3)}

    def open_key(g: Generation) -> bytes:
        return keys[g.generation]

    assert verify(chain, "age1a", open_key, None).generation == 3
    seen = Seen(tmp_path / "seen.json")
    seen.put("n1", "age1a", verify(chain, "age1a", open_key, None))
    assert oct(os.stat(tmp_path / "seen.json").st_mode & 0o777) == "0o600"
    mark = seen.get("n1", "age1a")
    assert mark is not None and (mark.fleet, mark.generation) == ("f1", 3)
    assert verify(chain, "age1a", open_key, mark).key == keys[3]
    with pytest.raises(SecretUnreadable, match="a replay of an old list"):
        verify({g: chain[g] for g in (1, 2)}, "age1a", open_key, mark)
    with pytest.raises(SecretUnreadable, match="is of fleet f2, not fleet f1"):
        verify({1: make("f2", 1, sets[1], {}, "mallory", keys[1])}, "age1a", open_key, mark)
    forged = dict(chain) | {3: make("f1", 3, sets[2], {"g": 3}, "bob", new_key())}
    with pytest.raises(SecretUnreadable, match=r"generation 3 .* not MACed with generation 2's key"):
        verify(forged, "age1a", open_key, None)
    with pytest.raises(SecretUnreadable, match=r"lacks generation\(s\) \[2\]"):
        verify({1: chain[1], 3: chain[3]}, "age1a", open_key, None)


async def test_a_value_sealed_to_the_controllers_by_root_on_a_record_node_is_refused(
        store: EtcdStore, tmp_path: Path) -> None:
    """Anyone can seal a value to the controllers' public keys: root on a record node writes its own `db`, as a
    controller's box looks, with no MAC and with a MAC under a key of its own. Each is refused by name."""
    alice = Controller(store, tmp_path / "alice", "alice")
    await alice.keeper.set("db", Secret("v1"))
    readers = [Entry("alice", alice.identity.public, "", 0.0)]
    await put(store, VALUES + "db", seal("db", Secret("evil"), readers, "alice").doc())
    with pytest.raises(SecretUnreadable, match="secret 'db': sealed without a MAC of the fleet's controller list"):
        (await alice.secrets())("db")
    await put(store, VALUES + "db", seal("db", Secret("evil"), readers, "alice", new_key()).doc())
    with pytest.raises(SecretUnreadable, match="secret 'db': its MAC does not verify with generation 1"):
        (await alice.secrets())("db")
    await alice.keeper.set("db", Secret("v2"))
    assert (await alice.secrets())("db") == "v2"


async def test_boxes_sealed_before_values_were_maced_are_maced_once_then_a_stripped_mac_is_refused(
        store: EtcdStore, tmp_path: Path) -> None:
    alice = Controller(store, tmp_path / "alice", "alice")
    await alice.keeper.set("db", Secret("v1"))
    await alice.keeper.set("api", Secret("v2"))

    async def strip(key: str) -> None:
        doc = json.loads((await store.get(key)).value)  # type: ignore[union-attr]
        doc.pop("mac")
        await put(store, key, doc)

    for key in (VALUES + "db", VALUES + "api", DIGEST_KEY):  # the fleet as an older fleet left it
        await strip(key)
    with pytest.raises(SecretUnreadable, match="secret 'api': sealed without a MAC"):
        (await alice.secrets())("api")
    await alice.keeper.set("new", Secret("v3"))  # the first write after the upgrade MACs every box
    read = await alice.secrets()
    assert (read("db"), read("api"), read("new"), len(read.digest_key())) == ("v1", "v2", "v3", 32)
    assert '"what":"secrets MACed"' in json.dumps([json.loads(kv.value) for kv in await store.range("/fleet/events/")],
                                                  separators=(",", ":"))
    # From then on a box whose MAC was taken off is refused, and no later write trusts it again.
    await strip(VALUES + "db")
    await alice.keeper.set("other", Secret("v4"))
    with pytest.raises(SecretUnreadable, match="secret 'db': sealed without a MAC"):
        (await alice.secrets())("db")
