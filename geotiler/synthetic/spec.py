"""What a synthetic scene is: :class:`SceneSpec` (the one place the generator's defaults
live), the repository's :data:`SAMPLE_SPEC`, the roof vocabulary of the footprint attributes,
and :class:`SceneSummary`, what :func:`geotiler.synthetic.make_scene` reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from geotiler.errors import ConfigError

#: Roof colour names (the ``roof`` attribute) and their RGB.
ROOF_COLOURS: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "terracotta": (172.0, 84.0, 62.0),
    "dark_grey": (84.0, 86.0, 92.0),
    "light_grey": (168.0, 168.0, 164.0),
    "brown": (118.0, 86.0, 66.0),
    "white": (224.0, 224.0, 218.0),
})
ROOF_SHAPES: tuple[str, ...] = ("gable", "hip", "flat")


@dataclass(frozen=True)
class SceneSpec:
    """What to generate. The one place the generator's defaults live.

    Attributes:
        width, height: raster size in pixels.
        gsd: ground sample distance, metres per pixel.
        crs: a projected CRS in metres (default: UTM zone 33N).
        origin_x, origin_y: easting and northing of the raster's top-left corner.
        seed: seeds everything; same spec, same bytes.
        building_density: multiplier on buildings per area; 1.0 gives about 720 per km²
            (about 190 in a 1024 px square at 0.5 m). Below 1 plots stay empty more often,
            above 1 plots get narrower.
        tree_density: multiplier on the number of trees.
        block_length_m, block_depth_m: mean spacing of the road grid along and across.
        grid_angle: rotation of the road grid in degrees; ``None`` draws it from the seed.
        sun_azimuth, sun_elevation: degrees; shadows fall away from the sun (default from
            the north-west, so shadows fall to the south-east).
        nodata_border: width in px of a band of nodata (0) pixels on the right edge; when
            > 0 the GeoTIFF declares nodata=0, otherwise it declares no nodata.
        block_size: side in px of the square blocks rendered and written at a time;
            memory grows with its square, not with the raster. Multiples of 256 (the
            GeoTIFF tile size) write fastest.
    """

    width: int
    height: int
    gsd: float = 0.5
    crs: str = "EPSG:32633"
    origin_x: float = 601000.0
    origin_y: float = 5340000.0
    seed: int = 0
    building_density: float = 1.0
    tree_density: float = 1.0
    block_length_m: float = 150.0
    block_depth_m: float = 95.0
    grid_angle: float | None = None
    sun_azimuth: float = 315.0
    sun_elevation: float = 50.0
    nodata_border: int = 0
    block_size: int = 1024

    def __post_init__(self) -> None:
        if not (1 <= self.width <= 1 << 20 and 1 <= self.height <= 1 << 20):
            raise ConfigError(f"width and height must be 1..1048576 px, got "
                              f"{self.width}x{self.height}")
        if not 0.05 <= self.gsd <= 10:
            raise ConfigError(f"gsd must be 0.05..10 m/px, got {self.gsd}")
        try:
            crs = CRS.from_user_input(self.crs)
        except CRSError as err:
            raise ConfigError(f"crs {self.crs!r} is not a CRS GDAL knows: {err}") from None
        if not crs.is_projected:
            raise ConfigError(f"crs must be projected (metres), got {self.crs!r}; "
                              "use a UTM zone such as EPSG:32633")
        for name in ("building_density", "tree_density"):
            if not 0.0 <= getattr(self, name) <= 4.0:
                raise ConfigError(f"{name} must be in [0, 4], got {getattr(self, name)}")
        if self.block_length_m < 40 or self.block_depth_m < 30:
            raise ConfigError("block_length_m must be >= 40 and block_depth_m >= 30, got "
                              f"{self.block_length_m} and {self.block_depth_m}")
        if not 5.0 <= self.sun_elevation <= 85.0:
            raise ConfigError(f"sun_elevation must be 5..85 degrees, got {self.sun_elevation}")
        if not 0 <= self.nodata_border < self.width:
            raise ConfigError(f"nodata_border must be in [0, width={self.width}), "
                              f"got {self.nodata_border}")
        if not 32 <= self.block_size <= 8192:
            raise ConfigError(f"block_size must be 32..8192 px, got {self.block_size}")

    @property
    def transform(self) -> Affine:
        """The raster's north-up geotransform."""
        return Affine(self.gsd, 0.0, self.origin_x, 0.0, -self.gsd, self.origin_y)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the raster in the CRS."""
        return (self.origin_x, self.origin_y - self.height * self.gsd,
                self.origin_x + self.width * self.gsd, self.origin_y)


#: The repository's sample scene (``sample_data/``): 1024 x 1024 px at 0.5 m (512 m square)
#: in UTM zone 33N. The seed was picked for a representative mix: detached houses,
#: L-shapes, terraced rows of touching houses, flats, a park, parking lots and a pool or two.
SAMPLE_SPEC = SceneSpec(width=1024, height=1024, gsd=0.5, crs="EPSG:32633",
                        origin_x=601000.0, origin_y=5340000.0, seed=28)


@dataclass(frozen=True)
class SceneSummary:
    """What :func:`make_scene` wrote."""

    tif_path: Path
    vector_path: Path
    n_buildings: int
    n_trees: int
    width: int
    height: int
    crs: str
    bounds: tuple[float, float, float, float]
