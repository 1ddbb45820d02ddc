"""The revision history: numbering, dedup of re-applies, outcomes, file modes, and two controllers at once."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fleet.store.history import SCHEMA_VERSION, History, HistoryError, Revision, default_path

SPEC = json.dumps({"image": "fleet.local/demo:v1", "env": {"DB_PASSWORD": {"secret": "db-password"}}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def history(tmp_path: Path):
    h = History(tmp_path / "state" / "history.db", clock=Clock())
    try:
        yield h
    finally:
        h.close()


def test_revisions_numbered_per_service(history: History):
    assert history.record("web", SPEC, "h1", "img:1", "alice") == 1
    assert history.record("web", SPEC, "h2", "img:2", "alice") == 2
    assert history.record("api", SPEC, "a1", "api:1", "bob") == 1
    assert history.record("web", SPEC, "h3", "img:3", "alice") == 3
    assert [r.revision for r in history.list("web")] == [1, 2, 3]
    assert history.services() == ["api", "web"]


def test_reapplying_latest_succeeded_spec_returns_its_revision_without_a_row(history: History):
    rev = history.record("web", SPEC, "h1", "img:1", "alice")
    assert history.finish("web", rev, "succeeded")
    assert history.record("web", SPEC, "h1", "img:1", "bob") == rev
    assert len(history.list("web")) == 1


def test_returning_to_an_older_spec_is_a_new_revision(history: History):
    for h in ("h1", "h2"):
        history.finish("web", history.record("web", SPEC, h, "img", "alice"), "succeeded")
    assert history.record("web", SPEC, "h1", "img", "alice") == 3


def test_after_a_failed_rollout_the_last_good_spec_is_still_recognised(history: History):
    history.finish("web", history.record("web", SPEC, "h1", "img", "alice"), "succeeded")
    history.finish("web", history.record("web", SPEC, "h2", "img", "alice"), "rolled-back", "canary 5xx")
    assert history.record("web", SPEC, "h1", "img", "alice") == 1


def test_reapply_after_a_crash_resumes_the_in_progress_revision(history: History):
    history.finish("web", history.record("web", SPEC, "h1", "img", "alice"), "succeeded")
    assert history.record("web", SPEC, "h2", "img", "alice") == 2
    assert history.record("web", SPEC, "h2", "img", "alice") == 2
    assert len(history.list("web")) == 2


def test_finish_records_outcome_reason_and_time(history: History):
    rev = history.record("web", SPEC, "h1", "img:1", "alice")
    started = history.get("web", rev)
    assert started is not None and started.outcome == "in-progress" and started.finished_at is None
    assert history.finish("web", rev, "failed", "replica web-2 not ready after 60s")
    done = history.get("web", rev)
    assert done is not None
    assert (done.outcome, done.reason, done.user, done.image, done.spec_json) == (
        "failed", "replica web-2 not ready after 60s", "alice", "img:1", SPEC)
    assert done.finished_at is not None and done.finished_at > done.created_at


def test_a_finished_revision_keeps_its_first_outcome(history: History):
    rev = history.record("web", SPEC, "h1", "img", "alice")
    history.finish("web", rev, "succeeded")
    assert history.finish("web", rev, "failed", "scale-up failed") is False
    assert history.get("web", rev).outcome == "succeeded"


def test_finish_unknown_revision_or_bad_outcome_rejected(history: History):
    with pytest.raises(HistoryError, match="no revision 7"):
        history.finish("web", 7, "failed")
    rev = history.record("web", SPEC, "h1", "img", "alice")
    with pytest.raises(ValueError, match="outcome"):
        history.finish("web", rev, "done")
    with pytest.raises(ValueError, match="JSON"):
        history.record("web", "{not json", "h2", "img", "alice")


def test_latest_succeeded_before_a_revision_is_the_rollback_target(history: History):
    for h, outcome in (("h1", "succeeded"), ("h2", "succeeded"), ("h3", "failed"), ("h4", "succeeded")):
        history.finish("web", history.record("web", SPEC, h, "img", "alice"), outcome)
    assert history.latest_succeeded("web").revision == 4
    assert history.latest_succeeded("web", before=4).revision == 2
    assert history.latest_succeeded("web", before=1) is None
    assert history.latest_succeeded("nope") is None
    assert history.get("web", 99) is None


def test_files_private_and_wal_enabled(tmp_path: Path):
    path = tmp_path / "a" / "b" / "history.db"
    old = os.umask(0o022)
    try:
        with History(path) as h:
            h.record("web", SPEC, "h1", "img", "alice")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
            for extra in ("history.db-wal", "history.db-shm"):
                assert stat.S_IMODE((path.parent / extra).stat().st_mode) == 0o600
    finally:
        os.umask(old)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_reopening_keeps_data_and_schema_version(tmp_path: Path):
    path = tmp_path / "history.db"
    with History(path) as h:
        h.record("web", SPEC, "h1", "img", "alice")
    with History(path) as h:
        assert h.schema_version() == SCHEMA_VERSION
        assert [r.spec_hash for r in h.list("web")] == ["h1"]
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()


def test_newer_schema_refused(tmp_path: Path):
    path = tmp_path / "history.db"
    History(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="newer"):
        History(path)


def test_default_path_precedence(tmp_path: Path):
    assert default_path({"FLEET_STATE_DIR": "/s", "XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/s/history.db")
    assert default_path({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/x/fleet/history.db")
    assert default_path({"HOME": "/h"}) == Path("/h/.local/state/fleet/history.db")


def test_two_connections_see_each_others_revisions(tmp_path: Path):
    path = tmp_path / "history.db"
    with History(path) as a, History(path) as b:
        assert a.record("web", SPEC, "h1", "img", "alice") == 1
        assert b.record("web", SPEC, "h2", "img", "bob") == 2
        assert b.finish("web", 1, "succeeded")
        assert a.get("web", 1).outcome == "succeeded"
        assert a.record("web", SPEC, "h3", "img", "alice") == 3
        assert [r.user for r in b.list("web")] == ["alice", "bob", "alice"]


def test_writer_waits_for_a_lock_held_by_another_connection(tmp_path: Path):
    path = tmp_path / "history.db"
    with History(path) as h:
        h.record("web", SPEC, "h1", "img", "alice")
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            started = time.monotonic()
            assert h.record("web", SPEC, "h2", "img", "bob") == 2
            assert time.monotonic() - started >= 0.25
        finally:
            release.join()
            holder.close()


def test_lock_held_past_the_busy_timeout_is_a_history_error(tmp_path: Path):
    path = tmp_path / "history.db"
    with History(path, busy_timeout=0.1) as h:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(HistoryError, match="locked"):
                h.record("web", SPEC, "h1", "img", "alice")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert h.record("web", SPEC, "h1", "img", "alice") == 1


_N = 500
_WORKER = """
import os, sys, time
from fleet.store.history import History
path, who, go, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
while not os.path.exists(go):
    time.sleep(0.002)
