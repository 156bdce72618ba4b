"""The `ui:` section: the operator's web pages on the `http:` server (daemon/web/ui/ serves them).

It lives here, below daemon/config.py in the layers, because config.py may not import daemon/web.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class UiOptions(BaseModel):
    """Cameras, events, event and status pages, and the live MJPEG view; served next to /healthz and /metrics."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve the web UI on the http: server (http.enabled must be on).")
    require_auth: bool | None = Field(
        None,
        description="Ask for the token on every page and route; unset: only when http.host is not loopback.",
    )
    token: SecretStr | None = Field(
        None,
        description="The access token (Bearer header or the login form); give it as ${cred:NAME} or "
        "${file:PATH}, never in the YAML itself. Required when auth is on.",
    )
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="How long a login cookie stays valid.")
    live_fps: float = Field(5.0, gt=0, le=30, description="Most frames per second sent to one live viewer.")
    live_max_width: int = Field(640, ge=64, le=7680, description="Live frames wider than this are scaled down.")
    live_quality: int = Field(75, ge=10, le=100, description="JPEG quality of live frames.")
    max_viewers: int = Field(4, ge=1, le=64, description="Live streams open at once over all cameras; more get 503.")
    page_size: int = Field(25, ge=5, le=500, description="Events per page on the events page.")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; 0.0.0.0 and every other address are beyond loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def auth_required(options: UiOptions, host: str) -> bool:
    return options.require_auth if options.require_auth is not None else not is_loopback(host)


def check_ui(options: UiOptions, http_enabled: bool, host: str, token_is_secret: bool) -> list[tuple[str, str]]:
    """Problems as (YAML path, message): the UI needs http: on, a token whenever auth is on, kept out of the YAML.

    token_is_secret: the token came from ${cred:}, ${file:} or ${ENV} substitution (daemon/yamlsrc.py).
    """
    problems = []
    if options.token is not None and not token_is_secret:
        problems.append(("ui.token", "write the token as ${cred:NAME}, ${file:PATH} or ${ENV}, not in the file"))
    if not options.enabled:
        return problems
    if not http_enabled:
        problems.append(("http.enabled", "the web UI is served on the http: server: set http.enabled: true"))
    if auth_required(options, host) and (options.token is None or not options.token.get_secret_value()):
        why = "require_auth is on" if options.require_auth else f"http.host {host} is not loopback"
        problems.append(("ui.token", f"{why}, so the UI needs a token: token: ${{cred:NAME}} or ${{file:PATH}}"))
    return problems
