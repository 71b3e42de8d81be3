"""``cropmap report``: an evaluated run -> one self-contained HTML page (metrics, figures, configuration).

Everything is inline (CSS, PNGs as base64 data URIs) and nothing is fetched, so the file can be mailed,
archived or opened offline as it is.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
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
                 audit: Path | str | None = None, areas: Path | str | None = None,
                 uncertainty: Path | str | None = None, data: Path | str | None = None,
                 review: Path | str | None = None, overwrite: bool = False) -> Path:
    """Write the run's HTML report to ``out`` (default ``RUN/report.html``) and return its path.

    Needs the run's ``metrics.json`` (``cropmap evaluate``); ``config.yaml``, ``confusion.png`` and
    ``curves.png`` are shown when present (the confusion matrix is re-drawn from the metrics otherwise),
    and ``map_path``, a map from ``cropmap predict``, adds its quick-look. The calibration (ECE and the
    reliability diagram before and after temperature scaling) is shown when metrics.json has it.
    ``audit`` (the CSV of ``cropmap audit``) adds an audit section: marker counts, thresholds and error
    estimates from its JSON summary, and the red list with each parcel's NDVI profile against its declared and
    predicted classes' median profiles (from ``data``, default the dataset the run was trained on);
    ``areas`` (``cropmap areas``) the area table, ``uncertainty`` (``predict --uncertainty``) a quick-look,
    ``review`` (``cropmap review``) a link to the review page; the run's ``timeliness.png`` (``evaluate
    --timeliness``) is shown when present.
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
        extra = []
        if metrics.get("calibration"):
            extra += _calibration_section(metrics["calibration"], Path(tmp) / "reliability.png")
        if (run_dir / "timeliness.png").exists():
            extra += ["<h2>Timeliness</h2>",
                      '<p class="note">Scores with the acquisitions up to each monthly cut-off (timeliness.csv); '
                      "dotted: the whole season.</p>", _img(run_dir / "timeliness.png", "scores against the cut-off")]
        if review is not None:
            rel = os.path.relpath(Path(review).resolve(), out.resolve().parent)
            extra += ["<h2>Parcel review</h2>", f'<p><a href="{_e(Path(rel).as_posix())}">{_e(Path(review).name)}</a>: '
                      "the parcels on a map, by marker, with each parcel's NDVI profile (offline, one file).</p>"]
        if audit is not None:
            extra += _audit_section(Path(audit), run_dir, data, Path(tmp))
        if uncertainty is not None:
            extra += _uncertainty_section(Path(uncertainty), Path(tmp) / "uncertainty.png")
        if areas is not None:
            extra += _areas_section(Path(areas))
        page = _page(run_dir, metrics, confusion=confusion, curves=run_dir / "curves.png",
                     config=run_dir / "config.yaml", quicklook=quicklook,
                     map_path=Path(map_path) if map_path is not None else None, extra=extra)
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
          map_path: Path | None, extra: list[str] | None = None) -> str:
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
    parts += list(extra or [])
    parts += ["<h2>Training configuration</h2>",
              f"<pre>{_e(config_text)}</pre>" if config_text is not None
              else '<p class="note">config.yaml: not available</p>',
              "</body></html>", ""]
    return "\n".join(parts)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    return Figure(figsize=(width, height), dpi=100)


