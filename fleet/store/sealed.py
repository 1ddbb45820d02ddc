"""The fleet's secrets in its shared state (etcd), sealed with age to the public keys of the fleet's controllers:
any controller sets a secret for all, each opens it with its own identity (fleet.store.secrets.Identity), and the
record nodes only ever hold ciphertext.

Keys:
    /fleet/controllers/<name>         {"name", "key": "age1…", "added_by", "added_at"}: a registration, valid only
                                      where the sealed controller list (fleet.store.roster, under
                                      /fleet/secrets/roster/) names that key: only a controller can change that
                                      list, so root on a record node cannot register itself (a forged entry is
                                      refused by name and nothing is sealed to it) nor take a controller out
    /fleet/secrets/values/<secret>    {"name", "box": base64 of an age file, "readers": [controller names],
                                       "set_by", "set_at", "mac": HMAC-SHA256 of the name and box with the key of
                                       the controller list's newest generation}
    /fleet/secrets/digest-key         the same shape; its plaintext is the fleet's HMAC key for secret digests, so
                                      every controller computes the same digests (and none rolls a service)

Inside a box is JSON `{"secret": NAME, "value": VALUE}`, so a box moved under another name is refused. Anyone can
seal a value to the controllers' public keys; only a controller holds the MAC key of the controller list
(fleet.store.roster), so a value (or digest key) whose MAC does not verify with the newest generation's key is
refused by name: root on a record node cannot make the controllers deploy a value of its own. Adding or removing a
controller re-MACs every box with the new generation's key. Boxes written before fleet MACed them are MACed once
by the first controller that writes after the upgrade, while no box of the fleet has a MAC yet (the one moment
they are trusted unauthenticated); from then on a box without one is refused. A record
that fails to decode, a box that fails to open, is refused by the secret's name (`SecretUnreadable`) and nothing
acts on it. Writes (`SecretKeeper`) go under the fleet's lease (EtcdLease), each a fenced transaction
(SharedState) with an event; `Unsealed` is one run's read of them, the `secrets` getter of the Fleet façade.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyrage
from pyrage import x25519

from fleet.core.errors import RecordsError, SecretMissing, SecretStoreError, SecretUnreadable
from fleet.node import etcd as E
from fleet.store.etcd import DEFAULT_TTL, EtcdLease, EtcdStore, SharedState
from fleet.store.lease import default_holder
from fleet.store.roster import (
    KEY_NAME,
    ROSTER,
    Generation,
    Roster,
    Seen,
    make,
    new_fleet,
    new_key,
    roster_key,
    verify,
)
from fleet.store.secrets import Identity, Secret, init_identity, legacy_digest_key, load_identity

CONTROLLERS = "/fleet/controllers/"
SECRETS = "/fleet/secrets/"
VALUES = SECRETS + "values/"
DIGEST_KEY = SECRETS + "digest-key"
DIGEST_NAME = "digest-key"  # the name sealed inside the digest key's box
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def check_name(kind: str, name: str) -> str:
    """`name` when it is a valid secret or controller name; ValueError saying what is allowed."""
    if not NAME_RE.match(name) or (kind == "secret" and "@" in name):
        allowed = "letters, digits, . _ -" + (" @" if kind == "controller" else "")
        raise ValueError(f"{kind} name {name!r}: {allowed} (up to 128, starting with a letter or digit)")
    return name


def check_key(key: str) -> str:
    """An age X25519 public key (age1…), or ValueError."""
    try:
        x25519.Recipient.from_str(key)
    except pyrage.RecipientError:
        raise ValueError(f"public key {key[:80]!r}: not an age X25519 public key (age1…)") from None
    return key


@dataclass(frozen=True)
class Controller:
    """A controller that can read the fleet's secrets: its name, its age public key, who added it and when."""

    name: str
    key: str
    added_by: str
    added_at: float

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "added_by": self.added_by, "added_at": self.added_at}


