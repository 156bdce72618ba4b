"""The MQTT sink's options (its `sinks:` entry with `type: mqtt`), kept beside daemon/sinks/mqtt.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from daemon.sinks.base import MessageKind, SinkOptions
from daemon.sinks.homeassistant import HomeAssistantOptions
from daemon.sinks.mqtt_delivery import SpoolOptions
from daemon.sinks.mqtt_tls import TlsOptions

QoS = Literal[0, 1, 2]


class MqttOptions(SinkOptions):
    host: str = Field("localhost", description="Broker host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; unset: 1883, or 8883 with tls.")
    client_id: str | None = Field(None, description="MQTT client id; unset: edgewatch-<hostname>-<pipeline>.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(
        None, description="Broker password; give it as ${ENV} or a credential file, never in clear in YAML."
    )
    tls: TlsOptions | None = Field(None, description="Connect with TLS; unset: plain TCP.")
    qos: QoS = Field(1, description="Default QoS for published messages (0, 1 or 2).")
    qos_by_kind: dict[MessageKind, QoS] = Field(
        default_factory=dict, description="QoS per message kind, overriding qos (e.g. {result: 0, event: 1})."
    )
    retain_results: bool = Field(False, description="Publish results retained (status and stats always are).")
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keepalive interval in seconds.")
    topic_prefix: str = Field(
        "edgewatch",
        pattern=r"^[^#+/]+(/[^#+/]+)*$",
        description="First topic level(s); no wildcards, no leading or trailing slash.",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Give up one connection attempt after this long.")
    reconnect_min_s: int = Field(1, ge=1, description="First wait before reconnecting, in seconds (doubles).")
    reconnect_max_s: int = Field(60, ge=1, description="Longest wait between reconnection attempts, in seconds.")
    max_inflight: int = Field(20, ge=1, description="QoS>0 messages sent but not yet acknowledged, at most.")
    max_queued_messages: int = Field(
        1000,
        ge=1,
        description="With spool.enabled false: QoS>0 results and events held in memory awaiting the broker "
        "(e.g. while it is offline); beyond this, publishing fails and is counted.",
    )
    spool: SpoolOptions = Field(
        default_factory=SpoolOptions,
        description="Durable store-and-forward of QoS>0 results and events (SQLite, WAL) across broker "
        "outages and restarts.",
    )
    close_timeout_s: float = Field(
        2.0, ge=0, description="At close, wait this long for unacknowledged messages before disconnecting."
    )
    homeassistant: HomeAssistantOptions = Field(
        default_factory=HomeAssistantOptions, description="Home Assistant MQTT discovery (README \"Integrations\")."
    )
    control: bool = Field(
        True, description="Take runtime commands on <prefix>/+/detect/set and <prefix>/+/enabled/set (README "
        "\"Runtime control topics\"); false: this broker can switch nothing.",
    )
    auth_grace_s: float = Field(
        30.0, ge=0, le=86400,
        description="A broker that keeps refusing the login (bad user name or password, not authorized) for "
        "this long makes /healthz unhealthy, whether or not the sink is `required`.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MqttOptions:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not: MQTT sends a password only with a user name")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed reconnect_max_s ({self.reconnect_max_s})"
            )
        return self
