"""The report as one self-contained HTML page: figures inlined as data URIs, no network fetches.

The page works from a file, an e-mail attachment or an air-gapped machine: no external CSS, fonts,
scripts or images. A few lines of inline JavaScript sort the leaderboard when a header is clicked,
and a self-check marks ``<html data-report-check="ok">`` once every image has decoded and no
script error was seen (the browser test reads it).
"""

from __future__ import annotations

import base64
import math
from html import escape

import pandas as pd

from reports.leaderboard import DISPLAY, display_table
from reports.report import Report
from reports.stats import summary_sentence

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{padding:.3rem .55rem;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{background:#f3f5f8;position:sticky;top:0}
td.text,th.text{text-align:left}td.wrap{white-space:normal;min-width:12rem}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.status-failed td,tr.status-skipped td,tr.status-unfinished td{color:#888}
.scroll{overflow-x:auto}.muted{color:#666;font-size:.9rem}.note{color:#8a5a00}
figure{margin:1.2rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}
"""

_JS_HEAD = """
window.__reportErrors=[];
window.addEventListener("error",function(e){window.__reportErrors.push(String(e.message||e));},true);
"""

_JS_BODY = """
(function(){
  function key(td){var v=td.getAttribute("data-value");var n=parseFloat(v);
    return (v===null||v===""||isNaN(n))?{n:null,s:(v===null?td.textContent:v)}:{n:n,s:v};}
  function cmp(a,b,dir){
    if(a.n===null&&b.n===null){return dir*a.s.localeCompare(b.s);}
    if(a.n===null){return 1;} if(b.n===null){return -1;}
    return dir*(a.n-b.n);}
  document.querySelectorAll("table.sortable").forEach(function(table){
    table.querySelectorAll("th").forEach(function(th,col){
      th.addEventListener("click",function(){
        var dir=th.getAttribute("aria-sort")==="descending"?1:-1;
        table.querySelectorAll("th").forEach(function(h){h.removeAttribute("aria-sort");});
        th.setAttribute("aria-sort",dir===1?"ascending":"descending");
        var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r1,r2){return cmp(key(r1.cells[col]),key(r2.cells[col]),dir);});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  window.addEventListener("load",function(){
    var imgs=document.images,broken=[];
    for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){broken.push(imgs[i].alt);}}
    var root=document.documentElement;
    root.setAttribute("data-images",String(imgs.length));
    root.setAttribute("data-rows",String(document.querySelectorAll("#leaderboard tbody tr").length));
    var ok=broken.length===0&&window.__reportErrors.length===0;
    root.setAttribute("data-report-check",ok?"ok":"broken: "+broken.concat(window.__reportErrors).join("; "));
  });
})();
"""


def render(report: Report) -> str:
    """The whole page as one string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report.title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_JS_HEAD}</script>",
        "</head>",
        "<body>",
        f"<h1>{escape(report.title)}</h1>",
        _status_line(report),
        "<h2>Leaderboard</h2>",
        '<p class="muted">Ordered by validation accuracy (what selection used); test scores are '
        "reported, never used to choose. Test accuracy carries a 95% bootstrap interval (1000 "
        "resamples); ECE uses 15 confidence bins. Click a header to sort.</p>",
        leaderboard_html(report.board),
        "<h2>Is the winner better?</h2>",
        *_comparisons(report),
        "<h2>Figures</h2>",
        *_figures(report),
        "<h2>Data and settings</h2>",
        _about(report.about),
    ]
    if report.notes:
        parts += [
            "<h2>Notes</h2>",
            "<ul>",
            *[f"<li>{escape(n)}</li>" for n in report.notes],
            "</ul>",
        ]
    parts += [f"<script>{_JS_BODY}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


def leaderboard_html(board: pd.DataFrame) -> str:
    """The leaderboard as a sortable table; each cell keeps its raw value in ``data-value``."""
    if board.empty:
        return "<p><em>No members or ensembles stored yet.</em></p>"
    shown = display_table(board)
    text_cols = {"model", "kind", "status"}
    head = "".join(
        f'<th class="{"text" if col in text_cols else "num"}" scope="col">{escape(header)}</th>'
        for col, header in DISPLAY.items()
    )
    rows = []
    for i, (_, raw) in enumerate(board.iterrows()):
        cells = []
        for col, header in DISPLAY.items():
            cls = "text" if col in text_cols else "num"
            cls += " wrap" if col == "status" else ""
            value = _sort_value(raw[col])
            title = (
                f' title="{escape(str(raw["reason"]))}"'
                if col == "status" and raw["reason"]
                else ""
            )
            cells.append(f'<td class="{cls}" data-value="{escape(value)}"{title}>'
                         f"{escape(shown[header].iloc[i])}</td>")  # fmt: skip
        rows.append(f'<tr class="status-{escape(str(raw["status"]))}">{"".join(cells)}</tr>')
    return (
        '<div class="scroll"><table id="leaderboard" class="sortable">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _sort_value(value) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def _status_line(report: Report) -> str:
    return f'<p class="muted">{escape(report.state)}</p>'


def _comparisons(report: Report) -> list[str]:
    if not report.comparisons:
        return ["<p><em>Needs at least two rows with test predictions.</em></p>"]
    out = []
    for c in report.comparisons:
        out += [f"<h3>{escape(c.title)}</h3>", f"<p>{escape(summary_sentence(c))}</p>"]
        rows = "".join(
            f'<tr><td class="text">{escape(r["class"])}</td><td>{r["a"]:.1%}</td>'
            f"<td>{r['b']:.1%}</td><td>{r['difference']:+.1%}</td><td>{r['support']}</td></tr>"
            for _, r in c.per_class.iterrows()
        )
        out.append(
            '<div class="scroll"><table class="sortable"><thead><tr><th class="text">class</th>'
            "<th>A</th><th>B</th><th>A &minus; B</th><th>support</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
    return out


def _figures(report: Report) -> list[str]:
    out = []
    for fig in report.figures:
        out.append(f'<h3 id="fig-{escape(fig.key)}">{escape(fig.title)}</h3>')
        if fig.path is None:
            out.append(f'<p class="note">Skipped: {escape(fig.note)}.</p>')
            continue
        data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img alt="{escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>"
        )
    return out


def _about(about: list[tuple[str, str]]) -> str:
    rows = "".join(
        f'<tr><th class="text" scope="row">{escape(k)}</th><td class="text">{escape(v)}</td></tr>'
        for k, v in about
    )
    return f"<table>{rows}</table>"
