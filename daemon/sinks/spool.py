"""Durable store-and-forward spool for sinks that can be offline (MQTT): messages survive broker outages
and restarts, are delivered in order, and leave the disk only when the broker acknowledged them.

Why SQLite in WAL mode rather than append-only segment files:
- Each append is one small transaction; WAL makes it a single sequential write to the -wal file (no
  rewrite of the main database), so the per-message cost stays near an append-only log's.
- Acks arrive out of order (paho acknowledges QoS 1/2 messages as the broker answers) and must delete
  single rows; with segments that needs a side index of holes plus compaction, which SQLite already is.
- Crash safety is SQLite's, which is far better tested than a hand-written segment format: after SIGKILL
  or a power cut the database opens consistent, with every committed append present.
- The AUTOINCREMENT id is never reused, so it is both the global order (and with it the per-source order)
  and an unambiguous handle for ack() even after rows were dropped by the limits.

synchronous=NORMAL (the default here) in WAL mode: a commit is in the OS page cache when append()
returns, so a killed daemon (SIGKILL, OOM, crash) loses nothing; only a power cut can lose the last
commits before the next checkpoint. FULL adds an fsync per message, which buys power-cut durability at
the price of latency and flash wear on SD/eMMC boxes; pass synchronous="FULL" where that trade is right.

Limits: `bytes` counts topic + payload bytes of pending messages. When an append would push it over
max_bytes, or messages are older than max_age_s, the OLDEST messages are dropped: counted (by reason),
logged as a warning (at most every few seconds), and mirrored into SinkStats for metrics. The SQLite file
reuses freed pages, and the WAL is truncated after checkpoints, so disk use stays near max_bytes.
Ages use wall-clock time because they must survive restarts: a box without an RTC whose clock jumps
forward at its first NTP sync will age out what it spooled before the sync.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.service.stats import SinkStats

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DROP_LOG_INTERVAL_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id TEXT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL
)
"""


