"""Durable MQTT delivery: spool options, the mid -> message ack tracker, and the thread that sends the spool in order.

The fan-out thread only appends to the spool (daemon/sinks/spool.py, one small SQLite transaction) and returns, so
a broker that is away never blocks or fails publish(). SpoolSender hands rows to paho in id order while
connected, with at most `window` unacknowledged; a row leaves the spool only in paho's on_publish for its
mid (PUBACK for QoS 1, PUBCOMP for QoS 2). What is still in the spool when the process dies, however it
dies, is sent again by the next one: exactly once from the spool's point of view, at least once on the wire.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from pydantic import BaseModel, ConfigDict, Field

from daemon.sinks.spool import Spool, SpooledMessage

log = logging.getLogger(__name__)

ENFORCE_EVERY_S = 5.0  # age limits must bite during a quiet outage too, when nothing is appended
RETRY_AFTER_S = 0.5  # after paho refused a publish or the spool could not be read


class SpoolOptions(BaseModel):
    """The `spool:` block of the MQTT sink."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Write QoS>=1 results and events to an on-disk spool before publishing; a message leaves "
        "it only once the broker acknowledged it, so broker outages and daemon restarts lose nothing. "
        "false: keep them in memory only (bounded by max_queued_messages, lost on exit).",
    )
    path: str | None = Field(None, description="SQLite spool file; unset: <state_dir>/<sink id>.spool.db.")
    max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=4096,
        description="Most topic+payload bytes kept undelivered; beyond this the OLDEST messages are dropped, "
        "counted (edgewatch_sink_spool_dropped) and logged, so the disk never fills.",
    )
    max_age_s: float | None = Field(
        86400.0,
        gt=0,
        description="Undelivered messages older than this many seconds are dropped, counted and logged; "
        "null: no age limit.",
    )
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite synchronous mode: NORMAL survives a killed daemon; FULL also survives a power cut, "
        "at the price of one fsync per message.",
    )


@dataclass(frozen=True, slots=True)
class Handed:
    """A message paho holds for us until the broker acknowledges it."""

    qos: int
    spool_id: int | None  # the spool row it carries; None for messages that are not spooled
    generation: int = 0  # SpoolSender's connection count when it was handed
    counted: bool = True  # a Message's delivery, counted as published; False for the sink's own availability


class AckTracker:
    """mids handed to paho and not yet acknowledged (PUBACK/PUBCOMP, or written to the socket for QoS 0).

    paho can acknowledge a mid before publish() has returned it; such an ack waits in `_early` until the
    mid is registered. Every mid paho can acknowledge gets registered (QoS>0 ones it accepted or queued,
    QoS 0 ones it wrote), so an early ack is always claimed by the registration that follows it.
    `cond` is notified on every change; SpoolSender waits on it.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._handed: dict[int, Handed] = {}
        self._early: set[int] = set()

    def register(self, mid: int, handed: Handed) -> bool:
        """Record a mid paho returned; False when its ack already came (the message is delivered)."""
        with self.cond:
            if mid in self._early:
                self._early.discard(mid)
                self.cond.notify_all()
                return False
            self._handed[mid] = handed
            return True

    def acked(self, mid: int) -> Handed | None:
        """paho's on_publish for mid; returns what was handed, or None if it was not registered yet."""
        with self.cond:
            handed = self._handed.pop(mid, None)
            if handed is None:
                self._early.add(mid)
            self.cond.notify_all()
            return handed

    def forget_qos0(self) -> None:
        """On a lost connection paho drops its unsent QoS 0 packets and never acknowledges them."""
        with self.cond:
            for mid in [m for m, h in self._handed.items() if h.qos == 0]:
                del self._handed[mid]
            self.cond.notify_all()

    def count(self, spooled: bool) -> int:
        with self.cond:
            return sum(1 for h in self._handed.values() if (h.spool_id is not None) == spooled)

    def is_pending(self, mid: int) -> bool:
        with self.cond:
            return mid in self._handed

    def spooled_from_before(self, generation: int) -> bool:
        """Whether spool rows handed before connection `generation` still await their ack."""
        with self.cond:
            return any(h.spool_id is not None and h.generation < generation for h in self._handed.values())


