"""Default QGIS styles for geotiler's outputs, so that they look right when dragged into QGIS.

Why: QGIS draws a new polygon layer as grey fills and a two-band raster as a red/green
composite; neither shows what the file means. QGIS looks for a default style in two places,
and geotiler fills both:

* a GeoPackage's ``layer_styles`` table (the table QGIS itself creates with "Save as
  Default" into the database): one row per layer with ``useAsDefault`` = 1, the style as QML
  (``styleQML``) and SLD (``styleSLD``). ``buildings.gpkg`` gets outlines coloured by
  ``score`` (no fill, so the imagery shows through); ``index.gpkg`` tiles coloured by split.
* a ``.qml`` file beside a raster, with the raster's name (``buildings_prob.qml``): the
  probability GeoTIFF is drawn as a transparent-to-red ramp of its first band (the building
  probability), the mask as red buildings on transparent.

The table is written through OGR (:func:`add_layer_style`, as QGIS does, so GDAL lists it as
the attribute table ``layer_styles``), into the GeoPackage while it is still under its
temporary name; sidecars go through :func:`geotiler.atomic.write_text_atomic`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

#: The GeoPackage table QGIS reads default styles from.
STYLE_TABLE = "layer_styles"
#: Score classes of buildings.gpkg (mean footprint probability): (low, high, RGB, label).
SCORE_CLASSES: tuple[tuple[float, float, str, str], ...] = (
    (0.0, 0.6, "215,25,28", "score < 0.6"),
    (0.6, 0.75, "253,174,97", "0.6 - 0.75"),
    (0.75, 0.9, "166,217,106", "0.75 - 0.9"),
    (0.9, 1.0001, "26,150,65", "score >= 0.9"),
)
#: Fill colours of the tile splits in index.gpkg (RGB).
SPLIT_COLOURS: dict[str, str] = {"train": "31,120,180", "val": "255,127,0", "test": "227,26,28"}
OUTLINE_WIDTH_MM = 0.5


def _qml(body: str, kind: str = "vector") -> str:
    geometry = ' hasScaleBasedVisibilityFlag="0" styleCategories="Symbology"'
    head = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
    return f'{head}<qgis version="3.28.0"{geometry}>\n{body}\n' + (
        "<layerGeometryType>2</layerGeometryType>\n" if kind == "vector" else "") + "</qgis>\n"


def _fill_symbol(name: str, fill: str, outline: str, width: float, fill_alpha: int) -> str:
    props = {"color": f"{fill},{fill_alpha}", "outline_color": f"{outline},255",
             "outline_style": "solid", "outline_width": f"{width}", "outline_width_unit": "MM",
             "style": "solid" if fill_alpha else "no", "joinstyle": "miter"}
    options = "".join(f'<Option name="{k}" type="QString" value="{v}"/>' for k, v in props.items())
    return (f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="SimpleFill" enabled="1" locked="0" pass="0">'
            f'<Option type="Map">{options}</Option></layer></symbol>')


def buildings_qml() -> str:
    """QML of buildings.gpkg: outlines coloured by ``score`` (graduated), no fill."""
    ranges = "".join(
        f'<range lower="{lo}" upper="{hi}" symbol="{k}" label={quoteattr(label)} render="true"/>'
        for k, (lo, hi, _, label) in enumerate(SCORE_CLASSES))
    symbols = "".join(_fill_symbol(str(k), rgb, rgb, OUTLINE_WIDTH_MM, 0)
                      for k, (_, _, rgb, _) in enumerate(SCORE_CLASSES))
    return _qml(f'<renderer-v2 type="graduatedSymbol" attr="score" graduatedMethod="GraduatedColor"'
                f' symbollevels="0" enableorderby="0" forceraster="0">'
                f"<ranges>{ranges}</ranges><symbols>{symbols}</symbols>"
                '<mode name="manual"/></renderer-v2>')


def index_qml() -> str:
    """QML of index.gpkg: tiles filled by ``split`` (train blue, val orange, test red)."""
    cats = "".join(f'<category value="{s}" symbol="{k}" label="{s}" render="true"/>'
                   for k, s in enumerate(SPLIT_COLOURS))
    symbols = "".join(_fill_symbol(str(k), rgb, rgb, 0.26, 90)
                      for k, rgb in enumerate(SPLIT_COLOURS.values()))
    return _qml(f'<renderer-v2 type="categorizedSymbol" attr="split" symbollevels="0" '
                f'enableorderby="0" forceraster="0"><categories>{cats}</categories>'
                f"<symbols>{symbols}</symbols></renderer-v2>")


def _hex(rgb: str) -> str:
    """``"31,120,180"`` -> ``"#1f78b4"``."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb.split(",")[:3])


def _sld_rule(name: str, condition: str, fill: str | None, stroke: str, width_px: float) -> str:
    hexa = _hex(stroke)
    fill_xml = ("" if fill is None else
                f'<se:Fill><se:SvgParameter name="fill">{_hex(fill)}'
                '</se:SvgParameter><se:SvgParameter name="fill-opacity">0.35</se:SvgParameter>'
                "</se:Fill>")
    return (f"<se:Rule><se:Name>{escape(name)}</se:Name>{condition}<se:PolygonSymbolizer>"
            f"{fill_xml}<se:Stroke><se:SvgParameter name=\"stroke\">{hexa}</se:SvgParameter>"
            f'<se:SvgParameter name="stroke-width">{width_px}</se:SvgParameter></se:Stroke>'
            "</se:PolygonSymbolizer></se:Rule>")