@dataclass(frozen=True)
class Box:
    """One sealed value: the age file (base64) and the controllers it was sealed to, who set it and when."""

    name: str
    box: str = field(repr=False)
    readers: tuple[str, ...]
    set_by: str
    set_at: float
    mac: str = field(default="", repr=False)  # box_mac with the controller list's key; "" in a legacy box

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "box": self.box, "readers": list(self.readers), "set_by": self.set_by,
                "set_at": self.set_at, **({"mac": self.mac} if self.mac else {})}

    def signed(self, key: bytes) -> Box:
        return replace(self, mac=box_mac(key, self.name, self.box))


def box_mac(key: bytes, name: str, box: str) -> str:
    """The MAC of a sealed value: its name and box, with the key of the controller list's newest generation."""
    return hmac.new(key, b"fleet secret\0" + name.encode() + b"\0" + box.encode(), hashlib.sha256).hexdigest()


def check_mac(box: Box, roster: Roster, what: str) -> None:
    """SecretUnreadable naming `what` unless `box` is MACed with the verified controller list's key."""
    if not box.mac:
        raise SecretUnreadable(f"{what}: sealed without a MAC of the fleet's controller list (before fleet MACed "
                               f"secret values, or by someone who is not a controller): refusing it; set it again "
                               f"from a controller")
    if not hmac.compare_digest(box_mac(roster.key, box.name, box.box), box.mac):
        raise SecretUnreadable(f"{what}: its MAC does not verify with generation {roster.generation} of the fleet's "
                               f"controller list: not written by a controller (or before the list changed, and not "
                               f"re-sealed since); refusing it (set it again)")


def _controller(kv: E.KeyValue) -> Controller:
    doc = json.loads(kv.value)
    c = Controller(str(doc["name"]), check_key(str(doc["key"])), str(doc["added_by"]), float(doc["added_at"]))
    if c.name != kv.key[len(CONTROLLERS):]:
        raise ValueError(f"it names controller {c.name!r}")
    return c


def _box(kv: E.KeyValue, name: str) -> Box:
    return box_of(json.loads(kv.value), name)


def box_of(doc: Any, name: str) -> Box:
    """A sealed box from its document; ValueError, KeyError or TypeError when it is not one, or names another."""
    readers = doc["readers"]
    if not isinstance(readers, list) or not all(isinstance(r, str) for r in readers):
        raise ValueError("readers: expected a list of controller names")
    box = Box(str(doc["name"]), str(doc["box"]), tuple(readers), str(doc["set_by"]), float(doc["set_at"]),
              str(doc.get("mac", "")))
    if box.name != name:
        raise ValueError(f"it names secret {box.name!r}")
    return box


@dataclass(frozen=True)
class SealedState:
    """What etcd holds of the fleet's secrets at one revision. Records that could not be decoded are in `broken`
    (etcd key → why), refused by name where they are used, never guessed at."""

    controllers: Mapping[str, Controller]
    boxes: Mapping[str, Box]
    digest: Box | None
    broken: Mapping[str, str]
    chain: Mapping[int, Generation] = field(default_factory=dict)  # the sealed controller list (fleet.store.roster)

    @staticmethod
    def of(kvs: Sequence[E.KeyValue]) -> SealedState:
        controllers: dict[str, Controller] = {}
        boxes: dict[str, Box] = {}
        digest: Box | None = None
        broken: dict[str, str] = {}
        chain: dict[int, Generation] = {}
        for kv in kvs:
            try:
                if kv.key.startswith(ROSTER):
                    g = Generation.of(kv)
                    chain[g.generation] = g
                elif kv.key.startswith(CONTROLLERS):
                    c = _controller(kv)
                    controllers[c.name] = c
                elif kv.key.startswith(VALUES):
                    name = kv.key[len(VALUES):]
                    boxes[name] = _box(kv, name)
                elif kv.key == DIGEST_KEY:
                    digest = _box(kv, DIGEST_NAME)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                why = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                broken[kv.key] = f"not a sealed record ({why[:120]})"
        return SealedState(controllers, boxes, digest, broken, chain)

    def empty(self) -> bool:
        """A fleet where no controller ever wrote: the first to write registers itself."""
        return not (self.controllers or self.boxes or self.digest or self.broken or self.chain)

    def forged(self, roster: Roster) -> dict[str, str]:
        """The registrations under /fleet/controllers/ that the verified list does not back: name -> why."""
        return {name: f"{CONTROLLERS}{name} is not in the fleet's sealed controller list (generation "
                      f"{roster.generation}): forged, or left by an interrupted add; nothing is sealed to it"
                for name, c in self.controllers.items() if roster.controllers.get(name) != c.key}

    def readers(self, roster: Roster) -> list[Controller]:
        """The controllers of the verified list, with their registrations where those match."""
        return [c if (c := self.controllers.get(name)) is not None and c.key == key else Controller(name, key, "", 0.0)
                for name, key in sorted(roster.controllers.items())]

    def unreadable(self, name: str) -> str | None:
        """Why the secret `name`'s record cannot be used (None: it can, or there is none)."""
        return self.broken.get(DIGEST_KEY if name == DIGEST_NAME else VALUES + name)


