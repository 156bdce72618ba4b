"""A refused control request: its HTTP status, a message and, for an invalid source, each wrong field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str  # dotted path inside the source entry, e.g. "reconnect.max_s"
    message: str


class ControlError(ValueError):
    """A control request that cannot be carried out; nothing was changed."""

    def __init__(self, status: int, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = list(errors or [])

    def describe(self) -> str:
        """The message with every field error, in one line (logs, MQTT status)."""
        fields = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        return f"{self}: {fields}" if fields else str(self)
