"""The vlm stage: frames or crops to an OpenAI-compatible chat endpoint, off the video path, rate limited.

`submit()` never blocks: a picture is taken only when the configured rate allows, queued (the stalest
waiting picture is dropped when the small queue is full) and sent by one worker thread; `results()`
returns the parsed answers that have arrived. Works with llama.cpp's server, Ollama and vLLM (all speak
POST {url}/chat/completions with image_url data URLs). The API key is only ever put in the request header.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, get_args

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.vlm import ModelType, TaskType, VlmResult, check_task, default_prompt, parse_vlm_output

log = logging.getLogger(__name__)


class VlmOptions(BaseModel):
    """Where the VLM server is, what to ask it, and how often."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    url: str = Field(..., description="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1.")
    model: str = Field(..., min_length=1, description="Model name the server knows (the request's `model`).")
    model_type: ModelType = Field("openai", description="Answer format to parse: " + ", ".join(get_args(ModelType)))
    task_type: TaskType = Field("object-detection", description="Task the prompt asks for (Roboflow's names).")
    classes: list[str] | None = Field(None, description="Class names; ids are their indices, others get -1.")
    prompt: str | None = Field(
        None, description="User prompt; {classes} is replaced by the class list. None: a JSON detection prompt."
    )
    system_prompt: str | None = Field(None, description="Optional system message.")
    max_rate_hz: float = Field(0.5, gt=0, description="Most pictures sent per second; others are skipped.")
    queue_size: int = Field(2, ge=1, description="Pictures waiting to be sent; the stalest is dropped when full.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout (connect plus answer).")
    max_image_side: int = Field(1024, ge=32, description="Longer side of the uploaded picture, in pixels.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of the uploaded picture.")
    max_tokens: int = Field(1024, ge=1, description="Answer length limit sent to the server.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature sent to the server.")

    @model_validator(mode="after")
    def _task_known(self) -> VlmOptions:
        check_task(self.model_type, self.task_type, self.classes)
        if self.prompt is None and self.model_type == "florence-2":
            raise ValueError("florence-2 needs a prompt (its task token, e.g. <OD>)")
        return self

    def user_prompt(self) -> str:
        classes = ", ".join(self.classes or [])
        return default_prompt(self.classes or []) if self.prompt is None else self.prompt.replace("{classes}", classes)


@dataclass(frozen=True)
class VlmOutcome:
    """One answered (or failed) request: what it was for, the parsed result, and the raw answer."""

    context: Any
    result: VlmResult
    latency_s: float
    answer: str | None
    error: str = ""


def safe_url(url: str) -> str:
    """The URL without user:password@ (for logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def encode_image(image: np.ndarray, max_side: int, quality: int) -> tuple[str, tuple[int, int]]:
    """A JPEG data URL of the picture scaled down to max_side, and the uploaded (width, height)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot JPEG-encode a picture of shape {image.shape}")
    sent_h, sent_w = image.shape[:2]
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii"), (sent_w, sent_h)


def answer_text(body: Any) -> str:
    """choices[0].message.content of a chat completion (a string, or a list of text parts)."""
    content = body["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError(f"message content is {type(content).__name__}, not text")
    return content


class VlmClient:
    """Sends pictures to the VLM from one worker thread; parses answers into detections."""

    def __init__(self, options: VlmOptions, api_key: str | None = None, name: str = "vlm") -> None:
        self.options = options
        self.name = name
        self._api_key = api_key or None
        base = options.url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self._pending: queue.Queue[tuple[np.ndarray, Any, float]] = queue.Queue(maxsize=options.queue_size)
        self._done: collections.deque[VlmOutcome] = collections.deque(maxlen=256)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_accept = -float("inf")
        self.counters = collections.Counter[str]()
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"VlmClient({self.name!r}, {safe_url(self.endpoint)!r}, model={self.options.model!r})"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"vlm-{self.name}", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking pictures and wait up to `timeout` for the request in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: a request is still in flight after %.1f s; leaving it", self.name, timeout)
            self._thread = None

    def submit(self, image: np.ndarray, context: Any = None, now: float | None = None) -> bool:
        """Offer a picture (BGR); False when the rate limit skips it. Never blocks."""
        now = time.monotonic() if now is None else now
        if now - self._last_accept < 1.0 / self.options.max_rate_hz:
            self._count("skipped_rate")
            return False
        self._last_accept = now
        while True:
            try:
                self._pending.put_nowait((image, context, now))
                break
            except queue.Full:
                try:
                    self._pending.get_nowait()
                    self._count("dropped_stale")
                except queue.Empty:
                    pass
        self._count("accepted")
        return True

    def results(self) -> list[VlmOutcome]:
        """The outcomes that arrived since the last call, oldest first."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                image, context, t0 = self._pending.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                outcome = self.request(image, context, t0)
            except Exception:  # isolation boundary: a dead worker would silence the stage for good
                log.exception("%s: unexpected failure handling a picture; going on", self.name)
                self._count("failed")
                continue
            if len(self._done) == self._done.maxlen:
                self._count("dropped_results")
            self._done.append(outcome)

    def request(self, image: np.ndarray, context: Any = None, t0: float | None = None) -> VlmOutcome:
        """Send one picture now and wait for its answer (the worker's step; also usable directly)."""
        t0 = time.monotonic() if t0 is None else t0
        h, w = image.shape[:2]
        try:
            url, sent_wh = encode_image(image, self.options.max_image_side, self.options.jpeg_quality)
            answer = answer_text(self._post(self._payload(url)))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            # OSError covers URLError, HTTPError and timeouts: the server is another process that may fail.
            error = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("%s: request to %s failed: %s", self.name, safe_url(self.endpoint), error)
            self._count("failed")
            failed = VlmResult(None, True, "", error)
            return VlmOutcome(context, failed, time.monotonic() - t0, None, error)
        result = parse_vlm_output(
            answer,
            model_type=self.options.model_type,
            task_type=self.options.task_type,
            classes=self.options.classes,
            resolution_wh=(w, h),
            input_wh=sent_wh,
        )
        self._count("parse_errors" if result.error_status else "answered")
        return VlmOutcome(context, result, time.monotonic() - t0, answer, result.error)

    def _payload(self, image_url: str) -> dict[str, Any]:
        content = [
            {"type": "text", "text": self.options.user_prompt()},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if self.options.system_prompt:
            messages.insert(0, {"role": "system", "content": self.options.system_prompt})
        return {
            "model": self.options.model,
            "messages": messages,
            "max_tokens": self.options.max_tokens,
            "temperature": self.options.temperature,
            "stream": False,
        }

    def _post(self, payload: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(payload).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise OSError(f"HTTP {exc.code} {exc.reason}: {detail}") from None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text