async def read_state(store: EtcdStore) -> SealedState:
    """The controllers, boxes and digest key, read in one transaction (one revision of the shared state)."""
    done = await store.txn([], [E.Get(CONTROLLERS, True), E.Get(SECRETS, True)])
    return SealedState.of([kv for answer in done.responses if isinstance(answer, E.Range) for kv in answer.kvs])


def seal(name: str, value: Secret, controllers: Sequence[Controller], by: str, key: bytes | None = None) -> Box:
    """`value` sealed to every controller's public key, its name inside the box; MACed with `key` (the controller
    list's newest generation's) when given."""
    if not controllers:
        raise SecretStoreError("the fleet has no controller to seal secrets to")
    plain = json.dumps({"secret": name, "value": value.reveal()}, ensure_ascii=False).encode()
    recipients = [x25519.Recipient.from_str(c.key) for c in controllers]
    box = Box(name, base64.b64encode(pyrage.encrypt(plain, recipients)).decode(),
              tuple(sorted(c.name for c in controllers)), by, time.time())
    return box if key is None else box.signed(key)


def unseal(identity: Identity, box: Box, what: str) -> Secret:
    """The value in `box`, opened with `identity`; SecretUnreadable naming `what` when the box does not decode,
    is not sealed to this controller, fails to open, or holds another name."""
    try:
        data = base64.b64decode(box.box, validate=True)
    except (binascii.Error, ValueError):
        raise SecretUnreadable(f"{what}: its sealed value is not base64; refusing it (set it again)") from None
    try:
        plain = identity.open(data)
    except pyrage.DecryptError as exc:
        raise SecretUnreadable(
            f"{what}: cannot be opened with this controller's identity ({identity.public}): {exc}; it is sealed "
            f"to {', '.join(box.readers) or 'nobody'}: a controller that can read it may run `fleet controller add` "
            f"for this one, or set it again if it is damaged") from None
    try:
        doc = json.loads(plain)
        name, value = doc["secret"], doc["value"]
    except (ValueError, KeyError, TypeError):
        raise SecretUnreadable(f"{what}: its box opened but holds no secret; refusing it (set it again)") from None
    if name != box.name or not isinstance(value, str):
        raise SecretUnreadable(f"{what}: its box holds secret {str(name)[:60]!r}, not this one (moved under "
                               f"another name?); refusing it") from None
    return Secret(value)


def digest_key_of(identity: Identity, state: SealedState, roster: Roster) -> bytes:
    """The fleet's digest key, opened with `identity`, MACed with `roster`'s key; SecretUnreadable when not."""
    why = state.unreadable(DIGEST_NAME)
    if why is not None:
        raise SecretUnreadable(f"the fleet's secret digest key ({DIGEST_KEY}): {why}; refusing it")
    if state.digest is None:
        raise SecretStoreError(f"the fleet has no secret digest key ({DIGEST_KEY}): run `fleet secret set` once "
                               "from a controller to create it")
    check_mac(state.digest, roster, f"the fleet's secret digest key ({DIGEST_KEY})")
    text = unseal(identity, state.digest, f"the fleet's secret digest key ({DIGEST_KEY})").reveal()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SecretUnreadable(f"the fleet's secret digest key ({DIGEST_KEY}): not 32 bytes of hex; refusing it")
    return key


