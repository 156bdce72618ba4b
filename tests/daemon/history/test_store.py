"""EventStore on a real SQLite file: upsert by event_id, filters, files, retention, a damaged database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon.frames import iso_utc
from daemon.history.rows import EventFiles, PayloadError
from daemon.history.store import EventStore, Filters

T0 = 1_795_341_720.0


def payload(
    track: int,
    kind: str = "new",
    *,
    camera: str = "gate",
    text: str | None = "AB12CDE",
    start: float = T0,
    last: float | None = None,
    label: str = "car",
) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    if text is not None:
        stages["plates"] = {
            "text": text,
            "agreement": 0.91,
            "settled": True,
            "known": {"name": "depot van", "plate": text, "list": "allow", "distance": 0},
        }
    return {
        "schema": 1,
        "source_id": camera,
        "event_id": f"{camera}-{track}-{round(start * 1000)}",
        "type": kind,
        "track_id": track,
        "label": label,
        "first_seen": iso_utc(start),
        "last_seen": iso_utc(last or start + 1),
        "zones": ["kerb"],
        "entered_zones": ["kerb"],
        "stages": stages,
    }


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_new_update_end_is_one_row_with_the_latest_facts(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    store.record(payload(7, "new", text=None))
    store.record(payload(7, "update"))
    assert store.get(payload(7)["event_id"]).end is None  # type: ignore[union-attr]
    store.record(payload(7, "end", last=T0 + 12))
    row = store.get(payload(7)["event_id"])
    assert row is not None and store.count() == 1
    assert (row.camera, row.label, row.track_id, row.plate, row.agreement) == ("gate", "car", 7, "AB12CDE", 0.91)
    assert (row.known_name, row.known_list, row.zones, row.last_type) == ("depot van", "allow", ("kerb",), "end")
    assert row.start == iso_utc(T0) and row.start_ts == pytest.approx(T0)
    assert row.end == iso_utc(T0 + 12) and row.end_ts == pytest.approx(T0 + 12, abs=1e-3)
    assert row.to_json()["payload"]["type"] == "end" and row.to_json()["known"]["list"] == "allow"


def test_filters_paging_and_survives_reopening(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    store.record(payload(1, camera="gate", text="AB12CDE", start=T0))
    store.record(payload(2, camera="gate", text="XY34ZQW", start=T0 + 10, label="truck"))
    store.record(payload(3, camera="yard", text=None, start=T0 + 20))
    store.close()
    store = EventStore(tmp_path / "events.db")  # a restart: the history is on disk
    assert [r.track_id for r in store.query()] == [3, 2, 1]  # newest first
    assert [r.track_id for r in store.query(Filters(camera="gate"))] == [2, 1]
    assert [r.track_id for r in store.query(Filters(plate="34zq"))] == [2]  # substring, any case
    assert [r.track_id for r in store.query(Filters(plate="%"))] == []  # no LIKE wildcards
    assert [r.track_id for r in store.query(Filters(label="truck"))] == [2]
    assert [r.track_id for r in store.query(Filters(since=T0 + 5, until=T0 + 15))] == [2]
    assert [r.track_id for r in store.query(limit=1, offset=1)] == [2]
    assert store.count(Filters(camera="gate")) == 2 and store.count(Filters(plate="zzz")) == 0


def test_files_attach_and_give_urls(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    event_id = payload(5)["event_id"]
    snap = write(tmp_path / "e" / "snapshot.jpg", 100)
    store.record(payload(5), EventFiles(snapshot=snap))
    store.attach(event_id, "clip", write(tmp_path / "e" / "clip.mp4", 1000))
    store.record(payload(5, "end"))  # an event without files keeps the ones it had
    row = store.get(event_id)
    assert row is not None and row.files.snapshot == snap and row.files.crop is None
    assert row.to_json()["urls"] == {
        "snapshot": f"/api/events/{event_id}/snapshot.jpg",
        "clip": f"/api/events/{event_id}/clip.mp4",
    }
    assert store.total_bytes() == 1100
    with pytest.raises(ValueError, match="file kind 'movie'"):
        store.attach(event_id, "movie", snap)  # type: ignore[arg-type]


def test_a_payload_without_its_id_is_refused_naming_the_field(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    bad = payload(1)
    del bad["event_id"]
    with pytest.raises(PayloadError, match="'event_id'"):
        store.record(bad)


def test_retention_by_age_deletes_rows_and_files(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    old, new = payload(1, start=T0, last=T0 + 5), payload(2, start=T0 + 1000, last=T0 + 1005)
    old_file = write(tmp_path / "events" / "gate" / old["event_id"] / "snapshot.jpg", 10)
    new_file = write(tmp_path / "events" / "gate" / new["event_id"] / "snapshot.jpg", 10)
    store.record(old, EventFiles(snapshot=old_file))
    store.record(new, EventFiles(snapshot=new_file))
    report = store.prune(max_age_s=600, max_bytes=None, now=T0 + 1100)
    assert (report.rows, report.files, report.bytes) == (1, 1, 10)
    assert not old_file.exists() and not old_file.parent.exists() and new_file.exists()
    assert [r.track_id for r in store.query()] == [2]


def test_retention_by_size_keeps_the_newest_that_fit(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    for track in range(5):
        p = payload(track, start=T0 + track * 10)
        store.record(p, EventFiles(clip=write(tmp_path / p["event_id"] / "clip.mp4", 400)))
    report = store.prune(max_age_s=None, max_bytes=1000, now=T0 + 100)
    assert (report.rows, report.bytes) == (3, 1200)
    assert [r.track_id for r in store.query()] == [4, 3] and store.total_bytes() == 800
    assert store.prune(max_age_s=None, max_bytes=1000).rows == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_set_aside_and_a_fresh_one_used(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    if damage == "garbage":
        path.write_bytes(b"this is no database at all " * 200)
    else:
        store = EventStore(path)
        for track in range(200):
            store.record(payload(track, start=T0 + track))
        store.close()
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = path.read_bytes()
        path.write_bytes(data[:100] + b"\xff" * 200 + data[300 : len(data) // 2])
    store = EventStore(path)
    assert store.damaged is not None and store.damaged.exists() and store.damaged.name.startswith("events.db.damaged-")
    assert "damaged" in caplog.text and store.count() == 0
    store.record(payload(1))
    assert store.count() == 1


def test_threads_record_and_read_at_once(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    reader = EventStore(tmp_path / "events.db")  # the web routes open their own
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for track in range(base, base + 50):
                store.record(payload(track, start=T0 + track))
                reader.query(limit=5)
        except BaseException as exc:  # the test reports any failure of a thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and reader.count() == 150
