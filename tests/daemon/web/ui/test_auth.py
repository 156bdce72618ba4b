"""Web UI auth on the real web stack: 401 on every route without the token, Bearer and login cookie, CSRF."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from daemon.web.server import RouteGroup
from daemon.web.ui import auth as login
from daemon.web.ui.auth import Auth, protect, safe_next
from tests.daemon.web.ui.serve import TOKEN, Reply, request, serving, ui_server

ROUTES = [
    "/",
    "/events",
    "/events/stream",
    "/events/x1",
    "/status",
    "/ui/cameras.json",
    "/live/cam.mjpg",
    "/live/cam.jpg",
]


def test_session_cookie_round_trip_expiry_and_tampering() -> None:
    auth = Auth(TOKEN, 60)
    cookie = auth.new_session(now=1000.0)
    nonce = auth.session_nonce(cookie, now=1001.0)
    assert nonce is not None and TOKEN not in cookie
    assert auth.session_nonce(cookie, now=1061.0) is None  # expired
    body, _, sig = cookie.rpartition(".")
    assert auth.session_nonce(f"{body}.{'0' * len(sig)}", now=1001.0) is None
    assert Auth("another token", 60).session_nonce(cookie, now=1001.0) is None
    assert auth.csrf_ok(nonce, auth.csrf_token(nonce)) and not auth.csrf_ok(nonce, auth.csrf_token("other"))
    assert TOKEN not in repr(auth)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/events?page=2", "/events?page=2"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil", "/"),
        ("events", "/"),
    ],
)
def test_login_redirects_only_to_this_server(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_every_route_is_401_without_the_right_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ui_server(tmp_path, auth=True) as (port, _pages):
        for path in ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Cookie": f"{login.SESSION_COOKIE}=forged.123.abc"},
            ):
                reply = request(port, path, headers=headers)
                assert reply.status == 401, (path, headers, reply.status)
        assert request(port, "/", headers={"Accept": "text/html"}).text.count("/login?next=/") == 1
        assert request(port, "/events").json()["status"] == 401
        ok = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/", "/events", "/events/x1", "/status", "/ui/cameras.json", "/live/cam.jpg"):
            assert request(port, path, headers=ok).status in (200, 404), path  # 404: no such event / no frame yet
        assert request(port, "/static/ui.css").status == 200  # the login page's style sheet needs no login
    assert TOKEN not in caplog.text


def test_protect_guards_routes_of_other_groups() -> None:
    group = RouteGroup("health", [Route("/healthz", lambda _r: PlainTextResponse("ok"))])
    with serving(protect(group, Auth(TOKEN, 60))) as server:
        assert request(server.port, "/healthz").status == 401
        assert request(server.port, "/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200


def _form(cookie: str = "") -> dict[str, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    return headers


def test_login_form_sets_a_strict_httponly_cookie_and_logout_needs_csrf(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ui_server(tmp_path, auth=True) as (port, pages):
        page = request(port, "/login?next=/status")
        nonce = page.cookies()[login.LOGIN_COOKIE].value
        assert page.status == 200 and f'value="{nonce}"' in page.text
        nonce_cookie = f"{login.LOGIN_COOKIE}={nonce}"

        def post(token: str, cookie: str, form_nonce: str = nonce) -> Reply:
            body = urlencode({"token": token, "nonce": form_nonce, "next": "/status"}).encode()
            return request(port, "/login", "POST", _form(cookie), body)

        assert post("wrong", nonce_cookie).status == 401
        assert post(TOKEN, "").status == 401  # no nonce cookie: a form posted from another site
        assert post(TOKEN, nonce_cookie, form_nonce="other").status == 401
        good = post(TOKEN, nonce_cookie)
        assert good.status == 303 and good.headers["location"] == "/status"
        header = next(h for h in good.headers.get_all("set-cookie") or [] if h.startswith(login.SESSION_COOKIE))
        assert "HttpOnly" in header and "SameSite=strict" in header and TOKEN not in header
        session = good.cookies()[login.SESSION_COOKIE].value
        cookie = f"{login.SESSION_COOKIE}={session}"
        status = request(port, "/status", headers={"Cookie": cookie})
        assert status.status == 200
        csrf = pages.auth.csrf_token(pages.auth.session_nonce(session))  # type: ignore[union-attr,arg-type]
        assert f'value="{csrf}"' in status.text
        assert request(port, "/logout", "POST", _form(cookie), b"csrf=forged").status == 403
        out = request(port, "/logout", "POST", _form(cookie), urlencode({"csrf": csrf}).encode())
        assert out.status == 303 and out.cookies()[login.SESSION_COOKIE].value == ""
    assert TOKEN not in caplog.text