def new_digest_key() -> Secret:
    return Secret(os.urandom(32).hex())


class Unsealed:
    """One run's view of the fleet's secrets (a `SecretSource`): read from etcd once, each value opened with this
    controller's identity when asked. When they could not be read at all (a keyring that cannot be read, etcd
    unreachable), every use raises why, so `reconcile` leaves out only the services that need a secret. A
    controller with no identity yet still learns which secrets the fleet lacks (None), and gets `no_identity`
    for the others."""

    def __init__(self, state: SealedState | None, identity: Identity | None,
                 failure: SecretStoreError | None = None, no_identity: SecretStoreError | None = None,
                 roster: Roster | SecretStoreError | None = None) -> None:
        self.state = state
        self.identity = identity
        self.failure = failure
        self.no_identity = no_identity
        self.roster = roster  # the verified controller list whose key MACs the boxes, or why it is not
        self._key: bytes | None = None

    def __repr__(self) -> str:
        return f"Unsealed({len(self.state.boxes) if self.state else 'unread'} secrets, identity={self.identity!r})"

    def _read(self) -> SealedState:
        if self.failure is not None:
            raise self.failure
        assert self.state is not None
        return self.state

    def _ready(self) -> tuple[SealedState, Identity, Roster]:
        state = self._read()
        if self.identity is None:
            raise self.no_identity or SecretStoreError("this controller has no age identity")
        if not isinstance(self.roster, Roster):
            raise self.roster or SecretStoreError("the fleet's controller list was not verified")
        return state, self.identity, self.roster

    def __call__(self, name: str) -> str | None:
        """The secret's value; None when the fleet has no such secret; SecretUnreadable naming it when its record
        or box is bad."""
        state = self._read()
        why = state.unreadable(name)
        if why is not None:
            raise SecretUnreadable(f"secret {name!r}: {why}; refusing it (set it again)")
        box = state.boxes.get(name)
        if box is None:
            return None
        try:
            _, identity, roster = self._ready()
        except SecretStoreError as exc:
            raise type(exc)(f"secret {name!r}: {exc}") from None
        check_mac(box, roster, f"secret {name!r}")
        return unseal(identity, box, f"secret {name!r}").reveal()

    def digest_key(self) -> bytes:
        if self._key is None:
            state, identity, roster = self._ready()
            self._key = digest_key_of(identity, state, roster)
        return self._key

    def present(self, name: str) -> bool:
        """Whether the fleet has the secret `name` (not whether this controller can open it)."""
        return name in self._read().boxes


def default_name() -> str:
    """This controller's name when it registers itself: `user@host`, in the characters a name allows."""
    return re.sub(r"[^A-Za-z0-9._@-]", "-", default_holder()).lstrip("._@-")[:128] or "controller"


async def open_secrets(store: EtcdStore | None, identity_file: str | None = None, *, place: str = "",
                       seen: Seen | None = None) -> Unsealed:
    """The fleet's secrets for one run, with the controller list verified (`verified_roster`: its key MACs every
    value). The identity is loaded first, so a keyring that cannot be read fails before any node is contacted;
    failures are kept in the result (raised where a secret is used), not raised."""
    identity, missing = None, None
    try:
        identity = load_identity(identity_file)
    except SecretMissing as exc:
        missing = exc
    except SecretStoreError as exc:
        return Unsealed(None, None, exc)
    if store is None:
        return Unsealed(None, identity, SecretStoreError("no record node to keep the fleet's secrets"))
    try:
        state = await read_state(store)
    except RecordsError as exc:
        return Unsealed(None, identity, SecretStoreError(f"the fleet's secrets could not be read: {exc}"))
    roster: Roster | SecretStoreError | None = None
    if identity is not None and not state.empty():
        try:
            roster = verified_roster(state, identity, seen or Seen(), place)
        except SecretStoreError as exc:
            roster = exc
    return Unsealed(state, identity, no_identity=missing, roster=roster)


