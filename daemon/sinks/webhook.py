"""Webhook sink: each message POSTed as JSON to one URL (ntfy, Slack-style hooks, Home Assistant webhooks).

publish() only appends the message to a durable spool (daemon/sinks/spool.py, the MQTT sink's SQLite store)
and returns; one sender thread POSTs the spool in order and removes a message only once the receiver
answered 2xx. A receiver that is down, times out or answers 5xx/408/429 is retried with exponential backoff
(the message and everything after it wait, so order is kept and nothing is lost, also across restarts).
Any other 4xx means the receiver will never take that message: it is dropped, counted as failed and
logged, and the next one goes. With spool.enabled false the backlog is held in memory (max_queued_messages).
"""

from __future__ import annotations

import collections
import http.client
import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from daemon.frames import Message
from daemon.service.stats import SinkStats
from daemon.sinks.base import MessageKind, Sink, SinkContext, SinkOptions
from daemon.sinks.encode import to_json
from daemon.sinks.mqtt_delivery import SpoolOptions
from daemon.sinks.spool import Spool, SpooledMessage

log = logging.getLogger(__name__)

_RETRYABLE_4XX = frozenset({408, 425, 429})  # "try again later" answers; every other 4xx is final


def _events_only() -> list[MessageKind]:
    return ["event"]


class WebhookOptions(SinkOptions):
    url: str = Field(..., pattern=r"^https?://\S+$", description="Where to POST: an http:// or https:// URL.")
    kinds: list[MessageKind] = Field(
        default_factory=_events_only, description="Message kinds to POST; events by default."
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers (e.g. Authorization); give secrets as ${cred:NAME}. Never logged.",
    )
    timeout_s: float = Field(5.0, gt=0, le=300, description="Give up one request after this many seconds.")
    backoff_initial_s: float = Field(1.0, gt=0, description="First wait before retrying a failed POST (doubles).")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest wait between retries of one POST.")
    max_queued_messages: int = Field(
        1000, ge=1, description="With spool.enabled false: messages held in memory awaiting the receiver."
    )
    spool: SpoolOptions = Field(
        default_factory=SpoolOptions,
        description="Durable store-and-forward (SQLite) across receiver outages and restarts; "
        "unset path: <state_dir>/<sink id>.spool.db.",
    )
    close_timeout_s: float = Field(2.0, ge=0, description="At close, keep delivering this long before stopping.")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in value:
            if not name or any(c in name for c in " :\r\n"):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        return value


class Rejected(RuntimeError):
    """The receiver answered a final 4xx: this message will never be accepted."""


class WebhookNotStarted(RuntimeError):
    """publish() before start() or after close()."""


