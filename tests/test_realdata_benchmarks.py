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
    # the forest is a sanity floor: 13 balanced classes, chance is 1/13
    assert out["formosat2-tempcnn"]["random-forest"]["oa"]["mean"] > 0.3


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