def verified_roster(state: SealedState, identity: Identity, seen: Seen, place: str) -> Roster:
    """The fleet's controller list, verified with this controller's identity from what it verified before on
    the record nodes `place` (fleet.store.roster.verify), and remembered; SecretStoreError naming the command that
    registers it when this controller is not one, SecretUnreadable when the list is forged, replayed or
    rewritten."""
    def open_key(g: Generation) -> bytes:
        if identity.public not in g.controllers.values():
            names = ", ".join(sorted(g.controllers)) or "none"
            raise SecretStoreError(
                f"this controller ({identity.public}, in {identity.where}) is not one of the fleet's controllers "
                f"({names}): have one of them run `fleet controller add NAME {identity.public}`")
        try:
            key = bytes.fromhex(unseal(identity, box_of(g.key, KEY_NAME), f"the fleet's controller list, "
                                       f"generation {g.generation}").reveal())
        except (ValueError, KeyError, TypeError):
            key = b""
        if len(key) != 32:
            raise SecretUnreadable(f"the fleet's controller list, generation {g.generation}: its key is not 32 "
                                   f"bytes; refusing it")
        return key

    if state.chain and not any(identity.public in g.controllers.values() for g in state.chain.values()):
        open_key(state.chain[max(state.chain)])  # raises: not one of the fleet's controllers
    roster = verify(state.chain, identity.public, open_key, seen.get(place, identity.public))
    open_key(state.chain[roster.generation])  # a controller taken out of the newest generation is refused
    seen.put(place, identity.public, roster)
    return roster


# Puts per transaction when re-sealing every secret: etcd refuses more than --max-txn-ops (128 by default).
TXN_PUTS = 100


@dataclass(frozen=True)
class SecretsView:
    """What `fleet secret ls` and `fleet controller ls` show: names, readers and who did what; never a value.
    `forged`: registrations the sealed controller list does not back (name -> why); `unlisted`: controllers the
    list names whose registration is gone (removed without the fleet's key); `unverified`: why the list itself
    could not be verified (then nothing in it is vouched for)."""

    controllers: tuple[Controller, ...]
    secrets: tuple[Box, ...]
    broken: Mapping[str, str]
    forged: Mapping[str, str] = field(default_factory=dict)
    unlisted: tuple[Controller, ...] = ()
    unverified: str | None = None


