"""A broker that refuses the MQTT sink's login: a state of its own, not one more reconnection attempt.

"Bad user name or password" and "Not authorized" do not heal by retrying: someone has to fix the user, the
password or the broker's ACL. So the sink records when refusals began (SinkStats.auth_failed_since, read by
/healthz after auth_grace_s and by the exit code), counts them (edgewatch_sink_auth_failures), and logs the
first one as an ERROR and then one line per LOG_EVERY_S with the count, not one per attempt.
"""

from __future__ import annotations

import logging
import threading
import time

from paho.mqtt.reasoncodes import ReasonCode

from daemon.service.stats import SinkStats

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
# CONNACK reason codes of a refused login: MQTT 5's 0x86 and 0x87, which paho also reports for MQTT 3.1.1's
# return codes 4 (bad user name or password) and 5 (not authorised)
REFUSED_LOGIN = frozenset({0x86, 0x87})


def is_refused_login(reason: ReasonCode) -> bool:
    return reason.is_failure and reason.value in REFUSED_LOGIN


class LoginState:
    """Refusals of one sink's login; written from paho's network thread, read through SinkStats."""

    def __init__(self, sink_id: str, broker: str, user: str | None, stats: SinkStats) -> None:
        self.sink_id = sink_id
        self.broker = broker
        self.user = user or "(no user name)"  # the user name is not a secret; the password is never logged
        self.stats = stats  # the sink's own until the fan-out attaches its counters
        self._lock = threading.Lock()
        self._last_log = 0.0
        self._unlogged = 0

    def attach(self, stats: SinkStats, grace_s: float) -> None:
        self.stats = stats
        stats.auth_grace_s = grace_s

    def refused(self, reason: ReasonCode) -> None:
        now = time.monotonic()
        with self._lock:
            stats = self.stats
            first = stats.auth_failed_since is None
            if first:
                stats.auth_failed_since = now
            stats.auth_failures += 1
            stats.last_error = f"broker refused the login of user {self.user}: {reason}"
            self._unlogged += 1
            if not first and now - self._last_log < LOG_EVERY_S:
                return
            self._last_log, count, self._unlogged = now, self._unlogged, 0
        if first:
            log.error(
                "mqtt sink %s: %s refused the login of user %s (%s); nothing is delivered until the user, "
                "password or the broker's ACL is fixed; results are kept in the spool meanwhile",
                self.sink_id,
                self.broker,
                self.user,
                reason,
            )
        else:
            log.error(
                "mqtt sink %s: %s still refuses the login of user %s (%s): %d refusal(s) since the last "
                "message, for %.0fs",
                self.sink_id,
                self.broker,
                self.user,
                reason,
                count,
                now - (stats.auth_failed_since or now),
            )

    def accepted(self) -> None:
        with self._lock:
            since, self.stats.auth_failed_since = self.stats.auth_failed_since, None
            self._unlogged = 0
        if since is not None:
            log.info(
                "mqtt sink %s: %s accepts the login again after %.0fs",
                self.sink_id,
                self.broker,
                time.monotonic() - since,
            )
