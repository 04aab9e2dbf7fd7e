"""``geotiler demo``: the whole chain on the sample scene, in a few minutes on a laptop CPU.

tile -> train (small U-Net, time-boxed) -> predict -> evaluate -> quick-look PNG, all into
one output folder, with the same library calls the individual commands make. The sample
scene is ``sample_data/`` of the repository; where that is not at hand (an installed
package) it is regenerated from :data:`geotiler.synthetic.SAMPLE_SPEC`, which is how the
committed files were made.

The scores are computed on the scene the model was trained on (its val and test tiles
included), so they say "the chain works", not "this is how well it generalizes"; the
training log's val IoU and ``benchmarks/ablation.py`` answer the second question.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geotiler.atomic import write_json_atomic
from geotiler.errors import ConfigError, OutputError
from geotiler.tiles.config import TileConfig
from trainer.config import Arch

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

REPO_SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. The defaults train for ~3 minutes on 2 CPU cores.

    Attributes:
        out_dir: folder for every output (refused if it holds other files, unless
            ``overwrite``).
        raster, footprints: the scene (default: the repository's sample data).
        minutes: training time budget (wall clock; the best epoch is kept).
        epochs: the most epochs trained within the budget (also sets the LR schedule).
        size, overlap: tile size and overlap in pixels (overlapping tiles give a small
            scene more training views).
        arch: ``unet`` (fastest to good masks on CPU) or ``pix2pix``.
        seed: seeds the split, the weights and the data order.
    """

    out_dir: Path = Path("demo")
    raster: Path | None = None
    footprints: Path | None = None
    minutes: float = 3.0
    epochs: int = 150
    size: int = 256
    overlap: int = 128
    arch: Arch = "unet"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.raster is None) != (self.footprints is None):
            raise ConfigError("give both --raster and --footprints, or neither (sample data)")
        if not self.minutes > 0:
            raise ConfigError(f"--minutes must be positive, got {self.minutes}")


@dataclass
class DemoReport:
    """Where the demo put things, and how it went."""

    raster: str
    footprints: str
    tiles: str
    model: str
    buildings: str
    probabilities: str
    mask: str
    metrics: str
    quicklook: str
    tile_count: int
    best_val_iou: float | None
    epochs: int
    pixel_iou: float | None
    building_f1: float
    predicted_buildings: int
    true_buildings: int
    seconds: dict[str, float] = field(default_factory=dict)

    def summary_line(self) -> str:
        iou = f"pixel IoU {self.pixel_iou:.3f}" if self.pixel_iou is not None else "no pixel IoU"
        val = f"{self.best_val_iou:.3f}" if self.best_val_iou is not None else "n/a"
        total = sum(self.seconds.values())
        return (f"demo done in {total / 60:.1f} min: {self.tile_count} tiles, {self.epochs} "
                f"epoch(s) (best val IoU {val}), {self.predicted_buildings} buildings found "
                f"for {self.true_buildings} true; {iou}, building F1 {self.building_f1:.3f}")


def sample_scene(work: Path) -> tuple[Path, Path]:
    """The repository's sample scene, or the same scene regenerated under ``work``."""
    raster, footprints = REPO_SAMPLE / "area.tif", REPO_SAMPLE / "buildings.gpkg"
    if raster.exists() and footprints.exists():
        return raster, footprints
    from geotiler.synthetic import SAMPLE_SPEC, make_scene

    target = work / "sample_data"
    target.mkdir(parents=True, exist_ok=True)
    raster, footprints = target / "area.tif", target / "buildings.gpkg"
    if not (raster.exists() and footprints.exists()):
        log.info("sample_data/ not found beside the package: generating the sample scene")
        make_scene(raster, footprints, SAMPLE_SPEC)
    return raster, footprints


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; an earlier demo's folder is replaced only with ``overwrite``."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputError(f"{out_dir} is not empty; use --overwrite to replace an earlier "
                              "demo there, or choose another --out")
        if not (out_dir / "demo.json").exists():
            raise OutputError(f"{out_dir} holds files that are not a geotiler demo's; "
                              "refusing to delete them, choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def run_demo(config: DemoConfig, *, overwrite: bool = False, client: Client | None = None,
             progress: bool = True) -> DemoReport:
    """Run tile -> train -> predict -> evaluate -> quick-look into ``config.out_dir``; a run
    that fails or is interrupted leaves ``config.out_dir`` empty (as the same command needs
    it)."""
    out = Path(config.out_dir)
    existed = out.exists()
    prepare_out_dir(out, overwrite)
    try:
        return _run_stages(out, config, client, progress)
    except BaseException:  # Ctrl-C included: a half-made demo would block the same command
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir(parents=True, exist_ok=True)
        raise


def _run_stages(out: Path, config: DemoConfig, client: Client | None, progress: bool
                ) -> DemoReport:
    """The demo's four stages into the prepared ``out``."""
    from geotiler.evaluate import evaluate, save_report
    from geotiler.predict.job import output_paths
    from geotiler.quicklook import render_quicklook
    from pipelines.predict import run_predict
    from pipelines.tile import run_tiling
    from trainer.config import TrainConfig
    from trainer.loop import train

    if config.raster is not None and config.footprints is not None:
        raster, footprints = Path(config.raster), Path(config.footprints)
    else:
        raster, footprints = sample_scene(out)
    seconds: dict[str, float] = {}
    tiles, model = out / "tiles", out / "model.pt"
    buildings, metrics_path = out / "buildings.gpkg", out / "metrics.json"

    started = time.perf_counter()
    log.info("1/4 tiling %s", raster)
    tile_report = run_tiling([raster], footprints, tiles,
                             TileConfig(size=config.size, overlap=config.overlap,
                                        seed=config.seed),
                             client=client, progress=progress)
    seconds["tile"] = time.perf_counter() - started

    started = time.perf_counter()
    log.info("2/4 training a small %s for up to %.1f minutes", config.arch, config.minutes)
    summary = train(tiles, model, TrainConfig(
        arch=config.arch, preset="small", epochs=config.epochs, max_minutes=config.minutes,
        seed=config.seed, workers=0, device="auto"), progress=progress)
    seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    log.info("3/4 predicting buildings on %s", raster)
    run_predict(raster, model, buildings, client=client, progress=progress)
    seconds["predict"] = time.perf_counter() - started

    started = time.perf_counter()
    log.info("4/4 evaluating against %s", footprints)
    report = evaluate(buildings, footprints)
    save_report(report, metrics_path, overwrite=True)
    quicklook = render_quicklook(raster, out / "quicklook.png", truth=footprints,
                                 predicted=buildings)
    seconds["evaluate"] = time.perf_counter() - started

    paths = output_paths(buildings)
    result = DemoReport(
        raster=str(raster), footprints=str(footprints), tiles=str(tiles), model=str(model),
        buildings=str(buildings), probabilities=str(paths.prob), mask=str(paths.mask),
        metrics=str(metrics_path), quicklook=str(quicklook),
        tile_count=sum(tile_report.tiles.values()),
        best_val_iou=summary.best_val_iou, epochs=summary.epochs,
        pixel_iou=report.pixels.iou if report.pixels is not None else None,
        building_f1=report.buildings.f1, predicted_buildings=report.buildings.predicted,
        true_buildings=report.buildings.truth, seconds={k: round(v, 1) for k, v in
                                                          seconds.items()},
    )
    write_json_atomic(out / "demo.json", asdict(result))
    return result
