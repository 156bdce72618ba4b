"""detections_filter steps as class and confidence rules: the part of Roboflow's query language a stage can express."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import supervision as sv

from pipelines.labels import class_names
from pipelines.workflows.spec import WorkflowError

SUPPORTED = ("edgewatch supports DetectionsFilter operations whose StatementGroup ('and', or a single "
             "statement) holds BinaryStatements on ExtractDetectionProperty class_name ('in (Sequence)', '==') "
             "or confidence ('(Number) >=', '(Number) >') against a StaticOperand or an operations_parameters value")
CLASS_COMPARATORS = ("in (Sequence)", "==", "(Number) ==")
CONFIDENCE_COMPARATORS = ("(Number) >=", "(Number) >")


@dataclass(frozen=True)
class FilterRule:
    """Keep detections of these classes (None: any) with a confidence at or above `min_confidence`.

    That is what a second stage's `on` and `min_parent_confidence` select, so a filter between a detector
    and a crop compiles into the crop's stages, and the filter's own output is this mask over the detector's
    detections. min_confidence is a float32 value: detectors give float32 confidences, and a float32 threshold compares
    with them exactly as Roboflow compares their float values with the threshold it was given.
    """

    classes: frozenset[str] | None = None
    min_confidence: float = 0.0

    def both(self, other: FilterRule) -> FilterRule:
        """Detections that pass this rule and `other` (filters chained one after the other)."""
        if self.classes is None or other.classes is None:
            classes = self.classes if other.classes is None else other.classes
        else:
            classes = self.classes & other.classes
        return FilterRule(classes, max(self.min_confidence, other.min_confidence))

    def stage_fields(self) -> dict[str, Any]:
        """The StageSpec fields that select the same parents."""
        return {"on": None if self.classes is None else sorted(self.classes),
                "min_parent_confidence": self.min_confidence}

    def mask(self, detections: sv.Detections) -> npt.NDArray[np.bool_]:
        keep = np.ones(len(detections), dtype=bool)
        if len(detections) == 0:
            return keep
        if self.classes is not None:
            keep &= np.isin(class_names(detections), sorted(self.classes))
        if detections.confidence is not None:
            keep &= detections.confidence >= self.min_confidence
        return keep


def float32_threshold(value: float, strict: bool) -> float:
    """The smallest float32 that is >= value (> value when strict), as a Python float."""
    threshold = np.float32(value)
    if float(threshold) < value or (strict and float(threshold) <= value):
        threshold = np.nextafter(threshold, np.float32(np.inf))
    return float(threshold)


def parse_filter(operations: Sequence[Mapping[str, Any]], parameters: Mapping[str, Any], where: str) -> FilterRule:
    """One rule for a detections_filter step's operations (all of them must hold); WorkflowError otherwise."""
    rule = FilterRule()
    for index, operation in enumerate(operations):
        at = f"{where} field operations[{index}]"
        if operation.get("type") != "DetectionsFilter":
            raise WorkflowError(f"{at}: operation {operation.get('type')!r} is not supported; {SUPPORTED}")
        rule = rule.both(_group(operation.get("filter_operation"), parameters, f"{at}.filter_operation"))
    return rule


def _group(group: Any, parameters: Mapping[str, Any], where: str) -> FilterRule:
    if not isinstance(group, Mapping) or group.get("type") != "StatementGroup":
        raise WorkflowError(f"{where}: expected a StatementGroup; {SUPPORTED}")
    statements = group.get("statements")
    if not isinstance(statements, list) or not statements:
        raise WorkflowError(f"{where}: a StatementGroup needs at least one statement")
    if len(statements) > 1 and group.get("operator", "or") != "and":
        raise WorkflowError(f"{where}: operator {group.get('operator', 'or')!r} over several statements is not "
                            f"supported; {SUPPORTED}")
    rule = FilterRule()
    for index, statement in enumerate(statements):
        at = f"{where}.statements[{index}]"
        if isinstance(statement, Mapping) and statement.get("type") == "StatementGroup":
            rule = rule.both(_group(statement, parameters, at))
        else:
            rule = rule.both(_statement(statement, parameters, at))
    return rule


def _statement(statement: Any, parameters: Mapping[str, Any], where: str) -> FilterRule:
    if not isinstance(statement, Mapping) or statement.get("type") != "BinaryStatement":
        got = statement.get("type") if isinstance(statement, Mapping) else type(statement).__name__
        raise WorkflowError(f"{where}: {got!r} is not supported; {SUPPORTED}")
    if statement.get("negate", False):
        raise WorkflowError(f"{where}: negate is not supported; {SUPPORTED}")
    prop = _property(statement.get("left_operand"), where)
    compare = statement.get("comparator")
    comparator = compare.get("type") if isinstance(compare, Mapping) else None
    value = _operand(statement.get("right_operand"), parameters, where)
    if prop == "class_name" and comparator in CLASS_COMPARATORS:
        names = [value] if comparator != "in (Sequence)" else value
        if not isinstance(names, list | tuple | set) or not all(isinstance(n, str) for n in names):
            raise WorkflowError(f"{where}: class_name {comparator!r} needs class names (a list for 'in (Sequence)', "
                                f"a string for '=='), got {value!r}")
        return FilterRule(classes=frozenset(names))
    if prop == "confidence" and comparator in CONFIDENCE_COMPARATORS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise WorkflowError(f"{where}: confidence {comparator} needs a number in [0, 1], got {value!r}")
        return FilterRule(min_confidence=float32_threshold(float(value), strict=comparator == "(Number) >"))
    raise WorkflowError(f"{where}: {prop} {comparator!r} is not supported; {SUPPORTED}")


def _property(operand: Any, where: str) -> str:
    """The detection property a left operand extracts: class_name or confidence."""
    operations = operand.get("operations") if isinstance(operand, Mapping) else None
    if (
        not isinstance(operand, Mapping) or operand.get("type") != "DynamicOperand"
        or operand.get("operand_name", "_") != "_" or not isinstance(operations, list) or len(operations) != 1
        or not isinstance(operations[0], Mapping) or operations[0].get("type") != "ExtractDetectionProperty"
        or operations[0].get("property_name") not in ("class_name", "confidence")
    ):
        raise WorkflowError(f"{where}: the left operand must extract class_name or confidence from the detection; "
                            f"{SUPPORTED}")
    return str(operations[0]["property_name"])


def _operand(operand: Any, parameters: Mapping[str, Any], where: str) -> Any:
    """A right operand's value: a StaticOperand's value, or a DynamicOperand naming an operations_parameters key."""
    if isinstance(operand, Mapping) and not operand.get("operations"):
        if operand.get("type") == "StaticOperand":
            return operand.get("value")
        name = operand.get("operand_name", "_")
        if operand.get("type") == "DynamicOperand" and name in parameters:
            return parameters[name]
        if operand.get("type") == "DynamicOperand":
            known = ", ".join(sorted(parameters)) or "none"
            raise WorkflowError(f"{where}: right operand {name!r} is not in operations_parameters ({known})")
    raise WorkflowError(f"{where}: the right operand must be a StaticOperand or an operations_parameters name "
                        f"without operations; {SUPPORTED}")
