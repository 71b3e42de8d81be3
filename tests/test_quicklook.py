"""Quick-looks of crop maps: colours and legend of the classes present, decimated reads, clear refusals."""

import json

import numpy as np
import pytest
import rasterio
from matplotlib.image import imread
from rasterio.transform import from_origin

from cropmap.errors import CropmapError
from cropmap.quicklook import legend_entries, read_map_preview, render_quicklook

RED, GREEN, BLUE = (255, 0, 0), (0, 200, 0), (0, 0, 255)


def write_map(path, classes, *, names=("rouge", "vert", "bleu"), colors=(RED, GREEN, BLUE), tags=True,
              overviews=False):
    """A map in the format `cropmap predict` writes: uint8 class indices, colour table, nodata 255, tags."""
    with rasterio.open(path, "w", driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1,
                       dtype="uint8", crs="EPSG:32630", transform=from_origin(700000, 5170000, 10, 10), nodata=255,
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(classes, 1)
        dst.write_colormap(1, {**{i: (*c, 255) for i, c in enumerate(colors)}, 255: (0, 0, 0, 0)})
        if tags:
            dst.update_tags(CLASS_NAMES=json.dumps(list(names)), CLASS_LEVEL="group", MODEL="tempcnn-unet")
        if overviews:
            dst.build_overviews([2, 4, 8, 16], rasterio.enums.Resampling.mode)
    return path


def rgb_pixels(png):
    img = imread(png)  # [H, W, 3|4] float in 0..1
    return np.round(img[..., :3] * 255).astype(np.uint8)


def has_color(rgb, color):
    return bool((rgb == np.array(color, dtype=np.uint8)).all(-1).any())


@pytest.fixture(scope="module")
def predicted_map(tiny_run, tiny_scene, tmp_path_factory):
    from cropmap.prediction import predict_map

    out = tmp_path_factory.mktemp("quicklook") / "map.tif"
    predict_map(tiny_run, tiny_scene.imagery, out)
    return out


def test_quicklook_of_a_predicted_map_shows_each_class_present(predicted_map, tmp_path):
    png = render_quicklook(predicted_map, tmp_path / "look.png")
    assert png == tmp_path / "look.png"
    rgb = rgb_pixels(png)
    with rasterio.open(predicted_map) as src:
        a, cmap = src.read(1), src.colormap(1)
    present = {int(v) for v in np.unique(a)} - {255}
    assert present
    for v in present:  # map pixels and legend patches carry the class colour exactly
        assert has_color(rgb, cmap[v][:3]), (v, cmap[v])
    for v, rgba in cmap.items():  # absent classes get no patch (greys also occur in anti-aliased text)
        if v != 255 and v not in present and len(set(rgba[:3])) > 1:
            assert not has_color(rgb, rgba[:3]), (v, rgba)
    # a 96 px map is drawn at least 4 in (400 px) wide, with the legend strip on its right
    assert rgb.shape[1] >= 400 + 300 and rgb.shape[0] >= 400
    assert not list(tmp_path.glob(".look.png*"))


def test_legend_shares_nodata_and_layout(tmp_path):
    classes = np.full((100, 200), 255, dtype=np.uint8)  # left half: no observation
    classes[:, 100:175] = 0  # 75 % of the mapped pixels
    classes[:, 175:] = 2  # 25 %
    path = write_map(tmp_path / "m.tif", classes)
    entries = legend_entries(read_map_preview(path))
    assert [(e.name, e.color, e.share) for e in entries] == [("rouge", RED, 0.75), ("bleu", BLUE, 0.25)]

    rgb = rgb_pixels(render_quicklook(path, tmp_path / "m.png"))
    assert rgb.shape[:2] == (250, 400 + 340)  # map 4 x 2 in + title, legend strip 3.4 in, at 100 dpi
    assert not has_color(rgb, GREEN)
    # the map is 400 x 200 px: red on 3/8 of it, and the nodata half white, not black
    assert abs((rgb == RED).all(-1).sum() - 0.375 * 400 * 200) < 0.03 * 400 * 200
    assert (rgb == 0).all(-1).mean() < 0.01
    legend = rgb[:, 420:]
    assert (legend.max(-1) < 100).sum() > 200  # dark text: class names and shares


def test_large_map_is_read_decimated(tmp_path):
    classes = np.zeros((1500, 3000), dtype=np.uint8)
    classes[:, 1500:] = 1
    path = write_map(tmp_path / "big.tif", classes, overviews=True)
    p = read_map_preview(path, max_side=300)
    assert p.classes.shape == (150, 300) and p.full_shape == (1500, 3000)
    assert (p.classes[:, :149] == 0).all() and (p.classes[:, 151:] == 1).all()
    rgb = rgb_pixels(render_quicklook(path, tmp_path / "big.png", max_side=300))
    assert rgb.shape == (250, 400 + 340, 3)  # the map at its 4 in minimum, not 30 in


@pytest.mark.parametrize("case, message", [
    ("rgb", "not a cropmap map (expected one uint8 band of class indices, found 3 band(s) of uint16)"),
    ("untagged", "not a cropmap map (no CLASS_NAMES tag"),
    ("text", "not a readable raster"),
    ("missing", "map does not exist"),
])
def test_foreign_files_are_refused(case, message, tmp_path):
    path = tmp_path / f"{case}.tif"
    if case == "rgb":
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint16", crs="EPSG:32630",
                           transform=from_origin(700000, 5170000, 10, 10)) as dst:
            dst.write(np.ones((3, 8, 8), dtype=np.uint16))
    elif case == "untagged":
        write_map(path, np.zeros((8, 8), dtype=np.uint8), tags=False)
    elif case == "text":
        path.write_text("not a raster")
    with pytest.raises(CropmapError) as err:
        render_quicklook(path, tmp_path / "out.png")
    assert str(err.value).startswith(f"{path}: {message}")
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".png" or ".out.png" in p.name]