with History(path) as h:
    for i in range(n):
        h.record("web", "{}", f"{who}-{i}", "img", who)
"""


def test_concurrent_controller_processes_allocate_distinct_revisions(tmp_path: Path):
    path = tmp_path / "state" / "history.db"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), who, str(go), str(_N)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for who in "ab"]
    try:
        time.sleep(0.5)  # all start together: they race to create the file and schema, then to write
        go.touch()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    with History(path) as h:
        revs = h.list("web")
    assert [r.revision for r in revs] == list(range(1, 2 * _N + 1))
    assert sorted(r.spec_hash for r in revs) == sorted([f"{w}-{i}" for w in "ab" for i in range(_N)])


def test_a_version_1_file_gains_the_states_table(tmp_path: Path):
    path = tmp_path / "history.db"
    with History(path) as h:
        h.record("web", SPEC, "h1", "img", "alice")
    db = sqlite3.connect(path)
    db.execute("DROP TABLE states")
    db.execute("DELETE FROM schema_version WHERE version > 1")
    db.commit()
    db.close()
    with History(path) as h:
        assert h.schema_version() == SCHEMA_VERSION
        assert [r.spec_hash for r in h.list("web")] == ["h1"]
        h.store_state("web", '{"accepted": 1}', 5.0)
        assert h.state("web") == ('{"accepted": 1}', 5.0)


def test_cache_stores_the_fleets_revisions_and_states_as_given(history: History):
    history.record("web", SPEC, "local", "img", "alice")  # a row numbered by this controller alone
    theirs = Revision("web", 1, "fleet-h1", "img:1", "bob", 10.0, 12.0, "succeeded", "", SPEC)
    history.mirror([theirs, Revision("api", 7, "a7", "api:7", "bob", 11.0, None, "in-progress", "", "{}")],
                   {"web": ('{"accepted": 1}', 13.0), "api": (None, 14.0)})
    assert history.get("web", 1) == theirs  # the fleet's record replaces the local row
    assert history.get("api", 7).outcome == "in-progress"
    assert history.state("web") == ('{"accepted": 1}', 13.0)
    assert history.state("api") == (None, 14.0)
    assert history.state("db") is None
    history.store(Revision("web", 1, "fleet-h1", "img:1", "bob", 10.0, 12.0, "rolled-back", "canary", SPEC))
    history.store_state("api", '{"x": 2}', 15.0)
    assert history.get("web", 1).outcome == "rolled-back"
    assert history.states() == {"web": ('{"accepted": 1}', 13.0), "api": ('{"x": 2}', 15.0)}
