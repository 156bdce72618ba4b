"""Tiled detection: the tiles of a frame, their mapping back to frame pixels, cut boxes, and a small plate found."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.detect.tiles import TiledBatch, TileOptions, _uncut, merge, tile_letterbox, windows
from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError

SHARED = Path(__file__).resolve().parents[4] / "shared"
PLATE_DETECTOR = {"type": "yolov5", "num_keypoints": 4, "pad_value": 0, "class_names": ["single", "double"],
                  "class_agnostic_nms": True, "path": str(SHARED / "models" / "plate_det_y5fu_640.onnx")}


def test_windows_cover_the_frame_with_the_overlap_asked() -> None:
    tiles = windows((960, 540), TileOptions(grid=(2, 1), overlap=0.25))
    assert tiles == [(0, 0, 549, 540), (411, 0, 960, 540), (0, 0, 960, 540)]
    (a0, _, a1, _), (b0, _, _b1, _) = tiles[:2]
    assert (a1 - b0) / (a1 - a0) == pytest.approx(0.25, abs=0.01)
    assert windows((960, 540), TileOptions(grid=(1, 1), full_frame=True)) == [(0, 0, 960, 540)]
    assert len(windows((1920, 1080), TileOptions(grid=(3, 2), full_frame=False))) == 6


def test_a_tile_letterbox_maps_model_pixels_to_frame_pixels() -> None:
    box = tile_letterbox((400, 200, 720, 520), (1280, 720), (640, 640), "center")
    # the 320x320 tile fills the 640 input at scale 2: input (0, 0) is the tile's corner in the frame
    assert box.points_to_source(np.array([[0.0, 0.0], [640.0, 640.0]])).tolist() == [[400.0, 200.0], [720.0, 520.0]]
    assert box.source_wh == (1280, 720)


def test_boxes_cut_by_an_inner_tile_edge_are_dropped_but_frame_edges_are_not() -> None:
    detections = sv.Detections(xyxy=np.array([[100, 10, 200, 40], [500, 10, 549, 40], [0, 0, 50, 30]], np.float32),
                               confidence=np.array([0.9, 0.8, 0.7], np.float32), class_id=np.zeros(3, int))
    kept = _uncut(detections, (0, 0, 549, 540), (960, 540))
    assert kept.xyxy.tolist() == [[100, 10, 200, 40], [0, 0, 50, 30]]


def test_merge_suppresses_the_same_object_seen_by_two_tiles() -> None:
    same = sv.Detections(xyxy=np.array([[450, 100, 500, 120]], np.float32), confidence=np.array([0.8], np.float32),
                         class_id=np.zeros(1, int))
    batch = TiledBatch(crops=[], owners=[0, 0], windows=[(0, 0, 549, 540), (411, 0, 960, 540)])
    image = np.zeros((540, 960, 3), np.uint8)
    merged = merge([same, same], batch, [image], iou_threshold=0.5, class_agnostic=True, max_detections=10)
    assert len(merged) == 1 and len(merged[0]) == 1


def test_tiles_find_a_plate_too_small_for_the_whole_frame() -> None:
    plate = cv2.imread(str(SHARED / "media" / "plate_crop_1.png"))
    w = 70
    h = round(plate.shape[0] * w / plate.shape[1])
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    frame[700:700 + h, 1300:1300 + w] = cv2.resize(plate, (w, h), interpolation=cv2.INTER_AREA)
    whole = load_model(PLATE_DETECTOR, name="plates")
    tiled = load_model({**PLATE_DETECTOR, "tiles": {"grid": [3, 2], "overlap": 0.25}}, name="plates")
    assert len(whole.detect([frame])[0]) == 0  # 70 px in 1920 is 23 px at the model's 640
    found = tiled.detect([frame])[0]
    assert len(found) == 1
    x0, y0, x1, y1 = found.xyxy[0]
    assert abs(x0 - 1300) < 6 and abs(y0 - 700) < 6 and abs(x1 - 1370) < 6 and abs(y1 - 700 - h) < 6
    corners = found.data["keypoints"][0]  # key points map to frame pixels like the box
    assert np.all(np.abs(corners[:, 0] - np.clip(corners[:, 0], 1290, 1380)) == 0)
    assert np.all(np.abs(corners[:, 1] - np.clip(corners[:, 1], 690, 735)) == 0)


def test_bad_tile_options_and_db_text_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="grid"):
        TileOptions(grid=(0, 2))
    with pytest.raises(ModelLoadError, match="tiles"):
        load_model({"type": "db_text", "path": str(SHARED / "models" / "text_det_ppocrv3_en.onnx"),
                    "tiles": {"grid": [2, 2]}}, name="text")
