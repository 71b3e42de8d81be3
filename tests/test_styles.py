"""Class names where QGIS and GDAL look: a paletted .qml and the band's category names (map.tif.aux.xml)."""

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from cropmap.prediction import predict_map
from cropmap.styles import category_names_aux, class_map_qml


def test_qml_and_category_names_are_valid_xml_with_every_class():
    names, colors = ["Hors parcelles", "Blé tendre & <co>"], [(10, 20, 30), (255, 0, 128)]
    qml = ET.fromstring(class_map_qml(names, colors).split("\n", 1)[1])
    entries = list(qml.iter("paletteEntry"))
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == \
        [("0", "Hors parcelles", "#0a141e"), ("1", "Blé tendre & <co>", "#ff0080")]
    aux = ET.fromstring(category_names_aux(names))
    assert [c.text for c in aux.iter("Category")] == names


@pytest.fixture(scope="module")
def mapped(tiny_run, tiny_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("styled") / "map.tif"
    predict_map(tiny_run, tiny_scene.imagery, out, quicklook=False)
    return out


def test_predict_writes_the_styles_beside_the_map(mapped, tiny_run):
    from cropmap.checkpoint import load_checkpoint

    names = list(load_checkpoint(tiny_run).class_table.names)
    qml = ET.fromstring(mapped.with_suffix(".qml").read_text(encoding="utf-8").split("\n", 1)[1])
    assert [e.get("label") for e in qml.iter("paletteEntry")] == names
    aux = ET.fromstring(mapped.with_name("map.tif.aux.xml").read_text(encoding="utf-8"))
    assert [c.text for c in aux.iter("Category")] == names


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) not installed")
def test_gdalinfo_lists_the_class_names(mapped, tiny_run):
    from cropmap.checkpoint import load_checkpoint

    out = subprocess.run(["gdalinfo", str(mapped)], capture_output=True, text=True, check=True).stdout
    assert "Categories:" in out
    for i, name in enumerate(load_checkpoint(tiny_run).class_table.names):
        assert f"{i}: {name}" in out


def test_uncertainty_raster(tiny_run, tiny_scene, tmp_path):
    """Entropy and margin bands, consistent with the probabilities written beside them."""
    import numpy as np
    import rasterio

    from cropmap.prediction.scene import uncertainty

    p = np.array([[[1.0]], [[0.0]], [[0.0]]]), np.full((3, 1, 1), 1 / 3)
    assert uncertainty(p[0])[:, 0, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    assert uncertainty(p[1])[:, 0, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    s = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "m.tif", quicklook=False,
                    probabilities_out=tmp_path / "m.probabilities.tif", uncertainty_out=tmp_path / "m.uncertainty.tif")
    assert s.uncertainty_path == tmp_path / "m.uncertainty.tif"
    with rasterio.open(s.uncertainty_path) as u, rasterio.open(tmp_path / "m.probabilities.tif") as pr:
        assert u.count == 2 and u.descriptions[0].startswith("normalised entropy")
        ent, margin = u.read(1).astype(float) / 100, u.read(2).astype(float) / 100
        prob = pr.read().astype(float) / 100
    valid = ent <= 1
    top = np.sort(prob, axis=0)
    assert np.abs(margin[valid] - (top[-1] - top[-2])[valid]).max() <= 0.03  # percent rounding of both rasters