def _calibration_section(c: dict, png: Path) -> list[str]:
    """ECE before / after temperature scaling and the reliability diagram."""
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfect calibration")
    for key, label, color in (("reliability_before", f"softmax (ECE {c['ece_before']:.3f})", "#d7191c"),
                              ("reliability_after", ("T per fold" if c["temperature"] is None else
                                                     f"T = {c['temperature']:.2f}") + f" (ECE {c['ece_after']:.3f})",
                               "#2c7bb6")):
        pts = [(b["confidence"], b["accuracy"]) for b in c.get(key, []) if b["count"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=color, label=label)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    temperature = _num(c["temperature"]) if c["temperature"] is not None else "one per fold"
    return ["<h2>Calibration</h2>",
            f'<p>Temperature {temperature} (fitted on the {_e(c.get("fitted_on") or "?")} pixels): '
            f'expected calibration error {_num(c["ece_before"])} before, {_num(c["ece_after"])} after, on this '
            "split.</p>", _img(png, "reliability diagram before and after temperature scaling")]


def _audit_section(audit_csv: Path, run_dir: Path, data: Path | str | None, tmp: Path) -> list[str]:
    """Marker counts, thresholds and error estimates; the red list with NDVI profiles."""
    import csv as csv_module

    summary_path = audit_csv.with_suffix(".json")
    if not audit_csv.exists() or not summary_path.exists():
        raise CropmapError(f"{audit_csv}: no audit (with its .json summary) there; run `cropmap audit` first")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        with open(audit_csv, newline="", encoding="utf-8") as f:
            rows = list(csv_module.DictReader(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv_module.Error) as e:
        raise CropmapError(f"{audit_csv}: not a readable audit ({type(e).__name__}: {e})") from None
    m, th, er = summary.get("markers", {}), summary.get("thresholds", {}), summary.get("errors", {})
    red = [r for r in rows if r.get("marker") == "red"]
    parts = ["<h2>Audit</h2>",
             f"<p>{_num(summary.get('compared'))} declared parcels at the {_e(summary.get('level'))} level, "
             + ("answered out of fold (each by a model that never saw its declaration)." if summary.get("out_of_fold")
                else "<b>answered in-sample</b>: the model was trained on these declarations.") + "</p>",
             '<div class="cards">' + "".join(
                 f'<div class="card"><div class="v">{_num(m.get(k))}</div><div class="k">{k}</div></div>'
                 for k in ("red", "orange", "green")) + "</div>",
             "<table>",
             f"<tr><th>target red precision</th><td>{_num(th.get('target_precision'), 2)}</td></tr>",
             f"<tr><th>red: p_declared at most</th><td>{_num(th.get('red_max_p_declared'))}</td></tr>",
             f"<tr><th>green: p_declared at least</th><td>{_num(th.get('green_min_p_declared'))}</td></tr>",
             f"<tr><th>expected red precision</th><td>{_num(er.get('expected_red_precision'))}</td></tr>",
             f"<tr><th>alpha (right declarations flagged red)</th><td>{_num(er.get('alpha'))}</td></tr>",
             f"<tr><th>beta (wrong declarations not flagged red)</th><td>{_num(er.get('beta'))}</td></tr>",
             "</table>"]
    per_class = summary.get("markers_per_declared_class", {})
    if per_class:
        parts.append("<h3>Markers per declared class</h3><table><thead><tr><th>declared class</th>"
                     '<th class="num">red</th><th class="num">orange</th><th class="num">green</th></tr></thead>'
                     "<tbody>" + "".join(f"<tr><td>{_e(c)}</td>" + "".join(f'<td class="num">{v.get(k, 0)}</td>'
                                                                          for k in ("red", "orange", "green"))
                                         + "</tr>" for c, v in per_class.items()) + "</tbody></table>")
    if red:
        profiles = _red_profiles(red[:RED_PROFILES], run_dir, data, tmp)
        first = f", the first {RED_PROFILES}" if len(red) > RED_PROFILES else ""
        parts.append(f"<h3>Red list ({len(red)} parcels{first})</h3>"
                     '<table><thead><tr><th>rank</th><th>ID_PARCEL</th><th>declared</th><th>predicted</th>'
                     '<th class="num">p_declared</th><th class="num">p_predicted</th><th class="num">pixels</th>'
                     "<th>NDVI profile</th></tr></thead><tbody>"
                     + "".join(f"<tr><td>{_e(r['rank'])}</td><td>{_e(r['ID_PARCEL'])}</td><td>{_e(r['declared'])}</td>"
                               f"<td>{_e(r['predicted'])}</td><td class=\"num\">{_e(r['p_declared'])}</td>"
                               f"<td class=\"num\">{_e(r['p_predicted'])}</td><td class=\"num\">{_e(r['n_pixels'])}</td>"
                               f"<td>{profiles.get(r['ID_PARCEL'], '–')}</td></tr>" for r in red[:RED_PROFILES])
                     + "</tbody></table>")
    return parts


RED_PROFILES = 30  # red parcels drawn with their NDVI profile in the report


def _red_profiles(red: list[dict], run_dir: Path, data: Path | str | None, tmp: Path) -> dict[str, str]:
    """``{ID_PARCEL: <img>}``: each red parcel's NDVI profile against its declared and predicted classes'
    median profiles, from the dataset (empty when the dataset is not there)."""
    from .checkpoint import load_checkpoint
    from .monitoring.profiles import dataset_profiles

    if data is None:
        try:
            data = load_checkpoint(run_dir).extra.get("dataset")
        except CropmapError:
            data = None
    if not data or not Path(data).exists():
        return {}
    ids, doy, prof, medians = dataset_profiles(data)
    where = {i: n for n, i in enumerate(ids)}
    out = {}
    for r in red:
        i = where.get(r["ID_PARCEL"])
        if i is None or np.isnan(prof[i]).all():
            continue
        fig = _figure(2.6, 1.4)
        ax = fig.add_subplot()
        for cls, color, style in ((r["declared"], "#2c7bb6", "--"), (r["predicted"], "#d7191c", ":")):
            if cls in medians:
                ax.plot(doy, medians[cls], color=color, ls=style, lw=1)
        ax.plot(doy, prof[i], color="#222", lw=1.6)
        ax.set_ylim(-0.2, 1.0)
        ax.tick_params(labelsize=6)
        fig.tight_layout(pad=0.2)
        png = tmp / f"ndvi_{len(out)}.png"
        fig.savefig(png)
        out[r["ID_PARCEL"]] = _img(png, f"NDVI of parcel {r['ID_PARCEL']} (black), median {r['declared']} "
                                        f"(declared, blue dashed), median {r['predicted']} (predicted, red dotted)")
    return out


def _uncertainty_section(path: Path, png: Path) -> list[str]:
    """A quick-look of the normalised entropy band of ``predict --uncertainty``."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            scale = max(1, int(np.ceil(max(src.width, src.height) / 1024)))
            a = src.read(1, out_shape=(max(1, src.height // scale), max(1, src.width // scale))).astype(float)
    except rasterio.errors.RasterioIOError as e:
        raise CropmapError(f"{path}: not a readable uncertainty raster ({e})") from None
    a[a > 100] = np.nan
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    im = ax.imshow(a / 100, cmap="magma", vmin=0, vmax=1)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.04, label="normalised entropy")
    fig.tight_layout()
    fig.savefig(png)
    return [f"<h2>Uncertainty {_e(path.name)}</h2>", _img(png, "normalised entropy of the class probabilities")]


def _areas_section(path: Path) -> list[str]:
    """The table of ``cropmap areas``."""
    import csv as csv_module

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv_module.DictReader(f))
    except (OSError, UnicodeDecodeError, csv_module.Error) as e:
        raise CropmapError(f"{path}: not a readable area table ({e})") from None
    cols = ("class", "mapped_ha", "sample_units", "estimated_ha", "ci95_ha", "users_accuracy", "producers_accuracy")
    if rows and any(c not in rows[0] for c in cols):
        raise CropmapError(f"{path}: not an area table of `cropmap areas` (columns {', '.join(cols)})")
    return ["<h2>Areas (stratified estimate, Olofsson et al. 2014)</h2><table><thead><tr>"
            + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{_e(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
            + "</tbody></table>"]
