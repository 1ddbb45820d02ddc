"""The fleet's records (revision history and decision state) on in-process SSH servers running the real scripts.

Each server stands for one record node; its records live in its own temporary directory (`{node}` in base_dir).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sshserver import SSHFarm

from fleet.core.errors import RecordsError
from fleet.store import FleetHistory
from fleet.store.history import History, HistoryError, Revision
from fleet.store.records import (
    RevisionRecord,
    StateRecord,
    decode_record,
    encode_revision,
    encode_state,
    merge,
    parse_dump,
)
from fleet.transport import Pool

SPEC = json.dumps({"image": "fleet.local/demo:v1", "env": {"DB_PASSWORD": {"secret": "db-password"}}})


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def base(tmp_path: Path) -> str:
    return str(tmp_path / "nodes" / "{node}" / "fleet")


def on_node(base: str, node: str, path: str) -> Path:
    return Path(base.replace("{node}", node)) / "records" / path


def history(pool: Pool, farm: SSHFarm, base: str, nodes: list[str] | None = None, **kw: object) -> FleetHistory:
    chosen = [farm.node(n) for n in nodes] if nodes else farm.nodes
    kw.setdefault("clock", Clock())
    return FleetHistory(pool, chosen, base_dir=base, **kw)  # type: ignore[arg-type]


# ---- pure: codecs and merge -------------------------------------------------------------------------------------


def _rev(n: int = 1, outcome: str = "in-progress", **kw: object) -> Revision:
    fields: dict[str, object] = dict(service="web", revision=n, spec_hash=f"h{n}", image="img:1", user="alice",
                                     created_at=10.0, finished_at=None, outcome=outcome, reason="", spec_json=SPEC)
    fields.update(kw)
    return Revision(**fields)  # type: ignore[arg-type]


def test_a_revision_file_round_trips_and_is_one_ascii_line():
    rev = _rev(3, "succeeded", finished_at=12.5, reason="ünïcødé\nsecond line")
    text = encode_revision(rev, 13.0)
    assert "\n" not in text and text.isascii()
    assert decode_record("web/rev-3.json", text.encode()) == RevisionRecord(rev, 13.0)
    state = StateRecord("web", {"accepted": 3, "canary": None}, 14.0)
    assert decode_record("web/state.json", encode_state(state).encode()) == state
    tombstone = StateRecord("web", None, 15.0)
    assert decode_record("web/state.json", encode_state(tombstone).encode()) == tombstone


@pytest.mark.parametrize(("path", "content", "problem"), [
    ("web/rev-3.json", b"{not json", "not JSON"),
    ("web/rev-3.json", b"\xff\xfe", "not UTF-8"),
    ("web/rev-3.json", b"[1, 2]", "expected a JSON object"),
    ("web/rev-4.json", encode_revision(_rev(3), 1.0).encode(), "not what its name says"),
    ("api/rev-3.json", encode_revision(_rev(3), 1.0).encode(), "not what its name says"),
    ("web/rev-3.json", encode_revision(_rev(3), 1.0).replace('"revision":3', '"revision":"3"').encode(),
     "field 'revision': expected int"),
    ("web/rev-3.json", encode_revision(_rev(3), 1.0).replace('"in-progress"', '"done"').encode(),
     "field 'outcome': expected one of"),
    ("web/rev-3.json", encode_revision(_rev(3), 1.0).replace('"format":1', '"format":9').encode(), "newer fleet"),
    ("web/rev-3.json", encode_revision(_rev(3), 1.0).replace(',"user":"alice"', "").encode(),
     "field 'user' is missing"),
    ("web/state.json", b'{"format":1,"kind":"state","service":"web","state":[1],"updated_at":1}',
     "field 'state': expected dict"),
])
def test_bad_record_files_are_refused_with_the_reason(path: str, content: bytes, problem: str):
    with pytest.raises(ValueError, match=problem):
        decode_record(path, content)


def test_merge_takes_the_newest_copy_and_counts_unreadable_revision_numbers():
    old = encode_revision(_rev(1), 20.0).encode()
    new = encode_revision(_rev(1, "succeeded", finished_at=21.0), 21.0).encode()
    snap = merge({"n1": {"web/rev-1.json": old, "web/rev-5.json": b"garbage"},
                  "n2": {"web/rev-1.json": new}}, {"n3": "connection refused"}, "/var/lib/fleet")
    assert snap.revisions[("web", 1)].revision.outcome == "succeeded"
    assert snap.top == {"web": 5}
    assert snap.copies == {"n1": {"web/rev-1.json": 20.0}, "n2": {"web/rev-1.json": 21.0}}
    assert snap.answered == ("n1", "n2") and snap.errors == {"n3": "connection refused"}
    [warning] = snap.warnings
    assert warning.startswith("n1: /var/lib/fleet/records/web/rev-5.json: not JSON")


def test_the_listing_is_parsed_and_a_cut_listing_refused():
    assert parse_dump("fleet-records 1\nfile web/state.json eyJhIjoxfQ==\nend\n") == {"web/state.json": b'{"a":1}'}
    assert parse_dump("fleet-records 1\nend\n") == {}
    with pytest.raises(ValueError, match="cut short"):
        parse_dump("fleet-records 1\nfile web/state.json eyJhIjoxfQ==\n")
    with pytest.raises(ValueError, match="unexpected reply"):
        parse_dump("sh: base64: not found\n")


# ---- one record node --------------------------------------------------------------------------------------------


async def test_revisions_on_one_record_node(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base, ["n1"])
    assert await h.services() == [] and await h.list("web") == []
    assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
    assert await h.finish("web", 1, "succeeded")
    assert await h.record("web", SPEC, "h1", "img:1", "bob") == 1  # the latest good spec again: same revision
    assert await h.record("web", SPEC, "h2", "img:2", "alice") == 2
    assert await h.record("web", SPEC, "h2", "img:2", "alice") == 2  # resumed while in progress
    assert await h.finish("web", 2, "rolled-back", "canary 5xx")
    assert not await h.finish("web", 2, "succeeded")  # a finished revision keeps its first outcome
    assert await h.record("api", SPEC, "a1", "api:1", "bob") == 1
    with pytest.raises(HistoryError, match="no revision 9"):
        await h.finish("web", 9, "failed")
    with pytest.raises(ValueError, match="outcome"):
        await h.finish("web", 1, "done")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service name"):
        await h.record("../etc", SPEC, "x", "img", "alice")

    fresh = history(pool, farm, base, ["n1"])  # another instance reads it all back from the node
    revs = await fresh.list("web")
    assert [(r.revision, r.outcome, r.reason) for r in revs] == [(1, "succeeded", ""), (2, "rolled-back", "canary 5xx")]
    assert revs[0].spec_json == SPEC and revs[0].user == "alice" and revs[0].finished_at is not None
    assert (await fresh.latest_succeeded("web")).revision == 1  # type: ignore[union-attr]
    assert await fresh.latest_succeeded("web", before=1) is None
    assert (await fresh.get("web", 2)).image == "img:2"  # type: ignore[union-attr]
    assert await fresh.get("web", 3) is None
    assert await fresh.services() == ["api", "web"]
    files = sorted(os.listdir(on_node(base, "n1", "web")))
    assert files == ["rev-1.json", "rev-2.json"]  # no temp file left behind


async def test_state_set_get_and_delete(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base)
    assert await h.state("web") is None
    await h.set_state("web", {"accepted": 3, "canary": {"revision": 4, "step": 1}})
    got = await h.state("web")
    assert got == {"accepted": 3, "canary": {"revision": 4, "step": 1}}
    got["accepted"] = 99  # type: ignore[index]
    assert (await history(pool, farm, base).state("web")) == {"accepted": 3, "canary": {"revision": 4, "step": 1}}
    await h.set_state("web", None)
    assert await h.state("web") is None
    assert await history(pool, farm, base).state("web") is None
    with pytest.raises(ValueError, match="not JSON-serializable"):
        await h.set_state("web", {"when": object()})


# ---- several controllers, several record nodes -------------------------------------------------------------------


async def test_two_controllers_share_numbering_with_separate_caches(farm: SSHFarm, base: str, tmp_path: Path):
    async with Pool(backoff=0.01) as pa, Pool(backoff=0.01) as pb:
        with History(tmp_path / "a.db") as ca, History(tmp_path / "b.db") as cb:
            a = history(pa, farm, base, cache=ca, clock=Clock(1000))
            b = history(pb, farm, base, cache=cb, clock=Clock(5000))
            assert await a.record("web", SPEC, "h1", "img:1", "alice") == 1
            assert await b.record("web", SPEC, "h2", "img:2", "bob") == 2
            assert await b.finish("web", 1, "succeeded")
            assert await a.record("web", SPEC, "h3", "img:3", "alice") == 3
            assert [(r.revision, r.user, r.outcome) for r in await a.list("web")] == [
                (1, "alice", "succeeded"), (2, "bob", "in-progress"), (3, "alice", "in-progress")]
            await b.refresh()
            assert [r.spec_hash for r in await b.list("web")] == ["h1", "h2", "h3"]
            # Each cache holds the fleet's numbering, not one of its own.
            assert [r.spec_hash for r in ca.list("web")] == ["h1", "h2", "h3"]
            assert [r.spec_hash for r in cb.list("web")] == ["h1", "h2", "h3"]


async def test_newest_copy_wins_and_the_next_write_repairs_the_others(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base)
    assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
    # n2 alone holds a newer copy (its write reached only n2); n3 lost its copy entirely.
    newer = _rev(1, "succeeded", spec_hash="h1", finished_at=1500.0, reason="by hand")
    on_node(base, "n2", "web/rev-1.json").write_text(encode_revision(newer, 1500.0) + "\n")
    on_node(base, "n3", "web/rev-1.json").unlink()
    reader = history(pool, farm, base)
    assert (await reader.get("web", 1)) == newer
    assert await reader.record("api", SPEC, "a1", "api:1", "bob") == 1  # any write repairs what it saw missing
    for node in ("n1", "n2", "n3"):
        copy = decode_record("web/rev-1.json", on_node(base, node, "web/rev-1.json").read_bytes())
        assert copy == RevisionRecord(newer, 1500.0)
        assert on_node(base, node, "api/rev-1.json").exists()


async def test_one_record_node_down_reads_and_writes_go_on(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base)
    assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
    await farm.stop("n2")
    assert await h.finish("web", 1, "succeeded")
    assert await h.record("web", SPEC, "h2", "img:2", "alice") == 2
    await h.set_state("web", {"accepted": 1})
    assert any(w.startswith("read 2 of 3 record nodes") and "n2:" in w for w in h.warnings)
    assert not on_node(base, "n2", "web/rev-2.json").exists()
    await farm.listen("n2")
    other = history(pool, farm, base)
    assert [r.outcome for r in await other.list("web")] == ["succeeded", "in-progress"]
    assert await other.state("web") == {"accepted": 1}
    await other.set_state("api", {"accepted": 7})
    # n2 is back: the write repaired what it missed, the finished revision 1 included.
    assert decode_record("web/rev-1.json", on_node(base, "n2", "web/rev-1.json").read_bytes()
                         ).revision.outcome == "succeeded"  # type: ignore[union-attr]
    assert on_node(base, "n2", "web/rev-2.json").exists() and on_node(base, "n2", "web/state.json").exists()


async def test_two_of_three_down_writes_refused_naming_the_nodes(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base)
    assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
    await farm.stop("n1")
    await farm.stop("n3")
    with pytest.raises(RecordsError, match=r"1 of 3 record nodes answered, 2 needed \(n1: .*; n3: .*\)"):
        await h.record("web", SPEC, "h2", "img:2", "alice")
    with pytest.raises(RecordsError, match=r"n1: .*n3: "):
        await h.set_state("web", {"accepted": 1})
    reader = history(pool, farm, base)
    assert [r.revision for r in await reader.list("web")] == [1]  # a minority still reads, and says so
    assert any("no majority" in w for w in reader.warnings)


async def test_a_deleted_state_stays_deleted_when_a_stale_copy_comes_back(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base)
    await h.set_state("web", {"accepted": 1})
    await farm.stop("n3")
    await h.set_state("web", None)
    await farm.listen("n3")
    assert await history(pool, farm, base).state("web") is None


async def test_a_corrupt_file_is_skipped_with_a_warning_naming_node_and_file(farm: SSHFarm, pool: Pool, base: str):
    h = history(pool, farm, base)
    assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
    assert await h.record("web", SPEC, "h2", "img:2", "alice") == 2
    on_node(base, "n1", "web/rev-1.json").write_text('{"format": 1, "service": "web", "revision": ')
    for node in ("n1", "n2", "n3"):  # revision 2 is unreadable everywhere
        on_node(base, node, "web/rev-2.json").write_text("hand-edited\n")
    reader = history(pool, farm, base)
    assert [r.spec_hash for r in await reader.list("web")] == ["h1"]  # n2's and n3's copies of revision 1
    path = on_node(base, "n1", "web/rev-1.json")
    assert any(w.startswith(f"n1: {path}: not JSON") for w in reader.warnings)
    assert sum("rev-2.json: not JSON" in w for w in reader.warnings) == 3
    # A new revision never reuses the number of an unreadable one.
    assert await reader.record("web", SPEC, "h3", "img:3", "alice") == 3
    assert decode_record("web/rev-1.json", path.read_bytes()).revision.spec_hash == "h1"  # type: ignore[union-attr]


async def test_cache_stands_in_only_when_no_record_node_answers(farm: SSHFarm, pool: Pool, base: str,
                                                                tmp_path: Path):
    with History(tmp_path / "cache.db") as cache:
        h = history(pool, farm, base, cache=cache)
        assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
        assert await h.finish("web", 1, "succeeded")
        await h.set_state("web", {"accepted": 1})
        assert not h.from_cache
        for name in ("n1", "n2", "n3"):
            await farm.stop(name)
        offline = history(pool, farm, base, cache=cache)
        assert [(r.revision, r.outcome) for r in await offline.list("web")] == [(1, "succeeded")]
        assert await offline.state("web") == {"accepted": 1}
        assert offline.from_cache
        assert any("no record node answered" in w and str(cache.path) in w for w in offline.warnings)
        with pytest.raises(RecordsError, match="0 of 3 record nodes answered"):
            await offline.record("web", SPEC, "h2", "img:2", "alice")
    with pytest.raises(RecordsError, match="no record node answered"):
        await history(pool, farm, base).list("web")


async def test_losing_the_cache_loses_nothing(farm: SSHFarm, pool: Pool, base: str, tmp_path: Path):
    with History(tmp_path / "cache.db") as cache:
        h = history(pool, farm, base, cache=cache)
        await h.record("web", SPEC, "h1", "img:1", "alice")
        await h.set_state("web", {"accepted": 1})
    (tmp_path / "cache.db").unlink()
    with History(tmp_path / "new-cache.db") as fresh_cache:
        again = history(pool, farm, base, cache=fresh_cache)
        assert [r.spec_hash for r in await again.list("web")] == ["h1"]
        assert await again.state("web") == {"accepted": 1}
        assert [r.spec_hash for r in fresh_cache.list("web")] == ["h1"]  # refilled by the read
