"""`evaluate` on hand-made cases with known answers, and `geotiler evaluate` on the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.errors import InputError
from geotiler.evaluate import building_metrics, evaluate, match_buildings

from conftest import pixel_box, write_footprints, write_raster

BOXES = [(10, 10, 40, 30), (60, 12, 90, 50), (20, 60, 50, 90), (110, 70, 150, 100)]
SHAPE = (120, 180)  # rows, cols


def mask_tif(path, boxes, nodata=None):
    data = np.zeros((1, *SHAPE), np.uint8)
    for c0, r0, c1, r1 in boxes:
        data[0, r0:r1, c0:c1] = 1
    return write_raster(path, data, nodata=nodata)


def truth_gpkg(path, boxes=BOXES, crs="EPSG:32633"):
    polys = [pixel_box(*b) for b in boxes]
    if crs != "EPSG:32633":
        import geopandas as gpd

        polys = list(gpd.GeoSeries(polys, crs="EPSG:32633").to_crs(crs))
    return write_footprints(path, polys, crs)


def test_perfect_prediction_scores_one(tmp_path):
    report = evaluate(mask_tif(tmp_path / "m.tif", BOXES), truth_gpkg(tmp_path / "t.gpkg"))
    p, b, e = report.pixels, report.buildings, report.boundary
    assert p is not None and e is not None
    assert (p.iou, p.precision, p.recall, p.f1) == (1.0, 1.0, 1.0, 1.0)
    assert (p.pixel_accuracy, p.mean_accuracy, p.mean_iou, p.fw_iou) == (1.0, 1.0, 1.0, 1.0)
    assert (b.predicted, b.truth, b.matched) == (4, 4, 4)
    assert (b.precision, b.recall, b.f1, b.mean_iou) == (1.0, 1.0, 1.0, 1.0)
    assert e.f_score == 1.0 and e.tolerance_px == pytest.approx(2.0)
    assert p.tp == sum((c1 - c0) * (r1 - r0) for c0, r0, c1, r1 in BOXES)


def test_a_mask_is_scored_per_component_and_names_predicts_polygons(tmp_path):
    """Two touching boxes in a mask are one building (its connected component); the report
    says so, and names predict's polygons beside the mask, which hold them apart."""
    touching = [(10, 10, 40, 30), (40, 10, 70, 30)]
    truth = truth_gpkg(tmp_path / "t.gpkg", touching)
    report = evaluate(mask_tif(tmp_path / "b_mask.tif", touching), truth)
    assert report.buildings.predicted == 1 and report.buildings.truth == 2
    assert any("connected components" in n for n in report.notes)
    assert not any("b.gpkg" in n for n in report.notes)
    write_footprints(tmp_path / "b.gpkg", [pixel_box(*b) for b in touching], "EPSG:32633")
    report = evaluate(tmp_path / "b_mask.tif", truth)
    assert any(str(tmp_path / "b.gpkg") in n for n in report.notes)
    assert evaluate(tmp_path / "b.gpkg", truth).buildings.matched == 2


def test_edge_band_is_one_ring_each_side_per_pixel_of_width():
    from geotiler.metrics import edge_band

    truth = np.zeros((12, 12), bool)
    truth[3:9, 3:9] = True
    band = edge_band(truth, 1.0)
    assert band[3:9, 3:9].sum() == 36 - 16  # the outer ring of the 6 x 6 house
    assert band[2:10, 2:10].sum() - band[3:9, 3:9].sum() == 64 - 36  # one ring outside
    assert not band[:2].any() and not band[4:8, 4:8].any()
    assert not edge_band(truth, 0.0).any() and not edge_band(np.zeros((4, 4), bool), 2).any()


