"""The events pages' view of the event store (daemon/history/store.py): filters from a query string, pages of
rows for the templates, and the Server-Sent Events stream that sends each new or changed event as it lands.

The store is written by the events sink; the UI opens its own handle on the same file (SQLite WAL lets one
writer and many readers overlap) and only reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

from daemon.history.rows import EventRow
from daemon.history.store import ALL, Filters


class EventReader(Protocol):
    """What the pages need from daemon.history.store.EventStore."""

    def query(self, filters: Filters = ALL, *, limit: int = 50, offset: int = 0) -> list[EventRow]: ...

    def count(self, filters: Filters = ALL) -> int: ...

    def get(self, event_id: str) -> EventRow | None: ...


class NoHistory:
    """No events sink (yet): an empty history."""

    def query(self, filters: Filters = ALL, *, limit: int = 50, offset: int = 0) -> list[EventRow]:
        return []

    def count(self, filters: Filters = ALL) -> int:
        return 0

    def get(self, event_id: str) -> EventRow | None:
        return None


class FilterError(ValueError):
    """A filter in the query string that cannot be read; the message names it and the expected form."""


def _time(name: str, text: str) -> float:
    """A datetime-local field (2026-12-04T15:30, taken as UTC) or an ISO 8601 time, as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"filter {name}={text!r}: expected a time like 2026-12-04T15:30 (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class EventFilters:
    camera: str | None = None
    label: str | None = None
    plate: str | None = None
    since: str | None = None  # as typed, for the form; as_query() converts
    until: str | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> EventFilters:
        def text(name: str) -> str | None:
            value = params.get(name, "").strip()
            return value or None

        filters = cls(text("camera"), text("label"), text("plate"), text("since"), text("until"))
        filters.as_query()  # a bad time is a FilterError now, naming the field
        return filters

    def as_query(self) -> Filters:
        return Filters(
            camera=self.camera,
            label=self.label,
            plate=self.plate,
            since=_time("since", self.since) if self.since else None,
            until=_time("until", self.until) if self.until else None,
        )

    def form(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("camera", self.camera),
                ("label", self.label),
                ("plate", self.plate),
                ("since", self.since),
                ("until", self.until),
            )
            if v
        }


def row_view(row: EventRow) -> dict[str, Any]:
    """One event for a template or the live list: the API's JSON plus the known/deny badge text."""
    out = row.to_json()
    out.pop("payload")
    out["badge"] = None
    if row.known_name:
        out["badge"] = {"text": row.known_name, "deny": row.known_list == "deny"}
    out["agreement"] = f"{row.agreement:.2f}" if row.agreement is not None else None  # same text in page and SSE
    return out


def page(store: EventReader, filters: EventFilters, number: int, size: int) -> dict[str, Any]:
    """Page `number` (from 1) of the filtered events, newest first, with the total for the pager."""
    query = filters.as_query()
    total = store.count(query)
    pages = max(1, -(-total // size))
    number = min(max(1, number), pages)
    rows = store.query(query, limit=size, offset=(number - 1) * size)
    return {"rows": [row_view(r) for r in rows], "total": total, "page": number, "pages": pages}


def _fingerprint(row: EventRow) -> tuple[Any, ...]:
    return (row.last_type, row.plate, row.end, row.agreement, row.known_name, row.files)


async def changes(
    store: EventReader, filters: EventFilters, poll_s: float, size: int, running: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """SSE: every event of the filtered newest `size` that is new or changed since the last look.

    The first look only remembers what the page already shows; later ones send `event: row` messages. Ends
    once `running()` is False (the daemon is stopping), so the server's shutdown waits for no stream.
    """
    seen: dict[str, tuple[Any, ...]] | None = None
    query = filters.as_query()
    yield b"retry: 2000\n\n"
    while running():
        rows = await run_in_threadpool(lambda: store.query(query, limit=size, offset=0))
        fresh = {row.event_id: _fingerprint(row) for row in rows}
        if seen is not None:
            for row in reversed(rows):  # oldest first, so the newest ends on top of the list
                if seen.get(row.event_id) != fresh[row.event_id]:
                    yield f"event: row\ndata: {json.dumps(row_view(row))}\n\n".encode()
        seen = fresh  # ordered by start: an event that left the newest `size` never comes back
        await asyncio.sleep(poll_s)
