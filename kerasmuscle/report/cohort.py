"""A cohort QC report: one self-contained ``report.html`` for a results folder of ``predict`` or ``measure``.

:func:`write_report` reads every finished case (``<case>/measurements.json``) and writes one HTML file with
no network access and no external scripts: the pictures are embedded (data URIs), the plots are inline SVG
and the little JavaScript is inline too. The page holds

- a table of every case (review flags, level, confidence, SMA, SMI, muscle HU, the area of each group and
  the cut-off classes), the cases that need review first; click a column header to sort, type in the box
  to filter;
- a thumbnail of every overlay and level picture, which opens full size when clicked;
- cohort plots: SMI by sex with the Prado 2008 and Martin 2013 cut-off lines, the muscle HU per case, and
  the area of every group.

Opening ``report.html#selftest`` makes the page sort its table by SMI and record, in the element
``#selftest``, the order of the rows and whether every image loaded: a headless browser's DOM dump then
shows that the page works (``tests/test_report.py``).
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

from kerasmuscle.labels import MUSCLE_LABELS

REPORT_FILE = "report.html"
_PICTURES = (("overlay.png", "overlay"), ("level.png", "level"))


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{float(value):.{digits}f}"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _case_row(out: Path, rec: dict[str, Any]) -> dict[str, Any]:
    m = rec.get("measurements") or {}
    review = rec.get("review") or {}
    level = rec.get("level") or {}
    l3 = level.get("l3") or {}
    cut = rec.get("cutoffs") or {}
    sex = cut.get("sex")
    pictures = {}
    for filename, key in _PICTURES:
        path = out / rec["case"] / filename
        if path.is_file():
            pictures[key] = _data_uri(path)
    return {"case": rec["case"], "needs_review": bool(review.get("needs_review")),
            "reasons": "; ".join(f.get("message", "") for f in review.get("flags", [])),
            "level": level.get("method") or "", "z": l3.get("z_mm"), "confidence": l3.get("confidence"),
            "level_flags": ", ".join(l3.get("flags") or []), "sma": m.get("sma_cm2"), "smi": m.get("smi_cm2_m2"),
            "hu": m.get("muscle_mean_hu"), "sex": sex or "",
            "areas": {lab.key: m.get(f"{lab.key}_area_cm2") for lab in MUSCLE_LABELS},
            "sarcopenia": cut.get("sarcopenia"), "myosteatosis": cut.get("myosteatosis"),
            "cutoffs": cut.get("cutoffs") or "", "pictures": pictures}


def _svg_smi_by_sex(rows: list[dict[str, Any]]) -> str:
    """SMI per case in two columns (men, women; unknown sex apart) with the published cut-off lines."""
    from kerasmuscle.core.cutoffs import builtin

    w, h, left, top, bottom = 420, 260, 50, 20, 40
    values = [r["smi"] for r in rows if r["smi"] is not None]
    if not values:
        return '<p class="empty">No SMI: no case has a height.</p>'
    lines = {(rule.definition, rule.sex, rule.bmi_min, rule.bmi_max): rule.below
             for name, rules in builtin().items() for rule in rules if rule.measure == "smi_cm2_m2"}
    lo = min(values + list(lines.values())) * 0.85
    hi = max(values + list(lines.values())) * 1.1
    y = lambda v: top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    groups = (("M", "men"), ("F", "women"), ("", "sex unknown"))
    x0 = {key: left + 60 + i * 120 for i, (key, _) in enumerate(groups)}
    parts = [f'<svg class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="SMI by sex">',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#444"/>']
    for tick in range(int(lo // 10 * 10 + 10), int(hi) + 1, 10):
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">{tick}</text>')
    for (definition, sex, bmin, bmax), below in sorted(lines.items(), key=lambda kv: str(kv[0])):
        if sex not in ("M", "F"):
            continue
        cx = x0[sex]
        dash = "4,2" if definition == "martin2013" else ""
        band = "" if bmin is None and bmax is None else (f" BMI&lt;{bmax:g}" if bmax else f" BMI&#8805;{bmin:g}")
        parts.append(f'<line x1="{cx - 45}" x2="{cx + 45}" y1="{y(below):.1f}" y2="{y(below):.1f}" stroke="#c00" '
                     f'stroke-dasharray="{dash}"><title>{definition} {sex} {below:g}{band}</title></line>')
        parts.append(f'<text x="{cx + 47}" y="{y(below) + 3:.1f}" font-size="8" fill="#c00">{definition[:6]}{band}</text>')
    for key, name in groups:
        cx = x0[key]
        parts.append(f'<text x="{cx}" y="{h - bottom + 16}" text-anchor="middle" font-size="11">{name}</text>')
        members = [r for r in rows if (r["sex"] or "") == key and r["smi"] is not None]
        for i, r in enumerate(members):
            dx = ((i * 7) % 40) - 20
            colour = "#d33" if r["sarcopenia"] else "#333"
            parts.append(f'<circle cx="{cx + dx}" cy="{y(r["smi"]):.1f}" r="4" fill="{colour}" fill-opacity="0.7">'
                         f'<title>{html.escape(r["case"])}: SMI {r["smi"]:.1f}</title></circle>')
    parts.append(f'<text x="12" y="{top + (h - top - bottom) / 2}" font-size="11" transform="rotate(-90 12 '
                 f'{top + (h - top - bottom) / 2})" text-anchor="middle">SMI (cm²/m²)</text></svg>')
    return "".join(parts)


def _svg_bars(rows: list[dict[str, Any]], value, label: str, unit: str, colour: str = "#557") -> str:
    """One bar per case."""
    items = [(r["case"], value(r)) for r in rows if value(r) is not None]
    if not items:
        return f'<p class="empty">No {label}.</p>'
    w, h, left, bottom = 420, 200, 50, 30
    top_v = max(v for _, v in items) * 1.1 or 1.0
    bar = max(2.0, min(24.0, (w - left - 10) / len(items) - 2))
    parts = [f'<svg class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">']
    for i, (case, v) in enumerate(items):
        bh = (h - bottom - 10) * max(v, 0) / top_v
        x = left + i * (bar + 2)
        parts.append(f'<rect x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{bar:.1f}" height="{bh:.1f}" fill="{colour}">'
                     f'<title>{html.escape(case)}: {v:.1f} {unit}</title></rect>')
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="11">{label} ({unit}), one bar per case; max '
                 f'{max(v for _, v in items):.1f}</text></svg>')
    return "".join(parts)


def _svg_areas(rows: list[dict[str, Any]]) -> str:
    """The area of each group: every case a dot, in the group's colour."""
    w, h, left, bottom, top = 420, 220, 50, 40, 10
    values = [r["areas"][lab.key] for r in rows for lab in MUSCLE_LABELS if r["areas"][lab.key] is not None]
    if not values:
        return '<p class="empty">No areas.</p>'
    hi = max(values) * 1.1 or 1.0
    y = lambda v: top + (h - top - bottom) * (1 - v / hi)  # noqa: E731
    parts = [f'<svg class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="areas per group">']
    for i, lab in enumerate(MUSCLE_LABELS):
        cx = left + 35 + i * 72
        colour = "#%02x%02x%02x" % lab.colour
        parts.append(f'<text x="{cx}" y="{h - bottom + 14}" text-anchor="middle" font-size="9">{html.escape(lab.short)}</text>')
        for j, r in enumerate(rows):
            v = r["areas"][lab.key]
            if v is None:
                continue
            parts.append(f'<circle cx="{cx + ((j * 5) % 24) - 12}" cy="{y(v):.1f}" r="3.5" fill="{colour}" '
                         f'stroke="#222" stroke-width="0.5"><title>{html.escape(r["case"])}: {v:.1f} cm²</title></circle>')
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="11">area per group (cm²), max {hi / 1.1:.1f}</text></svg>')
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#eee;cursor:pointer;position:sticky;top:0}td.t{text-align:left}tr.review td{background:#fff1f0}
img.thumb{max-width:120px;max-height:90px;cursor:zoom-in;border:1px solid #999}
#lightbox{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);text-align:center;z-index:9}
#lightbox img{max-width:96%;max-height:94%;margin-top:2%}.plots{display:flex;flex-wrap:wrap;gap:1.5em}
.empty{color:#777}#filter{margin:.5em 0;padding:3px;width:20em}
"""

_JS = """
(function(){
var table=document.getElementById('cases'),body=table.tBodies[0];
function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;var n=parseFloat(v);
  return (v!==''&&!isNaN(n)&&isFinite(v))?n:v.toLowerCase();}
function sortBy(col){var th=table.tHead.rows[0].cells[col],asc=th.getAttribute('data-asc')!=='1';
  for(var c of table.tHead.rows[0].cells)c.removeAttribute('data-asc');th.setAttribute('data-asc',asc?'1':'0');
  var rows=Array.from(body.rows);rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
    if(x===''&&y!=='')return 1;if(y===''&&x!=='')return -1;return (x<y?-1:x>y?1:0)*(asc?1:-1);});
  rows.forEach(function(r){body.appendChild(r);});}
Array.from(table.tHead.rows[0].cells).forEach(function(th,i){th.addEventListener('click',function(){sortBy(i);});});
document.getElementById('filter').addEventListener('input',function(e){var q=e.target.value.toLowerCase();
  Array.from(body.rows).forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});
var box=document.getElementById('lightbox'),big=box.querySelector('img');
document.querySelectorAll('img.thumb').forEach(function(im){im.addEventListener('click',function(){big.src=im.src;box.style.display='block';});});
box.addEventListener('click',function(){box.style.display='none';});
if(location.hash==='#selftest'){window.addEventListener('load',function(){
  var col=Array.from(table.tHead.rows[0].cells).findIndex(function(c){return c.getAttribute('data-col')==='smi';});
  sortBy(col);var order=Array.from(body.rows).map(function(r){return r.getAttribute('data-case');});
  var imgs=Array.from(document.querySelectorAll('img.thumb'));
  var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
  document.getElementById('selftest').textContent=JSON.stringify({sorted_by:'smi',order:order,images:imgs.length,loaded:ok});});}
})();
"""


def build_report(out: str | os.PathLike, records: list[dict[str, Any]]) -> str:
    """The HTML text of the cohort report of the results folder ``out`` from its finished case ``records``
    (:func:`kerasmuscle.predict.batch.finished_records`; the pictures are read from the case folders).

    Raises:
        KerasMuscleError: no finished case.
    """
    from kerasmuscle import __version__
    from kerasmuscle.errors import KerasMuscleError

    out = Path(out)
    if not records:
        raise KerasMuscleError(f"{out}: no finished case (no <case>/measurements.json); run kerasmuscle predict first")
    rows = sorted((_case_row(out, r) for r in records), key=lambda r: (not r["needs_review"], r["case"]))
    head = [("case", "case", "t"), ("review", "needs_review", "t"), ("reasons", "reasons", "t"),
            ("level", "level", "t"), ("z (mm)", "z", ""), ("confidence", "confidence", ""),
            ("level flags", "level_flags", "t"), ("sex", "sex", "t"), ("SMA (cm²)", "sma", ""),
            ("SMI (cm²/m²)", "smi", ""), ("muscle HU", "hu", "")]
    head += [(f"{lab.short} (cm²)", lab.key, "") for lab in MUSCLE_LABELS]
    head += [("sarcopenia", "sarcopenia", "t"), ("myosteatosis", "myosteatosis", "t"), ("overlay", "overlay", "t"),
             ("level picture", "level_png", "t")]
    cells_html = []
    for r in rows:
        def cell(key, kind):
            if key in {lab.key for lab in MUSCLE_LABELS}:
                v = r["areas"][key]
                return f'<td data-v="{_num(v, 4)}">{_num(v)}</td>'
            if key in ("z", "sma", "smi", "hu"):
                return f'<td data-v="{_num(r[key], 4)}">{_num(r[key])}</td>'
            if key == "confidence":
                return f'<td data-v="{_num(r[key], 4)}">{_num(r[key], 2)}</td>'
            if key == "needs_review":
                return f'<td class="t" data-v="{0 if r[key] else 1}">{"needs review" if r[key] else "ok"}</td>'
            if key in ("sarcopenia", "myosteatosis"):
                v = r[key]
                text = "" if v is None else ("yes" if v else "no")
                return f'<td class="t" title="{html.escape(r["cutoffs"])}">{text}</td>'
            if key in ("overlay", "level_png"):
                uri = r["pictures"].get("overlay" if key == "overlay" else "level")
                return (f'<td class="t"><img class="thumb" alt="{key} of {html.escape(r["case"])}" src="{uri}"></td>'
                        if uri else '<td class="t"></td>')
            return f'<td class="t">{html.escape(str(r[key]))}</td>'
        cells = "".join(cell(key, kind) for _, key, kind in head)
        klass = ' class="review"' if r["needs_review"] else ""
        cells_html.append(f'<tr data-case="{html.escape(r["case"])}"{klass}>{cells}</tr>')
    header = "".join(f'<th data-col="{key}">{html.escape(name)}</th>' for name, key, _ in head)
    review = sum(r["needs_review"] for r in rows)
    plots = (f'<div><h3>SMI by sex, with cut-offs</h3>{_svg_smi_by_sex(rows)}</div>'
             f'<div><h3>Muscle HU</h3>{_svg_bars(rows, lambda r: r["hu"], "mean muscle HU", "HU")}</div>'
             f'<div><h3>Area per group</h3>{_svg_areas(rows)}</div>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>kerasmuscle cohort report</title>'
            f'<style>{_CSS}</style></head><body><h1>kerasmuscle cohort report</h1>'
            f'<p>{len(rows)} case(s) from <code>{html.escape(str(out.resolve()))}</code>; {review} need review '
            f'(listed first). kerasmuscle {html.escape(__version__)}. Click a header to sort, a picture to open '
            f'it full size.</p><input id="filter" placeholder="filter cases (any text)">'
            f'<table id="cases"><thead><tr>{header}</tr></thead><tbody>{"".join(cells_html)}</tbody></table>'
            f'<h2>Cohort</h2><div class="plots">{plots}</div>'
            f'<div id="lightbox"><img alt="full size"></div><pre id="selftest"></pre>'
            f'<script>{_JS}</script></body></html>')


def write_report(out: str | os.PathLike, records: list[dict[str, Any]], path: str | os.PathLike | None = None) -> Path:
    """Write :func:`build_report` to ``path`` (default ``out/report.html``); returns the path."""
    from kerasmuscle.fileutil import atomic_write_text

    target = Path(path) if path is not None else Path(out) / REPORT_FILE
    atomic_write_text(target, build_report(out, records))
    return target


__all__ = ["REPORT_FILE", "build_report", "write_report"]
