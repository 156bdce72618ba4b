"""What every sink shares: the common Options fields and the start/publish/close contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from daemon.frames import Message
from daemon.service.stats import SinkStats
from daemon.sinks.control import CommandHandler

MessageKind = Literal["result", "status", "event", "alert", "stats", "control"]


class SinkOptions(BaseModel):
    """Fields every sink has; each plug-in's Options subclasses this and adds its own."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique sink id, used in logs and metrics.")
    type: str = Field(..., description="Sink plug-in: mqtt, jsonl or snapshots.")
    queue_size: int = Field(
        1000, ge=1, description="Messages buffered for this sink; when full, new ones are dropped and counted."
    )
    kinds: list[MessageKind] = Field(
        default_factory=lambda: list(get_args(MessageKind)),
        description="Which message kinds this sink receives.",
    )
    required: bool = Field(False, description="Whether /healthz reports unhealthy when this sink is failing.")


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need to know about the daemon it belongs to."""

    pipeline: str
    source_ids: tuple[str, ...]
    state_dir: str  # writable directory for spools and other durable state
    control: CommandHandler | None = None  # runtime camera control (daemon/control/), for the MQTT sink


class Sink(ABC):
    """A destination for messages. publish() is called from the sink's own fan-out thread only."""

    Options: ClassVar[type[SinkOptions]] = SinkOptions
    # True: the sink adds to SinkStats.published itself, when the far end acknowledged a message (a broker's
    # PUBACK); the fan-out then counts only failures. False: a publish() that returned counts as delivered.
    counts_deliveries: ClassVar[bool] = False

    def __init__(self, options: SinkOptions, context: SinkContext) -> None:
        self.options = options
        self.context = context

    @abstractmethod
    def start(self) -> None:
        """Connect or open. An offline broker must not raise here: connect in the background instead."""

    @abstractmethod
    def publish(self, msg: Message) -> None:
        """Deliver one message. May raise; the fan-out logs, counts and carries on."""

    def attach_stats(self, stats: SinkStats) -> None:  # noqa: B027 - optional hook, most sinks need none
        """Receive this sink's counters before start() (the fan-out calls it); a spooling sink reports into them."""

    def flush(self) -> None:  # noqa: B027 - optional hook, most sinks have nothing to flush
        """Push out anything buffered (called at shutdown and periodically)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources; bounded in time."""

    @property
    def connected(self) -> bool:
        return True
