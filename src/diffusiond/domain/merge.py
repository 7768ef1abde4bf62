"""Merge specs: a new checkpoint from the tensors of two or three registered ones."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from diffusiond.domain.errors import InvalidParams


class MergeMethod(str, Enum):
    WEIGHTED_SUM = "weighted_sum"  # (1 - m) * primary + m * secondary
    ADD_DIFFERENCE = "add_difference"  # primary + m * (secondary - tertiary)


@dataclass(frozen=True)
class MergeSpec:
    """Merge checkpoints of one family tensor by tensor; register the result as `output_model`."""

    primary: str
    secondary: str
    output_model: str
    tertiary: str | None = None
    multiplier: float = 0.3
    method: MergeMethod = MergeMethod.WEIGHTED_SUM
    output_name: str = ""


def check_merge_spec(spec: MergeSpec) -> None:
    if not 0.0 <= spec.multiplier <= 1.0:
        raise InvalidParams("multiplier must be between 0 and 1", code="invalid_params", field="multiplier")
    if spec.method is MergeMethod.ADD_DIFFERENCE and not spec.tertiary:
        raise InvalidParams("add-difference needs a tertiary model", code="invalid_params",
                            field="tertiary_model_name")
    if spec.method is MergeMethod.WEIGHTED_SUM and spec.tertiary:
        raise InvalidParams("a weighted sum takes two models; add-difference takes three",
                            code="invalid_params", field="tertiary_model_name")