class SecretKeeper:
    """Changes to the fleet's sealed secrets and its controllers, made by this controller (its identity), each
    under the fleet's lease: taken, the state read afresh, every write a fenced transaction with an event.

    The first controller to write to a fleet registers itself (as `name`) and creates the digest key. A controller
    not registered is refused, naming the command that registers it, and so is every write while a controller's
    record cannot be decoded (a value sealed without it would shut it out unseen). Adding or removing a controller
    re-seals every secret and the digest key to the new set before the set itself changes: an interrupted add
    leaves the new one unlisted, an interrupted rm leaves the old one listed with some secrets already closed to
    it; running the command again completes either."""

    def __init__(self, store: EtcdStore, *, command: str, name: str | None = None, identity_file: str | None = None,
                 wait: float = 0.0, ttl: int = DEFAULT_TTL, place: str = "", seen: Seen | None = None) -> None:
        self.store = store
        self.command = command
        self.name = check_name("controller", name or default_name())
        self.identity_file = identity_file
        self.wait = wait
        self.ttl = ttl
        self.place = place  # which record nodes keep this fleet's list (what `seen` remembers it by)
        self.seen = seen or Seen()
        self.refused: dict[str, str] = {}  # forged registrations the last write found (and sealed nothing to)

    def verified(self, state: SealedState, identity: Identity) -> Roster:
        """The fleet's controller list, verified (`verified_roster`) on this keeper's record nodes."""
        return verified_roster(state, identity, self.seen, self.place)

    async def view(self) -> SecretsView:
        """The controllers and the secrets' names and readers; takes no lease. The registrations are checked
        against the sealed controller list when this controller has an identity that reads it."""
        state = await read_state(self.store)
        listed = tuple(sorted(state.controllers.values(), key=lambda c: c.name))
        secrets = tuple(state.boxes[n] for n in sorted(state.boxes))
        try:
            roster = self.verified(state, load_identity(self.identity_file))
        except SecretStoreError as exc:
            return SecretsView(listed, secrets, dict(state.broken), unverified=str(exc))
        return SecretsView(listed, secrets, dict(state.broken), state.forged(roster),
                           tuple(c for c in state.readers(roster) if c.name not in state.controllers))

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[tuple[SharedState, SealedState, Identity, Controller, Roster]]:
        """The lease, the state read under it, this controller's identity and entry, and the verified controller
        list (registering this controller, with a new digest key and list, when the fleet has none yet)."""
        identity, _ = init_identity(self.identity_file)  # a first controller needs no `fleet controller init`
        async with EtcdLease(self.store, command=self.command, ttl=self.ttl, wait=self.wait) as lease:
            shared = SharedState(self.store, lease)
            state = await read_state(self.store)
            bad = {key: why for key, why in state.broken.items() if key.startswith(CONTROLLERS)}
            if bad:
                raise SecretUnreadable("the fleet's controllers cannot all be read: " + "; ".join(
                    f"{key}: {why}" for key, why in sorted(bad.items())) + "; refusing to seal without them")
            if state.empty() and (seen := self.seen.get(self.place, identity.public)) is not None:
                raise SecretUnreadable(f"the fleet's controllers and secrets are gone from its shared state, where "
                                       f"this controller verified generation {seen.generation} of its controller "
                                       f"list before: refusing to start a new list over it (if the fleet was reset "
                                       f"on purpose, remove {seen.where})")
            if state.empty():
                me = Controller(self.name, identity.public, self.name, time.time())
                first, roster = self._generation(Roster(new_fleet(), 0, {}, b""), [me], me.name)
                digest = seal(DIGEST_NAME, legacy_digest_key() or new_digest_key(), [me], me.name, roster.key)
                await shared.write({CONTROLLERS + me.name: me.doc(), DIGEST_KEY: digest.doc(),
                                    roster_key(1): first.doc()},
                                   event=_event("controller bootstrap", me.name, controller=me.name))
                self.seen.put(self.place, identity.public, roster)
                state = SealedState({me.name: me}, {}, digest, {}, {1: first})
            roster = self.verified(state, identity)
            self.refused = state.forged(roster)
            me = next(c for c in state.readers(roster) if c.key == identity.public)
            state = await self._upgrade(shared, state, roster, me)
            yield shared, state, identity, me, roster

    async def _upgrade(self, shared: SharedState, state: SealedState, roster: Roster, me: Controller) -> SealedState:
        """A fleet whose boxes were all sealed before fleet MACed them: each MACed now with the controller list's
        key, by this controller (the one moment they are trusted as they are; once any box has a MAC, a box
        without one is refused)."""
        boxes = [*state.boxes.values(), *([state.digest] if state.digest is not None else [])]
        if not boxes or any(b.mac for b in boxes):
            return state
        signed = {n: b.signed(roster.key) for n, b in state.boxes.items()}
        digest = state.digest.signed(roster.key) if state.digest is not None else None
        items = [(VALUES + n, b.doc()) for n, b in signed.items()] + ([(DIGEST_KEY, digest.doc())] if digest else [])
        for start in range(0, len(items), TXN_PUTS):
            last = start + TXN_PUTS >= len(items)
            await shared.write(dict(items[start:start + TXN_PUTS]), event=_event("secrets MACed", me.name) if last
                               else None)
        return replace(state, boxes=signed, digest=digest)

    def _generation(self, roster: Roster, to: Sequence[Controller], by: str) -> tuple[Generation, Roster]:
        """The controller list's next generation for the controllers `to`: a new key sealed to them, MACed with
        the key of `roster` (the current generation; the first is MACed with its own)."""
        key = new_key()
        box = seal(KEY_NAME, Secret(key.hex()), to, by)
        g = make(roster.fleet, roster.generation + 1, {c.name: c.key for c in to}, box.doc(), by, roster.key or key)
        return g, Roster(g.fleet, g.generation, g.controllers, key)

    async def set(self, name: str, value: Secret) -> Box:
        """Seal `value` to every controller and store it as secret `name` (replacing its value)."""
        check_name("secret", name)
        async with self._writing() as (shared, state, _, me, roster):
            box = seal(name, value, state.readers(roster), me.name, roster.key)
            await shared.write({VALUES + name: box.doc()}, event=_event("secret set", me.name, secret=name))
            return box

    async def rm(self, name: str) -> bool:
        """Remove the secret `name`; False when the fleet has none by that name."""
        check_name("secret", name)
        async with self._writing() as (shared, state, _, me, _roster):
            if name not in state.boxes and state.unreadable(name) is None:
                return False
            await shared.write({}, [VALUES + name], event=_event("secret rm", me.name, secret=name))
            return True

    async def add_controller(self, name: str, key: str) -> Controller:
        """Let the controller `name` (age public key `key`) read every secret: each is re-sealed to the new set."""
        check_name("controller", name)
        check_key(key)
        async with self._writing() as (shared, state, identity, me, roster):
            if name in roster.controllers or key in roster.controllers.values():
                raise SecretStoreError(f"controller {name!r} or its key is already one of the fleet's; remove it "
                                       f"first (`fleet controller rm {name}`) to change its key")
            new = Controller(name, key, me.name, time.time())
            await self._reseal(shared, state, identity, roster, [*state.readers(roster), new],
                               {CONTROLLERS + name: new.doc()}, [],
                               _event("controller add", me.name, controller=name, key=key))
            return new

    async def rm_controller(self, name: str) -> Controller:
        """Stop the controller `name` reading what is set from now on: every secret is re-sealed to the others.
        What it already read stays known to it: those values must be rotated (README "Secrets")."""
        async with self._writing() as (shared, state, identity, me, roster):
            readers = state.readers(roster)
            gone = next((c for c in readers if c.name == name), None)
            if gone is None:
                raise SecretStoreError(f"no controller {name!r} (the fleet's: {', '.join(sorted(roster.controllers))})")
            rest = [c for c in readers if c.name != name]
            if not rest:
                raise SecretStoreError(f"controller {name!r} is the fleet's last: nobody could read the secrets")
            await self._reseal(shared, state, identity, roster, rest, {}, [CONTROLLERS + name],
                               _event("controller rm", me.name, controller=name))
            return gone

    async def _reseal(self, shared: SharedState, state: SealedState, identity: Identity, roster: Roster,
                      to: Sequence[Controller], puts: Mapping[str, Any], deletes: Sequence[str],
                      event: dict[str, Any]) -> None:
        """Every box re-sealed to `to`, a hundred per transaction, then `puts`/`deletes` (the change of the set)
        with the controller list's next generation and the event in the last one. A secret that cannot be opened
        stops it, named, before anything is written."""
        if state.broken:
            bad = "; ".join(f"{key}: {why}" for key, why in sorted(state.broken.items()))
            raise SecretUnreadable(f"cannot re-seal the secrets: {bad}; remove or set them again first")
        boxes = [(VALUES + b.name, b) for b in state.boxes.values()]
        boxes += [(DIGEST_KEY, state.digest)] if state.digest is not None else []
        by = event["by"]
        # MACed with the next generation's key: the list that readers verify once it is written, last.
        following, after = self._generation(roster, to, by)
        resealed = {key: seal(b.name, unseal(identity, b, f"secret {b.name!r}"), to, by, after.key).doc()
                    for key, b in boxes}
        items = list(resealed.items())
        for start in range(0, len(items), TXN_PUTS):
            await shared.write(dict(items[start:start + TXN_PUTS]))
        await shared.write({**puts, roster_key(following.generation): following.doc()}, deletes, event=event)
        self.seen.put(self.place, identity.public, after)


def _event(what: str, by: str, **detail: str) -> dict[str, Any]:
    """An event of the shared log: what changed, by which controller (never a value)."""
    return {"what": what, "by": by, "holder": default_holder(), **detail}
