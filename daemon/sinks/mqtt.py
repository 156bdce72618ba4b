"""MQTT sink (paho-mqtt 2.x): topics, retained state, Last Will, background (re)connection, bounded close.

Topics, with prefix = options.topic_prefix (default "edgewatch"):
  {prefix}/availability         "online" / "offline", retained; the Last Will publishes "offline"
  {prefix}/{source_id}/status   kind "status", retained
  {prefix}/{source_id}/results  kind "result", retained only when retain_results is true
  {prefix}/{source_id}/events   kind "event"
  {prefix}/{source_id}/alerts   kind "alert", and the same on {prefix}/alerts
  homeassistant/...             with homeassistant.enabled: discovery and entity states (daemon/sinks/homeassistant.py)
  {prefix}/stats                kind "stats", retained
Payloads are compact UTF-8 JSON of Message.payload. QoS>0 results and events go to an on-disk spool first
(daemon/sinks/mqtt_delivery.py) and leave it only when the broker acknowledged them, so a broker outage or a
killed daemon loses none; with spool.enabled false they wait in memory instead (up to max_queued_messages, then
MqttQueueFull). QoS 0 ones fail while the broker is away (MqttNotConnected). Retained topics keep only their
latest value and are published again on every (re)connection, after "online".
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from daemon.frames import Message
from daemon.service.stats import SinkStats
from daemon.sinks.base import Sink, SinkContext, SinkOptions
from daemon.sinks.control import MqttControl
from daemon.sinks.encode import to_json
from daemon.sinks.homeassistant import HomeAssistant
from daemon.sinks.mqtt_auth import LoginState, is_refused_login
from daemon.sinks.mqtt_delivery import AckTracker, Handed, SpoolSender
from daemon.sinks.mqtt_options import MqttOptions as MqttOptions  # re-exported: its users import it from here
from daemon.sinks.mqtt_tls import set_tls
from daemon.sinks.spool import Spool

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")


def _not_after_our_disconnect(record: logging.LogRecord) -> bool:
    # paho 2.2's network thread logs this at ERROR once more after every deliberate disconnect() (in state
    # CONNECTING when the broker was unreachable at the time); it is noise.
    message = record.getMessage()
    return not (message.startswith("Client is not connected")
                and message.endswith(("MQTT_CS_DISCONNECTED", "MQTT_CS_CONNECTING")))


_paho_log.addFilter(_not_after_our_disconnect)

_TOPIC_SUFFIX: dict[str, str] = {"status": "status", "result": "results", "event": "events", "alert": "alerts"}
_RETAINED_KINDS = frozenset({"status", "stats"})
_SPOOLED_KINDS = frozenset({"result", "event", "alert"})  # status and stats are state: only their latest value matters
_AVAILABILITY_QOS = 1


class MqttPublishError(RuntimeError):
    """A message the broker will not get (counted as failed by the fan-out)."""


class MqttNotConnected(MqttPublishError):
    """A QoS 0 message while the broker is unreachable: MQTT keeps no QoS 0 messages, so it is lost."""


class MqttQueueFull(MqttPublishError):
    """More QoS>0 messages awaiting the broker than max_queued_messages."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded MQTT message, ready for paho (or for a spool to store and replay)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    source_id: str | None = None
    durable: bool = False  # goes through the on-disk spool
    counted: bool = False  # a Message's own topic: counted as published once acknowledged (encode() sets it)


