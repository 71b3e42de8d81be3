"""The review page: one offline file; headless Chromium loads it without a request leaving the file, and a
scripted click on a parcel shows its panel."""

import json
import shutil
import subprocess

import pyogrio
import pytest

from cropmap.auditing import audit_parcels
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.monitoring.review import write_review
from cropmap.prediction import predict_map


@pytest.fixture(scope="module")
def page(tiny_run, tiny_scene, tiny_dataset, tmp_path_factory):
    d = tmp_path_factory.mktemp("review")
    s = predict_map(tiny_run, tiny_scene.imagery, d / "map.tif", parcels=tiny_scene.parcels,
                    parcels_out=d / "p.gpkg", quicklook=False)
    audit_parcels(s.parcels_path, d / "audit.csv")
    info = write_review(s.parcels_path, d / "review.html", audit=d / "audit.csv", data=tiny_dataset)
    return d, info


def _payload(html_text):
    start = html_text.index("const D = ") + len("const D = ")
    return json.loads(html_text[start:html_text.index(";\nconst P = D.parcels")].replace("<\\/", "</"))


def test_page_is_one_file_with_every_parcel(page):
    d, info = page
    text = (d / "review.html").read_text(encoding="utf-8")
    n = len(pyogrio.read_dataframe(d / "p.gpkg", layer="predictions"))
    assert info["parcels"] == n and info["profiles"] > 0
    data = _payload(text)
    assert len(data["parcels"]["id"]) == n and all(p.startswith("M") for p in data["parcels"]["path"] if p)
    assert set(data["parcels"]["marker"]) <= {"red", "orange", "green", ""}
    assert "<script src" not in text and "<link" not in text and "https://" not in text
    with pytest.raises(CropmapError, match="already exists"):
        write_review(d / "p.gpkg", d / "review.html")
    assert main(["review", "--parcels", str(d / "p.gpkg"), "--out", str(d / "r2.html"), "--color", "class"]) == 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium (Debian chromium) not installed")
def test_chromium_loads_it_offline_and_a_click_shows_the_panel(page, tmp_path):
    d, _ = page
    data = _payload((d / "review.html").read_text(encoding="utf-8"))
    pid = data["parcels"]["id"][0]
    url = (d / "review.html").as_uri() + f"#click={pid}"
    netlog = tmp_path / "net.json"
    dom = _chromium(url, tmp_path / "p", netlog)
    assert dom.returncode == 0
    assert f'<h2 id="panel-title">Parcel {pid}</h2>' in dom.stdout  # the scripted click opened the panel
    assert "<th>marker</th>" in dom.stdout and 'class="sel"' in dom.stdout
    assert "of " + str(len(data["parcels"]["id"])) + " parcels shown" in dom.stdout
    assert _page_requests(netlog) == set()
    # the check can fail: a page with an image and a fetch from the network is caught
    leak = tmp_path / "leak.html"
    leak.write_text('<img src="http://127.0.0.1:9/x.png"><script>fetch("https://example.invalid/y")</script>')
    _chromium(leak.as_uri(), tmp_path / "q", tmp_path / "net2.json")
    assert _page_requests(tmp_path / "net2.json") == {"http://127.0.0.1:9/x.png", "https://example.invalid/y"}


def _chromium(url, profile, netlog):
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--virtual-time-budget=3000", f"--log-net-log={netlog}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)


def _page_requests(netlog):
    """URLs requested by the page (initiator: its file origin, "null"); the browser's own traffic (updates,
    dictionaries: no initiator, or "not an origin") is not the page's."""
    events = json.loads(netlog.read_text())["events"]
    return {e["params"]["url"] for e in events
            if "url" in e.get("params", {}) and e["params"].get("initiator") not in (None, "not an origin")}