def test_errors_are_sorted_into_edges_false_detections_and_misses(tmp_path):
    """Outlines one pixel off are all edge errors; a blob far from any house is a false
    detection and a house nothing touches is missed, and neither is an edge error."""
    truth = truth_gpkg(tmp_path / "t.gpkg")
    shifted = [(c0 + 1, r0, c1 + 1, r1) for c0, r0, c1, r1 in BOXES]
    report = evaluate(mask_tif(tmp_path / "a.tif", shifted), truth)  # 0.5 m px, 1 m tolerance
    p, b = report.pixels, report.buildings
    assert p is not None and p.fp + p.fn > 0 and p.edge_errors == p.fp + p.fn
    assert (b.false_detections, b.missed) == (0, 0)
    blob, kept = (150, 10, 170, 30), shifted[:3]  # BOXES[3] is missed
    report = evaluate(mask_tif(tmp_path / "b.tif", [*kept, blob]), truth)
    p, b = report.pixels, report.buildings
    assert (b.false_detections, b.missed) == (1, 1)
    # not edge errors: the whole blob (far from any outline) and the missed 40 x 30 px house
    # less its two inner rings (1 m = 2 px here)
    assert p.fp + p.fn - p.edge_errors == 20 * 20 + (40 - 4) * (30 - 4)
    assert 0 < p.edge_error_share < 1
    assert "wrong pixels within 1 m of a true outline" in report.format_table()


def test_empty_prediction_scores_zero_without_crashing(tmp_path):
    report = evaluate(mask_tif(tmp_path / "m.tif", []), truth_gpkg(tmp_path / "t.gpkg"))
    p, b = report.pixels, report.buildings
    assert p is not None and report.boundary is not None
    assert (p.iou, p.precision, p.recall, p.f1) == (0.0, 0.0, 0.0, 0.0)
    assert (b.predicted, b.matched, b.precision, b.recall, b.f1) == (0, 0, 0.0, 0.0, 0.0)
    assert report.boundary.f_score == 0.0
    building = sum((c1 - c0) * (r1 - r0) for c0, r0, c1, r1 in BOXES)
    total = SHAPE[0] * SHAPE[1]
    background = total - building
    assert p.pixel_accuracy == pytest.approx(background / total)
    assert p.mean_accuracy == pytest.approx(0.5)
    assert p.mean_iou == pytest.approx(background / total / 2)
    assert p.fw_iou == pytest.approx((background / total) ** 2)

    empty = write_footprints(tmp_path / "empty.gpkg", [], "EPSG:32633")
    mask_tif(tmp_path / "empty_mask.tif", [])
    report = evaluate(empty, tmp_path / "t.gpkg")
    assert report.buildings.predicted == 0 and report.buildings.f1 == 0.0
    assert report.pixels is not None and report.pixels.iou == 0.0


def test_one_building_moved_gives_known_per_building_scores(tmp_path):
    moved = [*BOXES[:3], (150, 5, 175, 25)]  # the last one somewhere with no building
    pred = write_footprints(tmp_path / "pred.gpkg", [pixel_box(*b) for b in moved],
                            "EPSG:32633")
    raster = mask_tif(tmp_path / "grid.tif", [])
    report = evaluate(pred, truth_gpkg(tmp_path / "t.gpkg"), raster)
    b = report.buildings
    assert (b.predicted, b.truth, b.matched) == (4, 4, 3)
    assert b.precision == pytest.approx(0.75) and b.recall == pytest.approx(0.75)
    assert b.f1 == pytest.approx(0.75)
    p = report.pixels
    assert p is not None
    moved_px, lost_px = 25 * 20, 40 * 30
    assert (p.fp, p.fn) == (moved_px, lost_px)


def test_truth_in_another_crs_and_outside_the_extent(tmp_path):
    far = (400, 400, 420, 420)  # beyond the 180 x 120 px raster
    truth = truth_gpkg(tmp_path / "t.gpkg", [*BOXES, far], crs="EPSG:4326")
    report = evaluate(mask_tif(tmp_path / "m.tif", BOXES), truth)
    assert report.buildings.truth == 4 and report.buildings.recall == 1.0
    assert report.pixels is not None and report.pixels.iou > 0.97
    assert any("outside the extent" in n for n in report.notes)


def test_polygons_without_a_grid_skip_pixel_scores(tmp_path):
    pred = write_footprints(tmp_path / "p.gpkg", [pixel_box(*b) for b in BOXES], "EPSG:32633")
    report = evaluate(pred, truth_gpkg(tmp_path / "t.gpkg"))
    assert report.pixels is None and report.boundary is None
    assert report.buildings.f1 == 1.0
    assert "pixel" in report.format_table()


