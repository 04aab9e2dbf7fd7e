"""The settings of an evaluation, with their defaults: the one place they are written.

Kept free of heavy imports: the CLI reads its option defaults from here for ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from geotiler.errors import ConfigError

UNIT_SLIP_TOLERANCE_M = 5.0  # a --tolerance above this is noted: likely cm typed for m


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are scored.

    Attributes:
        tolerance: boundary F-score tolerance in metres (converted to px with the grid's
            ground sample distance); >= 0.
        iou_threshold: IoU at or above which a predicted building matches a true one
            (SpaceNet: 0.5); in (0, 1].

    Raises:
        ConfigError: a value out of range.
    """

    tolerance: float = 1.0
    iou_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise ConfigError(f"--tolerance must be >= 0 m, got {self.tolerance}")
        if not 0 < self.iou_threshold <= 1:
            raise ConfigError(f"--iou-threshold must be in (0, 1], got {self.iou_threshold}")
