"""``cropmap compare``: evaluated runs side by side, one row per run and level, as a table, CSV or Markdown.

Reads each run's ``model.pt`` (model, parameters, training time, best epoch) and ``metrics.json``
(``cropmap evaluate``); runs evaluated on different datasets or splits are flagged, not refused.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_path
from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .errors import CropmapError
from .evaluation import level_rows, read_metrics

COLUMNS = ("run", "model", "parameters", "train s", "best epoch", "level",
           "OA", "mIoU", "macro-F1", "kappa", "parcel OA", "parcel mIoU")
METRIC_KEYS = {"OA": "overall_accuracy", "mIoU": "miou", "macro-F1": "macro_f1", "kappa": "kappa"}
TABLE_FORMATS = (".csv", ".md")


@dataclass
class Comparison:
    rows: list[dict[str, object]]  # COLUMNS (+ "evaluated on" when runs differ) -> value; None = not known
    notes: list[str] = field(default_factory=list)  # missing evaluations, different datasets/splits

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS + (("evaluated on",) if any("evaluated on" in r for r in self.rows) else ())


def compare_runs(runs: list[Path | str]) -> Comparison:
    """One row per run and level (the dataset's own level, then each coarser one)."""
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    evaluated_on: dict[str, tuple[str, str]] = {}
    names = _run_names([Path(r) for r in runs])
    for run, name in zip(map(Path, runs), names):
        if not (run / CHECKPOINT_NAME).exists():
            raise CropmapError(f"{run}: not a run folder (no {CHECKPOINT_NAME}; train one with `cropmap train`)")
        ckpt = load_checkpoint(run)
        extra = ckpt.extra
        base: dict[str, object] = {
            "run": name, "model": ckpt.model_name, "parameters": extra.get("parameters"),
            "train s": round(float(extra["train_seconds"]), 1) if "train_seconds" in extra else None,
            "best epoch": extra.get("best_epoch"),
        }
        metrics = read_metrics(run)
        if metrics is None:
            data = extra.get("dataset", "DATASET")
            notes.append(f"{run}: no metrics.json; run `cropmap evaluate --run {run} --data {data}`")
            rows.append({**base, "level": ckpt.class_table.level})
            continue
        evaluated_on[name] = (str(Path(metrics.get("dataset", "?")).resolve()), str(metrics.get("split", "?")))
        for level, m in level_rows(metrics):
            row = {**base, "level": level or ckpt.class_table.level}
            row.update({col: _num(m.get(key)) for col, key in METRIC_KEYS.items()})
            parcels = m.get("parcels") or {}
            row["parcel OA"], row["parcel mIoU"] = _num(parcels.get("overall_accuracy")), _num(parcels.get("miou"))
            rows.append(row)
    if len(set(evaluated_on.values())) > 1:
        notes.append("runs were evaluated on different datasets or splits; their metrics are not comparable: "
                     + "; ".join(f"{n}: {Path(d).name} {s}" for n, (d, s) in evaluated_on.items()))
        for row in rows:
            if row["run"] in evaluated_on:
                d, s = evaluated_on[str(row["run"])]
                row["evaluated on"] = f"{Path(d).name}:{s}"
    return Comparison(rows, notes)


def comparison_table(c: Comparison):
    """A rich Table of the comparison, for the terminal."""
    from rich.table import Table

    t = Table(title="runs compared (pixels, and parcels by majority vote)")
    for col in c.columns:
        t.add_column(col, justify="left" if col in ("run", "model", "level", "evaluated on") else "right")
    for row in c.rows:
        t.add_row(*(_text(row.get(col), col) for col in c.columns))
    return t


def write_comparison(c: Comparison, out: Path | str, *, overwrite: bool = False) -> Path:
    """The table as CSV or Markdown (by ``out``'s suffix); empty cells where a run has no value."""
    out = Path(out)
    if out.suffix.lower() not in TABLE_FORMATS:
        raise CropmapError(f"{out}: unknown table format; use one of {', '.join(TABLE_FORMATS)}")
    cols = c.columns
    if out.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows([["" if row.get(col) is None else row[col] for col in cols] for row in c.rows])
        text = buf.getvalue()
    else:
        right = {col for col in cols if col not in ("run", "model", "level", "evaluated on")}
        lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---:" if col in right else "---" for col in cols) + " |"]
        lines += ["| " + " | ".join(_text(row.get(col), col).replace("|", "\\|") for col in cols) + " |" for row in c.rows]
        text = "\n".join(lines + [""] + [f"- {n}" for n in c.notes]) + "\n"
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def _run_names(runs: list[Path]) -> list[str]:
    # folder names when they tell the runs apart, else the paths as given
    names = [r.resolve().name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def _num(v: object) -> float | None:
    return None if v is None else round(float(v), 6)  # type: ignore[arg-type]


def _text(v: object, col: str = "") -> str:
    if v is None:
        return ""
    if col == "train s":
        return f"{float(v):,.0f}"  # type: ignore[arg-type]
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
