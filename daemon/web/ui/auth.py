"""Web UI authentication: a Bearer token or a login cookie on every route, CSRF tokens tied to the session.

The token comes from the config (`ui.token`, read from ${cred:...} or ${file:...}); it is compared in constant
time and never logged. A login sets a signed session cookie (HttpOnly, SameSite=Strict) that names a random
session nonce and its expiry; nothing is stored server-side, so a restart with the same token keeps sessions.
Each state-changing form carries a CSRF token derived from the session nonce (logout) or from a pre-login
nonce cookie (login), checked in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from urllib.parse import parse_qs, quote

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon.web.server import RouteGroup

log = logging.getLogger(__name__)

SESSION_COOKIE = "edgewatch_session"
LOGIN_COOKIE = "edgewatch_login"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"


class Auth:
    """Checks tokens and issues and checks session cookies and CSRF tokens; holds the only copy of the token."""

    def __init__(self, token: str, session_s: float) -> None:
        self._token = token.encode()
        # a key of its own for signatures, so a cookie never carries anything the token can be read back from
        self._key = hashlib.sha256(b"edgewatch-ui-session\0" + self._token).digest()
        self.session_s = session_s

    def __repr__(self) -> str:  # never the token, even in a traceback's locals
        return "Auth(token=***)"

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.session_s)
        body = f"{secrets.token_urlsafe(18)}.{expires}"
        return f"{body}.{self._sign('session:' + body)}"

    def session_nonce(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session's nonce when `cookie` is one this token signed and it has not expired; else None."""
        parts = (cookie or "").split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(parts[2], self._sign("session:" + body)):
            return None
        return parts[0] if int(parts[1]) > (time.time() if now is None else now) else None

    def csrf_token(self, nonce: str) -> str:
        return self._sign("csrf:" + nonce)

    def csrf_ok(self, nonce: str, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf_token(nonce).encode())

    def authorized(self, request: Request) -> bool:
        """A valid session cookie or an `Authorization: Bearer TOKEN` header."""
        if self.session_nonce(request.cookies.get(SESSION_COOKIE)) is not None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(given) and self.token_ok(given.strip())


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def refusal(request: Request) -> Response:
    """401: a page linking to the login form for a browser, the JSON error shape for a program."""
    if wants_html(request):
        target = quote(request.url.path, safe="/")
        body = (
            f"<!doctype html><title>edgewatch: sign in</title><p>Sign in first: "
            f'<a href="{LOGIN_PATH}?next={target}">log in</a></p>'
        )
        return Response(body, status_code=401, media_type="text/html", headers={"Cache-Control": "no-store"})
    return JSONResponse(
        {"message": "authentication required: a Bearer token or a login session", "status": 401},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="edgewatch"'},
    )


class AuthMiddleware:
    """ASGI middleware on each protected route: lets an authorized request through, answers 401 otherwise."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # websockets are refused by build_app's routes (none are served)
            return
        request = Request(scope, receive)
        if self.auth.authorized(request):
            await self.app(scope, receive, send)
            return
        await refusal(request)(scope, receive, send)


def protect(group: RouteGroup, auth: Auth, open_paths: Sequence[str] = ()) -> RouteGroup:
    """The same routes, each behind AuthMiddleware, except those whose path is in open_paths (login, styles)."""
    guard = [Middleware(AuthMiddleware, auth=auth)]
    routes: list[Route | Mount | WebSocketRoute] = []
    for route in group.routes:
        if route.path in open_paths:
            routes.append(route)
        elif isinstance(route, Route):
            routes.append(Route(route.path, route.endpoint, methods=route.methods, name=route.name, middleware=guard))
        elif isinstance(route, Mount):
            routes.append(Mount(route.path, app=route.app, name=route.name, middleware=guard))
        else:
            raise TypeError(f"cannot put the websocket route {route.path} behind the UI's login")
    return RouteGroup(group.name, routes)


MAX_FORM_BYTES = 4096  # the login and logout forms are a few short fields


class FormError(ValueError):
    """A form body that is not a small application/x-www-form-urlencoded one."""


async def form_fields(request: Request) -> dict[str, str]:
    """The first value of each field of a small urlencoded form (python-multipart is not needed for that)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise FormError(f"expected an application/x-www-form-urlencoded form, got {kind or 'no content type'}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(f"form larger than {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def safe_next(target: str | None) -> str:
    """Only a path on this server (no scheme, no //host): a login link cannot send anyone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def start_session(auth: Auth, target: str, secure: bool) -> Response:
    response = RedirectResponse(safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        auth.new_session(),
        max_age=int(auth.session_s),
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


def login_nonce(request: Request) -> str:
    """The pre-login CSRF nonce: the one in the cookie, or a new one (the login page sets it)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(18)


def login_form_ok(auth: Auth, request: Request, form_nonce: str, token: str) -> bool:
    """Right token, and the form's nonce matches the cookie's (a form posted from elsewhere has no cookie)."""
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    same = bool(cookie) and hmac.compare_digest(cookie.encode(), form_nonce.encode())
    client = request.client.host if request.client is not None else "?"
    if not same:
        log.warning("ui: login form from %s without its nonce cookie: refused", client)
        return False
    if not auth.token_ok(token):
        log.warning("ui: wrong token in the login form from %s", client)
        return False
    log.info("ui: login from %s", client)
    return True
