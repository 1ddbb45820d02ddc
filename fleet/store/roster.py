"""Who the fleet's controllers are, authenticated: a chain of generations of the controller list, each sealed to
its controllers and MACed with the key of the generation before, so that only a controller can change the list.

    /fleet/secrets/roster/<generation>   {"fleet", "generation", "controllers": {name: age public key},
                                          "key": a sealed box (fleet.store.sealed) holding this generation's
                                          MAC key, sealed to those controllers, "by", "at",
                                          "mac": HMAC-SHA256 of the rest, with the previous generation's key
                                          (generation 1: its own)}

Sealing alone proves nothing (anyone can encrypt to a public key); the MAC key of a generation is readable only by
that generation's controllers, so root on a record node can neither add its own key (a registration that is not
in the list, or a generation not MACed with the key before it, is forged: refused by name and nothing is sealed
to it), nor take a controller out (the list still names it: it stays a reader). Every change of the set makes a
new key, so a removed controller cannot write the next generation either.

What each controller holds locally anchors the chain: for the record nodes it reads the list on, the fleet, the
highest generation it has verified and a digest of that generation's key (`Seen`, in its state directory; no
secret). It verifies from there, so a replay of an older list, or a rewritten one, is refused. A controller that
has never read the list (just added, or a new state directory) trusts the first generation that names it, and
verifies every later one; a removed controller can always replay, to itself, a list that still names it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.core.dirs import state_dir
from fleet.core.errors import SecretUnreadable
from fleet.node import etcd as E

ROSTER = "/fleet/secrets/roster/"
KEY_NAME = "roster-key"  # the name sealed inside each generation's key box


def roster_key(generation: int) -> str:
    return f"{ROSTER}{generation:010d}"


@dataclass(frozen=True)
class Generation:
    """One generation of the controller list as etcd holds it (not verified yet)."""

    fleet: str
    generation: int
    controllers: Mapping[str, str]
    key: Mapping[str, Any] = field(repr=False)  # the sealed box's document (fleet.store.sealed.Box.doc)
    by: str
    at: float
    mac: str

    def body(self) -> bytes:
        """What the MAC covers: every field but the MAC, canonically."""
        return json.dumps({"fleet": self.fleet, "generation": self.generation, "controllers": dict(self.controllers),
                           "key": dict(self.key), "by": self.by, "at": self.at}, sort_keys=True,
                          separators=(",", ":")).encode()

    def doc(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "generation": self.generation, "controllers": dict(self.controllers),
                "key": dict(self.key), "by": self.by, "at": self.at, "mac": self.mac}

    @staticmethod
    def of(kv: E.KeyValue) -> Generation:
        """From its etcd record; ValueError, KeyError or TypeError when it is not one."""
        doc = json.loads(kv.value)
        controllers = doc["controllers"]
        if not isinstance(controllers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in controllers.items()):
            raise ValueError("controllers: expected names and public keys")
        if not isinstance(doc["key"], dict):
            raise ValueError("key: expected a sealed box")
        g = Generation(str(doc["fleet"]), int(doc["generation"]), controllers, doc["key"], str(doc["by"]),
                       float(doc["at"]), str(doc["mac"]))
        if roster_key(g.generation) != kv.key:
            raise ValueError(f"it says generation {g.generation}")
        return g


def mac(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def key_digest(key: bytes) -> str:
    """What a controller keeps of a generation's key: enough to know it again, nothing to use."""
    return hashlib.sha256(b"fleet roster key\0" + key).hexdigest()


def new_key() -> bytes:
    return secrets.token_bytes(32)


def new_fleet() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Roster:
    """The controller list, verified: its generation, the controllers by name (age public keys), and the key
    that MACs the next generation."""

    fleet: str
    generation: int
    controllers: Mapping[str, str]
    key: bytes = field(repr=False)


def make(fleet: str, generation: int, controllers: Mapping[str, str], box: Mapping[str, Any], by: str,
         previous: bytes) -> Generation:
    """A generation, MACed with `previous` (the generation before's key; generation 1: its own key)."""
    g = Generation(fleet, generation, dict(controllers), dict(box), by, time.time(), "")
    return Generation(g.fleet, g.generation, g.controllers, g.key, g.by, g.at, mac(previous, g.body()))


