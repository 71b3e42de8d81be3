"""The HTML report: self-contained, shows the run's real numbers, escapes every name, refuses bad input."""

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from matplotlib.image import imread

from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.report import write_report


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags, self.text = [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def crop_map(tiny_run, tiny_scene, tmp_path_factory):
    from cropmap.prediction import predict_map

    out = tmp_path_factory.mktemp("report-map") / "map.tif"
    predict_map(tiny_run, tiny_scene.imagery, out)
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the evaluated run, so tests can edit or remove its files."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def test_report_is_self_contained_and_shows_the_metrics(tiny_run, crop_map, tmp_path):
    out = write_report(tiny_run, tmp_path / "report.html", map_path=crop_map)
    assert out == tmp_path / "report.html" and not (tiny_run / "report.html").exists()
    page = out.read_text(encoding="utf-8")
    m = json.loads((tiny_run / "metrics.json").read_text(encoding="utf-8"))
    doc = Tags(page)

    # nothing is fetched: no scripts, stylesheets, frames or links; every image is an inline PNG
    names = [t for t, _ in doc.tags]
    assert not {"script", "link", "iframe", "object", "embed", "a"} & set(names)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    for tag, attrs in doc.tags:
        assert "href" not in attrs
        if "src" in attrs:
            assert tag == "img" and attrs["src"].startswith("data:image/png;base64,")
    images = [base64.b64decode(a["src"].split(",", 1)[1]) for t, a in doc.tags if t == "img"]
    assert len(images) == 4  # confusion matrix, training curves, reliability diagram, quick-look
    assert images[0] == (tiny_run / "confusion.png").read_bytes()
    assert images[1] == (tiny_run / "curves.png").read_bytes()
    (tmp_path / "ql.png").write_bytes(images[2])
    assert imread(tmp_path / "ql.png").shape[1] > 600  # the map with its legend

    text = " ".join(doc.text)
    for key in ("overall_accuracy", "miou", "macro_f1", "kappa"):
        assert f"{m[key]:.3f}" in text
    assert m["model"] == "tempcnn-unet" and "tempcnn-unet" in text
    assert f"{m['parameters']:,}" in text and m["dataset"] in text and "test" in text
    # one table row per class, with its name (accents intact), support and scores
    assert page.count("<tr><td>") == len(m["per_class"]) == len(m["class_names"])
    for c in m["per_class"]:
        scores = "".join(f'<td class="num">{"–" if c[k] is None else f"{c[k]:.3f}"}</td>'
                         for k in ("precision", "recall", "f1", "iou"))
        assert f'<tr><td>{c["class"]}</td><td class="num">{c["support"]:,}</td>{scores}</tr>' in page
    assert any("é" in n for n in m["class_names"])
    assert "unet_base: 8" in text  # the training configuration


def test_names_are_escaped_and_confusion_redrawn_from_metrics(run_copy, tmp_path):
    hostile = 'Maïs <img src="http://x/y.png"> & "ensilage"'
    path = run_copy / "metrics.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["per_class"][1]["class"] = m["class_names"][1] = hostile
    m["dataset"] = "<script>alert(1)</script>"
    path.write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
    (run_copy / "confusion.png").unlink()

    page = write_report(run_copy).read_text(encoding="utf-8")  # default: RUN/report.html
    assert "Maïs &lt;img src=&quot;http://x/y.png&quot;&gt; &amp; &quot;ensilage&quot;" in page
    assert "<script" not in page and '<img src="http' not in page
    doc = Tags(page)
    imgs = [a for t, a in doc.tags if t == "img"]
    assert len(imgs) == 3 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert base64.b64decode(imgs[0]["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"  # drawn from the matrix


def test_overwrite_only_when_asked(run_copy, capsys):
    out = run_copy / "report.html"
    out.write_text("old")
    with pytest.raises(CropmapError, match="report.html: already exists \\(pass --overwrite"):
        write_report(run_copy)
    assert main(["report", "--run", str(run_copy)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "old"
    assert main(["report", "--run", str(run_copy), "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith(f"report {out} (")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_unevaluated_run_is_refused(run_copy, capsys):
    (run_copy / "metrics.json").unlink()
    with pytest.raises(CropmapError, match=r"no metrics.json; run `cropmap evaluate --run .* --data DATASET` first"):
        write_report(run_copy)
    assert main(["report", "--run", str(run_copy), "--out", str(run_copy / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cropmap: error: {run_copy}: no metrics.json")
    assert not list(run_copy.glob("*.html")) and not list(run_copy.glob(".*tmp*"))


@pytest.mark.parametrize("content, message", [("{not json", "not a readable metrics file (JSONDecodeError"),
                                              ('{"overall_accuracy": 1}', "not a cropmap metrics file (missing miou")])
def test_broken_metrics_are_refused(run_copy, content, message):
    (run_copy / "metrics.json").write_text(content)
    with pytest.raises(CropmapError) as err:
        write_report(run_copy)
    assert str(err.value).startswith(f"{run_copy / 'metrics.json'}: {message}")
    assert not (run_copy / "report.html").exists()


def test_bad_map_is_refused_without_output(run_copy):
    not_a_map = run_copy / "config.yaml"
    with pytest.raises(CropmapError, match=f"{not_a_map}: not a readable raster"):
        write_report(run_copy, map_path=not_a_map)
    assert not (run_copy / "report.html").exists() and not list(run_copy.glob(".report*"))


@pytest.fixture(scope="module")
def audited(tiny_run, tiny_scene, tmp_path_factory):
    """tiny_run's map (with uncertainty), parcel answers, audit and an area table from a hand sample."""
    import csv

    from cropmap.auditing import audit_parcels
    from cropmap.monitoring.areas import estimate_areas
    from cropmap.prediction import predict_map

    d = tmp_path_factory.mktemp("audited")
    s = predict_map(tiny_run, tiny_scene.imagery, d / "map.tif", parcels=tiny_scene.parcels,
                    parcels_out=d / "p.gpkg", uncertainty_out=d / "map.uncertainty.tif", quicklook=False)
    a = audit_parcels(s.parcels_path, d / "audit.csv")
    import pyogrio

    t = pyogrio.read_dataframe(d / "p.gpkg", layer="predictions").dropna(subset=["declared_class", "pred_class"])
    with open(d / "sample.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["map_class", "reference_class"])
        w.writerows(zip(t["pred_class"], t["declared_class"]))
    estimate_areas(s.map_path, d / "sample.csv", d / "areas.csv")
    return d, s, a


def test_report_with_audit_areas_and_uncertainty(tiny_run, tiny_dataset, audited):
    d, s, a = audited
    out = write_report(tiny_run, d / "report.html", map_path=s.map_path, audit=a.path, areas=d / "areas.csv",
                       uncertainty=s.uncertainty_path, data=tiny_dataset)
    text = out.read_text(encoding="utf-8")
    for heading in ("<h2>Calibration</h2>", "<h2>Audit</h2>", "Markers per declared class", "<h2>Uncertainty",
                    "<h2>Areas (stratified estimate"):
        assert heading in text
    assert "answered in-sample" in text  # tiny_run has no folds, and the report says so
    assert "http://" not in text and "https://" not in text.replace("https://www.w3.org", "")  # nothing fetched
    if a.markers["red"]:
        assert "NDVI of parcel" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium (Debian chromium) not installed")
def test_report_renders_in_headless_chromium(tiny_run, tiny_dataset, audited, tmp_path):
    d, s, a = audited
    out = write_report(tiny_run, tmp_path / "report.html", map_path=s.map_path, audit=a.path, areas=d / "areas.csv",
                       uncertainty=s.uncertainty_path, data=tiny_dataset)
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*args, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<h2>Audit</h2>" in dom.stdout and "<h2>Calibration</h2>" in dom.stdout
    shot = tmp_path / "shot.png"
    r = subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,3000", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG"


def test_report_shows_timeliness_and_links_the_review_page(run_copy, tiny_dataset, tmp_path):
    from cropmap.evaluation import evaluate_run

    evaluate_run(run_copy, tiny_dataset, split="test", timeliness=True)
    assert (run_copy / "timeliness.csv").exists() and (run_copy / "timeliness.png").read_bytes()[:4] == b"\x89PNG"
    (run_copy.parent / "review.html").write_text("<html></html>")
    page = write_report(run_copy, run_copy / "r.html", review=run_copy.parent / "review.html").read_text()
    assert "<h2>Timeliness</h2>" in page and '<a href="../review.html">review.html</a>' in page
