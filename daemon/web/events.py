"""The event history routes: GET /api/events (filters, paging, total), /api/events/status (the events sink's
counters), /api/events/{id} and its files: snapshot.jpg, crop.jpg, plate.jpg, clip.mp4.

They read the event store that the events sink writes (<state_dir>/events.db, daemon/history/store.py) through a
handle of their own, opened on the first request that finds the file: without an events sink there is no
history, and the answer is an empty list rather than a new database.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from daemon.history.rows import FILE_NAMES, EventRow, FileKind
from daemon.history.store import EventStore, Filters
from daemon.web.server import RouteGroup, error_response

EVENTS_DB = "events.db"
MAX_LIMIT = 500
_BY_NAME: dict[str, FileKind] = {name: kind for kind, name in FILE_NAMES.items()}
_MEDIA = {"jpg": "image/jpeg", "mp4": "video/mp4"}


class QueryError(ValueError):
    """A query parameter that cannot be used; the message names it and what was expected."""


class StoreReader:
    """Opens the store once its file exists (the sink creates it when it starts)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: EventStore | None = None
        self._lock = threading.Lock()

    def __call__(self) -> EventStore | None:
        with self._lock:
            if self._store is None and self.path.exists():
                self._store = EventStore(self.path)
            return self._store


def _time(name: str, value: str | None) -> float | None:
    """Epoch seconds or ISO 8601 (with Z or an offset; without one it is UTC, as every payload time is)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        # a '+' in a query string arrives as a space
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as exc:
        raise QueryError(f"{name}={value!r}: expected epoch seconds or an ISO 8601 time") from exc
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _int(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise QueryError(f"{name}={value!r}: expected a whole number") from exc
    if not low <= number <= high:
        raise QueryError(f"{name}={number}: expected {low} to {high}")
    return number


def filters(request: Request) -> Filters:
    """The store's filters from the query string; QueryError names a bad parameter."""
    q = request.query_params
    return Filters(
        camera=q.get("camera") or None,
        label=q.get("label") or None,
        plate=q.get("plate") or None,
        since=_time("since", q.get("since")),
        until=_time("until", q.get("until")),
    )


def event_routes(state_dir: Path) -> RouteGroup:
    """The /api/events routes over <state_dir>/events.db. Plain functions: Starlette runs them on its pool."""
    reader = StoreReader(Path(state_dir) / EVENTS_DB)

    def listing(request: Request) -> Response:
        try:
            wanted = filters(request)
            limit = _int("limit", request.query_params.get("limit"), 50, 1, MAX_LIMIT)
            offset = _int("offset", request.query_params.get("offset"), 0, 0, 10**9)
        except QueryError as exc:
            return error_response(400, str(exc))
        store = reader()
        rows = store.query(wanted, limit=limit, offset=offset) if store is not None else []
        total = store.count(wanted) if store is not None else 0
        body = {"total": total, "limit": limit, "offset": offset, "events": [r.to_json() for r in rows]}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def status(_request: Request) -> Response:
        store = reader()
        body = {
            "sinks": store.status() if store is not None else {},
            "stored_bytes": store.total_bytes() if store is not None else 0,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def one(request: Request) -> Response:
        row = _row(reader(), request.path_params["event_id"])
        return row if isinstance(row, Response) else JSONResponse(row.to_json())

    def file(request: Request) -> Response:
        name = str(request.path_params["name"])
        kind = _BY_NAME.get(name)
        if kind is None:
            return error_response(404, f"no such event file {name!r}: expected {', '.join(sorted(_BY_NAME))}")
        row = _row(reader(), request.path_params["event_id"])
        if isinstance(row, Response):
            return row
        path = dict(row.files.items()).get(kind)
        if path is None or not path.is_file():
            return error_response(404, f"event {row.event_id} has no {name}")
        return FileResponse(path, media_type=_MEDIA[name.rsplit(".", 1)[1]])

    routes = (
        Route("/api/events", listing, methods=["GET"]),
        Route("/api/events/status", status, methods=["GET"]),
        Route("/api/events/{event_id}", one, methods=["GET"]),
        Route("/api/events/{event_id}/{name}", file, methods=["GET"]),
    )
    return RouteGroup("events (/api/events)", routes)


def _row(store: EventStore | None, event_id: str) -> EventRow | Response:
    row = store.get(event_id) if store is not None else None
    return row if row is not None else error_response(404, f"no event {event_id!r}")


def with_events(served: RouteGroup, state_dir: Path) -> RouteGroup:
    """`served` (the http: server's health group) with the event routes added."""
    events = event_routes(state_dir)
    return RouteGroup(f"{served.name} and {events.name}", [*served.routes, *events.routes])
