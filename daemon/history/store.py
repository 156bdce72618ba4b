"""The event store: one SQLite row per track event under state_dir (WAL), so history survives a restart.

Thread-safe: one connection behind a lock, every call its own short transaction. The sink writes, the web
routes read (each may open its own EventStore on the same file: WAL lets readers and the writer overlap).
A database that SQLite cannot read is renamed aside, logged once, and a fresh one is created.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.history.rows import FILE_KINDS, EventFiles, EventRow, FileKind, dumps, epoch, facts

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, camera TEXT NOT NULL, label TEXT, track_id INTEGER, plate TEXT, agreement REAL,
    known_name TEXT, known_list TEXT, zones TEXT NOT NULL, start TEXT NOT NULL, end TEXT, start_ts REAL NOT NULL,
    end_ts REAL, last_ts REAL NOT NULL, last_type TEXT NOT NULL, payload TEXT NOT NULL,
    snapshot TEXT, crop TEXT, plate_path TEXT, clip TEXT, bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_start ON events (start_ts);
CREATE INDEX IF NOT EXISTS events_last ON events (last_ts);
CREATE INDEX IF NOT EXISTS events_camera ON events (camera, start_ts);
CREATE TABLE IF NOT EXISTS status (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
"""
_COLUMN: dict[FileKind, str] = {"snapshot": "snapshot", "crop": "crop", "plate": "plate_path", "clip": "clip"}
_UPSERT = """
INSERT INTO events (event_id, camera, label, track_id, plate, agreement, known_name, known_list, zones, start,
                    end, start_ts, end_ts, last_ts, last_type, payload)
VALUES (:event_id, :camera, :label, :track_id, :plate, :agreement, :known_name, :known_list, :zones, :start,
        :end, :start_ts, :end_ts, :last_ts, :type, :payload)
ON CONFLICT (event_id) DO UPDATE SET
    label = excluded.label, track_id = excluded.track_id, plate = COALESCE(excluded.plate, plate),
    agreement = COALESCE(excluded.agreement, agreement), known_name = COALESCE(excluded.known_name, known_name),
    known_list = COALESCE(excluded.known_list, known_list), zones = excluded.zones,
    end = COALESCE(excluded.end, end), end_ts = COALESCE(excluded.end_ts, end_ts), last_ts = excluded.last_ts,
    last_type = excluded.last_type, payload = excluded.payload
"""


