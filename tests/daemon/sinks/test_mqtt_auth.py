"""A refused MQTT login as a state: when it began, how often, logged once and then once a minute."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from daemon.service.stats import SinkStats
from daemon.sinks import mqtt_auth
from daemon.sinks.mqtt_auth import LoginState, is_refused_login

NOT_AUTHORIZED = ReasonCode(PacketTypes.CONNACK, identifier=0x87)
BAD_PASSWORD = ReasonCode(PacketTypes.CONNACK, identifier=0x86)
SERVER_BUSY = ReasonCode(PacketTypes.CONNACK, identifier=0x89)


def test_only_login_refusals_count() -> None:
    assert is_refused_login(NOT_AUTHORIZED) and is_refused_login(BAD_PASSWORD)
    assert not is_refused_login(SERVER_BUSY) and not is_refused_login(ReasonCode(PacketTypes.CONNACK, identifier=0))


def test_refusals_are_a_state_logged_once_then_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(mqtt_auth.time, "monotonic", lambda: now[0])
    stats = SinkStats("mqtt")
    login = LoginState("mqtt", "broker:1883", "edge", SinkStats("before-attach"))
    login.attach(stats, grace_s=5.0)
    with caplog.at_level(logging.INFO, logger="daemon.sinks.mqtt_auth"):
        for _ in range(10):  # ten refusals within a minute: one line
            login.refused(NOT_AUTHORIZED)
            now[0] += 5.0
        now[0] += 20.0
        login.refused(NOT_AUTHORIZED)  # 70 s after the first: the periodic line, with the count
        refused_since, refusals = stats.auth_failed_since, stats.auth_failures
        login.accepted()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "refused the login of user edge (Not authorized)" in errors[0]
    assert "still refuses" in errors[1] and "10 refusal(s) since the last message, for 70s" in errors[1]
    assert refused_since == 1000.0 and refusals == 11 and stats.auth_grace_s == 5.0
    assert stats.last_error == "broker refused the login of user edge: Not authorized"
    assert stats.auth_failed_since is None and "accepts the login again after 70s" in caplog.text
