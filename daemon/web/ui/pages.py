"""The web UI's routes: Cameras (/), Events (/events, live over SSE), Event (/events/{id}), Status (/status),
the live view (/live/{source}.mjpg and .jpg), the tiles' refresh (/ui/cameras.json), login and logout.

Pages are Jinja2 templates (daemon/web/ui/templates/) with a little plain JavaScript (static/ui.js). The event
files (snapshot, crop, plate, clip) and /api/events are served by daemon/web/events.py; pages link to them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from daemon.service.uioptions import UiOptions
from daemon.web.server import RouteGroup, error_response
from daemon.web.ui import auth as login
from daemon.web.ui import history, live, views
from daemon.web.ui.auth import Auth

HERE = Path(__file__).parent
STATIC_PATH = "/static"
SSE_POLL_S = 1.0


class UiPages:
    """The page handlers over one running daemon; `store()` opens the event store on first use."""

    def __init__(
        self, options: UiOptions, view: views.DaemonView, store: Callable[[], history.EventReader], auth: Auth | None
    ) -> None:
        self.options = options
        self.view = view
        self.store = store
        self.auth = auth
        self.templates = Jinja2Templates(directory=HERE / "templates")

    def render(self, request: Request, name: str, code: int = 200, **context: Any) -> Response:
        context.setdefault("csrf", self._csrf(request))
        context.setdefault("pipeline", self.view.pipeline)
        return self.templates.TemplateResponse(
            request, name, context, status_code=code, headers={"Cache-Control": "no-store"}
        )

    def _csrf(self, request: Request) -> str | None:
        """The session's CSRF token for the logout form; None when there is no login (auth off or Bearer)."""
        if self.auth is None:
            return None
        nonce = self.auth.session_nonce(request.cookies.get(login.SESSION_COOKIE))
        return self.auth.csrf_token(nonce) if nonce is not None else None

    # -- pages ------------------------------------------------------------------------------------------
    def cameras(self, request: Request) -> Response:
        return self.render(request, "cameras.html", cameras=views.cameras(self.view), page_name="cameras")

    def cameras_json(self, _request: Request) -> Response:
        return JSONResponse(views.cameras(self.view), headers={"Cache-Control": "no-store"})

    def status(self, request: Request) -> Response:
        return self.render(request, "status.html", status=views.status(self.view), page_name="status")

    def events(self, request: Request) -> Response:
        try:
            filters = history.EventFilters.from_query(request.query_params)
            number = int(request.query_params.get("page", "1") or "1")
        except (history.FilterError, ValueError) as exc:
            return self.render(
                request,
                "events.html",
                code=400,
                error=str(exc),
                filters={},
                rows=[],
                total=0,
                page=1,
                pages=1,
                page_name="events",
                cameras=self.view.sources,
            )
        found = history.page(self.store(), filters, number, self.options.page_size)
        return self.render(
            request,
            "events.html",
            filters=filters.form(),
            page_name="events",
            cameras=self.view.sources,
            error=None,
            **found,
        )

    def event(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        row = self.store().get(event_id)
        if row is None:
            return self.render(request, "missing.html", code=404, what=f"event {event_id}", page_name="events")
        return self.render(request, "event.html", event=history.row_view(row), payload=row.payload, page_name="events")

    def event_stream(self, request: Request) -> Response:
        try:
            filters = history.EventFilters.from_query(request.query_params)
        except history.FilterError as exc:
            return error_response(400, str(exc))
        return StreamingResponse(
            history.changes(
                self.store(), filters, SSE_POLL_S, self.options.page_size, lambda: views.daemon_running(self.view)
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- live view --------------------------------------------------------------------------------------
    def live_stream(self, request: Request) -> Response:
        return live.stream(
            request,
            self.view.feed,
            set(self.view.sources),
            self.options,
            self.view.viewers,
            lambda sid: views.source_running(self.view, sid),
        )

    def live_jpeg(self, request: Request) -> Response:
        source_id = request.path_params["source"]
        if source_id not in self.view.sources:
            return error_response(404, f"no source {source_id!r}")
        return live.snapshot(self.view.feed, source_id, self.options)

    # -- login ------------------------------------------------------------------------------------------
    def login_page(self, request: Request) -> Response:
        if self.auth is None:
            return error_response(404, "the web UI has no login: auth is off (loopback)")
        nonce = login.login_nonce(request)
        response = self.render(
            request,
            "login.html",
            nonce=nonce,
            next=login.safe_next(request.query_params.get("next")),
            failed=False,
            page_name="login",
        )
        response.set_cookie(login.LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path=login.LOGIN_PATH)
        return response

    async def login_submit(self, request: Request) -> Response:
        if self.auth is None:
            return error_response(404, "the web UI has no login: auth is off (loopback)")
        try:
            form = await login.form_fields(request)
        except login.FormError as exc:
            return error_response(400, f"login: {exc}")
        token, nonce, target = form.get("token", ""), form.get("nonce", ""), form.get("next", "/")
        if not login.login_form_ok(self.auth, request, nonce, token):
            fresh = login.login_nonce(request)
            response = self.render(
                request,
                "login.html",
                code=401,
                nonce=fresh,
                next=login.safe_next(target),
                failed=True,
                page_name="login",
            )
            response.set_cookie(login.LOGIN_COOKIE, fresh, httponly=True, samesite="strict", path=login.LOGIN_PATH)
            return response
        return login.start_session(self.auth, target, secure=request.url.scheme == "https")

    async def logout(self, request: Request) -> Response:
        """POST only, with the session's CSRF token: a link on another site cannot log anyone out."""
        assert self.auth is not None  # the route exists only with auth on
        nonce = self.auth.session_nonce(request.cookies.get(login.SESSION_COOKIE))
        try:
            form = await login.form_fields(request)
        except login.FormError as exc:
            return error_response(400, f"logout: {exc}")
        if nonce is None or not self.auth.csrf_ok(nonce, form.get("csrf", "")):
            return error_response(403, "logout needs the form's CSRF token")
        response = Response(status_code=303, headers={"Location": login.LOGIN_PATH})
        response.delete_cookie(login.SESSION_COOKIE, path="/")
        return response

    def routes(self) -> list[Route | Mount]:
        found: list[Route | Mount] = [
            Route("/", self.cameras, methods=["GET"]),
            Route("/ui/cameras.json", self.cameras_json, methods=["GET"]),
            Route("/live/{source}.mjpg", self.live_stream, methods=["GET"]),
            Route("/live/{source}.jpg", self.live_jpeg, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/events/stream", self.event_stream, methods=["GET"]),
            Route("/events/{event_id}", self.event, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
            Mount(STATIC_PATH, app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
        if self.auth is not None:
            found += [
                Route(login.LOGIN_PATH, self.login_page, methods=["GET"]),
                Route(login.LOGIN_PATH, self.login_submit, methods=["POST"]),
                Route(login.LOGOUT_PATH, self.logout, methods=["POST"]),
            ]
        return found


def ui_group(pages: UiPages) -> RouteGroup:
    """The UI's routes; with auth on, all but the login form and the style sheet sit behind the login."""
    group = RouteGroup("web UI (/, /events, /status, /live)", pages.routes())
    if pages.auth is None:
        return group
    return login.protect(group, pages.auth, open_paths=(login.LOGIN_PATH, STATIC_PATH))
