"""Smoke runs of the real-data benchmark scripts (``--quick``); skipped where ../shared/data/realdata is absent.

Each runs in its own process, as a user would run it; together ~40 s CPU on 2 cores (the patch script
starts the CLI three times). The figures themselves come from the default mode, not from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("CROPMAP_SHARED", ROOT.parent / "shared")) / "data" / "realdata"


def run_script(name: str, results: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--quick", "--results", str(results), *extra],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "wall time" in proc.stdout
    return json.loads((results / name.replace(".py", ".quick.json")).read_text())


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "fr-rpg-points").is_dir() or not (REAL / "formosat2-tempcnn").is_dir(),
                    reason="no real data in ../shared/data/realdata")
def test_real_points_quick(tmp_path: Path) -> None:
    out = run_script("real_points.py", tmp_path)
    rpg = out["fr-rpg-points"]
    assert rpg["n_points"] == sum(rpg["class_counts"]) and len(rpg["tempcnn-pixel"]["runs"]) == 2
    assert {r["fold"] for r in rpg["tempcnn-pixel"]["runs"]} == {0, 1} and rpg["n_blocks"] > 10  # spatial groups
    for ds in ("fr-rpg-points", "formosat2-tempcnn"):
        for model in ("tempcnn-pixel", "random-forest"):
            assert 0.0 <= out[ds][model]["oa"]["mean"] <= 1.0
        cmp = out[ds]["tempcnn-pixel"]["vs_random_forest"]["oa"]  # paired run by run
        assert cmp["n"] == len(out[ds]["random-forest"]["runs"]) and cmp["wins"] + cmp["ties"] + cmp["losses"] == cmp["n"]
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_tables.py"), "--results", str(tmp_path),
                            "--trial", "real_points.quick.json"], capture_output=True, text=True, check=True).stdout
    assert "| fr-rpg-points | tempcnn-pixel |" in table and "| formosat2-tempcnn | tempcnn-pixel |" in table
    # the forest is a sanity floor: 13 balanced classes, chance is 1/13
    assert out["formosat2-tempcnn"]["random-forest"]["oa"]["mean"] > 0.3


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "be-lpis-2018-patch").is_dir(), reason="no real data in ../shared/data/realdata")
def test_real_patch_quick(tmp_path: Path) -> None:
    out = run_script("real_patch.py", tmp_path / "results", "--workdir", str(tmp_path / "work"))
    split = out["splits"][0]
    assert all(split["split"][s]["patches"] > 0 for s in ("train", "val", "test"))
    # every labelled parcel is in exactly one split
    assert sum(split["split"][s]["parcels"] for s in ("train", "val", "test")) <= out["inputs"]["parcels"]
    assert (tmp_path / "work" / "imagery").is_dir() and (tmp_path / "work" / "parcels.gpkg").is_file()
    for model in ("tempcnn-pixel", "rf"):  # rf: the product's forest, through the same CLI
        assert 0.0 <= split["models"][model]["oa"] <= 1.0
        assert split["models"][model]["pixels"] == split["models"]["rf"]["pixels"]  # same test pixels
    assert out["summary"]["tempcnn-pixel"]["vs_rf"]["oa"]["n"] == 1


def test_scripts_skip_without_shared(tmp_path: Path) -> None:
    """With no ../shared (here: an empty CROPMAP_SHARED) each script says so and exits 0."""
    env = {**os.environ, "CROPMAP_SHARED": str(tmp_path)}
    for name in ("real_points.py", "real_patch.py"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--quick", "--results", str(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 0 and "skipped" in proc.stdout, proc.stdout + proc.stderr
        assert not list(tmp_path.glob("*.json"))


def test_paired_comparison_by_hand() -> None:
    """The protocol's statistics (benchmarks/realdata_common.py), on hand-made runs; needs no real data."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from realdata_common import paired, summarise
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    model = [{"oa": v} for v in (0.8, 0.7, 0.9, 0.6, 0.75, 0.85, 0.7)]
    base = [{"oa": v} for v in (0.7, 0.75, 0.7, 0.6, 0.65, 0.55, 0.65)]
    c = paired(model, base, "oa")
    assert c["diffs"] == [0.1, -0.05, 0.2, 0.0, 0.1, 0.3, 0.05]
    assert (c["wins"], c["ties"], c["losses"], c["n"]) == (5, 1, 1, 7)
    assert abs(c["mean_diff"] - 0.1) < 1e-9 and abs(c["std_diff"] - 0.11902380714238083) < 1e-9
    # Wilcoxon on the 6 non-zero differences: ranks 1 (0.05, -), 2 (0.05, +), 3.5, 3.5, 5, 6; W- = 1.5
    assert c["wilcoxon_p"] is not None and 0.03 < c["wilcoxon_p"] < 0.1
    assert paired(model[:5], base[:5], "oa")["wilcoxon_p"] is None  # fewer than 6 non-zero differences
    s = summarise(model, ("oa",))["oa"]
    assert abs(s["mean"] - 0.7571428571) < 1e-6 and s["runs"][0] == 0.8
    with pytest.raises(ValueError):
        paired(model, base[:3], "oa")  # runs must pair one to one