class _MemoryBacklog:
    """The spool's interface over a bounded deque, for spool.enabled false (lost on exit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: collections.deque[SpooledMessage] = collections.deque()
        self._next = 1
        self._lock = threading.Lock()

    def append(self, topic: str, payload: bytes, qos: int, retain: bool, source_id: str | None) -> int:
        with self._lock:
            if len(self._items) >= self.limit:
                raise RuntimeError(f"{self.limit} messages already await the receiver (max_queued_messages)")
            item = SpooledMessage(self._next, topic, payload, qos, retain, source_id, 0.0)
            self._items.append(item)
            self._next += 1
            return item.id

    def peek(self, n: int, after_id: int = 0) -> list[SpooledMessage]:
        with self._lock:
            return [m for m in self._items if m.id > after_id][:n]

    def ack(self, message_id: int) -> bool:
        with self._lock:
            if self._items and self._items[0].id == message_id:
                self._items.popleft()
                return True
            return False

    def pending_count(self) -> int:
        return len(self._items)

    def close(self) -> None:
        pass


class WebhookSink(Sink):
    """POSTs messages in order from a spool, in its own sender thread."""

    Options: ClassVar[type[SinkOptions]] = WebhookOptions

    def __init__(self, options: SinkOptions, context: SinkContext) -> None:
        if not isinstance(options, WebhookOptions):
            raise TypeError(f"WebhookSink needs WebhookOptions, got {type(options).__name__}")
        super().__init__(options, context)
        self.opts = options
        self.backlog: Spool | _MemoryBacklog | None = None
        self._stats: SinkStats | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while the backlog is empty
        self._thread: threading.Thread | None = None
        self._ok = True  # the last POST got through (connected)
        self.delivered = 0
        self.rejected = 0  # final 4xx answers: dropped, counted as failed
        self.retries = 0

    @property
    def spool_path(self) -> Path:
        configured = self.opts.spool.path
        return Path(configured) if configured else Path(self.context.state_dir) / f"{self.options.id}.spool.db"

    def attach_stats(self, stats: SinkStats) -> None:
        self._stats = stats

    def start(self) -> None:
        spool = self.opts.spool
        if spool.enabled:
            self.backlog = Spool(self.spool_path, spool.max_bytes, spool.max_age_s, spool.synchronous, self._stats)
        else:
            self.backlog = _MemoryBacklog(self.opts.max_queued_messages)
        self._thread = threading.Thread(target=self._run, name=f"webhook-{self.options.id}", daemon=True)
        self._thread.start()
        log.info("webhook sink %s: posting %s to %s", self.options.id, ", ".join(self.opts.kinds), self._where())

    def publish(self, msg: Message) -> None:
        if self.backlog is None:
            raise WebhookNotStarted(f"webhook sink {self.options.id}: not started")
        body = to_json({"kind": msg.kind, **msg.payload}).encode("utf-8")
        self._idle.clear()  # before the append: close() must not see an empty backlog that is no longer so
        self.backlog.append(msg.kind, body, 1, False, msg.source_id)
        self._wake.set()

    def close(self) -> None:
        if self._thread is None or self.backlog is None:
            return
        if self._ok:  # a reachable receiver gets close_timeout_s to take the rest; an unreachable one none
            self._idle.wait(self.opts.close_timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(self.opts.timeout_s + 1.0)
        left = self.backlog.pending_count()
        if left:
            log.warning("webhook sink %s: closing with %d message(s) undelivered to %s%s", self.options.id, left,
                        self._where(), ", kept in the spool for the next start" if self.opts.spool.enabled else "")
        self.backlog.close()
        self.backlog, self._thread = None, None

    @property
    def connected(self) -> bool:
        return self._ok

    # -- the sender thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        backlog = self.backlog
        assert backlog is not None
        delay = self.opts.backoff_initial_s
        while not self._stop.is_set():
            batch = backlog.peek(1)
            if not batch:
                self._idle.set()
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self._idle.clear()
            if self._deliver(batch[0]):
                backlog.ack(batch[0].id)
                delay = self.opts.backoff_initial_s
                continue
            self.retries += 1
            self._stop.wait(delay)  # close() cuts the wait short; the message stays for the next start
            delay = min(delay * 2, self.opts.backoff_max_s)
        self._idle.set()

    def _deliver(self, message: SpooledMessage) -> bool:
        """POST one message: True when it is done with (2xx, or a final 4xx that is counted), False to retry."""
        try:
            self._post(message.payload)
        except Rejected as exc:
            self.rejected += 1
            self._count_failure(str(exc))
            log.warning("webhook sink %s: %s; message dropped", self.options.id, exc)
            return True
        except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError and timeouts are OSErrors
            was_ok, self._ok = self._ok, False
            self._count_failure(f"{type(exc).__name__}: {exc}")
            if was_ok:
                log.warning("webhook sink %s: %s failed (%s); retrying with backoff", self.options.id,
                            self._where(), exc)
            return False
        if not self._ok:
            log.info("webhook sink %s: %s reachable again", self.options.id, self._where())
        self._ok = True
        self.delivered += 1
        return True

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "edgewatch"}
        headers.update({name: value.get_secret_value() for name, value in self.opts.headers.items()})
        request = urllib.request.Request(self.opts.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.opts.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if 400 <= exc.code < 500 and exc.code not in _RETRYABLE_4XX:
                raise Rejected(f"{self._where()} answered {exc.code} {exc.reason}") from None
            raise

    def _count_failure(self, why: str) -> None:
        if self._stats is not None:
            self._stats.failed += 1
            self._stats.last_error = why[:300]

    def _where(self) -> str:
        """The URL without user info or query string, which may carry a token."""
        head, _, _query = self.opts.url.partition("?")
        scheme, _, rest = head.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
