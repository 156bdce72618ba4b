"""URL images of API requests, fetched without SSRF: off by default, an allow-list, checked addresses, one deadline.

`{"type": "url"}` images make the daemon open connections on a client's behalf, so unchecked they reach what
only the daemon can reach (loopback services such as /metrics, the LAN, cloud metadata at 169.254.169.254)
and answer differently for open and closed ports. Hence: api.url_images is off unless set; every host name
is resolved here and each address checked (loopback, link-local, private, reserved and multicast addresses
are refused unless api.url_allow lists the host or a network holding it; a non-empty api.url_allow admits
nothing else); the connection goes to the address that was checked (no second lookup to rebind); every
redirect is checked the same way; api.url_timeout_s bounds the whole download (a watchdog closes the socket)
and api.max_image_bytes its size. Fetches run in their own small thread pool, never on the event loop nor in
the pool that decodes images, so slow URLs cannot hold up other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from daemon.config import ApiOptions
from daemon.web.models import ApiError

FETCH_THREADS = 4
MAX_REDIRECTS = 5
READ_BYTES = 64 * 1024
REDIRECTS = (301, 302, 303, 307, 308)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlRefusedError(ApiError):
    status = 403


class UrlTooLargeError(ApiError):
    status = 413


def safe_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe to echo in errors and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def special_range(address: Address) -> str | None:
    """Why an address is not public (loopback, link-local, private, ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for reason, hit in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if hit:
            return reason
    return None


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs may be fetched: from api.url_images, api.url_allow, api.url_timeout_s, api.max_image_bytes."""

    enabled: bool = False
    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    timeout_s: float = 10.0
    max_bytes: int = 20_000_000

    @classmethod
    def from_options(cls, options: ApiOptions) -> UrlPolicy:
        hosts, networks = set(), []
        for entry in options.url_allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(
            options.url_images, frozenset(hosts), tuple(networks), options.url_timeout_s, options.max_image_bytes
        )

    def check(self, host: str, address: Address, what: str) -> None:
        """UrlRefusedError unless `host` at `address` may be fetched; `what` names the URL in the message."""
        if host.lower().rstrip(".") in self.hosts or any(address in net for net in self.networks):
            return
        if self.hosts or self.networks:
            raise UrlRefusedError(f"{what}: host {host} is not in api.url_allow")
        reason = special_range(address)
        if reason is not None:
            raise UrlRefusedError(
                f"{what}: {host} resolves to a {reason} address; list the host or its network "
                "in api.url_allow to fetch from it"
            )


class UrlFetcher:
    """Fetches URL images under a UrlPolicy, in its own threads; fetch() is awaited by request handlers."""

    def __init__(self, policy: UrlPolicy, threads: int = FETCH_THREADS) -> None:
        self.policy = policy
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="api-fetch")

    async def fetch(self, url: object, index: int) -> bytes:
        if not self.policy.enabled:
            raise ApiError(
                f"image {index}: URL images are off; send base64, or set api.url_images: true "
                "(with api.url_allow) to let the server fetch them"
            )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(f"image {index}: url must start with http:// or https://")
        return await asyncio.wrap_future(self._pool.submit(self.fetch_now, url, index))

    def fetch_now(self, url: str, index: int) -> bytes:
        """The body of `url` after at most MAX_REDIRECTS checked redirects, within the policy's deadline."""
        deadline = time.monotonic() + self.policy.timeout_s
        for _ in range(MAX_REDIRECTS + 1):
            status, location, data = self._get(url, index, deadline)
            if status in REDIRECTS and location:
                url = urllib.parse.urljoin(url, location)
                if not url.startswith(("http://", "https://")):
                    raise UrlRefusedError(f"image {index}: redirected to a URL that is not http(s)")
                continue
            if status != 200:
                raise ApiError(f"image {index}: {safe_url(url)} answered HTTP {status}")
            return data
        raise ApiError(f"image {index}: more than {MAX_REDIRECTS} redirects from {safe_url(url)}")

    def resolve(self, host: str, port: int, what: str) -> Address:
        """The address to connect to; every address the name has must pass the policy (no round-robin tricks)."""
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ApiError(f"{what}: cannot resolve {host}: {exc}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found]
        for address in addresses:
            self.policy.check(host, address, what)
        return addresses[0]

    def _get(self, url: str, index: int, deadline: float) -> tuple[int, str | None, bytes]:
        what = f"image {index}: {safe_url(url)}"
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        if not host:
            raise ApiError(f"{what}: no host in the URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ApiError(f"{what}: invalid port") from None
        address = self.resolve(host, port, what)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApiError(f"{what}: did not finish within api.url_timeout_s={self.policy.timeout_s:g} s")
        conn = _pinned(parts.scheme, host, port, address, remaining)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        watchdog = threading.Timer(remaining, conn.close_socket)  # the whole download, not each read
        watchdog.start()
        response: http.client.HTTPResponse | None = None
        try:
            conn.request("GET", path, headers={"User-Agent": "edgewatch", "Accept": "image/*"})
            response = conn.getresponse()
            data = self._read(response, what)
            if conn.expired or (response.status == 200 and (response.length or 0) > 0):  # cut short by the watchdog
                raise OSError("the connection ended before the whole body arrived")
            return response.status, response.getheader("Location"), data
        except (OSError, http.client.HTTPException) as exc:
            if conn.expired:
                raise ApiError(f"{what}: did not finish within api.url_timeout_s={self.policy.timeout_s:g} s") from None
            raise ApiError(f"{what}: cannot fetch: {exc}") from None
        finally:
            watchdog.cancel()
            if response is not None:
                response.close()
            conn.release()

    def _read(self, response: http.client.HTTPResponse, what: str) -> bytes:
        if response.status != 200:
            return b""
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(READ_BYTES):
            size += len(chunk)
            if size > self.policy.max_bytes:
                raise UrlTooLargeError(f"{what} is larger than api.max_image_bytes={self.policy.max_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP to an address already checked, with the URL's host name in the Host header."""

    def __init__(self, host: str, port: int, address: Address, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self._lock = threading.Lock()
        self._raw: socket.socket | None = None  # kept: http.client drops self.sock once a response owns it
        self.expired = False  # the watchdog closed the socket at the deadline

    def _open(self) -> socket.socket:
        sock = socket.create_connection((str(self.address), self.port), self.timeout)
        with self._lock:
            self.sock = self._raw = sock
        return sock

    def connect(self) -> None:
        self._open()

    def close_socket(self) -> None:
        """From the watchdog thread: end whatever read or connect is blocked on the socket."""
        with self._lock:
            sock = self._raw
            self.expired = True
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: the deadline check reports it
                sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Close the socket for good (not close(): http.client calls that while a response still reads)."""
        self.close()
        with self._lock:
            raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()


class _PinnedTlsConnection(_PinnedConnection):
    """HTTPS to a checked address; the certificate is verified against the URL's host name."""

    def __init__(self, host: str, port: int, address: Address, timeout: float) -> None:
        super().__init__(host, port, address, timeout)
        self.context = ssl.create_default_context()

    def connect(self) -> None:
        sock = self._open()
        self.sock = self.context.wrap_socket(sock, server_hostname=self.host)


def _pinned(scheme: str, host: str, port: int, address: Address, timeout: float) -> _PinnedConnection:
    cls = _PinnedTlsConnection if scheme == "https" else _PinnedConnection
    return cls(host, port, address, timeout)
