"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.notify import Notifier, NotifyError, Watchdog, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening datagram socket whose path is exported as NOTIFY_SOCKET, as systemd does."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def assert_no_datagram(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    sock.settimeout(2.0)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.ready(), {"READY": "1"}),
        (lambda n: n.ready("2 sources streaming"), {"READY": "1", "STATUS": "2 sources streaming"}),
        (lambda n: n.status("cam1 12.0 fps\nmqtt spooling"), {"STATUS": "cam1 12.0 fps mqtt spooling"}),
        (lambda n: n.watchdog(), {"WATCHDOG": "1"}),
        (lambda n: n.stopping("draining"), {"STOPPING": "1", "STATUS": "draining"}),
        (lambda n: n.extend_timeout(2.5), {"EXTEND_TIMEOUT_USEC": "2500000"}),
    ],
)
def test_messages_arrive_as_key_value_datagrams(notify_socket: socket.socket, call, expected) -> None:
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert call(notifier) is True
    assert fields(notify_socket) == expected
    notifier.close()


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    notifier = Notifier.from_env()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading("reloading pipeline.yaml")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = fields(notify_socket)
    assert got["RELOADING"] == "1"
    assert got["STATUS"] == "reloading pipeline.yaml"
    assert before <= int(got["MONOTONIC_USEC"]) <= after
    notifier.close()


def test_abstract_namespace_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgewatch-test-{os.getpid()}-{threading.get_ident()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        notifier = Notifier(f"@{name}")
        assert notifier.ready()
        assert fields(sock) == {"READY": "1"}
        notifier.close()
    finally:
        sock.close()


def test_unset_environment_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_from_env_can_hide_the_socket_from_children(notify_socket: socket.socket) -> None:
    notifier = Notifier.from_env(unset=True)
    assert "NOTIFY_SOCKET" not in os.environ
    assert notifier.ready()
    assert fields(notify_socket) == {"READY": "1"}
    notifier.close()


def test_missing_listener_returns_false_instead_of_raising(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.ready() is False
    notifier.close()


@pytest.mark.parametrize("address", ["relative/path", "vsock:2:1234"])
def test_unusable_address_is_rejected(address: str) -> None:
    with pytest.raises(NotifyError, match="NOTIFY_SOCKET"):
        Notifier(address)


def test_a_line_with_a_newline_is_rejected(notify_socket: socket.socket) -> None:
    notifier = Notifier.from_env()
    with pytest.raises(NotifyError, match="KEY=VALUE"):
        notifier.send("STATUS=a\nREADY=1")
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_watchdog_interval_rejects_garbage() -> None:
    with pytest.raises(NotifyError, match="WATCHDOG_USEC='30s'"):
        watchdog_interval({"WATCHDOG_USEC": "30s"})


def test_watchdog_pings_only_while_progressing(notify_socket: socket.socket) -> None:
    progressing = [True]
    notifier = Notifier.from_env()
    watchdog = Watchdog(notifier, lambda: progressing[0], interval_s=15.0)
    assert watchdog.tick() is True
    assert fields(notify_socket) == {"WATCHDOG": "1"}
    progressing[0] = False  # a wedged worker: no more pings, systemd will restart the unit
    assert watchdog.tick() is False
    assert watchdog.tick() is False
    assert_no_datagram(notify_socket)
    progressing[0] = True
    assert watchdog.tick() is True
    assert fields(notify_socket) == {"WATCHDOG": "1"}
    assert (watchdog.pings, watchdog.missed) == (2, 2)
    notifier.close()


def test_watchdog_thread_pings_then_goes_silent(notify_socket: socket.socket) -> None:
    progressing = threading.Event()
    progressing.set()
    notifier = Notifier.from_env()
    watchdog = Watchdog(notifier, progressing.is_set, interval_s=0.02)
    watchdog.start()
    try:
        assert fields(notify_socket) == {"WATCHDOG": "1"}
        assert fields(notify_socket) == {"WATCHDOG": "1"}
        progressing.clear()
        deadline = time.monotonic() + 2.0
        while watchdog.missed == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watchdog.missed > 0
        notify_socket.settimeout(0.05)
        while True:  # drain pings sent before the switch, then expect silence
            try:
                notify_socket.recv(4096)
            except TimeoutError:
                break
        assert_no_datagram(notify_socket)
    finally:
        watchdog.stop()
        notifier.close()


def test_watchdog_without_systemd_does_not_start_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    watchdog = Watchdog(Notifier.from_env(), lambda: True, interval_s=0.01)
    watchdog.start()
    assert not watchdog.active
    assert watchdog._thread is None
    watchdog.stop()
