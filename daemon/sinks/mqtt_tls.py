"""TLS for the MQTT sink: its options (files checked at load) and applying them to a paho client."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, model_validator


class MqttConfigError(ValueError):
    """Options that parse but cannot be used (e.g. a TLS file that is not valid PEM)."""


class TlsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(
        None, description="PEM file of the CA(s) that signed the broker's certificate; unset: the system CAs."
    )
    cert_file: str | None = Field(None, description="PEM client certificate, for brokers that require one.")
    key_file: str | None = Field(None, description="PEM private key of cert_file.")
    insecure: bool = Field(
        False,
        description="Do not check that the broker certificate's name matches host (the chain is still "
        "verified). For testing only.",
    )

    @model_validator(mode="after")
    def _files_exist(self) -> TlsOptions:
        for name, path in (("ca_file", self.ca_file), ("cert_file", self.cert_file), ("key_file", self.key_file)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"tls.{name}: expected an existing file, got {path!r} (not found)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together: set both or neither")
        return self


def set_tls(client: mqtt.Client, tls: TlsOptions, sink_id: str) -> None:
    try:
        client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
    except OSError as exc:  # ssl.SSLError is an OSError: unreadable or non-PEM files
        raise MqttConfigError(
            f"mqtt sink {sink_id}: cannot load TLS files (ca_file={tls.ca_file}, "
            f"cert_file={tls.cert_file}, key_file={tls.key_file}): {exc}"
        ) from exc
    client.tls_insecure_set(tls.insecure)
