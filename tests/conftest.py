"""Shared fixtures: small GeoTIFFs and footprint layers written in code into tmp dirs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
SAMPLE_RASTER = REPO / "sample_data" / "area.tif"
SAMPLE_FOOTPRINTS = REPO / "sample_data" / "buildings.gpkg"

# A UTM-like origin so coordinates look real.
ORIGIN = (500000.0, 5000000.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    res: float = 0.5,
    origin: tuple[float, float] = ORIGIN,
    nodata: float | None = None,
    transform: Affine | None = None,
    alpha: bool = False,
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF; the last band is flagged alpha if asked."""
    count, height, width = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": width, "height": height, "count": count,
        "dtype": data.dtype.name,
        "transform": transform or Affine(res, 0, origin[0], 0, -res, origin[1]),
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if alpha:
            from rasterio.enums import ColorInterp

            interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue][: count - 1]
            dst.colorinterp = [*interp, ColorInterp.alpha]
    return path


def write_footprints(path: Path, geoms: Sequence[shapely.Geometry], crs: str | None) -> Path:
    frame = gpd.GeoDataFrame({"id": list(range(len(geoms)))}, geometry=list(geoms), crs=crs)
    frame.to_file(path)
    return path


def pixel_box(col0: float, row0: float, col1: float, row1: float, res: float = 0.5,
              origin: tuple[float, float] = ORIGIN) -> shapely.Polygon:
    """A rectangle given in pixel coordinates of a raster written by write_raster."""
    return shapely.box(origin[0] + col0 * res, origin[1] - row1 * res,
                       origin[0] + col1 * res, origin[1] - row0 * res)


@pytest.fixture
def scene(tmp_path: Path) -> Callable[..., tuple[Path, Path, list[shapely.Polygon]]]:
    """Factory of a small scene: a textured RGB raster with bright roofs on known boxes."""

    def make(width: int = 600, height: int = 400, *, boxes: Sequence[tuple] | None = None,
             crs: str = "EPSG:32633", vector_crs: str | None = None, name: str = "scene",
             dtype: str = "uint8", seed: int = 0, vector_ext: str = ".gpkg"):
        rng = np.random.default_rng(seed)
        data = rng.integers(40, 90, size=(3, height, width)).astype(dtype)
        if boxes is None:
            boxes = []
            for row in range(20, height - 40, 70):
                for col in range(15, width - 40, 60):
                    w, h = rng.integers(12, 40, size=2)
                    boxes.append((col, row, col + int(w), row + int(h)))
        polys = [pixel_box(*b) for b in boxes]
        for c0, r0, c1, r1 in boxes:
            data[:, int(r0):int(r1), int(c0):int(c1)] = 200
        raster = write_raster(tmp_path / f"{name}.tif", data, crs=crs)
        geoms = polys
        if vector_crs and vector_crs != crs:
            geoms = list(gpd.GeoSeries(polys, crs=crs).to_crs(vector_crs))
        vector = write_footprints(tmp_path / f"{name}{vector_ext}", geoms, vector_crs or crs)
        return raster, vector, polys

    return make


def shared_scene(name: str) -> Path:
    """Path of a scene in ../shared/data, skipping the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"../shared/data/{name} is not available")
    return path


def write_tiny_model(path: Path) -> Path:
    """A tiny untrained U-Net model file (3 bands, footprint + contour, 64 px at 0.5 m)."""
    import torch

    from geotiler.tiles.schema import DatasetInfo
    from trainer.config import ModelConfig
    from trainer.modelfile import ModelSpec, save_model
    from trainer.networks import build_generator

    torch.manual_seed(0)
    net_config = ModelConfig(arch="unet", in_channels=3, out_channels=2, ngf=4, num_downs=3,
                             use_dropout=False)
    spec = ModelSpec(model=net_config, dataset=DatasetInfo(
        bands=[1, 2, 3], band_names=["red", "green", "blue"], dtype="uint8", mean=[60.0] * 3,
        std=[40.0] * 3, tile_size=64, gsd=0.5, mask_channels=["footprint", "contour"],
        target="masks", config={"contour_width": 3}))
    save_model(path, build_generator(net_config), spec)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """:func:`write_tiny_model` in the test's folder."""
    pytest.importorskip("trainer.modelfile")
    return write_tiny_model(tmp_path / "model.pt")


def interrupt_geotiler(args: Sequence[str], ready: Callable[[], bool],
                       sig: int = signal.SIGINT, settle: float = 0.0
                       ) -> tuple[int, str, float]:
    """Run ``python -m geotiler ARGS``, send ``sig`` once ``ready()`` holds (and ``settle``
    seconds more), wait for it to end; return (exit code, stderr, seconds from the signal
    to the exit). Fails if the command ends before it could be interrupted."""
    proc = subprocess.Popen([sys.executable, "-m", "geotiler", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    time.sleep(settle)
    assert proc.poll() is None, f"geotiler {args[0]} ended before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr, time.monotonic() - sent