def test_truth_elsewhere_fails_loudly(tmp_path):
    truth = write_footprints(tmp_path / "t.gpkg", [pixel_box(5000, 5000, 5010, 5010)],
                             "EPSG:32633")
    with pytest.raises(InputError, match="no footprint"):
        evaluate(mask_tif(tmp_path / "m.tif", BOXES), truth)


def test_matching_is_one_to_one_and_greedy_by_iou():
    truth = np.array([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)], dtype=object)
    pred = np.array([shapely.box(1, 0, 11, 10),  # IoU 9/11 with truth 0
                     shapely.box(0, 0, 10, 10),  # IoU 1 with truth 0
                     shapely.box(30, 0, 40, 10)], dtype=object)
    p_idx, t_idx, iou = match_buildings(pred, truth)
    assert list(zip(p_idx, t_idx, strict=True)) == [(1, 0)]
    assert iou[0] == 1.0
    m = building_metrics(pred, truth)
    assert m.precision == pytest.approx(1 / 3) and m.recall == pytest.approx(0.5)


def test_cli_prints_a_table_and_writes_json(tmp_path):
    mask = mask_tif(tmp_path / "m.tif", BOXES, nodata=255)
    truth = truth_gpkg(tmp_path / "t.gpkg")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["-q", "evaluate", str(mask), str(truth), "--out",
                                       str(out), "--tolerance", "0.5"])
    assert result.exit_code == 0, result.stderr
    assert "pixel IoU" in result.output and "building F1" in result.output
    data = json.loads(out.read_text())
    assert data["pixels"]["iou"] == 1.0 and data["boundary"]["tolerance_m"] == 0.5
    again = CliRunner().invoke(main, ["evaluate", str(mask), str(truth), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    # an --out that cannot be written fails before the scoring: no table, one line
    under_file = CliRunner().invoke(main, ["evaluate", str(mask), str(truth), "--out",
                                           str(mask / "metrics.json")])
    assert under_file.exit_code == 1 and "pixel IoU" not in under_file.output
    assert next(ln for ln in under_file.stderr.splitlines() if ln.strip()).startswith("Error:")


@pytest.mark.parametrize("which", ["pred", "truth"])
def test_out_never_replaces_an_input_even_with_overwrite(tmp_path, which):
    """``-o`` typed as one of the inputs once wrote the JSON over the truth labels."""
    mask = mask_tif(tmp_path / "m.tif", BOXES, nodata=255)
    truth = truth_gpkg(tmp_path / "t.gpkg")
    target = {"pred": mask, "truth": truth}[which]
    before = target.read_bytes()
    result = CliRunner().invoke(main, ["evaluate", str(mask), str(truth), "-o", str(target),
                                       "--overwrite"])
    assert result.exit_code == 1 and "pixel IoU" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [f"Error: --out {target} is the input {target}; give another --out"]
    assert target.read_bytes() == before


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_a_prediction_of_points_is_refused_as_truth_is(tmp_path):
    points = write_footprints(tmp_path / "p.gpkg", [shapely.Point(600010, 5000010)],
                              "EPSG:32633")
    truth = truth_gpkg(tmp_path / "t.gpkg")
    with pytest.raises(InputError, match=r"holds 1 feature.* but no polygons"):
        evaluate(points, truth, raster=mask_tif(tmp_path / "m.tif", BOXES))
    with pytest.raises(InputError, match="hold no polygons"):
        evaluate(truth, points, raster=mask_tif(tmp_path / "m.tif", BOXES))


def test_a_prediction_with_several_polygon_layers_needs_pred_layer(tmp_path):
    import geopandas as gpd

    pred = tmp_path / "p.gpkg"
    for name, boxes in (("good", BOXES), ("bad", BOXES[:1])):
        gpd.GeoDataFrame(geometry=[pixel_box(*b) for b in boxes], crs="EPSG:32633").to_file(
            pred, layer=name)
    truth, mask = truth_gpkg(tmp_path / "t.gpkg"), mask_tif(tmp_path / "m.tif", BOXES)
    result = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--raster",
                                       str(mask)])
    assert result.exit_code == 1
    assert "hold 2 polygon layers (good, bad); choose one with --pred-layer" in result.stderr
    report = evaluate(pred, truth, raster=mask, pred_layer="good")
    assert report.buildings.f1 == 1.0
    assert evaluate(pred, truth, raster=mask, pred_layer="bad").buildings.predicted == 1


