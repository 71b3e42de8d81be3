"""``cropmap report``: an evaluated run -> one self-contained HTML page (metrics, figures, configuration).

Everything is inline (CSS, PNGs as base64 data URIs) and nothing is fetched, so the file can be mailed,
archived or opened offline as it is.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_path, refuse_existing
from .errors import CropmapError

REPORT_NAME = "report.html"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1.2em; min-width: 8em; }
.card .v { font-size: 1.8em; font-weight: 600; }
.card .k { color: #666; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.note { color: #888; font-style: italic; }
"""


def write_report(run: Path | str, out: Path | str | None = None, *, map_path: Path | str | None = None,
                 overwrite: bool = False) -> Path:
    """Write the run's HTML report to ``out`` (default ``RUN/report.html``) and return its path.

    Needs the run's ``metrics.json`` (``cropmap evaluate``); ``config.yaml``, ``confusion.png`` and
    ``curves.png`` are shown when present (the confusion matrix is re-drawn from the metrics otherwise),
    and ``map_path``, a map from ``cropmap predict``, adds its quick-look.
    """
    run = Path(run)
    run_dir = run if run.is_dir() else run.parent
    if not run.exists():
        raise CropmapError(f"{run}: run folder does not exist")
    out = Path(out) if out is not None else run_dir / REPORT_NAME
    refuse_existing(out, overwrite=overwrite)  # before the work; atomic_path checks again
    from .evaluation import read_metrics

    metrics = read_metrics(run_dir)
    if metrics is None:
        raise CropmapError(f"{run_dir}: no metrics.json; run `cropmap evaluate --run {run_dir} --data DATASET` first")
    with tempfile.TemporaryDirectory(prefix="cropmap-report-") as tmp:
        confusion = run_dir / "confusion.png"
        if not confusion.exists():
            confusion = _draw_confusion(metrics, Path(tmp) / "confusion.png")
        quicklook = None
        if map_path is not None:
            from .quicklook import render_quicklook

            quicklook = render_quicklook(map_path, Path(tmp) / "quicklook.png")
        page = _page(run_dir, metrics, confusion=confusion, curves=run_dir / "curves.png",
                     config=run_dir / "config.yaml", quicklook=quicklook,
                     map_path=Path(map_path) if map_path is not None else None)
    with atomic_path(out) as tmp_out:
        tmp_out.write_text(page, encoding="utf-8")
    return out


def _draw_confusion(metrics: dict, png: Path) -> Path | None:
    from .evaluation import plot_confusion

    cm, names = metrics.get("confusion_matrix"), metrics.get("class_names")
    if not cm or not names:
        return None
    plot_confusion(np.asarray(cm), names, png, title=f"{metrics.get('model', '')} on {metrics.get('split', '')}")
    return png


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def _img(png: Path | None, alt: str) -> str:
    if png is None or not png.exists():
        return f'<p class="note">{_e(alt)}: not available</p>'
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _training_facts(run_dir: Path) -> list[tuple[str, str]]:
    """Best epoch, validation mIoU and training time from the checkpoint, when it is there and readable."""
    if not (run_dir / "model.pt").exists():
        return []
    from .checkpoint import load_checkpoint

    try:
        extra = load_checkpoint(run_dir).extra
    except CropmapError:
        return []
    facts = []
    if "best_epoch" in extra:
        facts.append(("best epoch", _num(int(extra["best_epoch"]))))
    if "best_val_miou" in extra:
        facts.append(("validation mIoU at best epoch", _num(float(extra["best_val_miou"]))))
    if "train_seconds" in extra:
        facts.append(("training time", f"{float(extra['train_seconds']):.0f} s"))
    return facts


def _page(run_dir: Path, m: dict, *, confusion: Path | None, curves: Path, config: Path, quicklook: Path | None,
          map_path: Path | None) -> str:
    model, split = m.get("model", "model"), m.get("split", "?")
    facts = [("model", _e(model)), ("parameters", _num(m.get("parameters")) if m.get("parameters") else "–"),
             ("dataset", _e(m.get("dataset", "–"))), ("split", _e(split)),
             ("labelled pixels evaluated", _num(m.get("pixels"))), ("classes", _num(len(m["per_class"]))),
             *_training_facts(run_dir)]
    cards = "".join(f'<div class="card"><div class="v">{_num(m[k])}</div><div class="k">{_e(label)}</div></div>'
                    for k, label in (("overall_accuracy", "overall accuracy"), ("miou", "mIoU"),
                                     ("macro_f1", "macro-F1"), ("kappa", "Cohen's kappa")))
    rows = "".join(
        f"<tr><td>{_e(c.get('class', '?'))}</td><td class=\"num\">{_num(c.get('support'))}</td>"
        + "".join(f'<td class="num">{_num(c.get(k))}</td>' for k in ("precision", "recall", "f1", "iou")) + "</tr>"
        for c in m["per_class"])
    config_text = config.read_text(encoding="utf-8") if config.exists() else None
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>cropmap report: {_e(model)} on {_e(split)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(model)} on the {_e(split)} split</h1>",
        f'<p class="sub">run {_e(run_dir)} · written by cropmap {_e(__version__)}</p>',
        "<h2>Model and data</h2><table>",
        *(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in facts),
        "</table>",
        f'<h2>Headline metrics</h2><div class="cards">{cards}</div>',
        '<p class="note">Pixel metrics over the labelled pixels of the split; mIoU and macro-F1 average the '
        "classes present in the reference or the prediction.</p>",
        "<h2>Per class</h2><table><thead><tr><th>class</th>"
        + "".join(f'<th class="num">{h}</th>' for h in ("support", "precision", "recall", "F1", "IoU"))
        + f"</tr></thead><tbody>{rows}</tbody></table>",
        "<h2>Confusion matrix</h2>", _img(confusion, "confusion matrix (rows: reference, normalised)"),
        "<h2>Training curves</h2>", _img(curves, "training loss and validation mIoU per epoch"),
    ]
    if map_path is not None:
        parts += [f"<h2>Map {_e(map_path.name)}</h2>", _img(quicklook, f"quick-look of {map_path.name}")]
    parts += ["<h2>Training configuration</h2>",
              f"<pre>{_e(config_text)}</pre>" if config_text is not None
              else '<p class="note">config.yaml: not available</p>',
              "</body></html>", ""]
    return "\n".join(parts)
