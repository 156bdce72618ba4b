"""URL images without SSRF (issue 16 item 7): off by default, loopback refused after resolution and on redirects,
allowed when listed, one deadline for the whole download, a size cap, and slow fetches never hold up others."""

from __future__ import annotations

import asyncio
import base64
import http.server
import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.config import ApiOptions
from daemon.web.fetch import UrlFetcher, UrlPolicy
from daemon.web.models import ApiError
from tests.fixtures.api_server import Running, serve

PHOTO = "rf_car.jpg"


class Origin:
    """A local HTTP server with a picture, a redirect, a dripping body, a held answer and an oversized body."""

    def __init__(self, picture: bytes) -> None:
        self.picture = picture
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                origin.hits[path] += 1
                if path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query)
                    self.end_headers()
                elif path == "/drip":  # a byte every 0.1 s: each read is quick, the whole never ends
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    try:
                        while not origin.release.is_set():
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass  # the client gave up: what this case is about
                elif path == "/big":
                    self._send(b"\xff" * 300_000)
                else:
                    if path == "/hold":
                        origin.release.wait(60)
                    self._send(origin.picture)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin(media_dir: Path) -> Iterator[Origin]:
    running = Origin((media_dir / PHOTO).read_bytes())
    yield running
    running.close()


def fetcher(**options: Any) -> UrlFetcher:
    return UrlFetcher(UrlPolicy.from_options(ApiOptions(**options)))


def fetch(f: UrlFetcher, url: str) -> bytes:
    return asyncio.run(f.fetch(url, 0))


def test_url_images_are_off_by_default(origin: Origin) -> None:
    with pytest.raises(ApiError, match=r"URL images are off; send base64, or set api\.url_images: true") as info:
        fetch(fetcher(), origin.url("/photo.jpg"))
    assert info.value.status == 400 and not origin.hits


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # a name is checked after it is resolved
def test_loopback_is_refused_unless_listed(origin: Origin, host: str) -> None:
    with pytest.raises(ApiError, match=f"{host} resolves to a loopback address; list the host") as info:
        fetch(fetcher(url_images=True), origin.url("/photo.jpg", host))
    assert info.value.status == 403 and not origin.hits


@pytest.mark.parametrize("allow", [["127.0.0.0/8"], ["localhost"]])
def test_a_listed_host_or_network_is_fetched(origin: Origin, media_dir: Path, allow: list[str]) -> None:
    data = fetch(fetcher(url_images=True, url_allow=allow), origin.url("/photo.jpg", "localhost"))
    assert data == (media_dir / PHOTO).read_bytes()


def test_a_redirect_is_checked_like_the_first_url(origin: Origin) -> None:
    allowed = fetcher(url_images=True, url_allow=["localhost"])
    refused = r"image 0: http://127\.0\.0\.1:\d+/secret: host 127\.0\.0\.1 is not in api\.url_allow"
    with pytest.raises(ApiError, match=refused):
        fetch(allowed, origin.url("/redirect?" + origin.url("/secret"), "localhost"))
    assert origin.hits["/redirect"] == 1 and origin.hits["/secret"] == 0
    both = fetcher(url_images=True, url_allow=["localhost", "127.0.0.1"])
    assert fetch(both, origin.url("/redirect?" + origin.url("/secret"), "localhost")) == origin.picture


def test_the_deadline_is_for_the_whole_download(origin: Origin) -> None:
    slow = fetcher(url_images=True, url_allow=["127.0.0.1"], url_timeout_s=1.0)
    with pytest.raises(ApiError, match=r"/drip: did not finish within api.url_timeout_s=1 s"):
        fetch(slow, origin.url("/drip"))


def test_the_size_is_capped(origin: Origin) -> None:
    small = fetcher(url_images=True, url_allow=["127.0.0.1"], max_image_bytes=100_000)
    with pytest.raises(ApiError, match=r"/big is larger than api\.max_image_bytes=100000") as info:
        fetch(small, origin.url("/big"))
    assert info.value.status == 413


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("192.168.0.7", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("8.8.8.8", None),
    ],
)
def test_addresses_outside_the_public_internet_are_refused(address: str, reason: str | None) -> None:
    policy = UrlPolicy(enabled=True)
    if reason is None:
        policy.check("example.org", ipaddress.ip_address(address), "image 0")
        return
    with pytest.raises(ApiError, match=f"resolves to a {reason} address"):
        policy.check("example.org", ipaddress.ip_address(address), "image 0")


def test_slow_urls_never_hold_up_other_requests(models_dir: Path, media_dir: Path, origin: Origin) -> None:
    running: Running = serve(models_dir, url_images=True, url_allow=["127.0.0.1"], url_timeout_s=60)
    try:
        answers: list[int] = []

        def held() -> None:
            answers.append(
                running.post("/infer/object_detection", {"model_id": "det/1", "image": origin.url("/hold")})[0]
            )

        slow = [threading.Thread(target=held, daemon=True) for _ in range(8)]
        for thread in slow:
            thread.start()
        while origin.hits["/hold"] < 4:  # the fetcher's threads are all busy holding
            time.sleep(0.02)
        picture = {"type": "base64", "value": base64.b64encode(origin.picture).decode()}
        status, _ = running.post("/infer/object_detection", {"model_id": "det/1", "image": picture})
        assert status == 200 and answers == [] and all(t.is_alive() for t in slow)
        origin.release.set()
        for thread in slow:
            thread.join(60)
        assert answers == [200] * 8
        expected = cv2.imread(str(media_dir / PHOTO))
        assert np.array_equal(cv2.imdecode(np.frombuffer(origin.picture, np.uint8), cv2.IMREAD_COLOR), expected)
    finally:
        running.stop()