def _sld(layer: str, rules: Sequence[str]) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><StyledLayerDescriptor version="1.1.0" '
            'xmlns="http://www.opengis.net/sld" xmlns:ogc="http://www.opengis.net/ogc" '
            'xmlns:se="http://www.opengis.net/se">'
            f"<NamedLayer><se:Name>{escape(layer)}</se:Name><UserStyle>"
            f"<se:Name>{escape(layer)}</se:Name><se:FeatureTypeStyle>{''.join(rules)}"
            "</se:FeatureTypeStyle></UserStyle></NamedLayer></StyledLayerDescriptor>")


def buildings_sld(layer: str = "buildings") -> str:
    """SLD equivalent of :func:`buildings_qml` (for other clients, e.g. GeoServer)."""
    rules = [_sld_rule(label, "<ogc:Filter><ogc:And><ogc:PropertyIsGreaterThanOrEqualTo>"
                       f"<ogc:PropertyName>score</ogc:PropertyName><ogc:Literal>{lo}</ogc:Literal>"
                       "</ogc:PropertyIsGreaterThanOrEqualTo><ogc:PropertyIsLessThan>"
                       f"<ogc:PropertyName>score</ogc:PropertyName><ogc:Literal>{hi}</ogc:Literal>"
                       "</ogc:PropertyIsLessThan></ogc:And></ogc:Filter>", None, rgb, 2)
             for lo, hi, rgb, label in SCORE_CLASSES]
    return _sld(layer, rules)


def index_sld(layer: str = "tiles") -> str:
    """SLD equivalent of :func:`index_qml`."""
    rules = [_sld_rule(split, "<ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>split"
                       f"</ogc:PropertyName><ogc:Literal>{split}</ogc:Literal>"
                       "</ogc:PropertyIsEqualTo></ogc:Filter>", rgb, rgb, 1)
             for split, rgb in SPLIT_COLOURS.items()]
    return _sld(layer, rules)


def add_layer_style(gpkg: Path, layer: str, qml: str, sld: str, name: str,
                    description: str = "") -> None:
    """Add a default style row for ``layer`` to the ``layer_styles`` table of ``gpkg``
    (created as QGIS creates it: an OGR attribute table with its columns).

    Raises OSError/pyogrio errors from the writer (callers write into a temporary file).
    """
    import pandas as pd
    import pyogrio

    geometry_column = pyogrio.read_info(gpkg, layer=layer).get("geometry_name") or "geom"

    row = pd.DataFrame({
        "f_table_catalog": [""], "f_table_schema": [""], "f_table_name": [layer],
        "f_geometry_column": [geometry_column], "styleName": [name], "styleQML": [qml],
        "styleSLD": [sld], "useAsDefault": [True], "description": [description],
        "owner": ["geotiler"], "ui": [""],
        "update_time": [dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)],
    })
    exists = STYLE_TABLE in {str(n) for n, _ in pyogrio.list_layers(gpkg)}
    pyogrio.write_dataframe(row, gpkg, layer=STYLE_TABLE, driver="GPKG", append=exists)


def probability_qml(band: int = 1, label: str = "building probability") -> str:
    """QML of the probability GeoTIFF: band ``band`` (uint8, probability x 255) as a ramp
    from transparent (0) through yellow to red (255)."""
    stops = ((0, "255,255,178,0", "0"), (64, "254,204,92,140", "0.25"),
             (128, "253,141,60,200", "0.5"), (191, "240,59,32,230", "0.75"),
             (255, "189,0,38,255", "1"))
    items = "".join(
        f'<item alpha="{rgba.split(",")[3]}" value="{v}" label="{lab}" '
        f'color="{_hex(rgba)}"/>'
        for v, rgba, lab in stops)
    body = (f'<pipe><provider><resampling enabled="false"/></provider>'
            f'<rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" '
            f'alphaBand="-1" classificationMin="0" classificationMax="255" nodataColor="">'
            f"<rasterTransparency/><minMaxOrigin><limits>None</limits><extent>WholeRaster"
            f"</extent><statAccuracy>Estimated</statAccuracy></minMaxOrigin>"
            f'<rastershader><colorrampshader colorRampType="INTERPOLATED" classificationMode="1"'
            f' clip="0" minimumValue="0" maximumValue="255" labelPrecision="2">{items}'
            f"</colorrampshader></rastershader></rasterrenderer>"
            f'<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
            f'<huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/></pipe>'
            f"<blendMode>0</blendMode><!-- {escape(label)} -->")
    return _qml(body, kind="raster")


def mask_qml() -> str:
    """QML of the mask GeoTIFF: 1 (building) red, 0 transparent (255 is nodata)."""
    body = ('<pipe><rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" '
            'nodataColor=""><rasterTransparency/><colorPalette>'
            '<paletteEntry value="0" color="#000000" alpha="0" label="not building"/>'
            '<paletteEntry value="1" color="#e31a1c" alpha="255" label="building"/>'
            "</colorPalette></rasterrenderer></pipe><blendMode>0</blendMode>")
    return _qml(body, kind="raster")


def sidecar_path(raster: Path) -> Path:
    """Where QGIS looks for a raster's default style: ``name.qml`` beside ``name.tif``."""
    return raster.with_suffix(".qml")
