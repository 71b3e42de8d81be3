"""Markdown tables of the real-data and hierarchy results (benchmarks/results/*.json), as the READMEs show them.

    python benchmarks/real_tables.py                      # results/real_points.json, real_patch.json, hierarchy.json
    python benchmarks/real_tables.py --results DIR        # another results folder
    python benchmarks/real_tables.py --trial real_points-aug.json   # one recipe trial against the forest
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from realdata_common import RESULTS  # noqa: E402  (beside this script)

POINT_SETS = {"fr-rpg-points": "fr-rpg-points", "formosat2-tempcnn": "formosat2-tempcnn"}


def _ms(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def _p(c: dict) -> str:
    return "n/a" if c["wilcoxon_p"] is None else f"{c['wilcoxon_p']:.3f}"


def _diff(c: dict) -> str:
    return f"{c['mean_diff']:+.3f} ({c['wins']}/{c['n']} wins, p {_p(c)})"


def points_rows(res: dict) -> list[str]:
    rows = []
    for ds in POINT_SETS:
        if ds not in res:
            continue
        r = res[ds]
        models = [m for m in res["settings"]["models"]] + ["random-forest"]
        for i, m in enumerate(models):
            cmp = r[m].get("vs_random_forest")
            vs = f"{_diff(cmp['oa'])} | {_diff(cmp['macro_f1'])}" if cmp else "- | -"
            rows.append(f"| {ds if i == 0 else ''} | {m} | {_ms(r[m]['oa'])} | {_ms(r[m]['macro_f1'])} | {vs} |")
    return rows


def patch_rows(res: dict) -> list[str]:
    rows = []
    for m, r in res["summary"].items():
        cmp = r.get("vs_rf")
        vs = f"{_diff(cmp['oa'])} | {_diff(cmp['macro_f1'])}" if cmp else "- | -"
        rows.append(f"| be-lpis-2018-patch | {m} | {_ms(r['oa'])} | {_ms(r['macro_f1'])} | {vs} |")
    return rows


def hierarchy_rows(res: dict) -> list[str]:
    keys = ("crop_miou", "crop_oa", "group_miou", "coarse_miou")
    rows = []
    for name, r in res["summary"].items():
        vs = _diff(r["vs_flat"]["crop_miou"]) if "vs_flat" in r else "-"
        rows.append(f"| {name} | " + " | ".join(_ms(r[k]) for k in keys) + f" | {vs} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--trial", action="append", default=[], help="a points or patch results file to tabulate alone")
    args = p.parse_args(argv)
    head = ("| set | model | OA | macro-F1 | OA − RF (paired) | macro-F1 − RF (paired) |\n"
            "| --- | --- | --- | --- | --- | --- |")
    files = args.trial or ["real_points.json", "real_patch.json"]
    rows = []
    for name in files:
        path = args.results / name
        if not path.exists():
            print(f"{path}: missing", file=sys.stderr)
            continue
        res = json.loads(path.read_text())
        rows += patch_rows(res) if "summary" in res and "splits" in res else points_rows(res)
    print(head + "\n" + "\n".join(rows))
    hier = args.results / "hierarchy.json"
    if not args.trial and hier.exists():
        print("\n| variant | crop mIoU | crop OA | group mIoU | coarse mIoU | crop mIoU − flat (paired) |\n"
              "| --- | --- | --- | --- | --- | --- |")
        print("\n".join(hierarchy_rows(json.loads(hier.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