def test_a_mask_of_nodata_only_is_refused_not_scored_perfect(tmp_path):
    # the mask predict writes for an all-nodata raster: 0/0 would read as IoU 1.0
    mask = write_raster(tmp_path / "m.tif", np.full((1, *SHAPE), 255, np.uint8), nodata=255)
    result = CliRunner().invoke(main, ["evaluate", str(mask), str(truth_gpkg(tmp_path / "t.gpkg"))])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {mask} has no valid pixel (nodata everywhere): there is nothing "
                     "to score"]
    assert "1.0000" not in result.output


def test_a_failed_evaluation_leaves_no_folder_for_its_report(tmp_path):
    mask = write_raster(tmp_path / "m.tif", np.full((1, *SHAPE), 255, np.uint8), nodata=255)
    out = tmp_path / "reports" / "run1" / "m.json"
    result = CliRunner().invoke(main, ["evaluate", str(mask), str(truth_gpkg(tmp_path / "t.gpkg")),
                                       "-o", str(out)])
    assert result.exit_code == 1
    assert not (tmp_path / "reports").exists()


def test_cli_truth_without_crs_is_a_one_line_error(tmp_path):
    mask = mask_tif(tmp_path / "m.tif", BOXES)
    truth = write_footprints(tmp_path / "t.gpkg", [pixel_box(*b) for b in BOXES], None)
    result = CliRunner().invoke(main, ["evaluate", str(mask), str(truth)])
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no CRS" in lines[0]


def test_cli_defaults_are_the_config_defaults():
    from geotiler.evaluate import EvalConfig

    params = {p.name: p.default for p in main.commands["evaluate"].params}
    assert params["tolerance"] == EvalConfig().tolerance
    assert params["iou_threshold"] == EvalConfig().iou_threshold


@pytest.mark.parametrize("args", [{"tolerance": -1.0}, {"iou_threshold": 0.0},
                                  {"iou_threshold": 1.5}])
def test_config_refuses_values_out_of_range(args):
    from geotiler.errors import ConfigError
    from geotiler.evaluate import EvalConfig

    with pytest.raises(ConfigError):
        EvalConfig(**args)


def test_config_sets_tolerance_and_threshold(tmp_path):
    from geotiler.evaluate import EvalConfig

    report = evaluate(mask_tif(tmp_path / "m.tif", BOXES), truth_gpkg(tmp_path / "t.gpkg"),
                      config=EvalConfig(tolerance=1.5, iou_threshold=0.9))
    assert report.boundary is not None and report.boundary.tolerance_m == 1.5
    assert report.boundary.tolerance_px == pytest.approx(3.0)
    assert report.buildings.iou_threshold == 0.9


def test_saved_report_is_strict_json_written_atomically(tmp_path):
    from geotiler.errors import OutputError
    from geotiler.evaluate import save_report

    report = evaluate(mask_tif(tmp_path / "m.tif", BOXES), truth_gpkg(tmp_path / "t.gpkg"))
    assert report.pixels is not None
    report.pixels.iou = float("nan")
    out = tmp_path / "sub" / "metrics.json"
    save_report(report, out)
    data = json.loads(out.read_text())  # parses: NaN became null
    assert data["pixels"]["iou"] is None and data["buildings"]["f1"] == 1.0
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json"]
    with pytest.raises(OutputError, match="--overwrite"):
        save_report(report, out)


def test_a_tolerance_far_above_building_scale_is_noted(tmp_path):
    """``--tolerance 100`` (100 m, perhaps meant as cm) scores outlines 100 m off as right:
    the report says so; the default 1 m says nothing."""
    from geotiler.evaluate import EvalConfig

    mask, truth = mask_tif(tmp_path / "m.tif", BOXES), truth_gpkg(tmp_path / "t.gpkg")
    far = evaluate(mask, truth, config=EvalConfig(tolerance=100))
    assert any("--tolerance 100 m counts an outline up to 100 m off" in n for n in far.notes)
    assert not any("--tolerance" in n for n in evaluate(mask, truth).notes)
