"""Footprints from OpenStreetMap extracts, from a chosen layer of a multi-layer file, filtered
by SQL, and from GeoParquet: through ``geotiler tile`` and ``geotiler evaluate``."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.errors import ConfigError, InputError
from geotiler.vectors import load_footprints

from conftest import pixel_box, write_raster

# A 400 x 300 px raster at 0.5 m in EPSG:32633 with six buildings; the OSM extract holds them
# (in WGS 84) plus a park and a road that are not buildings.
BOXES = [(20, 20, 60, 60), (100, 30, 150, 70), (200, 40, 240, 90), (40, 150, 90, 200),
         (160, 160, 220, 220), (280, 180, 330, 240)]


@pytest.fixture
def raster(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(40, 90, size=(3, 300, 400)).astype(np.uint8)
    for c0, r0, c1, r1 in BOXES:
        data[:, r0:r1, c0:c1] = 210
    return write_raster(tmp_path / "scene.tif", data)


def _lonlat(geom: shapely.Geometry) -> np.ndarray:
    return np.asarray(gpd.GeoSeries([geom], crs="EPSG:32633").to_crs("EPSG:4326")[0]
                      .exterior.coords)


def write_osm(path, buildings, others) -> None:
    """An OSM XML extract: each polygon a closed way, tagged building=yes or with ``others``'
    tags (e.g. leisure=park)."""
    nodes, ways = [], []
    node_id = 1
    for way_id, (geom, tags) in enumerate(
            [(g, {"building": "yes"}) for g in buildings] + list(others), start=100):
        refs = []
        for lon, lat in _lonlat(geom)[:-1]:
            nodes.append(f'<node id="{node_id}" lat="{lat:.9f}" lon="{lon:.9f}" version="1"/>')
            refs.append(node_id)
            node_id += 1
        nds = "".join(f'<nd ref="{r}"/>' for r in [*refs, refs[0]])
        tag_xml = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        ways.append(f'<way id="{way_id}" version="1">{nds}{tag_xml}</way>')
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" '
                    'generator="geotiler-tests">\n' + "\n".join(nodes + ways) + "\n</osm>\n")


@pytest.fixture
def osm_file(tmp_path):
    path = tmp_path / "extract.osm"
    park = (pixel_box(300, 20, 390, 120), {"leisure": "park"})
    lot = (pixel_box(110, 240, 180, 290), {"amenity": "parking"})
    write_osm(path, [pixel_box(*b) for b in BOXES], [park, lot])
    return path


def run(*args: str):
    return CliRunner().invoke(main, ["-q", *args])


def test_osm_extract_gives_its_buildings_only(raster, osm_file, tmp_path):
    fp = load_footprints(osm_file)
    assert len(fp.geoms) == len(BOXES) and fp.crs.to_epsg() == 4326
    everything = load_footprints(osm_file, where="building IS NOT NULL OR leisure = 'park'")
    assert len(everything.geoms) == len(BOXES) + 1
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(osm_file), "-o", str(out), "--size", "128",
                 "--keep-empty", "1", "--split", "1,0,0")
    assert result.exit_code == 0, result.stderr
    info = json.loads((out / "dataset.json").read_text())
    assert info["buildings"] >= len(BOXES)  # parts: a building cut by a tile edge counts twice
    assert info["footprints"]["outside_rasters"] == 0
    # dataset.json says how they were read (the OSM defaults) and where from, absolutely
    assert info["footprints"]["layer"] == "multipolygons"
    assert info["footprints"]["where"] == "building IS NOT NULL"
    assert info["footprints"]["path"] == str(osm_file.resolve())
    # the park (not a building) leaves no footprint pixels: its tile's building fraction is 0
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    park_tile = index[(index.row == 0) & (index.col == 2)]
    assert float(park_tile.building_fraction.iloc[0]) == 0.0


def test_osm_where_filter_and_evaluate_truth_options(raster, osm_file, tmp_path):
    where = "building IS NOT NULL OR leisure = 'park'"
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(osm_file), "-o", str(out), "--size", "128",
                 "--keep-empty", "1", "--split", "1,0,0", "--footprints-where", where)
    assert result.exit_code == 0, result.stderr
    info = json.loads((out / "dataset.json").read_text())
    assert info["footprints"]["where"] == where
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    park_tile = index[(index.row == 0) & (index.col == 2)]
    assert float(park_tile.building_fraction.iloc[0]) > 0.2  # now the park is "building"
    # evaluate: the OSM buildings as truth against themselves as a GeoPackage
    pred = tmp_path / "pred.gpkg"
    gpd.GeoDataFrame(geometry=[pixel_box(*b) for b in BOXES], crs="EPSG:32633").to_file(
        pred, layer="buildings")
    scored = run("evaluate", str(pred), str(osm_file), "--raster", str(raster),
                 "--out", str(tmp_path / "m.json"))
    assert scored.exit_code == 0, scored.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["buildings"]["truth"] == len(BOXES)
    assert metrics["buildings"]["f1"] > 0.99
    parks = run("evaluate", str(pred), str(osm_file), "--truth-where", "leisure = 'park'",
                "--raster", str(raster), "--out", str(tmp_path / "p.json"))
    assert parks.exit_code == 0, parks.stderr
    assert json.loads((tmp_path / "p.json").read_text())["buildings"]["truth"] == 1


@pytest.fixture
def two_layers(tmp_path):
    """A GeoPackage with an ``aoi`` polygon layer first and ``buildings`` second."""
    path = tmp_path / "layers.gpkg"
    gpd.GeoDataFrame({"name": ["aoi"]}, geometry=[pixel_box(0, 0, 400, 300)],
                     crs="EPSG:32633").to_file(path, layer="aoi")
    gpd.GeoDataFrame({"kind": ["house", "shed", "house", "house", "garage", "house"]},
                     geometry=[pixel_box(*b) for b in BOXES],
                     crs="EPSG:32633").to_file(path, layer="buildings")
    return path


def test_several_polygon_layers_need_a_name(raster, two_layers, tmp_path):
    result = run("tile", str(raster), "-f", str(two_layers), "-o", str(tmp_path / "t"))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "2 polygon layers (aoi, buildings)" in lines[0]
    assert "--footprints-layer" in lines[0]
    bad = run("tile", str(raster), "-f", str(two_layers), "-o", str(tmp_path / "t"),
              "--footprints-layer", "houses")
    assert bad.exit_code == 1 and "no layer 'houses'" in bad.stderr
    assert "aoi, buildings" in bad.stderr
    out = tmp_path / "tiles"
    ok = run("tile", str(raster), "-f", str(two_layers), "-o", str(out), "--size", "128",
             "--keep-empty", "1", "--footprints-layer", "buildings",
             "--footprints-where", "kind = 'house'")
    assert ok.exit_code == 0, ok.stderr
    footprints = json.loads((out / "dataset.json").read_text())["footprints"]
    assert footprints["layer"] == "buildings" and footprints["where"] == "kind = 'house'"
    assert len(load_footprints(two_layers, layer="buildings", where="kind = 'house'").geoms) == 4
    # evaluate's TRUTH takes the same choice, with its own option names
    pred = tmp_path / "pred.gpkg"
    gpd.GeoDataFrame(geometry=[pixel_box(*b) for b in BOXES], crs="EPSG:32633").to_file(pred)
    ambiguous = run("evaluate", str(pred), str(two_layers))
    assert ambiguous.exit_code == 1 and "--truth-layer" in ambiguous.stderr
    scored = run("evaluate", str(pred), str(two_layers), "--truth-layer", "buildings",
                 "--out", str(tmp_path / "m.json"))
    assert scored.exit_code == 0, scored.stderr
    assert json.loads((tmp_path / "m.json").read_text())["buildings"]["truth"] == len(BOXES)


def test_a_filter_ogr_rejects_or_that_matches_nothing_is_one_line(raster, two_layers,
                                                                  tmp_path):
    # a bad filter is a bad option: named, with OGR's complaint but not its whole statement
    with pytest.raises(ConfigError, match=r"--footprints-where 'no_such_field = 1' is not an "
                       r"OGR SQL filter of .*: no such column: no_such_field$"):
        load_footprints(two_layers, layer="buildings", where="no_such_field = 1")
    with pytest.raises(InputError, match="no features matching \"kind = 'barn'\""):
        load_footprints(two_layers, layer="buildings", where="kind = 'barn'")
    result = run("tile", str(raster), "-f", str(two_layers), "-o", str(tmp_path / "t"),
                 "--footprints-layer", "buildings", "--footprints-where", "kind ==== 'x'")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "SELECT" not in lines[0]
    assert "syntax error (see '" in lines[0] and "tile --help')" in lines[0]


def test_geoparquet_footprints(raster, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "buildings.parquet"
    frame = gpd.GeoDataFrame({"id": range(len(BOXES))},
                             geometry=[pixel_box(*b) for b in BOXES], crs="EPSG:32633")
    frame.to_crs("EPSG:4326").to_parquet(path)
    fp = load_footprints(path)
    assert len(fp.geoms) == len(BOXES) and fp.crs.to_epsg() == 4326
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(path), "-o", str(out), "--size", "128")
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "dataset.json").read_text())["footprints"]["outside_rasters"] == 0
    with pytest.raises(ConfigError, match="GeoParquet"):
        load_footprints(path, where="id > 2")