class MqttSink(Sink):
    """Publishes messages to one broker; connects and reconnects in paho's background thread."""

    Options: ClassVar[type[SinkOptions]] = MqttOptions
    counts_deliveries: ClassVar[bool] = True  # published = acknowledged by the broker (QoS 0: written to it)

    def __init__(self, options: SinkOptions, context: SinkContext) -> None:
        if not isinstance(options, MqttOptions):
            raise TypeError(f"MqttSink needs MqttOptions, got {type(options).__name__}")
        super().__init__(options, context)
        self.opts = options
        self.port = options.port or (8883 if options.tls else 1883)
        self.broker = f"{options.host}:{self.port}"  # what logs name; never carries credentials
        self.client_id = options.client_id or f"edgewatch-{socket.gethostname()}-{context.pipeline}"
        self.availability_topic = f"{options.topic_prefix}/availability"
        self._qos_by_kind: dict[str, int] = {str(k): int(v) for k, v in options.qos_by_kind.items()}
        self._client: mqtt.Client | None = None
        self._connected = False
        self._closing = False
        self._failed_attempts = 0  # connection failures since the last success; only the first is a warning
        # _lock orders publishes against the re-publish on connect; it is always taken before paho's locks.
        self._lock = threading.Lock()
        self._retained: dict[str, tuple[Outgoing, int | None]] = {}  # topic -> latest, mid if handed to paho
        self._acks = AckTracker()  # mids handed to paho and not yet acknowledged
        self.spool: Spool | None = None  # with spool.enabled, from start() on
        self.sender: SpoolSender | None = None
        self._stats = SinkStats(options.id)  # the fan-out's counters from attach_stats() on
        self._count_lock = threading.Lock()  # acks are counted on paho's thread and, when early, on senders
        self.login = LoginState(options.id, self.broker, options.username, self._stats)
        commands = context.control if options.control else None
        self.homeassistant = HomeAssistant(options.homeassistant, options.topic_prefix, context.source_ids,
                                           control=commands is not None)
        # {prefix}/+/detect|enabled/set in, retained .../state out (daemon/sinks/control.py)
        self.control = MqttControl(options.topic_prefix, commands,
                                   lambda topic, payload, retain: self.send(Outgoing(topic, payload, 1, retain)),
                                   lambda camera: [t for t, _ in self.homeassistant.discovery_removals(camera)])

    # -- encoding: Message -> Outgoing ----------------------------------------------------------------
    def topic_for(self, msg: Message) -> str:
        prefix = self.opts.topic_prefix
        if msg.kind == "stats":
            return f"{prefix}/stats"
        if msg.kind not in _TOPIC_SUFFIX:
            raise ValueError(f"message kind {msg.kind!r}: expected one of result, status, event, alert, stats")
        if not msg.source_id:
            raise ValueError(f"{msg.kind} message without a source_id: its topic needs one")
        return f"{prefix}/{msg.source_id}/{_TOPIC_SUFFIX[msg.kind]}"

    def encode(self, msg: Message) -> Outgoing:
        qos = self._qos_by_kind.get(msg.kind, self.opts.qos)
        retain = msg.kind in _RETAINED_KINDS or (msg.kind == "result" and self.opts.retain_results)
        durable = self.opts.spool.enabled and qos > 0 and msg.kind in _SPOOLED_KINDS
        payload = to_json(msg.payload).encode("utf-8")
        return Outgoing(self.topic_for(msg), payload, qos, retain, msg.source_id, durable, counted=True)

    # -- Sink contract --------------------------------------------------------------------------------
    def attach_stats(self, stats: SinkStats) -> None:
        self._stats = stats
        self.login.attach(stats, self.opts.auth_grace_s)

    def _count_delivered(self) -> None:
        with self._count_lock:
            self._stats.published += 1

    @property
    def spool_path(self) -> Path:
        configured = self.opts.spool.path
        return Path(configured) if configured else Path(self.context.state_dir) / f"{self.options.id}.spool.db"

    def start(self) -> None:
        spool_opts = self.opts.spool
        if spool_opts.enabled:  # first: a spool in use by another daemon must fail before anything connects
            self.spool = Spool(self.spool_path, spool_opts.max_bytes, spool_opts.max_age_s, spool_opts.synchronous,
                                self._stats)
        try:
            client = self._make_client()
        except ValueError:  # unusable TLS files: release the spool, or the next attempt finds it locked
            if self.spool is not None:
                self.spool.close()
                self.spool = None
            raise
        if self.spool is not None:
            self.sender = SpoolSender(self.spool, client, self._acks, self.opts.max_inflight, self.options.id,
                                      on_acked=self._count_delivered)
            self.sender.start()
        self._client = client
        log.info("mqtt sink %s: connecting to %s as %s", self.options.id, self.broker, self.client_id)
        client.connect_async(self.opts.host, self.port, keepalive=self.opts.keepalive_s)
        client.loop_start()
        self.control.publish_states()
        for topic, payload in self.homeassistant.start():  # retained: kept and re-sent on every connection
            self.send(Outgoing(topic, payload, 1, True))

    def publish(self, msg: Message) -> None:
        for topic, payload in self.homeassistant.on_message(msg):  # HA entity states, retained
            self.send(Outgoing(topic, payload, 1, True))
        if msg.kind == "control":
            self.control.publish(msg)
            return
        out = self.encode(msg)
        self.send(out)
        if msg.kind == "alert":  # every camera's alerts on one topic too
            self.send(replace(out, topic=f"{self.opts.topic_prefix}/alerts", counted=False))

    def send(self, out: Outgoing) -> None:
        """Spool or hand one encoded message to paho; raises MqttPublishError when the broker will not get it.

        Durable messages are only appended to the spool (SpoolError if the disk refuses); the sender thread
        publishes them. Retained topics never fail for being offline: their latest value is kept and
        re-published on (re)connection, so retained state is right once the broker is back.
        """
        if self._client is None:
            raise MqttNotConnected(f"mqtt sink {self.options.id}: not started")
        if out.durable and self.spool is not None and self.sender is not None:
            self.spool.append(out.topic, out.payload, out.qos, out.retain, out.source_id)
            self.sender.appended()
            return
        with self._lock:
            if out.retain:
                self._send_retained_locked(out)
                return
            if out.qos > 0 and self._pending() >= self.opts.max_queued_messages:
                raise MqttQueueFull(
                    f"mqtt sink {self.options.id}: {self.opts.max_queued_messages} messages already await "
                    f"broker {self.broker} (max_queued_messages); dropped one for {out.topic}"
                )
            rc = self._hand_to_paho_locked(out)
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN and out.qos == 0:
            raise MqttNotConnected(
                f"mqtt sink {self.options.id}: broker {self.broker} not connected; QoS 0 message for "
                f"{out.topic} dropped"
            )
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttPublishError(
                f"mqtt sink {self.options.id}: publish to {out.topic} failed: {mqtt.error_string(rc)}"
            )

    def close(self) -> None:
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + self.opts.close_timeout_s
        with self._lock:  # against _on_connect: either it ran first and we say offline, or it sees _closing
            self._closing = True
        if self.sender is not None:
            if self._connected:
                self.sender.wait_drained(deadline)  # results first, then "offline"
            self.sender.stop()
        with self._lock:
            if self._connected:
                self._hand_to_paho_locked(self._availability(b"offline"))
        self._wait_for_acks(deadline)
        left, spooled = self._pending(), self.spool.pending_count() if self.spool is not None else 0
        if left or spooled:
            log.warning("mqtt sink %s: closing with %d message(s) unacknowledged by %s, %d kept in the spool "
                        "for the next start", self.options.id, left, self.broker, spooled)
        client.disconnect()
        client.loop_stop()  # after this no callback can touch the spool any more
        if self.spool is not None:
            self.spool.close()
        self._connected = False
        self._client = self.sender = None  # break the sink -> client -> callbacks -> sink cycle now
        log.info("mqtt sink %s: disconnected from %s", self.options.id, self.broker)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Messages the broker has not acknowledged yet: spooled ones plus those handed to paho directly."""
        return self._pending() + (self.spool.pending_count() if self.spool is not None else 0)

    # -- paho plumbing --------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        opts = self.opts
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.enable_logger(_paho_log)
        if opts.username is not None:
            password = opts.password.get_secret_value() if opts.password is not None else None
            client.username_pw_set(opts.username, password)
        if opts.tls is not None:
            set_tls(client, opts.tls, self.options.id)
        client.will_set(self.availability_topic, b"offline", qos=_AVAILABILITY_QOS, retain=True)
        client.reconnect_delay_set(opts.reconnect_min_s, opts.reconnect_max_s)
        client.max_inflight_messages_set(opts.max_inflight)
        client.max_queued_messages_set(0)  # the bound is ours (send()), so retained state is never refused
        client.connect_timeout = opts.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _hand_to_paho_locked(self, out: Outgoing) -> MQTTErrorCode:
        assert self._client is not None
        info = self._client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        rc = MQTTErrorCode(info.rc)
        # QoS>0 messages refused for lack of a connection stay in paho's queue and go out on reconnect.
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (rc == MQTTErrorCode.MQTT_ERR_NO_CONN and out.qos > 0):
            if not self._acks.register(info.mid, Handed(out.qos, None, counted=out.counted)) and out.counted:
                self._count_delivered()  # its acknowledgement overtook publish()'s return
            if out.retain:
                self._retained[out.topic] = (out, info.mid)
        elif out.retain:
            self._retained[out.topic] = (out, None)
        return rc

    def _send_retained_locked(self, out: Outgoing) -> None:
        previous = self._retained.get(out.topic)
        older_pending = previous is not None and previous[1] is not None and self._is_pending(previous[1])
        if self._connected or older_pending:
            self._hand_to_paho_locked(out)  # behind any older value paho still holds, so order is kept
        else:
            self._retained[out.topic] = (out, None)  # offline: only the latest matters; sent on connect

    def _availability(self, state: bytes) -> Outgoing:
        return Outgoing(self.availability_topic, state, _AVAILABILITY_QOS, True)

    def _pending(self) -> int:
        return self._acks.count(spooled=False)

    def _is_pending(self, mid: int) -> bool:
        return self._acks.is_pending(mid)

    def _wait_for_acks(self, deadline: float) -> None:
        with self._acks.cond:
            while self._pending() and self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._acks.cond.wait(min(remaining, 0.1))

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, _reason: ReasonCode,
                    _props: Properties) -> None:
        # Called with paho's message lock held: touch only _acks and the spool here, never _lock.
        handed = self._acks.acked(mid)
        if handed is not None and handed.spool_id is not None and self.sender is not None:
            self.sender.on_delivered(handed.spool_id)  # counts it too
        elif handed is not None and handed.counted:
            self._count_delivered()

    def _on_connect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.ConnectFlags, reason: ReasonCode,
                    _props: Properties | None) -> None:
        if is_refused_login(reason):
            self.login.refused(reason)
            return
        if reason.is_failure:
            self._note_failure(f"broker refused the connection: {reason}")
            return
        self.login.accepted()
        with self._lock:
            if self._closing:
                return
            self._connected = True
            self._hand_to_paho_locked(self._availability(b"online"))
            for out, mid in list(self._retained.values()):
                if mid is None or not self._is_pending(mid):  # pending ones paho re-sends itself, in order
                    self._hand_to_paho_locked(out)
        self.control.subscribe(_client)
        if self.sender is not None:
            self.sender.on_connect()
        self._failed_attempts = 0
        log.info("mqtt sink %s: connected to %s", self.options.id, self.broker)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        self._note_failure("cannot connect")

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, _props: Properties | None) -> None:
        was_connected, self._connected = self._connected, False
        self._acks.forget_qos0()
        if self.sender is not None:
            self.sender.on_disconnect()
        if was_connected and not self._closing:
            log.warning("mqtt sink %s: lost connection to %s (%s); reconnecting in the background",
                        self.options.id, self.broker, reason)

    def _note_failure(self, what: str) -> None:
        self._failed_attempts += 1
        level = logging.WARNING if self._failed_attempts == 1 else logging.DEBUG
        log.log(level, "mqtt sink %s: %s: %s (attempt %d); retrying in the background", self.options.id,
                self.broker, what, self._failed_attempts)
