"""The `http:` (health, metrics, UI) and `api:` (Roboflow-compatible inference API) sections.

They live here, below daemon/config.py in the layers, because config.py may not import daemon/web, which
serves them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve /healthz and /metrics over HTTP.")
    host: str = Field("127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(9108, ge=0, le=65535, description="TCP port (0 picks a free one).")


class ApiOptions(BaseModel):
    """The Roboflow-compatible inference HTTP API (inference_sdk's InferenceHTTPClient talks to it)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve the inference HTTP API.")
    host: str = Field("127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(9001, ge=0, le=65535, description="TCP port (9001 as Roboflow's local server; 0: any free).")
    api_key: SecretStr | None = Field(
        None, description="If set, requests must carry this api_key (use ${cred:...} or ${file:...})."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="model_id (e.g. vehicles/1) -> name under models:. Empty: every model as NAME/1.",
    )
    model_dirs: list[str] = Field(
        default_factory=list, description="Folders from which /model/add may load a model file given by path."
    )
    workflows_dir: str | None = Field(
        None, description="Folder of Roboflow Workflow specifications run by workspace and id: "
        "POST /{workspace}/workflows/{id} reads {workspace}/{id}.json, else {id}.json, in it.",
    )
    max_image_bytes: int = Field(20_000_000, ge=1, description="Largest accepted encoded image.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest accepted decoded image (w*h).")
    max_batch: int = Field(32, ge=1, description="Most images in one request.")
    max_queued: int = Field(
        16, ge=1, description="Most inference requests in flight (decoding, waiting for or on the worker); more "
        "get 503 with Retry-After.",
    )
    url_images: bool = Field(False, description="Fetch {\"type\": \"url\"} images (off: such requests get a 400).")
    url_allow: list[str] = Field(
        default_factory=list, description="Hosts and networks (CIDR) URL images may come from; empty: any public "
        "address. Loopback, link-local and private addresses only when listed.",
    )
    url_timeout_s: float = Field(10.0, gt=0, le=300, description="Whole download of one URL image, redirects included.")
