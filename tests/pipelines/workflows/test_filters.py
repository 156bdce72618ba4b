"""detections_filter operations as rules, and a rule's mask equal to the stage selection it compiles to."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import supervision as sv

from pipelines.stages import StageSpec, select
from pipelines.workflows.filters import FilterRule, float32_threshold, parse_filter
from tests.pipelines.workflows.specs import statement


def group(*statements: dict[str, Any], operator: str = "and") -> dict[str, Any]:
    return {"type": "StatementGroup", "operator": operator, "statements": list(statements)}


def operation(filter_operation: dict[str, Any]) -> dict[str, Any]:
    return {"type": "DetectionsFilter", "filter_operation": filter_operation}


# fmt: off
RULES: list[tuple[str, list[dict[str, Any]], dict[str, Any], FilterRule]] = [
    ("class-in", [operation(group(statement("class_name", "in (Sequence)", ["car", "bus"])))], {},
     FilterRule(frozenset({"car", "bus"}))),
    ("class-equals-single-statement-or", [operation(group(statement("class_name", "==", "car"), operator="or"))], {},
     FilterRule(frozenset({"car"}))),
    ("confidence-at-least", [operation(group(statement("confidence", "(Number) >=", 0.5)))], {},
     FilterRule(min_confidence=0.5)),
    ("confidence-above", [operation(group(statement("confidence", "(Number) >", 0.5)))], {},
     FilterRule(min_confidence=float32_threshold(0.5, strict=True))),
    ("and-of-both", [operation(group(statement("class_name", "in (Sequence)", ["car", "bus"]),
                                     statement("confidence", "(Number) >=", 0.25)))], {},
     FilterRule(frozenset({"car", "bus"}), 0.25)),
    ("nested-groups-and-operations", [operation(group(group(statement("class_name", "in (Sequence)", ["car", "bus"])),
                                                      statement("confidence", "(Number) >=", 0.3))),
                                      operation(group(statement("class_name", "==", "bus"),
                                                      statement("confidence", "(Number) >=", 0.2)))], {},
     FilterRule(frozenset({"bus"}), float32_threshold(0.3, strict=False))),
    ("operations-parameters", [operation(group(statement("class_name", "in (Sequence)", None, dynamic="kinds"),
                                               statement("confidence", "(Number) >=", None, dynamic="conf")))],
     {"kinds": ["person"], "conf": 0.75}, FilterRule(frozenset({"person"}), 0.75)),
]
# fmt: on


@pytest.mark.parametrize(("operations", "parameters", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_operations_become_one_rule(operations: list[dict[str, Any]], parameters: dict[str, Any],
                                    expected: FilterRule) -> None:
    assert parse_filter(operations, parameters, "step 'f'") == expected


@pytest.mark.parametrize(("classes", "value", "strict"), [
    (None, 0.0, False), (["car"], 0.0, False), (None, 0.5, True), (["car", "bus"], 0.7, False), ([], 0.0, False),
], ids=["everything", "cars", "above-half", "vehicles-0.7", "nothing"])
def test_a_rule_keeps_the_parents_its_stage_runs_on(classes: list[str] | None, value: float, strict: bool) -> None:
    rule = FilterRule(None if classes is None else frozenset(classes), float32_threshold(value, strict))
    confidence = np.array([0.5, 0.50000006, 0.7, 0.69999999, 0.9, 0.1], dtype=np.float32)
    names = np.array(["car", "car", "bus", "car", "person", "bus"])
    detections = sv.Detections(xyxy=np.tile(np.array([[10, 10, 50, 50]], dtype=np.float32), (6, 1)),
                               confidence=confidence, class_id=np.zeros(6, dtype=int), data={"class_name": names})
    stage = StageSpec.model_validate({"name": "s", "model": "m", "min_crop_size": 1, **rule.stage_fields()})
    np.testing.assert_array_equal(rule.mask(detections), select(detections, stage, (100, 100, 3)))
    # Roboflow compares each detection's float confidence with the value it was given
    floats = confidence.astype(np.float64)
    roboflow = (floats > value) if strict else (floats >= value)
    if classes is not None:
        roboflow &= np.isin(names, classes)
    np.testing.assert_array_equal(rule.mask(detections), roboflow)
