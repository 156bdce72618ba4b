"""A UI route group served by the real web stack on a free loopback port, and a small HTTP client for tests."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from daemon.history.store import EventStore
from daemon.service.health import HealthRules
from daemon.service.stats import Stats
from daemon.service.uioptions import UiOptions
from daemon.web.server import RouteGroup, WebServer, listen
from daemon.web.ui.auth import Auth
from daemon.web.ui.live import LiveFeed, Viewers
from daemon.web.ui.pages import UiPages, ui_group
from daemon.web.ui.views import DaemonView

TOKEN = "t0ken-for-tests-4f9c2a"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def cookies(self) -> SimpleCookie:
        jar: SimpleCookie = SimpleCookie()
        for header in self.headers.get_all("set-cookie") or []:
            jar.load(header)
        return jar


def request(
    port: int, path: str, method: str = "GET", headers: Mapping[str, str] | None = None, body: bytes | None = None
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def view(feed: LiveFeed, sources: tuple[str, ...] = ("cam",), max_viewers: int = 2) -> DaemonView:
    return DaemonView(
        stats=Stats(),
        rules=HealthRules(),
        feed=feed,
        viewers=Viewers(max_viewers),
        pipeline="test",
        sources=sources,
        sinks={},
        providers={"det": ["cpu"]},
    )


@contextmanager
def serving(group: RouteGroup) -> Iterator[WebServer]:
    server = WebServer.serving([group], listen("http", "127.0.0.1", 0), "http")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def ui_server(
    tmp_path: Path,
    feed: LiveFeed | None = None,
    auth: bool = False,
    options: UiOptions | None = None,
    sources: tuple[str, ...] = ("cam",),
) -> Iterator[tuple[int, UiPages]]:
    """The UI's pages over an event store in tmp_path; yields (port, pages)."""
    store = EventStore(tmp_path / "events.db")
    options = options or UiOptions(enabled=True, page_size=5)
    pages = UiPages(
        options,
        view(feed or LiveFeed(), sources, options.max_viewers),
        lambda: store,
        Auth(TOKEN, 3600) if auth else None,
    )
    with serving(ui_group(pages)) as server:
        yield server.port, pages
    store.close()