def verify(chain: Mapping[int, Generation], me: str, open_key: Callable[[Generation], bytes],
           seen: Mark | None) -> Roster:
    """The controller list at its newest generation, checked link by link from the newest this controller has
    verified (`seen`), else from the first that names `me` (this controller's public key); `open_key` opens a
    generation's MAC key with this controller's identity (SecretUnreadable when it cannot). SecretUnreadable says
    what is wrong and refuses the whole list."""
    if not chain:
        raise SecretUnreadable("the fleet's controller list has no sealed generation (" + ROSTER + "): it was "
                               "removed, or written before the list was sealed; refusing to trust any controller")
    top = max(chain)
    if sorted(chain) != list(range(1, top + 1)):
        missing = sorted(set(range(1, top + 1)) - set(chain))
        raise SecretUnreadable(f"the fleet's controller list lacks generation(s) {missing[:5]} of {top}: refusing it")
    fleets = {g.fleet for g in chain.values()}
    if len(fleets) != 1:
        raise SecretUnreadable(f"the fleet's controller list mixes fleets ({', '.join(sorted(fleets))}): refusing it")
    fleet = fleets.pop()
    if seen is not None and seen.fleet != fleet:
        raise SecretUnreadable(f"the fleet's controller list is of fleet {fleet}, not fleet {seen.fleet} that this "
                               f"controller verified on these record nodes before: rewritten, refusing it (if the "
                               f"fleet's secrets were reset on purpose, remove {seen.where})")
    if seen is not None and top < seen.generation:
        raise SecretUnreadable(f"the fleet's controller list is at generation {top}, older than generation "
                               f"{seen.generation} that this controller verified before: a replay of an old list, "
                               f"refusing it")
    if seen is not None:
        start = seen.generation
    else:
        start = next((i for i in range(1, top + 1) if me in chain[i].controllers.values()), 0)
        if not start:
            raise SecretUnreadable("this controller is in no generation of the fleet's controller list")
    key = open_key(chain[start])
    if seen is not None and key_digest(key) != seen.digest:
        raise SecretUnreadable(f"generation {start} of the fleet's controller list is not the one this controller "
                               f"verified before: the list was rewritten, refusing it")
    if start == 1 and not hmac.compare_digest(mac(key, chain[1].body()), chain[1].mac):
        raise SecretUnreadable("generation 1 of the fleet's controller list fails its MAC: forged, refusing it")
    for i in range(start + 1, top + 1):
        if not hmac.compare_digest(mac(key, chain[i].body()), chain[i].mac):
            raise SecretUnreadable(f"generation {i} of the fleet's controller list is not MACed with generation "
                                   f"{i - 1}'s key (it claims to be by {chain[i].by!r}): forged, refusing it")
        key = open_key(chain[i])
    return Roster(fleet, top, dict(chain[top].controllers), key)


@dataclass(frozen=True)
class Mark:
    """What a controller keeps of the list it verified last on some record nodes: the fleet, the generation and
    its key's digest, and the file that keeps them (`where`)."""

    fleet: str
    generation: int
    digest: str
    where: str


class Seen:
    """What this controller verified of the controller list on each set of record nodes (`place`): {place: {public
    key: [fleet, generation, key digest]}} in one 0600 JSON file (default: in the state directory). No secret is in
    it; losing it only loses the protection against a replay until the next verified read."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "controllers-seen.json"

    def _all(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def get(self, place: str, me: str) -> Mark | None:
        entry = self._all().get(place, {}).get(me)
        if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], int):
            return Mark(str(entry[0]), entry[1], str(entry[2]), str(self.path))
        return None

    def put(self, place: str, me: str, roster: Roster) -> None:
        doc = self._all()
        mark = [roster.fleet, roster.generation, key_digest(roster.key)]
        if doc.get(place, {}).get(me) == mark:
            return  # every run that reads a secret verifies the list: most find it as they left it
        doc.setdefault(place, {})[me] = mark
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.path)
