"""Alerts on known plates: raised at a track's first read that matches an alerting known-list entry, not when its
vote settles; retracted when the settled vote says otherwise (raised again if it comes back); ended with the track.

One alert per (track, stage, entry); each change of its state is one payload. Pure: payloads with epoch times, the
daemon publishes them (daemon/payload.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pipelines.tracking.consensus import ConsensusOptions, TextVotes, match_known
from pipelines.tracking.state import TrackState
from pipelines.tracking.textvote import TextRead

AlertState = Literal["raised", "retracted", "ended"]
ConsensusFor = Callable[[str], ConsensusOptions]
"""A top-level stage's consensus options by stage name (where its known lists are)."""


def event_id(track: TrackState) -> str:
    """The id every event (and alert) of a track carries."""
    return f"{track.source}-{track.track_id}-{round(track.first_seen * 1000)}"


@dataclass
class _Alert:
    payload: dict[str, Any]  # the last one sent
    active: bool = True


@dataclass
class TrackAlerts:
    """One track's alerts and the reads already looked at, per stage."""

    alerts: dict[tuple[str, str, str], _Alert] = field(default_factory=dict)  # (stage, entry, list) -> alert
    checked: dict[str, set[int]] = field(default_factory=dict)

    def end(self) -> list[dict[str, Any]]:
        """The `ended` payloads of the alerts still raised (the track ended or became another one)."""
        return [{**a.payload, "state": "ended"} for a in self.alerts.values() if a.active]


class AlertWatch:
    """Looks at each track's new reads and settled votes for known-list entries that alert."""

    def __init__(self, consensus_for: ConsensusFor | None = None) -> None:
        self.consensus_for = consensus_for
        self._watched: dict[str, bool] = {}  # stage -> its known list has entries that alert (looked up once)

    def update(self, alerts: TrackAlerts, track: TrackState) -> list[dict[str, Any]]:
        """Payloads of the alerts this frame raised, retracted or raised again on the track."""
        if self.consensus_for is None:
            return []
        out: list[dict[str, Any]] = []
        for stage, st in track.stages.items():
            if not isinstance(st.votes, TextVotes):
                continue
            options = self.consensus_for(stage)
            if not self._watched.setdefault(stage, any(entry.alerts for entry in options.known)):
                continue  # nothing to watch for: no reads are looked at
            for read in _new_reads(alerts, stage, st.votes):
                out.extend(self._raise(alerts, track, stage, read, options, _settled_known(st.consensus)))
            out.extend(_follow_vote(alerts, track, stage, st.consensus))
        return out

    @staticmethod
    def _raise(
        alerts: TrackAlerts,
        track: TrackState,
        stage: str,
        read: TextRead,
        options: ConsensusOptions,
        settled: tuple[str, str] | bool | None,
    ) -> list[dict[str, Any]]:
        match = match_known(read.text, options.known, options.known_max_distance, options.normalize)
        if match is None or not _alerting(match, options):
            return []
        key = (stage, match["name"], match["list"])
        if key in alerts.alerts or settled not in (False, key[1:]):
            return []  # one alert per track and entry; none that the settled vote already disagrees with
        payload = _payload(track, stage, "raised", read.text, read.confidence, match)
        alerts.alerts[key] = _Alert(payload)
        return [payload]


def _alerting(match: dict[str, Any], options: ConsensusOptions) -> bool:
    """Whether the entry a match names alerts (match_known reports name and list, not the entry)."""
    allow = match["list"] == "allow"
    return any(e.alerts for e in options.known if e.name == match["name"] and e.allow == allow)


def _new_reads(alerts: TrackAlerts, stage: str, votes: TextVotes) -> Iterable[TextRead]:
    """Reads of the stage not looked at yet. The vote keeps its reads by confidence, not in order (the weakest go
    first), so reads are told apart by identity; only ids of reads still held are remembered, and a held object's
    id is never another's."""
    seen = alerts.checked.get(stage, set())
    held = {id(read): read for read in votes.reads}
    alerts.checked[stage] = set(held)
    return [read for key, read in held.items() if key not in seen]


def _settled_known(consensus: Any) -> tuple[str, str] | bool | None:
    """(name, list) of the known entry a settled vote matched, None for none; False while it is not settled."""
    if not isinstance(consensus, dict) or not consensus.get("settled"):
        return False
    known = consensus.get("known")
    return (known["name"], known["list"]) if known else None


def _follow_vote(alerts: TrackAlerts, track: TrackState, stage: str, consensus: Any) -> list[dict[str, Any]]:
    """Once the stage's vote settled: retract the alerts it disagrees with, raise again those it agrees with."""
    agreed = _settled_known(consensus)
    if agreed is False:
        return []
    known = consensus.get("known")
    out = []
    for (alert_stage, name, lst), alert in alerts.alerts.items():
        if alert_stage != stage or alert.active == ((name, lst) == agreed):
            continue
        alert.active = not alert.active
        match = known if alert.active else alert.payload["known"]
        alert.payload = _payload(
            track,
            stage,
            "raised" if alert.active else "retracted",
            consensus["text"],
            float(consensus.get("confidence", 0.0)),
            match,
            consensus,
        )
        out.append(alert.payload)
    return out


def _payload(
    track: TrackState,
    stage: str,
    state: AlertState,
    plate: str,
    confidence: float,
    known: dict[str, Any],
    consensus: dict[str, Any] | None = None,
) -> dict[str, Any]:
    label = track.label()
    return {
        "alert_id": f"{event_id(track)}/{stage}/{known['list']}/{known['name']}",
        "event_id": event_id(track),
        "type": "alert",
        "state": state,
        "source": track.source,
        "track_id": track.track_id,
        "label": label["class"] if label else None,
        "stage": stage,
        "plate": plate,  # the read that matched; on retraction (or a second raise) the settled vote
        "confidence": round(confidence, 4),
        "known": {"name": known["name"], "list": known["list"], "plate": known["plate"], "distance": known["distance"]},
        "settled": consensus is not None,
        "first_seen": track.first_seen,
        "last_seen": track.last_seen,
        "box": [round(float(v), 1) for v in track.xyxy],
    }
