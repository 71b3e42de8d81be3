"""``cropmap review``: one self-contained HTML page to review parcels offline — the parcels drawn as SVG on a
pannable, zoomable map coloured by marker (or predicted class), filters by marker and class, a search by
``ID_PARCEL``, and on click a panel with the parcel's attributes and its NDVI profile against the median
profiles of its declared and predicted classes. No library and no network: the page's script is written
here, the data sits in the page as JSON, geometries are simplified and stored as integer metres."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, refuse_existing
from ..errors import CropmapError

SIMPLIFY_M = 2.0  # geometry tolerance in metres (a fifth of a Sentinel-2 pixel: invisible at parcel scale)
MARKER_COLORS = {"red": "#d7191c", "orange": "#fdae61", "green": "#1a9641", "": "#bbbbbb"}
PROFILE_DIGITS = 3


def write_review(parcels: Path | str, out: Path | str, *, audit: Path | str | None = None,
                 data: Path | str | None = None, color: str = "marker", overwrite: bool = False) -> dict:
    """Write the review page ``out`` for a parcel table of ``cropmap predict``; ``audit`` (its CSV) gives the
    markers, ``data`` (a dataset) the NDVI profiles. Returns ``{parcels, bytes, profiles}``."""
    from ..prediction.parcels import read_parcel_table

    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    if color not in ("marker", "class"):
        raise CropmapError(f"--color {color!r}: expected marker or class")
    gdf = read_parcel_table(Path(parcels))
    if "pred_class" not in gdf:
        raise CropmapError(f"{parcels}: no prediction columns (write it with `cropmap predict --parcels-out`)")
    if len(gdf) == 0:
        raise CropmapError(f"{parcels}: no parcel to review")
    if gdf.crs is None or gdf.crs.is_geographic:
        gdf = gdf.to_crs(2154) if gdf.crs is not None else gdf  # metres: simplification and the scale bar
    gdf = gdf.reset_index(drop=True)
    ids = gdf["ID_PARCEL"].astype(str).to_numpy()
    markers = np.full(len(gdf), "", dtype=object)
    if audit is not None:
        a = pd.read_csv(audit, dtype={"ID_PARCEL": str})
        if "marker" not in a:
            raise CropmapError(f"{audit}: no marker column (write it with `cropmap audit`)")
        by_id = dict(zip(a["ID_PARCEL"], a["marker"].fillna("")))
        markers = np.array([by_id.get(i, "") for i in ids], dtype=object)
    elif color == "marker":
        color = "class"  # no markers without an audit
    x0, y0, x1, y1 = gdf.total_bounds
    paths = [_svg_path(g.simplify(SIMPLIFY_M, preserve_topology=True), x0, y1) for g in gdf.geometry]
    profiles, medians, doy = _profiles(data, ids) if data is not None else ({}, {}, [])

    def col(name, digits=None):
        if name not in gdf:
            return [None] * len(gdf)
        v = gdf[name].to_numpy()
        if digits is None:
            return [None if (isinstance(x, float) and math.isnan(x)) or x is None else str(x) for x in v]
        return [None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits) for x in v]

    records = {"id": list(ids), "path": paths, "code": col("CODE_CULTU"), "declared": col("declared_class"),
               "predicted": col("pred_class"), "p_declared": col("p_declared", 3), "p_predicted": col("p_predicted", 3),
               "fold": [int(f) for f in gdf["fold"]] if "fold" in gdf else [None] * len(gdf),
               "n_pixels": [int(n) for n in gdf["n_pixels"]] if "n_pixels" in gdf else [None] * len(gdf),
               "area_ha": col("SURF_PARC", 2), "marker": list(markers)}
    classes = sorted({c for c in records["predicted"] + records["declared"] if c})
    palette = {c: _class_color(i) for i, c in enumerate(classes)}
    payload = {"parcels": records, "size": [round(float(x1 - x0), 1), round(float(y1 - y0), 1)],
               "classes": classes, "class_colors": palette, "marker_colors": MARKER_COLORS, "color": color,
               "profiles": profiles, "medians": medians, "doy": doy, "source": Path(parcels).name}
    text = PAGE.replace("/*DATA*/", json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
                        .replace("</", "<\\/")).replace("<!--TITLE-->", html.escape(Path(parcels).name))
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return {"parcels": len(gdf), "bytes": out.stat().st_size, "profiles": len(profiles)}


def _svg_path(geom, x0: float, y1: float) -> str:
    """``M x y L ... Z`` in integer metres from the top-left corner (y down), every ring of every polygon."""
    polys = getattr(geom, "geoms", [geom])
    parts = []
    for p in polys:
        if p.is_empty or not hasattr(p, "exterior"):
            continue
        for ring in [p.exterior, *p.interiors]:
            xy = np.asarray(ring.coords)[:-1]
            if len(xy) < 3:
                continue
            xs, ys = np.rint(xy[:, 0] - x0).astype(int), np.rint(y1 - xy[:, 1]).astype(int)
            parts.append("M" + "L".join(f"{a} {b}" for a, b in zip(xs, ys)) + "Z")
    return "".join(parts)


def _class_color(i: int) -> str:
    """Distinct colours for any number of classes (golden-angle hues)."""
    import colorsys

    r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.5, 0.6)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _profiles(data, ids):
    """The page's profiles (of ``ids``), class medians and days, rounded for the page's JSON."""
    from .profiles import dataset_profiles

    pid, doy, prof, class_median = dataset_profiles(data)
    where = {i: n for n, i in enumerate(pid)}
    medians = {c: [round(float(v), PROFILE_DIGITS) if not np.isnan(v) else None for v in m]
               for c, m in class_median.items()}
    profiles = {}
    for i in ids:
        n = where.get(i)
        if n is not None and not np.isnan(prof[n]).all():
            profiles[i] = [round(float(v), PROFILE_DIGITS) if not np.isnan(v) else None for v in prof[n]]
    return profiles, medians, [int(d) for d in doy]


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cropmap review: <!--TITLE--></title>
<style>
body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: #222; display: flex; height: 100vh; }
#side { width: 340px; padding: 10px; box-sizing: border-box; overflow-y: auto; border-right: 1px solid #ddd; }
#mapbox { flex: 1; position: relative; background: #f4f4f0; }
svg#map { width: 100%; height: 100%; cursor: grab; display: block; }
svg#map path { stroke: #333; vector-effect: non-scaling-stroke; stroke-width: 0.5; fill-opacity: 0.85; }
svg#map path.sel { stroke: #00f; stroke-width: 2.5; }
svg#map path.off { display: none; }
label { display: block; margin: 6px 0 2px; font-weight: 600; }
select, input { width: 100%; box-sizing: border-box; padding: 3px; }
table { border-collapse: collapse; width: 100%; margin-top: 6px; }
td, th { text-align: left; padding: 2px 4px; border-bottom: 1px solid #eee; vertical-align: top; }
#legend span { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border: 1px solid #555; }
#count, .note { color: #666; }
h1 { font-size: 15px; margin: 0 0 6px; }
h2 { font-size: 14px; margin: 12px 0 4px; }
</style></head><body>
<div id="side">
<h1>cropmap review</h1><div class="note" id="source"></div>
<label for="colorby">colour by</label><select id="colorby"><option value="marker">marker</option>
<option value="class">predicted class</option></select>
<label for="fmarker">marker</label><select id="fmarker"><option value="">all</option>
<option>red</option><option>orange</option><option>green</option></select>
<label for="fclass">class (declared or predicted)</label><select id="fclass"><option value="">all</option></select>
<label for="search">ID_PARCEL</label><input id="search" placeholder="search, then Enter">
<div id="count"></div>
<div id="legend"></div>
<div id="panel"><p class="note">Click a parcel.</p></div>
</div>
<div id="mapbox"><svg id="map" xmlns="http://www.w3.org/2000/svg"><g id="layer"></g></svg></div>
<script>
"use strict";
const D = /*DATA*/;
const P = D.parcels, N = P.id.length;
const svg = document.getElementById("map"), layer = document.getElementById("layer");
let view = {x: 0, y: 0, w: D.size[0] || 1, h: D.size[1] || 1};
const NS = "http://www.w3.org/2000/svg";
const shapes = [];
for (let i = 0; i < N; i++) {
  const p = document.createElementNS(NS, "path");
  p.setAttribute("d", P.path[i]);
  p.dataset.i = i;
  p.id = "parcel-" + P.id[i];
  layer.appendChild(p);
  shapes.push(p);
}
document.getElementById("source").textContent = D.source + " · " + N + " parcels";
const fclass = document.getElementById("fclass");
for (const c of D.classes) { const o = document.createElement("option"); o.textContent = c; fclass.appendChild(o); }
const colorby = document.getElementById("colorby");
colorby.value = D.color;
function colour(i) {
  return colorby.value === "marker" ? D.marker_colors[P.marker[i] || ""] : (D.class_colors[P.predicted[i]] || "#bbb");
}
function legend() {
  const el = document.getElementById("legend");
  const items = colorby.value === "marker" ? Object.entries(D.marker_colors).filter(([k]) => k)
    : D.classes.map(c => [c, D.class_colors[c]]);
  el.innerHTML = "";
  for (const [k, c] of items) {
    const d = document.createElement("div"); const s = document.createElement("span");
    s.style.background = c; d.appendChild(s); d.appendChild(document.createTextNode(k)); el.appendChild(d);
  }
}
function apply() {
  const m = document.getElementById("fmarker").value, c = fclass.value;
  let shown = 0;
  for (let i = 0; i < N; i++) {
    const ok = (!m || P.marker[i] === m) && (!c || P.declared[i] === c || P.predicted[i] === c);
    shapes[i].classList.toggle("off", !ok);
    shapes[i].setAttribute("fill", colour(i));
    if (ok) shown++;
  }
  document.getElementById("count").textContent = shown + " of " + N + " parcels shown";
  legend();
}
function setView() { svg.setAttribute("viewBox", view.x + " " + view.y + " " + view.w + " " + view.h); }
function fit() {
  const r = svg.getBoundingClientRect(), a = (r.width || 800) / (r.height || 600);
  const w = D.size[0] || 1, h = D.size[1] || 1;
  if (w / h > a) { view = {x: 0, y: -(w / a - h) / 2, w: w, h: w / a}; }
  else { view = {x: -(h * a - w) / 2, y: 0, w: h * a, h: h}; }
  setView();
}
function toMap(ev) {
  const r = svg.getBoundingClientRect();
  return [view.x + (ev.clientX - r.left) / r.width * view.w, view.y + (ev.clientY - r.top) / r.height * view.h];
}
svg.addEventListener("wheel", ev => {
  ev.preventDefault();
  const [mx, my] = toMap(ev), k = ev.deltaY < 0 ? 0.8 : 1.25;
  view = {x: mx - (mx - view.x) * k, y: my - (my - view.y) * k, w: view.w * k, h: view.h * k};
  setView();
}, {passive: false});
let drag = null, moved = false;
svg.addEventListener("mousedown", ev => { drag = [ev.clientX, ev.clientY, view.x, view.y]; moved = false; });
window.addEventListener("mousemove", ev => {
  if (!drag) return;
  const r = svg.getBoundingClientRect();
  const dx = (ev.clientX - drag[0]) / r.width * view.w, dy = (ev.clientY - drag[1]) / r.height * view.h;
  if (Math.abs(ev.clientX - drag[0]) + Math.abs(ev.clientY - drag[1]) > 3) moved = true;
  view.x = drag[2] - dx; view.y = drag[3] - dy; setView();
});
window.addEventListener("mouseup", () => { drag = null; });
function fmt(v) { return v === null || v === undefined ? "–" : String(v); }
function chart(i) {
  const prof = D.profiles[P.id[i]];
  if (!prof || !D.doy.length) return "<p class=\"note\">No NDVI profile (give --data).</p>";
  const d0 = Math.min(...D.doy), d1 = Math.max(...D.doy) + 1;
  const W = 300, H = 150, x = d => 30 + (d - d0) / (d1 - d0) * (W - 40), y = v => H - 20 - (v + 0.2) / 1.2 * (H - 30);
  const line = (vals, color, dash, name) => {
    if (!vals) return "";
    const pts = vals.map((v, k) => v === null ? null : x(D.doy[k]).toFixed(1) + "," + y(v).toFixed(1)).filter(Boolean);
    return "<polyline class=\"" + name + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"" +
      (name === "parcel" ? 2 : 1.2) + "\" stroke-dasharray=\"" + dash + "\" points=\"" + pts.join(" ") + "\"/>";
  };
  let s = "<svg width=\"" + W + "\" height=\"" + H + "\" xmlns=\"" + NS + "\">";
  for (const v of [0, 0.5, 1]) s += "<text x=\"2\" y=\"" + (y(v) + 4) + "\" font-size=\"9\">" + v + "</text>" +
    "<line x1=\"30\" x2=\"" + (W - 10) + "\" y1=\"" + y(v) + "\" y2=\"" + y(v) + "\" stroke=\"#eee\"/>";
  s += line(D.medians[P.declared[i]], "#2c7bb6", "5,3", "declared");
  s += line(D.medians[P.predicted[i]], "#d7191c", "2,2", "predicted");
  s += line(prof, "#222", "", "parcel") + "</svg>";
  return s + "<div class=\"note\">NDVI by day of year: parcel (black), median of the declared class (blue, " +
    "dashed) and of the predicted class (red, dotted)</div>";
}
function show(i) {
  for (const s of layer.querySelectorAll(".sel")) s.classList.remove("sel");
  shapes[i].classList.add("sel");
  const rows = [["ID_PARCEL", P.id[i]], ["marker", P.marker[i] || "–"], ["declared code", P.code[i]],
    ["declared class", P.declared[i]], ["predicted class", P.predicted[i]], ["p_declared", P.p_declared[i]],
    ["p_predicted", P.p_predicted[i]], ["fold", P.fold[i]], ["clear pixels", P.n_pixels[i]], ["area (ha)", P.area_ha[i]]];
  document.getElementById("panel").innerHTML = "<h2 id=\"panel-title\">Parcel " + P.id[i] + "</h2><table>" +
    rows.map(([k, v]) => "<tr><th>" + k + "</th><td>" + fmt(v).replace(/</g, "&lt;") + "</td></tr>").join("") +
    "</table>" + chart(i);
}
layer.addEventListener("click", ev => { if (!moved && ev.target.dataset.i !== undefined) show(+ev.target.dataset.i); });
function find(id) {
  const i = P.id.indexOf(id.trim());
  if (i < 0) { document.getElementById("count").textContent = "no parcel " + id; return; }
  const b = shapes[i].getBBox(), pad = Math.max(b.width, b.height) * 2 + 50;
  view = {x: b.x - pad, y: b.y - pad, w: b.width + 2 * pad, h: b.height + 2 * pad}; setView(); show(i);
}
document.getElementById("search").addEventListener("keydown", ev => { if (ev.key === "Enter") find(ev.target.value); });
for (const id of ["fmarker", "fclass", "colorby"]) document.getElementById(id).addEventListener("change", apply);
window.addEventListener("resize", fit);
apply(); fit();
// #click=ID_PARCEL: click that parcel once loaded (a link from the report, and the page's test)
const m = location.hash.match(/^#click=(.+)$/);
if (m) { const i = P.id.indexOf(decodeURIComponent(m[1]));
  if (i >= 0) shapes[i].dispatchEvent(new MouseEvent("click", {bubbles: true})); }
</script></body></html>
"""