@dataclass(frozen=True)
class PruneReport:
    """What one retention pass removed."""

    rows: int = 0
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Filters:
    """Which events a query or count wants: every filter given must match."""

    camera: str | None = None
    label: str | None = None
    plate: str | None = None  # substring, case-insensitive
    since: float | None = None  # epoch seconds: events that started at or after
    until: float | None = None  # epoch seconds: events that started before

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        for clause, value in (
            ("camera = ?", self.camera),
            ("label = ?", self.label),
            ("start_ts >= ?", self.since),
            ("start_ts < ?", self.until),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if self.plate:
            # instr on upper-cased text: a plate substring without LIKE's % and _ wildcards
            clauses.append("instr(upper(COALESCE(plate, '')), ?) > 0")
            args.append(self.plate.upper())
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


ALL = Filters()  # no filter: every event


class EventStore:
    """SQLite events table at `path` (e.g. <state_dir>/events.db)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.damaged: Path | None = None  # where a damaged database was moved, when this open found one
        self._lock = threading.Lock()
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            self.damaged = self._set_aside()
            log.error(
                "event store %s is damaged (%s): moved to %s, starting an empty one", self.path, exc, self.damaged
            )
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut loses the last commits, never the file
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _set_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                part.replace(aside.with_name(aside.name + suffix))
        return aside

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def record(self, payload: Mapping[str, object], files: EventFiles | None = None) -> None:
        """Insert or update the event's row from its payload (`end` sets the end time); attach `files`."""
        row = facts(payload)
        last = payload.get("last_seen")
        last_ts = epoch(last) if isinstance(last, str) else row.start_ts
        ended = row.type == "end"
        values = {
            **asdict(row),
            "zones": json.dumps(list(row.zones)),
            "end": last if ended else None,
            "end_ts": last_ts if ended else None,
            "last_ts": last_ts,
            "payload": dumps(payload),
        }
        with self._lock, self._conn:
            self._conn.execute(_UPSERT, values)
            if files is not None:
                self._attach_all(row.event_id, files.items())

    def attach(self, event_id: str, kind: FileKind, path: Path) -> None:
        """Record that the event has this file (snapshot, crop, plate or clip); an unknown event is ignored."""
        if kind not in FILE_KINDS:
            raise ValueError(f"file kind {kind!r}: expected one of {', '.join(FILE_KINDS)}")
        with self._lock, self._conn:
            self._attach_all(event_id, [(kind, path)])

    def _attach_all(self, event_id: str, items: Sequence[tuple[FileKind, Path]]) -> None:
        for kind, path in items:
            self._conn.execute(f"UPDATE events SET {_COLUMN[kind]} = ? WHERE event_id = ?", (str(path), event_id))
        found = self._conn.execute(
            "SELECT snapshot, crop, plate_path, clip FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
        if found is not None:
            size = sum(_size(Path(p)) for p in found if p)
            self._conn.execute("UPDATE events SET bytes = ? WHERE event_id = ?", (size, event_id))

    def put_status(self, name: str, value: Mapping[str, object]) -> None:
        """Keep a writer's counters (the events sink's clips and retention) for the routes and pages to read."""
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO status (name, value, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "value = excluded.value, updated = excluded.updated",
                (name, dumps(value), time.time()),
            )

    def status(self) -> dict[str, Any]:
        """Every writer's counters by name, each with `updated` (epoch seconds)."""
        with self._lock:
            found = self._conn.execute("SELECT name, value, updated FROM status ORDER BY name").fetchall()
        return {name: {**json.loads(value), "updated": updated} for name, value, updated in found}

    def get(self, event_id: str) -> EventRow | None:
        with self._lock:
            found = self._conn.execute("SELECT * FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return _row(found, self._names()) if found is not None else None

    def query(self, filters: Filters = ALL, *, limit: int = 50, offset: int = 0) -> list[EventRow]:
        """Events matching every given filter, newest first."""
        where, args = filters.where()
        sql = f"SELECT * FROM events{where} ORDER BY start_ts DESC, event_id LIMIT ? OFFSET ?"
        with self._lock:
            found = self._conn.execute(sql, [*args, max(0, limit), max(0, offset)]).fetchall()
        names = self._names()
        return [_row(r, names) for r in found]

    def count(self, filters: Filters = ALL) -> int:
        where, args = filters.where()
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0])

    def total_bytes(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM events").fetchone()[0])

    def prune(self, max_age_s: float | None, max_bytes: int | None, now: float | None = None) -> PruneReport:
        """Delete events last seen more than max_age_s ago, then the oldest until their files fit max_bytes."""
        now = time.time() if now is None else now
        doomed: list[tuple[str, int, list[str]]] = []
        with self._lock:
            rows = self._conn.execute(
                "SELECT event_id, last_ts, bytes, snapshot, crop, plate_path, clip FROM events ORDER BY last_ts"
            ).fetchall()
            total = sum(int(r[2]) for r in rows)
            for event_id, last_ts, size, *paths in rows:
                too_old = max_age_s is not None and now - float(last_ts) > max_age_s
                too_big = max_bytes is not None and total > max_bytes
                if not (too_old or too_big):
                    continue
                doomed.append((event_id, int(size), [p for p in paths if p]))
                total -= int(size)
            with self._conn:
                self._conn.executemany("DELETE FROM events WHERE event_id = ?", [(d[0],) for d in doomed])
        files = sum(_remove(paths) for _, _, paths in doomed)
        report = PruneReport(len(doomed), files, sum(d[1] for d in doomed))
        if report.rows:
            log.info(
                "event store %s: retention removed %d event(s), %d file(s), %d bytes",
                self.path,
                report.rows,
                report.files,
                report.bytes,
            )
        return report

    def _names(self) -> list[str]:
        return [d[1] for d in self._conn.execute("PRAGMA table_info(events)").fetchall()]


def _row(found: Sequence[Any], names: Sequence[str]) -> EventRow:
    r = dict(zip(names, found, strict=True))

    def path(column: str) -> Path | None:
        return Path(r[column]) if r[column] else None

    return EventRow(
        event_id=r["event_id"],
        camera=r["camera"],
        label=r["label"],
        track_id=r["track_id"],
        plate=r["plate"],
        agreement=r["agreement"],
        known_name=r["known_name"],
        known_list=r["known_list"],
        zones=tuple(json.loads(r["zones"])),
        start=r["start"],
        end=r["end"],
        start_ts=r["start_ts"],
        end_ts=r["end_ts"],
        last_type=r["last_type"],
        payload=json.loads(r["payload"]),
        files=EventFiles(path("snapshot"), path("crop"), path("plate_path"), path("clip")),
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(paths: Sequence[str]) -> int:
    """Delete the files (and their event folder once empty); how many were deleted."""
    removed = 0
    for name in paths:
        path = Path(name)
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event store retention: cannot delete %s: %s", path, exc.strerror or exc)
        with contextlib.suppress(OSError):  # not empty yet (or gone): the event's last file removes it
            path.parent.rmdir()
    return removed
