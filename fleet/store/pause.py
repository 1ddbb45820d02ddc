"""Pauses of rollouts in etcd (`fleet rollout pause/resume`), one key per service beside its records:

    /fleet/services/<service>/pause    {"by": "user@host", "at": seconds}

Written without the fleet's lease, on purpose: the rollout to pause holds it. The rollout reads the key afresh
before each batch (not from the records' view, which is read once per run), so a pause asked mid-rollout is seen
at its next batch; the records' reader passes over this key."""

from __future__ import annotations

import time

from fleet.core.errors import RecordsError
from fleet.node import etcd as E
from fleet.plan.rollout.pause import Pause
from fleet.store.etcd import SERVICES, EtcdStore, decode, encode
from fleet.store.etcd_records import check_service
from fleet.store.lease import default_holder


def pause_key(service: str) -> str:
    check_service(service)
    return f"{SERVICES}{service}/pause"


async def read_pause(store: EtcdStore, service: str) -> Pause | None:
    """The service's pause, or None; RecordsError names a value that is not one."""
    kv = await store.get(pause_key(service))
    if kv is None:
        return None
    try:
        return Pause.from_json(decode(kv))
    except ValueError as exc:
        raise RecordsError(f"etcd key {pause_key(service)}: {exc}; refusing it") from exc


async def request_pause(store: EtcdStore, service: str, by: str | None = None) -> Pause:
    """Pause the service's rollouts; a pause already there is kept (its author and time)."""
    p = Pause(by or default_holder(), time.time())
    done = await store.txn([E.Compare("create", pause_key(service), 0)], [E.Put(pause_key(service),
                                                                                encode(p.to_json()))])
    if done.succeeded:
        return p
    found = await read_pause(store, service)
    return found if found is not None else p


async def clear_pause(store: EtcdStore, service: str) -> Pause | None:
    """Lift the service's pause; the pause it was, or None when there was none."""
    found = await read_pause(store, service)
    if found is not None:
        await store.txn([], [E.Delete(pause_key(service))])
    return found