class SpoolSender:
    """Publishes the spool's rows in id order over one paho client, at most `window` unacknowledged.

    Rows are handed to paho only while connected. After a reconnection paho re-sends, by itself and in
    the order they were handed, the QoS>0 messages it still holds; new rows wait until those are
    acknowledged, so no message can overtake an older one that was in flight when the link broke.
    """

    def __init__(self, spool: Spool, client: mqtt.Client, tracker: AckTracker, window: int, name: str,
                 on_acked: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.on_acked = on_acked  # the sink counts every acknowledged row as published
        self.client = client
        self.tracker = tracker
        self.cond = tracker.cond  # one lock: acks, appends and connection changes all wake the sender
        self.window = window
        self.name = name
        self.sent = 0  # rows handed to paho by this process, re-sends by paho not counted
        self.delivered = 0  # rows acknowledged by the broker and removed from the spool
        self._connected = False
        self._generation = 0
        self._last_handed = 0  # highest spool id handed to paho by this process
        self._exhausted = False  # the last read found nothing after _last_handed
        self._appends = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"mqtt-spool-{name}", daemon=True)

    # -- called by the sink (fan-out thread) and by paho's callbacks (network thread) -----------------
    def start(self) -> None:
        self._thread.start()

    def appended(self) -> None:
        with self.cond:
            self._appends += 1
            self._exhausted = False
            self.cond.notify_all()

    def on_connect(self) -> None:
        with self.cond:
            self._connected = True
            self._generation += 1
            self.cond.notify_all()

    def on_disconnect(self) -> None:
        with self.cond:
            self._connected = False
            self.cond.notify_all()

    def on_delivered(self, spool_id: int) -> None:
        """The broker acknowledged the row (paho's on_publish): count it delivered, remove it from the spool."""
        if self.on_acked is not None:
            self.on_acked()
        if self._remove(spool_id):
            with self.cond:  # paho's thread and, for acks that overtook publish(), the sender thread
                self.delivered += 1

    def _remove(self, spool_id: int) -> bool:
        try:
            return self.spool.ack(spool_id)
        except sqlite3.Error as exc:  # never let it escape into paho's network thread
            log.error("mqtt sink %s: message %d stays in spool %s (%s); it will be sent again after a restart",
                      self.name, spool_id, self.spool.path, exc)
            return False

    def wait_drained(self, deadline: float) -> bool:
        """Wait, while connected, until the spool is empty; True if it is."""
        with self.cond:
            while self.spool.pending_count() and self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(min(remaining, 0.1))
            return self.spool.pending_count() == 0

    def stop(self, timeout: float = 2.0) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    # -- the sender thread ----------------------------------------------------------------------------
    def _ready(self) -> bool:
        if self._stopping:
            return True
        return (
            self._connected
            and not self._exhausted
            and self.tracker.count(spooled=True) < self.window
            and not self.tracker.spooled_from_before(self._generation)
        )

    def _run(self) -> None:
        next_enforce = time.monotonic() + ENFORCE_EVERY_S
        while True:
            with self.cond:
                self.cond.wait_for(self._ready, timeout=max(0.0, next_enforce - time.monotonic()))
                if self._stopping:
                    return
                ready = self._ready()
                room = self.window - self.tracker.count(spooled=True)
                after, generation, appends = self._last_handed, self._generation, self._appends
            if time.monotonic() >= next_enforce:
                self._enforce_limits()
                next_enforce = time.monotonic() + ENFORCE_EVERY_S
            if ready and not self._send_batch(room, after, generation, appends):
                with self.cond:
                    self.cond.wait_for(lambda: self._stopping, timeout=RETRY_AFTER_S)

    def _send_batch(self, room: int, after: int, generation: int, appends: int) -> bool:
        """Hand up to `room` rows after id `after` to paho; False when something failed (retry later)."""
        try:
            rows = self.spool.peek(room, after_id=after)
        except sqlite3.Error as exc:
            log.error("mqtt sink %s: cannot read spool %s: %s; retrying", self.name, self.spool.path, exc)
            return False
        handed_all = all(self._hand(row, generation) for row in rows)  # stops at the first refusal
        if handed_all and len(rows) < room:
            with self.cond:
                if self._appends == appends:  # nothing was appended meanwhile: every row is handed
                    self._exhausted = True
        return handed_all

    def _hand(self, row: SpooledMessage, generation: int) -> bool:
        try:
            info = self.client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
        except ValueError as exc:  # a row paho can never send (e.g. over MQTT's 256 MiB): do not block the rest
            log.error("mqtt sink %s: dropping spooled message %d for %s: %s", self.name, row.id, row.topic, exc)
            with self.cond:
                self._last_handed = row.id
            self._remove(row.id)
            return True
        rc = MQTTErrorCode(info.rc)
        # NO_CONN: the link dropped just now; paho keeps QoS>0 messages and sends them on reconnection.
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("mqtt sink %s: paho refused spooled message %d: %s; retrying", self.name, row.id,
                        mqtt.error_string(rc))
            return False
        with self.cond:
            self._last_handed = row.id
            self.sent += 1
            pending = self.tracker.register(info.mid, Handed(row.qos, row.id, generation))
        if not pending:  # its ack overtook publish()'s return
            self.on_delivered(row.id)
        return True

    def _enforce_limits(self) -> None:
        try:
            self.spool.enforce_limits()
        except sqlite3.Error as exc:
            log.error("mqtt sink %s: cannot apply the limits of spool %s: %s", self.name, self.spool.path, exc)
