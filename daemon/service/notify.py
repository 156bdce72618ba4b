"""systemd notify protocol: READY/STATUS/RELOADING/STOPPING datagrams and a progress-gated watchdog.

The protocol is one AF_UNIX datagram of newline-separated KEY=VALUE lines sent to $NOTIFY_SOCKET, so
it is spoken here with the stdlib instead of a dependency: the maintained binding (systemd-python) needs
libsystemd headers and a C build on every box, and the pure-Python ones on PyPI are unmaintained.
Outside systemd (NOTIFY_SOCKET unset) every call is a cheap no-op, so the daemon calls it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class NotifyError(ValueError):
    """$NOTIFY_SOCKET or $WATCHDOG_USEC holds something this module cannot use."""


def _socket_address(address: str) -> str:
    """'/path' stays a path; '@name' is the abstract namespace, which Python spells with a leading NUL."""
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    raise NotifyError(
        f"NOTIFY_SOCKET={address!r}: expected an absolute socket path or an @abstract name "
        "(vsock addresses are not supported)"
    )


class Notifier:
    """Sends notify messages to systemd; does nothing when the service was not started by systemd.

    Thread-safe: each message is a single sendto() of one datagram.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._target = ""
        if self.address is not None:
            self._target = _socket_address(self.address)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, unset: bool = False) -> Notifier:
        """Build from $NOTIFY_SOCKET; unset=True removes it so child processes (ffmpeg) cannot inherit it."""
        env = os.environ if environ is None else environ
        notifier = cls(env.get("NOTIFY_SOCKET"))
        if unset and environ is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of KEY=VALUE lines; False when disabled or systemd is not listening."""
        if self._sock is None:
            return False
        for line in lines:
            if "\n" in line or "=" not in line:
                raise NotifyError(f"notify line {line!r}: expected one KEY=VALUE line without newlines")
        try:
            self._sock.sendto("\n".join(lines).encode("utf-8"), self._target)
        except OSError as exc:
            # systemd may be restarting (daemon-reexec); a lost STATUS must never stop the daemon.
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Models loaded and sinks connected-or-spooling: systemd marks the unit started."""
        return self.send("READY=1", *self._status_lines(status))

    def status(self, text: str) -> bool:
        """One-line summary shown by `systemctl status`."""
        return self.send(*self._status_lines(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """SIGHUP received; systemd (>= 253) requires MONOTONIC_USEC with it. Send ready() when done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status_lines(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *self._status_lines(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time in the current start/stop phase (a long TensorRT engine build)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _status_lines(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        return (f"STATUS={' '.join(text.split())}",)  # one line: newlines would end the field


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled advises).

    None when no watchdog is configured for this process (unset, 0, or WATCHDOG_PID names another one).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError as exc:
        raise NotifyError(f"WATCHDOG_USEC={raw!r}: expected a positive integer of microseconds") from exc
    if usec <= 0:
        return None
    return usec / 2_000_000


class Watchdog:
    """Pings systemd every `interval_s` while `is_progressing()` is True, and stays silent otherwise.

    Silence is the point: when a stage wedges, the pings stop and systemd kills and restarts the unit
    after WatchdogSec. The check runs on this thread, so it must be quick and must not block.
    """

    def __init__(self, notifier: Notifier, is_progressing: Callable[[], bool], interval_s: float | None) -> None:
        self.notifier = notifier
        self.is_progressing = is_progressing
        self.interval_s = interval_s
        self.pings = 0
        self.missed = 0  # ticks where the daemon was not progressing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_progressing = True

    @property
    def active(self) -> bool:
        return self.notifier.enabled and self.interval_s is not None

    def tick(self) -> bool:
        """One check-and-maybe-ping; returns whether a ping was sent."""
        progressing = bool(self.is_progressing())
        if progressing != self._was_progressing:
            if progressing:
                log.info("all stages progressing again; watchdog pings resumed")
            else:
                log.error("a stage stopped making progress; withholding watchdog pings so systemd restarts us")
            self._was_progressing = progressing
        if not progressing:
            self.missed += 1
            return False
        if self.notifier.watchdog():
            self.pings += 1
            return True
        return False

    def start(self) -> None:
        """Start the ping thread; without a configured watchdog (or outside systemd) this does nothing."""
        if not self.active or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.interval_s or 1.0  # start() only runs this thread when interval_s is set
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(interval)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
