"""The search's trial store: one SQLite file per run directory, written as each trial ends.

Every evaluation (a proposal at one fidelity) is one row, committed the moment
it ends, so `kill -9` loses at most the evaluation in flight. The row keeps
everything needed to resume and to report: the hyperopt proposal (`misc`
idxs/vals, so TPE's history is restored exactly), the decoded parameters, the
members' seeds and ArchSpecs, their profiles, the fidelity, accuracies,
status and reason, and durations. The run's configuration fingerprint sits in
a `meta` table; `--resume` with a different configuration is refused.

A failed evaluation whose cause was transient (the remote device unreachable,
a trial timeout) is stored with `retryable = 1`; a resumed run evaluates it
again and appends the new row, and the latest row of a (proposal, fidelity)
is the one that counts. Schema 2 added that column, schema 3 the family's
validation cross-entropy (`TrialRecord.score`); an older store is migrated in
place when opened (its failures were never marked retryable, and its records
rank by their accuracy, having no cross-entropy).

A record's status is "ok" (trained), "infeasible" (over a budget, measured or
predicted; not trained), "failed" (an exception or a non-finite loss) or
"repeat" (its network was trained already in this run, so it was not trained
again: `schedule.Schedule`, "Repeats").

A run directory is owned by one process at a time: `RunLock` takes an
exclusive `flock` on `RUN_DIR/.lock` (released by the kernel if the process
dies, so a crash never leaves a stale lock).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from compressor.errors import UserError

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    proposal INTEGER NOT NULL,
    fidelity INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL,
    misc TEXT,
    seeds TEXT NOT NULL,
    archs TEXT NOT NULL,
    profiles TEXT NOT NULL,
    val_accuracy REAL,
    val_std REAL,
    member_accuracies TEXT NOT NULL,
    loss REAL,
    latency_ms REAL,
    memory_mb REAL,
    size_mb REAL,
    n_params INTEGER,
    macs INTEGER,
    screen_s REAL NOT NULL,
    train_s REAL NOT NULL,
    total_s REAL NOT NULL,
    ended_at REAL NOT NULL,
    retryable INTEGER NOT NULL DEFAULT 0,
    val_loss REAL
);
"""

# Each step takes a store from the version before it to the next one.
_MIGRATIONS = {
    2: "ALTER TABLE trials ADD COLUMN retryable INTEGER NOT NULL DEFAULT 0",
    3: "ALTER TABLE trials ADD COLUMN val_loss REAL",
}

STATUSES = ("ok", "infeasible", "failed", "repeat")
# What a proposal can end as without being trained: over the budget (measured or predicted), or a network this
# run has already trained at the smallest fidelity (`schedule.Schedule`, "Repeats").
UNTRAINED = ("infeasible", "repeat")


@dataclass
class TrialRecord:
    """One evaluation of a proposal (a family) at one fidelity (epochs)."""

    proposal: int
    fidelity: int
    status: str
    params: dict[str, Any]
    seeds: list[int]
    reason: str = ""
    misc: dict[str, Any] | None = None
    archs: list[str] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    val_accuracy: float | None = None
    val_std: float | None = None
    member_accuracies: list[float] = field(default_factory=list)
    loss: float | None = None
    latency_ms: float | None = None
    memory_mb: float | None = None
    size_mb: float | None = None
    n_params: int | None = None
    macs: int | None = None
    screen_s: float = 0.0
    train_s: float = 0.0
    total_s: float = 0.0
    ended_at: float = 0.0
    # A failure with a transient cause: a resumed run evaluates it again.
    retryable: bool = False
    # The members' mean cross-entropy on validation (`compressor.train.distill.TrainResult.val_loss`).
    val_loss: float | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def score(self) -> float | None:
        """What the search ranks a trained family by, higher is better: exp(-val_loss), in (0, 1].

        That is the geometric mean over the validation images of the probability
        given to the true class: ranked as the cross-entropy ranks, and in the
        range of the accuracy it replaced, so a strategy's loss (-score) stays
        below every over-budget penalty (`strategies.penalty_loss`). The
        strategy's loss, the successive-halving promotions and the finalists'
        pick all read it. After one epoch on digits-cluttered with 10% of the
        labels every family sits at 10-40% validation accuracy, and the count
        of images right ranked the families' accuracy after 15 epochs worse
        than their cross-entropy did (BENCHMARKS.md, "A graded score for short
        trainings"). A record without a cross-entropy (stored before there was
        one, or a tuning's) ranks by its accuracy.
        """
        return self.val_accuracy if self.val_loss is None else math.exp(-self.val_loss)


_JSON_FIELDS = ("params", "misc", "seeds", "archs", "profiles", "member_accuracies")
_COLUMNS = [f for f in TrialRecord.__dataclass_fields__ if f != "id"]


class TrialStore:
    """SQLite-backed list of `TrialRecord`s plus the run's metadata."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._schema_version()
        if version is None:
            self._db.executescript(_SCHEMA)
            self.set_meta("schema_version", SCHEMA_VERSION)
            return
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path}: trial store schema {version}, this version reads {SCHEMA_VERSION}")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(_MIGRATIONS[step])
            self.set_meta("schema_version", step)
            self._db.execute("COMMIT")

    def _schema_version(self) -> int | None:
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
            return None
        return self.get_meta("schema_version")

    def close(self) -> None:
        self._db.close()

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    def clear_meta(self) -> None:
        """Forget the run's metadata (configuration, teacher, final student...); the schema version stays."""
        self._db.execute("DELETE FROM meta WHERE key != 'schema_version'")

    def add(self, record: TrialRecord) -> TrialRecord:
        """Append and commit one record; returns it with its id set."""
        if record.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {record.status!r}")
        record.ended_at = record.ended_at or time.time()
        values = [
            json.dumps(getattr(record, c)) if c in _JSON_FIELDS else getattr(record, c) for c in _COLUMNS
        ]
        cursor = self._db.execute(
            f"INSERT INTO trials({', '.join(_COLUMNS)}) VALUES({', '.join('?' for _ in _COLUMNS)})", values
        )
        record.id = cursor.lastrowid
        return record

    def records(self) -> list[TrialRecord]:
        return list(self._iter())

    def _iter(self) -> Iterator[TrialRecord]:
        cursor = self._db.execute(f"SELECT id, {', '.join(_COLUMNS)} FROM trials ORDER BY id")
        for row in cursor:
            data = dict(zip(["id", *_COLUMNS], row))
            for key in _JSON_FIELDS:
                data[key] = json.loads(data[key]) if data[key] is not None else None
            data["retryable"] = bool(data["retryable"])
            yield TrialRecord(**data)


class RunLock:
    """Exclusive ownership of a run directory for the life of this object."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"run directory {self.path.parent} is in use by another compressor process (pid {owner}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
