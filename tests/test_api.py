"""The documented Python API: ``import cropmap`` is light, every listed name resolves, and the README's
example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cropmap

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_is_light_and_names_resolve():
    code = "import sys, cropmap; assert 'torch' not in sys.modules and 'rasterio' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
    for name, (module, attr) in cropmap.API.items():
        assert getattr(cropmap, name) is getattr(__import__(module, fromlist=[attr]), attr)
    __import__("importlib").import_module("cropmap.training")  # importing the module leaves the function in place
    assert callable(cropmap.train) and sorted(cropmap.__all__) == sorted(dir(cropmap))


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python API)", "exec"), {})
    out = capsys.readouterr().out
    assert "tempcnn-unet OA" in out and "rf OA" in out and "red parcels (in-sample answers here)" in out
    assert (tmp_path / "work" / "map.tif").exists() and (tmp_path / "work" / "audit.csv").exists()
