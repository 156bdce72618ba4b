"""Puts the web UI on the `http:` server: with_ui() takes the route group that server already serves (health,
metrics, event routes) and returns it with the UI's pages added, everything behind the login when auth is on."""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config
from daemon.service.health import HealthRules
from daemon.service.stats import Stats
from daemon.service.uioptions import auth_required
from daemon.web.events import EVENTS_DB, StoreReader
from daemon.web.server import RouteGroup
from daemon.web.ui.auth import Auth, protect
from daemon.web.ui.history import EventReader, NoHistory
from daemon.web.ui.live import LiveFeed, Viewers
from daemon.web.ui.pages import UiPages, ui_group
from daemon.web.ui.views import DaemonView


class StoreHandle:
    """The event store for the pages: /api/events' reader (opened once the events sink made the file), or an
    empty history while there is none, so that the UI never creates a database of its own."""

    def __init__(self, state_dir: Path) -> None:
        self._reader = StoreReader(state_dir / EVENTS_DB)

    def __call__(self) -> EventReader:
        store = self._reader()
        return store if store is not None else NoHistory()


def make_auth(config: Config) -> Auth | None:
    """The UI's Auth when it is on (beyond loopback or require_auth); load_config made sure a token is set."""
    if not auth_required(config.ui, config.http.host):
        return None
    if config.ui.token is None:
        raise ValueError("ui.token: auth is on but no token is set")
    return Auth(config.ui.token.get_secret_value(), config.ui.session_hours * 3600)


def make_pages(config: Config, stats: Stats, rules: HealthRules, feed: LiveFeed) -> UiPages:
    view = DaemonView(
        stats=stats,
        rules=rules,
        feed=feed,
        viewers=Viewers(config.ui.max_viewers),
        pipeline=config.pipeline.name,
        sources=tuple(s.id for s in config.sources),
        sinks={s.id: s.type for s in config.sinks},
        providers={name: [str(p) for p in m.runtime.providers] for name, m in config.models.items()},
    )
    store = StoreHandle(Path(config.state_dir))
    return UiPages(config.ui, view, store, make_auth(config))


def with_ui(served: RouteGroup, config: Config, stats: Stats, rules: HealthRules, feed: LiveFeed) -> RouteGroup:
    """`served` unchanged when ui: is off; else one group: `served` and the UI, behind the login when auth is on."""
    if not config.ui.enabled:
        return served
    pages = make_pages(config, stats, rules, feed)
    guarded = protect(served, pages.auth) if pages.auth is not None else served
    ui = ui_group(pages)
    return RouteGroup(f"{served.name} and {ui.name}", [*guarded.routes, *ui.routes])
