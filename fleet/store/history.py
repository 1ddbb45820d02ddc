"""The controller's revision history: every applied spec of every service, in one SQLite file.

Safe for several controller processes at once (WAL, a busy timeout, revisions allocated inside an
immediate transaction). Secrets are never stored: a spec's JSON names its secrets (`{"secret": NAME}`), as
`ServiceSpec.hash_input()` does, and never holds a value. The fleet's own record lives in etcd on its record
nodes (`fleet.store.etcd_records.EtcdRecords`); this file is a controller's own copy (`store`, `store_state`,
`mirror`), and the home of the revision types both share.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, cast, get_args

from fleet.core.dirs import state_dir
from fleet.core.errors import (
    HistoryError,
)
from fleet.results.records import Revision as Revision
from fleet.results.records import RevisionOutcome as RevisionOutcome

FinalOutcome = Literal["succeeded", "failed", "rolled-back", "aborted"]
OUTCOMES: tuple[str, ...] = get_args(RevisionOutcome)
FINAL_OUTCOMES: tuple[str, ...] = get_args(FinalOutcome)

SCHEMA_VERSION = 2
BUSY_TIMEOUT = 10.0
FILE_NAME = "history.db"

_MIGRATIONS: dict[int, str] = {
    1: f"""
        CREATE TABLE revisions (
            service     TEXT    NOT NULL,
            revision    INTEGER NOT NULL CHECK (revision >= 1),
            spec_hash   TEXT    NOT NULL,
            image       TEXT    NOT NULL,
            user        TEXT    NOT NULL,
            created_at  REAL    NOT NULL,
            finished_at REAL,
            outcome     TEXT    NOT NULL CHECK (outcome IN ({", ".join(repr(o) for o in OUTCOMES)})),
            reason      TEXT    NOT NULL DEFAULT '',
            spec_json   TEXT    NOT NULL,
            PRIMARY KEY (service, revision)
        ) WITHOUT ROWID;
        CREATE INDEX revisions_by_outcome ON revisions (service, outcome, revision);
    """,
    # The per-service decision state mirrored from the fleet's records (NULL state_json: deleted).
    2: """
        CREATE TABLE states (
            service     TEXT    NOT NULL PRIMARY KEY,
            state_json  TEXT,
            updated_at  REAL    NOT NULL
        ) WITHOUT ROWID;
    """,
}


def same_revision(a: str, b: str) -> bool:
    """Whether two recorded specs (JSON) are one revision: equal but for the replica count."""
    x, y = json.loads(a), json.loads(b)
    if isinstance(x, dict) and isinstance(y, dict):
        x.pop("replicas", None)
        y.pop("replicas", None)
    return bool(x == y)


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """`$FLEET_STATE_DIR/history.db`, else `$XDG_STATE_HOME/fleet/history.db`, else `~/.local/state/fleet/…`."""
    return state_dir(env) / FILE_NAME


def _make_dirs(directory: Path) -> None:
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask


_COLUMNS = "service, revision, spec_hash, image, user, created_at, finished_at, outcome, reason, spec_json"


def _revision(row: tuple[object, ...]) -> Revision:
    service, revision, spec_hash, image, user, created_at, finished_at, outcome, reason, spec_json = row
    return Revision(str(service), int(cast(int, revision)), str(spec_hash), str(image), str(user),
                    float(cast(float, created_at)), None if finished_at is None else float(cast(float, finished_at)),
                    cast(RevisionOutcome, outcome), str(reason), str(spec_json))


class History:
    """Revision history of every service, in the SQLite file at `path` (created 0600, new directories 0700)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, clock: Callable[[], float] = time.time,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._clock = clock
        _make_dirs(self.path.parent)
        try:
            # Create the file ourselves so it is 0600 from the start; SQLite gives -wal and -shm the same mode.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"{self.path}: cannot open history: {exc}") from exc
        try:
            self._setup(busy_timeout)
        except HistoryError:
            self._db.close()
            raise

    def _setup(self, busy_timeout: float) -> None:
        # Switching a new file to WAL can answer "database is locked" at once, without waiting for the busy
        # handler, while another process does the same; so the whole setup is retried until the timeout.
        deadline = time.monotonic() + busy_timeout
        delay = 0.005
        while True:
            try:
                with self._errors():
                    self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                    self._db.execute("PRAGMA journal_mode = WAL")
                    self._db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
                return
            except HistoryError as exc:
                busy = isinstance(exc.__cause__, sqlite3.OperationalError) and "locked" in str(exc.__cause__)
                if not busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two controllers never read the same max(revision).
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise HistoryError(f"{self.path}: history schema version {current} is newer than this fleet's "
                                   f"({SCHEMA_VERSION}); upgrade fleet")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        with self._errors():
            row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0])

    def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str,
               outcome: RevisionOutcome = "in-progress") -> int:
        """Record an applied spec and return its revision number (1, 2, 3… per service).

        Re-applying the spec of the latest succeeded revision returns that revision; re-applying the spec of
        a latest revision left in progress (a controller died) returns it too, so the rollout resumes under
        the same number. "The spec" is the whole spec but its replica count (`same_revision`), not only its
        hash: a change of lb, health, placement, grace period or update policy keeps the containers (same hash)
        but is a new revision. Otherwise a new row is added.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        try:
            json.loads(spec_json)
        except ValueError as exc:
            raise ValueError(f"spec_json is not JSON: {exc}") from exc
        with self._write() as db:
            ok = db.execute("SELECT revision, spec_hash, spec_json FROM revisions WHERE service = ? "
                            "AND outcome = 'succeeded' ORDER BY revision DESC LIMIT 1", (service,)).fetchone()
            if ok is not None and ok[1] == spec_hash and same_revision(ok[2], spec_json):
                return int(ok[0])
            last = db.execute("SELECT revision, spec_hash, outcome, spec_json FROM revisions WHERE service = ? "
                              "ORDER BY revision DESC LIMIT 1", (service,)).fetchone()
            if last is not None and last[1] == spec_hash and last[2] == "in-progress" and same_revision(
                    last[3], spec_json):
                return int(last[0])
            revision = int(last[0]) + 1 if last is not None else 1
            now = self._clock()
            db.execute(f"INSERT INTO revisions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?)",
                       (service, revision, spec_hash, image, user, now,
                        None if outcome == "in-progress" else now, outcome, spec_json))
            return revision

    def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool:
        """Set how a revision's rollout ended; True if it was in progress and is now finished.

        A finished revision keeps its first outcome (so a failed re-apply of a succeeded spec cannot mark
        the known-good revision failed) and False is returned.
        """
        if outcome not in FINAL_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(FINAL_OUTCOMES)}, got {outcome!r}")
        with self._write() as db:
            cur = db.execute("UPDATE revisions SET outcome = ?, reason = ?, finished_at = ? "
                             "WHERE service = ? AND revision = ? AND outcome = 'in-progress'",
                             (outcome, reason, self._clock(), service, revision))
            if cur.rowcount:
                return True
            if db.execute("SELECT 1 FROM revisions WHERE service = ? AND revision = ?",
                          (service, revision)).fetchone() is None:
                raise HistoryError(f"service {service!r} has no revision {revision}")
            return False

    def list(self, service: str) -> builtins.list[Revision]:
        """Every revision of `service`, oldest first."""
        with self._errors():
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM revisions WHERE service = ? ORDER BY revision",
                                    (service,)).fetchall()
        return [_revision(r) for r in rows]

    def get(self, service: str, revision: int) -> Revision | None:
        with self._errors():
            row = self._db.execute(f"SELECT {_COLUMNS} FROM revisions WHERE service = ? AND revision = ?",
                                   (service, revision)).fetchone()
        return _revision(row) if row is not None else None

    def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None:
        """The newest succeeded revision (older than `before` when given): what a rollback returns to."""
        with self._errors():
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM revisions WHERE service = ? AND outcome = 'succeeded' "
                "AND (? IS NULL OR revision < ?) ORDER BY revision DESC LIMIT 1",
                (service, before, before)).fetchone()
        return _revision(row) if row is not None else None

    def services(self) -> builtins.list[str]:
        """Every service with at least one revision, sorted."""
        with self._errors():
            rows = self._db.execute("SELECT DISTINCT service FROM revisions ORDER BY service").fetchall()
        return [str(r[0]) for r in rows]

    # ---- the local cache of the fleet's records ------------------------------------------------------------

    def store(self, revision: Revision) -> None:
        """Insert or replace one revision as the fleet's records hold it (its number is the fleet's)."""
        self.mirror([revision], {})

    def store_state(self, service: str, state_json: str | None, updated_at: float) -> None:
        """Insert or replace a service's decision state (None: deleted) as the fleet's records hold it."""
        self.mirror([], {service: (state_json, updated_at)})

    def mirror(self, revisions: Iterable[Revision], states: Mapping[str, tuple[str | None, float]]) -> None:
        """Store many revisions and states in one transaction (a fresh read of the fleet's records)."""
        with self._write() as db:
            db.executemany(f"INSERT OR REPLACE INTO revisions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(r.service, r.revision, r.spec_hash, r.image, r.user, r.created_at, r.finished_at,
                             r.outcome, r.reason, r.spec_json) for r in revisions])
            db.executemany("INSERT OR REPLACE INTO states (service, state_json, updated_at) VALUES (?, ?, ?)",
                           [(service, js, at) for service, (js, at) in states.items()])

    def state(self, service: str) -> tuple[str | None, float] | None:
        """A service's cached decision state as (JSON or None when deleted, updated_at); None if never cached."""
        with self._errors():
            row = self._db.execute("SELECT state_json, updated_at FROM states WHERE service = ?",
                                   (service,)).fetchone()
        return None if row is None else (None if row[0] is None else str(row[0]), float(row[1]))

    def states(self) -> dict[str, tuple[str | None, float]]:
        """Every cached decision state, by service."""
        with self._errors():
            rows = self._db.execute("SELECT service, state_json, updated_at FROM states").fetchall()
        return {str(r[0]): (None if r[1] is None else str(r[1]), float(r[2])) for r in rows}
