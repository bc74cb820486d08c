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

from reports.figures import drawn_size
from reports.leaderboard import (
    CALIBRATION_NOTE,
    DISPLAY,
    ROBUSTNESS_COLUMNS,
    display_columns,
    display_table,
    table_notes,
)
from reports.markdown import comparison_headers
from reports.report import Report
from reports.stats import summary_sentence

# Layout: the page never scrolls sideways. Tables wrap their text cells and headers instead of
# growing (numbers stay whole), and long unbroken words (file paths, shapes in an error) may break.
# The leaderboard's header sticks to the top of the window while its rows scroll past. A sticky
# header sticks within its nearest scrolling box, so the table has none around it wherever it fits
# (every column fits the 1200 px page column: the interval goes under the accuracy, names and
# headers wrap, a failure's reason wraps in a 10rem Status column). Where it cannot fit (a narrow
# window: the media query; or data wider than expected: the script below measures and sets
# "boxed") the table sits in a box that scrolls both ways inside itself and is at most a window
# high, so the header sticks to the top of that box instead and the page itself still never
# scrolls sideways. Figures are shown at the size they were drawn for (width/height attributes,
# see reports.figures.DPI), never larger, and shrink with a narrower window.
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
p,li{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{padding:.3rem .5rem;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top;
overflow-wrap:break-word}
td.num,td.kind{white-space:nowrap}
thead th{background:#f3f5f8;position:sticky;top:0;z-index:1;vertical-align:bottom}
td.text,th.text{text-align:left}
#leaderboard{width:100%;font-size:.76rem}#leaderboard th,#leaderboard td{padding:.3rem .35rem}
#leaderboard .ci{display:block;color:#666}
#leaderboard td.status,table.about td{overflow-wrap:anywhere}
#leaderboard td.status{width:10rem;min-width:7rem}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.status-failed td,tr.status-skipped td,tr.status-unfinished td{color:#888}
table.about th{white-space:nowrap;text-align:left;font-weight:600}
.board.boxed{overflow:auto;max-height:calc(100vh - 1rem)}
@media (max-width:960px){.board{overflow:auto;max-height:calc(100vh - 1rem)}}
.muted{color:#666;font-size:.9rem}.note{color:#8a5a00}
figure{margin:1.2rem 0}figure img{display:block;max-width:100%;height:auto;
box-shadow:0 0 0 1px #eee}
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
  function fit(){document.querySelectorAll(".board").forEach(function(box){
    box.classList.toggle("boxed",box.firstElementChild.offsetWidth>box.clientWidth);});}
  fit();window.addEventListener("resize",fit);
  window.addEventListener("load",function(){
    fit();
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
        f"resamples); ECE uses 15 confidence bins. {escape(CALIBRATION_NOTE)} Click a header to "
        "sort.</p>",
        leaderboard_html(report.board),
        *[f'<p class="muted">{escape(note)}</p>' for note in table_notes(report.board)],
        "<h2>Is the winner better?</h2>",
        *_comparisons(report),
        "<h2>Figures</h2>",
        *_figures(report),
        *_tables(report),
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
    columns = display_columns(board)
    shown = display_table(board, columns)
    text_cols = {"model", "kind", "status"}
    head = "".join(  # "FLOPs/img" may break after its slash
        f'<th class="{"text" if col in text_cols else "num"}" scope="col">'
        f"{escape(header).replace('/', '/<wbr>') if len(header) > 6 else escape(header)}</th>"
        for col, header in ((c, DISPLAY[c]) for c in columns)
    )
    rows = []
    for i, (_, raw) in enumerate(board.iterrows()):
        cells = []
        for col, header in ((c, DISPLAY[c]) for c in columns):
            cls = f"text {col}" if col in text_cols else "num"
            value = _sort_value(raw[col])
            title = (
                f' title="{escape(str(raw["reason"]))}"'
                if col == "status" and raw["reason"]
                else ""
            )
            text = escape(shown[header].iloc[i])
            # "79.50% [75.5, 83.5]": the interval on a second line
            if (col == "test_accuracy" or col in ROBUSTNESS_COLUMNS) and " [" in text:
                text = text.replace(" [", '<span class="ci">[', 1) + "</span>"
            cells.append(f'<td class="{cls}" data-value="{escape(value)}"{title}>{text}</td>')
        rows.append(f'<tr class="status-{escape(str(raw["status"]))}">{"".join(cells)}</tr>')
    return (
        '<div class="board"><table id="leaderboard" class="sortable">'
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
            f'<tr><td class="text">{escape(r["class"])}</td><td class="num">{r["a"]:.1%}</td>'
            f'<td class="num">{r["b"]:.1%}</td><td class="num">{r["difference"]:+.1%}</td>'
            f'<td class="num">{r["support"]}</td></tr>'
            for _, r in c.per_class.iterrows()
        )
        heads = "".join(
            f'<th scope="col" style="max-width:11rem">{escape(h)}</th>'
            for h in comparison_headers(c)[1:]
        )
        out.append(
            '<table class="sortable per-class"><thead><tr><th class="text" scope="col">class</th>'
            f"{heads}</tr></thead><tbody>{rows}</tbody></table>"
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
        width, height = (fig.width, fig.height) if fig.width else drawn_size(fig.path)
        size = f' width="{width}" height="{height}"'
        out.append(
            f'<figure><img alt="{escape(fig.title)}"{size} src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>"
        )
    return out


def _tables(report: Report) -> list[str]:
    if not report.tables:
        return []
    out = ["<h2>Robustness by corruption and severity</h2>"]
    for table in report.tables:
        head = "".join(f'<th scope="col">{escape(str(c))}</th>' for c in table.frame.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="{"text" if i == 0 else "num"}">{escape(str(v))}</td>'
                for i, v in enumerate(row)
            )
            + "</tr>"
            for row in table.frame.itertuples(index=False)
        )
        out += [
            f'<h3 id="table-{escape(table.key)}">{escape(table.title)}</h3>',
            f'<p class="muted">{escape(table.caption)}</p>',
            f'<table class="per-class"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
        ]
    return out


def _about(about: list[tuple[str, str]]) -> str:
    rows = "".join(
        f'<tr><th class="text" scope="row">{escape(k)}</th><td class="text">{escape(v)}</td></tr>'
        for k, v in about
    )
    return f'<table class="about">{rows}</table>'
