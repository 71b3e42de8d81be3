"""Styles other tools read: a QGIS ``.qml`` beside a file (QGIS loads ``name.qml`` with ``name.tif`` or
``name.gpkg`` by itself) and GDAL's category names (``map.tif.aux.xml``, which gdalinfo, QGIS and every
GDAL reader show as the band's categories), so that a map's legend says "Blé tendre", not 3."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr, escape

# marker -> (RGBA fill, legend label)
MARKER_STYLE = {"red": ((215, 25, 28, 200), "red: another crop confidently predicted"),
                "orange": ((253, 174, 97, 200), "orange: evidence too weak to say"),
                "green": ((26, 150, 65, 160), "green: declared crop confirmed")}


def class_map_qml(names: list[str], colors: list[tuple[int, int, int]]) -> str:
    """A paletted raster style: one entry per class index with its colour and name."""
    entries = "\n".join(f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" '
                        f"label={quoteattr(name)}/>" for i, (name, (r, g, b)) in enumerate(zip(names, colors)))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28" styleCategories="AllStyleCategories">\n  <pipe>\n'
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
            f"      <colorPalette>\n{entries}\n      </colorPalette>\n"
            "    </rasterrenderer>\n  </pipe>\n</qgis>\n")


def category_names_aux(names: list[str]) -> str:
    """GDAL PAM sidecar giving band 1 its category names (index = class)."""
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    return (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>{cats}</CategoryNames>\n'
            "  </PAMRasterBand>\n</PAMDataset>\n")


def marker_qml(field: str = "marker") -> str:
    """A categorised polygon style colouring parcels by ``field`` (green / orange / red)."""
    cats, symbols = [], []
    for i, (value, ((r, g, b, a), label)) in enumerate(MARKER_STYLE.items()):
        cats.append(f'      <category render="true" value={quoteattr(value)} symbol="{i}" label={quoteattr(label)}/>')
        symbols.append(
            f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
            '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n          <Option type="Map">\n'
            f'            <Option name="color" type="QString" value="{r},{g},{b},{a}"/>\n'
            '            <Option name="outline_color" type="QString" value="35,35,35,255"/>\n'
            '            <Option name="outline_width" type="QString" value="0.26"/>\n'
            '            <Option name="style" type="QString" value="solid"/>\n'
            "          </Option>\n        </layer>\n      </symbol>")
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28" styleCategories="Symbology">\n'
            f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" forceraster="0" '
            'enableorderby="0">\n'
            "    <categories>\n" + "\n".join(cats) + "\n    </categories>\n"
            "    <symbols>\n" + "\n".join(symbols) + "\n    </symbols>\n  </renderer-v2>\n</qgis>\n")


def style_paths(path: Path | str) -> tuple[Path, Path]:
    """``(name.qml, name.tif.aux.xml)`` beside ``path``."""
    path = Path(path)
    return path.with_suffix(".qml"), path.with_name(path.name + ".aux.xml")
