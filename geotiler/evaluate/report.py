"""What an evaluation found: the metric records, the report, its table and its JSON file.

Plain dataclasses (no heavy imports), so a report can be built, printed and saved anywhere.
Ratios are in [0, 1]; counts are pixels or buildings; tolerances are in metres and pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geotiler.atomic import prepare_output_folder, write_json_atomic
from geotiler.errors import OutputError
from geotiler.io import replaced_input

if TYPE_CHECKING:
    from geotiler.metrics import BoundaryCounts, Confusion


@dataclass
class PixelMetrics:
    """Pixel scores of the building class (counts in px), and the seed method's four
    two-class scores (pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU).

    ``edge_errors``: the wrong pixels (``fp + fn``) that lie within the boundary tolerance
    of a true outline (:func:`geotiler.metrics.edge_band`): outlines drawn a little off
    rather than buildings missed or invented (README "the error budget")."""

    tp: int
    fp: int
    fn: int
    tn: int
    iou: float
    precision: float
    recall: float
    f1: float
    pixel_accuracy: float
    mean_accuracy: float
    mean_iou: float
    fw_iou: float
    edge_errors: int = 0

    @property
    def edge_error_share(self) -> float:
        """``edge_errors`` over all wrong pixels (0 when none is wrong)."""
        wrong = self.fp + self.fn
        return self.edge_errors / wrong if wrong else 0.0

    @classmethod
    def from_confusion(cls, c: Confusion, edge_errors: int = 0) -> PixelMetrics:
        seed = c.seed_scores()
        return cls(c.tp, c.fp, c.fn, c.tn, c.iou, c.precision, c.recall, c.f1,
                   seed["pixel_accuracy"], seed["mean_accuracy"], seed["mean_iou"],
                   seed["fw_iou"], edge_errors)


@dataclass
class BoundaryMetrics:
    """Boundary F-score: building edges within ``tolerance_m`` m (``tolerance_px`` px)."""

    tolerance_m: float
    tolerance_px: float
    precision: float
    recall: float
    f_score: float

    @classmethod
    def from_counts(cls, b: BoundaryCounts, tolerance_m: float, tolerance_px: float
                    ) -> BoundaryMetrics:
        return cls(tolerance_m, tolerance_px, b.precision, b.recall, b.f_score)


@dataclass
class BuildingMetrics:
    """Per-building scores (SpaceNet): one-to-one matches at IoU >= ``iou_threshold``.

    ``false_detections``: predicted buildings that touch no true one; ``missed``: true
    buildings that no prediction touches. The other unmatched ones overlap a building of
    the other side but too little (split, merged or misshapen)."""

    predicted: int
    truth: int
    matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float  # over matched pairs
    iou_threshold: float
    false_detections: int = 0
    missed: int = 0


@dataclass
class EvalReport:
    """Everything one evaluation found; ``pixels``/``boundary`` are None without a grid."""

    pred: str
    truth: str
    crs: str
    grid: str | None  # the raster whose grid the pixel scores use
    pixels: PixelMetrics | None
    boundary: BoundaryMetrics | None
    buildings: BuildingMetrics
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format_table(self) -> str:
        """A readable summary (what the CLI prints)."""
        rows: list[tuple[str, str]] = []
        b = self.buildings
        rows += [("buildings: predicted / truth / matched",
                  f"{b.predicted} / {b.truth} / {b.matched}"),
                 (f"building precision (IoU >= {b.iou_threshold:g})", f"{b.precision:.4f}"),
                 ("building recall", f"{b.recall:.4f}"),
                 ("building F1", f"{b.f1:.4f}"),
                 ("mean IoU of matched buildings", f"{b.mean_iou:.4f}"),
                 ("predicted buildings touching no true one", f"{b.false_detections}"),
                 ("true buildings no prediction touches", f"{b.missed}")]
        if self.pixels is not None:
            p = self.pixels
            rows += [("pixel IoU", f"{p.iou:.4f}"), ("pixel precision", f"{p.precision:.4f}"),
                     ("pixel recall", f"{p.recall:.4f}"), ("pixel F1", f"{p.f1:.4f}"),
                     ("pixel accuracy (seed)", f"{p.pixel_accuracy:.4f}"),
                     ("mean accuracy (seed)", f"{p.mean_accuracy:.4f}"),
                     ("mean IoU (seed)", f"{p.mean_iou:.4f}"),
                     ("frequency-weighted IoU (seed)", f"{p.fw_iou:.4f}")]
        if self.boundary is not None:
            d = self.boundary
            rows.append((f"boundary F-score ({d.tolerance_m:g} m = {d.tolerance_px:g} px)",
                         f"{d.f_score:.4f}"))
            if self.pixels is not None:
                p = self.pixels
                rows.append((f"wrong pixels within {d.tolerance_m:g} m of a true outline",
                             f"{p.edge_error_share:.1%} ({p.edge_errors} of {p.fp + p.fn})"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def save_report(report: EvalReport, path: Path | str, overwrite: bool = False) -> Path:
    """Write the report as JSON (strict: NaN as null; sorted keys) to ``path``.

    The folder is created if needed; the file is written under a temporary name and then
    renamed (:func:`geotiler.atomic.write_json_atomic`).

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
    """
    path = Path(path)
    check_report_path(path, overwrite)
    write_json_atomic(path, report.to_dict())
    return path


def check_report_path(path: Path | str, overwrite: bool = False,
                      inputs: Sequence[Path | str | None] = ()) -> list[Path]:
    """Check, before any scoring, that the report can be written to ``path`` (its folder
    created if needed); returns the folders it created, deepest first (a failed run
    removes them again).

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is false, is a directory, is one of
            ``inputs`` (PRED, TRUTH: even with ``overwrite``), or its folder cannot be
            created or written.
    """
    path = Path(path)
    if clash := replaced_input([path], inputs):
        raise OutputError(f"--out {path} is the input {clash[1]}; give another --out")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; use --overwrite to replace it")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    return prepare_output_folder(path.parent)
