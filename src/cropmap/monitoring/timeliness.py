"""How accuracy grows with the cut-off date: the number a user needs to decide when to trust an in-season
map. Monthly cut-offs (each month's last day) across the model's season, then the whole season; at each,
the split is scored with the composite steps that end after the cut-off masked (``evaluate --until``)."""

from __future__ import annotations

import calendar
import csv
import datetime as dt
from pathlib import Path


from ..atomic import atomic_path
from ..checkpoint import load_checkpoint

TIMELINESS_NAME = "timeliness.csv"
PASS_F1 = 0.8  # the F1 a class must reach for "usable from" in the summary


def monthly_cutoffs(start: dt.date, end: dt.date) -> list[dt.date]:
    """The last day of every month from ``start``'s to the one before ``end``'s."""
    out, y, m = [], start.year, start.month
    while (y, m) < (end.year, end.month):
        out.append(dt.date(y, m, calendar.monthrange(y, m)[1]))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return [d for d in out if d >= start]


def timeliness_table(run: Path | str, data: Path | str, *, split: str = "test", batch_size: int = 8,
                     cutoffs: list[dt.date] | None = None) -> list[dict]:
    """One row per cut-off (then ``"all"``, the plain evaluation): cutoff, OA, mIoU, macro-F1, per-class F1."""
    from ..evaluation import score_split

    grid = load_checkpoint(run).time_grid
    first_end = grid.start + dt.timedelta(days=grid.period_days - 1)
    season_end = grid.start + dt.timedelta(days=grid.steps * grid.period_days - 1)
    cutoffs = cutoffs if cutoffs is not None else [d for d in monthly_cutoffs(grid.start, season_end) if d >= first_end]
    rows = []
    for cut in [*cutoffs, None]:
        m = score_split(run, data, split=split, batch_size=batch_size, until=None if cut is None else cut.isoformat())
        row = {"cutoff": "all" if cut is None else cut.isoformat(), "overall_accuracy": m["overall_accuracy"],
               "miou": m["miou"], "macro_f1": m["macro_f1"]}
        row.update({f"f1 {c['class']}": c["f1"] for c in m["per_class"]})
        rows.append(row)
    return rows


def first_passing(rows: list[dict], threshold: float = PASS_F1) -> dict[str, str | None]:
    """``{class: first cut-off whose F1 is at least threshold (None: never)}``; F1 values as numbers, or as
    the strings of timeliness.csv ("" for none)."""
    out = {}
    for key in (k for k in rows[0] if k.startswith("f1 ")):
        out[key[3:]] = next((r["cutoff"] for r in rows if r[key] not in (None, "") and float(r[key]) >= threshold),
                            None)
    return out


def write_timeliness(run: Path | str, data: Path | str, out_dir: Path | str, *, split: str = "test",
                     batch_size: int = 8) -> tuple[Path, Path]:
    """``out_dir/timeliness.csv`` and ``timeliness.png`` (OA, mIoU, macro-F1 against the cut-off)."""
    rows = timeliness_table(run, data, split=split, batch_size=batch_size)
    out_dir = Path(out_dir)
    csv_path, png = out_dir / TIMELINESS_NAME, out_dir / "timeliness.png"
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else (f"{v:.4f}" if isinstance(v, float) else v)) for k, v in r.items()})
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    dated = [r for r in rows if r["cutoff"] != "all"]
    x = [dt.date.fromisoformat(r["cutoff"]) for r in dated]
    for key, label in (("overall_accuracy", "OA"), ("miou", "mIoU"), ("macro_f1", "macro-F1")):
        ax.plot(x, [r[key] for r in dated], marker="o", label=label)
        ax.axhline(rows[-1][key], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"{split} score (dotted: whole season)")
    ax.set_xlabel("cut-off date (acquisitions up to it)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    return csv_path, png