class SpoolError(RuntimeError):
    """The spool cannot be opened or written (in use, bad schema, disk error, message too large)."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    id: int  # increasing, never reused: the delivery order and the handle for ack()
    topic: str
    payload: bytes
    qos: int
    retain: bool
    source_id: str | None
    created: float  # epoch seconds when appended


class Spool:
    """A persistent FIFO of MQTT messages. Safe to use from several threads (one connection, one lock)."""

    def __init__(
        self,
        path: str | Path,
        max_bytes: int,
        max_age_s: float | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        stats: SinkStats | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise SpoolError(f"spool {path}: max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.stats = stats
        self.dropped: Counter[str] = Counter()  # by reason: max_bytes, max_age
        self._lock = threading.Lock()
        self._unlogged: Counter[str] = Counter()
        self._last_drop_log = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_file_lock()
        try:
            self._db = self._open(synchronous)
            count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
            self._count, self._bytes = int(count), int(size)
        except sqlite3.Error as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self.path}: cannot open: {exc}") from exc
        if self._count:
            log.info("spool %s: %d message(s), %d bytes pending from before", self.path, self._count, self._bytes)
        self.enforce_limits()
        self._publish_stats(ok=True)

    def _take_file_lock(self) -> int:
        """Two daemons on one spool would both deliver it; refuse the second one."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise SpoolError(f"spool {self.path} is in use by another process") from exc
        return fd

    def _open(self, synchronous: str) -> sqlite3.Connection:
        if synchronous not in ("NORMAL", "FULL"):
            raise SpoolError(f"spool {self.path}: synchronous must be NORMAL or FULL, got {synchronous!r}")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            db.close()
            raise SpoolError(f"spool {self.path}: the file system does not support WAL (journal_mode={mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA journal_size_limit=8388608")  # truncate the WAL back to 8 MiB after checkpoints
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            db.close()
            raise SpoolError(f"spool {self.path}: schema version {version}, expected {SCHEMA_VERSION}")
        db.execute(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    # -- producer side (the sink's thread) ------------------------------------------------------------
    def append(self, topic: str, payload: bytes, qos: int, retain: bool, source_id: str | None) -> int:
        """Store one message durably and return its id; drops the oldest ones if a limit is exceeded."""
        size = len(payload) + len(topic.encode("utf-8"))
        if size > self.max_bytes:
            raise SpoolError(
                f"spool {self.path}: message for {topic} is {size} bytes, larger than max_bytes {self.max_bytes}"
            )
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO messages (source_id, topic, payload, qos, retain, created, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (source_id, topic, payload, qos, int(retain), time.time(), size),
                )
            except sqlite3.Error as exc:
                self._publish_stats(ok=False)
                raise SpoolError(f"spool {self.path}: cannot append: {exc}") from exc
            self._count += 1
            self._bytes += size
            self._enforce_locked(time.time())
            self._publish_stats(ok=True)
            return int(cursor.lastrowid or 0)

    # -- consumer side (the sink's thread and paho's network thread) ----------------------------------
    def peek(self, n: int, after_id: int = 0) -> list[SpooledMessage]:
        """Up to n pending messages with id > after_id, oldest first (the order they must be sent in)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, source_id, created FROM messages "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, n),
            ).fetchall()
        return [SpooledMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def ack(self, message_id: int) -> bool:
        """The broker has the message: remove it. False if it was already gone (acked twice, or dropped)."""
        with self._lock:
            # SELECT then DELETE instead of DELETE ... RETURNING: Ubuntu 20.04 (JetPack 5) has SQLite 3.31.
            row = self._db.execute("SELECT size FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            self._count -= 1
            self._bytes -= row[0]
            self._publish_stats(ok=True)
            return True

    def pending_count(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def drops(self) -> int:
        return sum(self.dropped.values())

    # -- limits ---------------------------------------------------------------------------------------
    def enforce_limits(self, now: float | None = None) -> int:
        """Apply the size and age limits now (append() does it too); returns how many were dropped.

        Call it periodically while nothing is appended, so old messages age out during a quiet outage.
        """
        with self._lock:
            dropped = self._enforce_locked(time.time() if now is None else now)
            self._publish_stats(ok=True)
            return dropped

    def _enforce_locked(self, now: float) -> int:
        dropped = 0
        if self.max_age_s is not None and self._count:
            dropped += self._drop_older_than(now - self.max_age_s)
        if self._bytes > self.max_bytes:
            dropped += self._drop_for_size(self._bytes - self.max_bytes)
        if dropped:
            self._log_drops(now)
        return dropped

    def _drop_older_than(self, cutoff: float) -> int:
        oldest = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return 0  # cheap common case: the head of the queue is young enough
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE created < ?", (cutoff,)
        ).fetchone()
        self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,))
        self._account_drop("max_age", count, size)
        return int(count)

    def _drop_for_size(self, excess: int) -> int:
        """Delete the shortest prefix of oldest messages that frees at least `excess` bytes."""
        freed = count = 0
        cutoff_id = 0
        cursor = self._db.execute("SELECT id, size FROM messages ORDER BY id")
        for message_id, size in cursor:
            freed += size
            count += 1
            cutoff_id = message_id
            if freed >= excess:
                break
        cursor.close()  # end the read before deleting on the same connection
        self._db.execute("DELETE FROM messages WHERE id <= ?", (cutoff_id,))
        self._account_drop("max_bytes", count, freed)
        return count

    def _account_drop(self, reason: str, count: int, size: int) -> None:
        self._count -= count
        self._bytes -= size
        self.dropped[reason] += count
        self._unlogged[reason] += count

    def _log_drops(self, now: float) -> None:
        if now - self._last_drop_log < DROP_LOG_INTERVAL_S:
            return
        self._flush_drop_log(now)

    def _flush_drop_log(self, now: float) -> None:
        for reason, count in self._unlogged.items():
            limit = f"{self.max_bytes} bytes" if reason == "max_bytes" else f"{self.max_age_s} s"
            log.warning(
                "spool %s: dropped the %d oldest undelivered message(s) (%s limit %s); %d dropped in total",
                self.path,
                count,
                reason,
                limit,
                self.drops,
            )
        self._unlogged.clear()
        self._last_drop_log = now

    def _publish_stats(self, ok: bool) -> None:
        if self.stats is not None:
            self.stats.spooling = ok
            self.stats.spool_depth = self._count
            self.stats.spool_bytes = self._bytes
            self.stats.spool_dropped = self.drops

    def close(self) -> None:
        """Checkpoint the WAL into the database and release the file lock. Safe to call twice."""
        with self._lock:
            if self._lock_fd < 0:
                return
            if self._unlogged:
                self._flush_drop_log(time.time())
            with contextlib.suppress(sqlite3.Error):  # a failed checkpoint loses nothing: the WAL stays
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            os.close(self._lock_fd)
            self._lock_fd = -1
            if self.stats is not None:
                self.stats.spooling = False
