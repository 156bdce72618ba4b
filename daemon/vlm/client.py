"""The VLM HTTP client: pictures to an OpenAI-compatible chat endpoint from one thread, rate limited, never blocking.

`admit()` says whether the configured rate allows another picture now; `enqueue()` hands one over without
waiting (the stalest waiting picture is dropped when the small queue is full). One worker thread sends
them and passes each parsed answer to `on_outcome`. Works with llama.cpp's server, Ollama and vLLM (all
speak POST {url}/chat/completions with image_url data URLs). The API key only ever goes into the request
header; errors and logs are redacted.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from pipelines.vlm import ModelType, TaskType, VlmResult, parse_vlm_output

log = logging.getLogger(__name__)


class ClientOptions(Protocol):
    """What the client reads from its options (daemon/vlm/stage.py's VlmStageOptions has all of it)."""

    url: str
    model: str
    model_type: ModelType
    task_type: TaskType
    classes: list[str] | None
    system_prompt: str | None
    max_rate_hz: float
    queue_size: int
    timeout_s: float
    max_image_side: int
    jpeg_quality: int
    max_tokens: int
    temperature: float

    def user_prompt(self) -> str: ...


@dataclass(frozen=True)
class VlmOutcome:
    """One answered (or failed) request: what it was for, the parsed result, and the raw answer."""

    context: Any
    result: VlmResult
    latency_s: float
    answer: str | None
    error: str = ""


def safe_url(url: str) -> str:
    """The URL without user:password@ and query (for logs and errors)."""
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

    def __init__(
        self,
        options: ClientOptions,
        on_outcome: Callable[[VlmOutcome], None],
        api_key: str | None = None,
        name: str = "vlm",
    ) -> None:
        self.options = options
        self.on_outcome = on_outcome
        self.name = name
        self._api_key = api_key or None
        base = options.url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self._pending: queue.Queue[tuple[np.ndarray, Any, float]] = queue.Queue(maxsize=options.queue_size)
        self._stop = threading.Event()  # take no more pictures; send what is queued
        self._abandon = threading.Event()  # the close deadline passed: send and publish nothing more
        self._thread: threading.Thread | None = None
        self._last_admit = -float("inf")
        self.counters = collections.Counter[str]()
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"VlmClient({self.name!r}, {safe_url(self.endpoint)!r}, model={self.options.model!r})"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"vlm-{self.name}", daemon=True)
            self._thread.start()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self, timeout: float = 5.0) -> bool:
        """Take no more pictures, send those queued within `timeout`; True when the thread finished in time."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                self._abandon.set()
                log.warning("vlm %s: still busy after %.1f s; dropping what is left", self.name, timeout)
                return False
        return True

    def admit(self, now: float | None = None) -> bool:
        """Whether max_rate_hz allows another picture now (it then counts as sent); never blocks."""
        now = time.monotonic() if now is None else now
        if self._stop.is_set():
            return False
        if now - self._last_admit < 1.0 / self.options.max_rate_hz:
            self._count("skipped_rate")
            return False
        self._last_admit = now
        return True

    def enqueue(self, image: np.ndarray, context: Any = None, now: float | None = None) -> None:
        """Queue an admitted picture (BGR); when the queue is full the stalest waiting one is dropped."""
        now = time.monotonic() if now is None else now
        while True:
            try:
                self._pending.put_nowait((image, context, now))
                break
            except queue.Full:
                try:
                    self._pending.get_nowait()
                    self._count("dropped_queue_full")
                except queue.Empty:
                    pass
        self._count("accepted")

    def submit(self, image: np.ndarray, context: Any = None, now: float | None = None) -> bool:
        """admit() then enqueue(); False when the rate limit skipped the picture."""
        if not self.admit(now):
            return False
        self.enqueue(image, context, now)
        return True

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _loop(self) -> None:
        while not self._abandon.is_set():
            try:
                image, context, t0 = self._pending.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                outcome = self.request(image, context, t0)
                if self._abandon.is_set():
                    break
                self.on_outcome(outcome)
            except Exception:  # isolation boundary: a dead thread would silence the stage for good
                log.exception("vlm %s: unexpected failure handling a picture; going on", self.name)
                self._count("failed")
        self._count("dropped_at_close", self._pending.qsize())

    def request(self, image: np.ndarray, context: Any = None, t0: float | None = None) -> VlmOutcome:
        """Send one picture now and wait for its answer (the thread's step; also usable directly)."""
        t0 = time.monotonic() if t0 is None else t0
        h, w = image.shape[:2]
        try:
            url, sent_wh = encode_image(image, self.options.max_image_side, self.options.jpeg_quality)
            answer = answer_text(self._post(self._payload(url)))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            # OSError covers URLError, HTTPError and timeouts: the server is another process that may fail.
            error = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("vlm %s: request to %s failed: %s", self.name, safe_url(self.endpoint), error)
            self._count("failed")
            return VlmOutcome(context, VlmResult(None, True, "", error), time.monotonic() - t0, None, error)
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
