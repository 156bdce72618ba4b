"""Sources on real media: file pacing, loop and range; image folders; ffmpeg pipes; webcam and RTSP options."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from daemon import registry
from daemon.sources.base import Source, SourceClosed, SourceError, mask_credentials
from daemon.sources.ffmpeg import FfmpegOptions, FfmpegSource
from daemon.sources.file import FileOptions, FileSource
from daemon.sources.images import ImagesOptions, ImagesSource
from daemon.sources.rtsp import RtspOptions, RtspSource
from daemon.sources.webcam import WebcamOptions, WebcamSource
from tests.fixtures.media import RawFrameServer, frame_count, grey_level, make_images, make_video

SECRET = "pa55:w@rd/x"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "clip.mp4", seconds=2.0, fps=15)  # 30 frames


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "short.mkv", seconds=0.6, fps=15)  # 9 frames


def read_all(source: Source, limit: int = 1000) -> list[tuple[np.ndarray, float | None]]:
    source.open()
    items: list[tuple[np.ndarray, float | None]] = []
    try:
        while len(items) < limit and (item := source.read()) is not None:
            items.append(item)
    finally:
        source.close()
    return items


def file_source(path: Path, **options: Any) -> FileSource:
    return FileSource(FileOptions.model_validate({"id": "f", "type": "file", "path": str(path), **options}))


def test_every_source_type_resolves_and_describes_every_option() -> None:
    for name in registry.names("source"):
        cls = registry.resolve("source", name)
        assert issubclass(cls, Source)
        undocumented = [f for f, info in cls.Options.model_fields.items() if not info.description]
        assert undocumented == [], f"{name}: fields without a description"
    assert [registry.resolve("source", n).live for n in ("file", "images", "rtsp", "webcam", "ffmpeg")] == [
        False, False, True, True, True,
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:secret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
        ("open rtsp://u:p@ss@cam/x failed", "open rtsp://***@cam/x failed"),
        ("rtsps://only-user@cam:322/a and http://x:y@h/", "rtsps://***@cam:322/a and http://***@h/"),
        ("'rtsp://u:pa/ss@cam/x' and 'rtsp://v:w@cam2/y'", "'rtsp://***@cam/x' and 'rtsp://***@cam2/y'"),
        ("rtsp://cam.local:554/live", "rtsp://cam.local:554/live"),
        ("no url here, mail@example.com", "no url here, mail@example.com"),
    ],
)
def test_mask_credentials(text: str, expected: str) -> None:
    assert mask_credentials(text) == expected


# -- file ---------------------------------------------------------------------------------------------
def test_file_fast_reads_every_frame_then_ends(video: Path) -> None:
    started = time.monotonic()
    items = read_all(file_source(video, pace="fast"))
    assert len(items) == frame_count(video) == 30
    assert items[0][0].shape == (240, 320, 3)
    pts = [p for _, p in items]
    assert pts == pytest.approx([i / 15 for i in range(30)], abs=0.002)
    assert time.monotonic() - started < 1.0  # 2 s of video, not paced


def test_file_realtime_never_runs_ahead_of_its_pts(short_video: Path) -> None:
    source = file_source(short_video)  # pace: realtime by default
    source.open()
    stamps = []
    while (item := source.read()) is not None:
        stamps.append((time.monotonic(), item[1]))
    source.close()
    assert len(stamps) == 9
    t0, p0 = stamps[0][0], stamps[0][1]
    assert p0 is not None
    for t, p in stamps[1:]:
        assert p is not None
        assert t - t0 >= (p - p0) - 0.005  # paced by the file's 15 fps, measured against its own pts
    assert stamps[-1][1] == pytest.approx(8 / 15, abs=0.002)


def test_file_loop_continues_the_timeline_and_repeats_the_pictures(short_video: Path) -> None:
    items = read_all(file_source(short_video, pace="fast", loop=True), limit=20)
    assert len(items) == 20
    pts = [p for _, p in items]
    assert pts == pytest.approx([i / 15 for i in range(20)], abs=0.002)
    assert np.array_equal(items[9][0], items[0][0])  # frame 9 is the file's first frame again
    assert np.array_equal(items[19][0], items[1][0])


def test_file_start_and_stop_frames(video: Path) -> None:
    everything = read_all(file_source(video, pace="fast"))
    part = read_all(file_source(video, pace="fast", start_frame=5, stop_frame=10))
    assert len(part) == 5
    assert np.array_equal(part[0][0], everything[5][0])
    assert part[0][1] == pytest.approx(5 / 15, abs=0.002)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: (d / "notes.mp4").write_text("not a video") and d / "notes.mp4", "cannot decode"),
    ],
)
def test_file_errors_name_the_file(tmp_path: Path, make: Any, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as info:
        file_source(path).open()
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("keep", "warned"), [(1.0, False), (0.5, True)])
def test_file_cut_short_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: float,
                                    warned: bool) -> None:
    whole = make_video(tmp_path / "whole.mp4", seconds=4, faststart=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    frames = len(read_all(file_source(cut, pace="fast")))
    assert 0 < frames <= 60
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("declares 60" in w and f"after {frames} frame(s)" in w for w in warnings) == warned, warnings


def test_file_range_is_validated() -> None:
    with pytest.raises(ValidationError, match="stop_frame"):
        FileOptions(id="f", type="file", path="x.mp4", start_frame=10, stop_frame=10)


def test_file_close_from_another_thread_wakes_realtime_pacing(tmp_path: Path) -> None:
    slow = make_video(tmp_path / "slow.mp4", seconds=4, fps=1)
    source = file_source(slow)
    source.open()
    assert source.read() is not None  # frame 0; frame 1 is due a second later
    threading.Timer(0.1, source.close).start()
    started = time.monotonic()
    with pytest.raises(SourceClosed):
        source.read()
    assert time.monotonic() - started < 0.9


# -- images -------------------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_images(tmp_path / "imgs", ["a.jpg", "b.PNG", "c.png", "d.bmp"])
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs"


def images_source(folder: Path, **options: Any) -> ImagesSource:
    return ImagesSource(ImagesOptions.model_validate({"id": "i", "type": "images", "folder": str(folder), **options}))


def names_read(source: ImagesSource) -> list[str]:
    source.open()
    names = []
    while source.read() is not None:
        assert source.current is not None
        names.append(source.current.name)
    return names


@pytest.mark.parametrize(
    ("image_ext", "expected"),
    [
        ("png", ["b.PNG", "c.png"]),
        (".JPG", ["a.jpg"]),
        (["png", ".jpg"], ["a.jpg", "b.PNG", "c.png"]),
        (None, ["a.jpg", "b.PNG", "c.png", "d.bmp"]),
    ],
)
def test_images_extension_filter(folder: Path, image_ext: Any, expected: list[str]) -> None:
    options = {} if image_ext is None else {"image_ext": image_ext}
    assert names_read(images_source(folder, **options)) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [("natural", ["img1.png", "img2.png", "img10.png"]), ("name", ["img1.png", "img10.png", "img2.png"])],
)
def test_images_sorting(tmp_path: Path, sort: str, expected: list[str]) -> None:
    make_images(tmp_path, ["img10.png", "img2.png", "img1.png"])
    assert names_read(images_source(tmp_path, sort=sort)) == expected


def test_images_recursive(tmp_path: Path) -> None:
    make_images(tmp_path, ["top.png", "sub/deeper.png"])
    assert names_read(images_source(tmp_path)) == ["top.png"]
    assert names_read(images_source(tmp_path, recursive=True)) == ["deeper.png", "top.png"]  # sub/ < top


def test_unreadable_image_is_skipped_logged_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_images(tmp_path, ["1.png", "3.png"])
    (tmp_path / "2.png").write_bytes(b"\x89PNG truncated garbage")
    source = images_source(tmp_path)
    skipped: list[tuple[str, str]] = []
    source.on_skip = lambda reason, detail: skipped.append((reason, detail))
    source.open()
    levels = []
    while (item := source.read()) is not None:
        levels.append(grey_level(item[0]))
    assert levels == [10, 20]  # 1.png and 3.png
    assert [r for r, _ in skipped] == ["unreadable"]
    assert "2.png" in skipped[0][1]
    assert any("2.png" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_images_loop_and_an_all_unreadable_loop_fails(tmp_path: Path) -> None:
    make_images(tmp_path / "ok", ["a.png", "b.png"])
    source = images_source(tmp_path / "ok", loop=True)
    source.open()
    assert [grey_level(source.read()[0]) for _ in range(5)] == [10, 20, 10, 20, 10]  # type: ignore[index]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    bad = images_source(tmp_path / "bad", loop=True)
    bad.open()
    with pytest.raises(SourceError, match="no readable image"):
        bad.read()


@pytest.mark.parametrize(("sub", "message"), [("absent", "does not exist"), ("empty", "no .png images")])
def test_images_folder_errors(tmp_path: Path, sub: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=message):
        images_source(tmp_path / sub, image_ext="png").open()


# -- ffmpeg -------------------------------------------------------------------------------------------
def ffmpeg_source(input_: str, **options: Any) -> FfmpegSource:
    return FfmpegSource(FfmpegOptions.model_validate({"id": "ff", "type": "ffmpeg", "input": input_, **options}))


def test_ffmpeg_probes_the_size_and_matches_opencv_decoding(video: Path) -> None:
    items = read_all(ffmpeg_source(str(video)))
    reference = read_all(file_source(video, pace="fast"))
    assert len(items) == len(reference) == 30
    assert items[0][0].shape == (240, 320, 3)
    assert [p for _, p in items] == pytest.approx([i / 15 for i in range(30)])
    diff = np.abs(items[12][0].astype(int) - reference[12][0].astype(int)).mean()
    assert diff < 4.0  # the same H.264 frames; only the YUV->BGR conversion differs


def test_ffmpeg_scales_to_the_requested_size(short_video: Path) -> None:
    items = read_all(ffmpeg_source(str(short_video), width=160, height=120))
    assert len(items) == 9
    assert items[0][0].shape == (120, 160, 3)
    assert items[0][1] is None  # no probe, so no frame rate to turn indexes into pts


def test_ffmpeg_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="ffprobe cannot read") as info:
        ffmpeg_source(str(tmp_path / "absent.mp4")).open()
    assert "absent.mp4" in str(info.value)


def test_ffmpeg_errors_mask_credentials() -> None:
    source = ffmpeg_source(f"rtsp://admin:{SECRET}@127.0.0.1:1/live", width=64, height=48,
                           input_args=["-rtsp_transport", "tcp"])
    source.open()
    with pytest.raises(SourceError) as info:
        source.read()
    source.close()
    text = str(info.value)
    assert "exit code" in text and "***@127.0.0.1:1" in text
    assert SECRET not in text and "admin" not in text
    assert SECRET not in source.describe()


def test_ffmpeg_close_from_another_thread_ends_a_blocked_read() -> None:
    with RawFrameServer(frames=3) as server:
        source = ffmpeg_source(server.url, input_args=server.input_args, width=64, height=48)
        source.open()
        outcome: list[str] = []

        def reader() -> None:
            try:
                while source.read() is not None:
                    outcome.append("frame")
                outcome.append("end")
            except SourceClosed:
                outcome.append("closed")

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.8)  # the stream has gone silent with the connection open: read() is blocked
        assert thread.is_alive() and "frame" in outcome
        started = time.monotonic()
        source.close()
        thread.join(timeout=3)
        assert not thread.is_alive() and outcome[-1] == "closed"
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("options", "message"),
    [({"width": 100}, "both width and height"), ({"height": 100}, "both width and height")],
)
def test_ffmpeg_options_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FfmpegOptions.model_validate({"id": "ff", "type": "ffmpeg", "input": "x.mp4", **options})


# -- webcam -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("device", "expected"), [(0, 0), ("3", 3), ("/dev/video2", "/dev/video2")])
def test_webcam_device_forms(device: Any, expected: Any) -> None:
    assert WebcamOptions(id="w", type="webcam", device=device).device == expected


@pytest.mark.parametrize("device", [-1, "/dev/sda", "video0"])
def test_webcam_rejects_other_devices(device: Any) -> None:
    with pytest.raises(ValidationError, match="device"):
        WebcamOptions(id="w", type="webcam", device=device)


def test_webcam_missing_device_names_it() -> None:
    source = WebcamSource(WebcamOptions(id="w", type="webcam", device="/dev/video97"))
    with pytest.raises(SourceError, match="/dev/video97"):
        source.open()


# -- rtsp (without a server; tests/integration/test_rtsp.py has the real one) ----------------------------
def rtsp_options(**options: Any) -> RtspOptions:
    return RtspOptions.model_validate({"id": "cam", "type": "rtsp", **options})


def test_rtsp_username_and_password_are_inserted_percent_encoded() -> None:
    source = RtspSource(rtsp_options(url="rtsp://cam.local:8554/live", username="ad min", password=SECRET))
    assert source.connect_url() == "rtsp://ad%20min:pa55%3Aw%40rd%2Fx@cam.local:8554/live"
    assert SECRET not in source.describe() and SECRET not in repr(source.opts)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": f"http://u:{SECRET}@cam/live"}, "rtsp://"),
        ({"url": f"rtsp://u:{SECRET}@cam/live", "username": "u"}, "both in the URL"),
        ({"url": "rtsp://cam/live", "password": SECRET}, "username is not"),
    ],
)
def test_rtsp_option_errors_never_echo_the_secret(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        rtsp_options(**options)
    assert SECRET not in str(info.value)


def test_rtsp_unreachable_camera_error_is_masked() -> None:
    source = RtspSource(rtsp_options(url=f"rtsp://admin:{SECRET}@127.0.0.1:1/live", open_timeout_s=2))
    with pytest.raises(SourceError, match=r"(cannot connect|connection refused) after") as info:
        source.open()
    assert "rtsp://***@127.0.0.1:1/live" in str(info.value)
    assert SECRET not in str(info.value)
    source.close()  # safe after a failed open
