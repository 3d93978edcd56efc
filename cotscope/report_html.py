"""``report.html``: one self-contained page per run (no network, no files beside it needed).

* every figure: the PNG embedded as base64, and its plotly figure (``<name>.plotly.json``) drawn on demand by
  plotly.js, which is inlined once for the whole page;
* every number of ``summary.json`` as tables (maps with the same keys become one table), plus the raw JSON;
* the stored per-layer analyses and sweep tables as tables (runs made with CLI commands have no summary);
* the provenance of each artifact (direction files, stores, sweep tables, exports, models, library versions);
* the commands to reproduce the run.

>>> from cotscope.report_html import md_to_html
>>> md_to_html("A **b** `c`.\\n\\n- one\\n- two")
'<p>A <strong>b</strong> <code>c</code>.</p>\\n<ul><li>one</li><li>two</li></ul>'
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cotscope.report import (
    _libraries_now,
    _now,
    _version,
    analysis_rows,
    findings,
    fmt_number,
    reproduce_commands,
    sweep_rows,
)

esc = html.escape

# ----------------------------------------------------------------------------------------- markdown subset
_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def _inline(text: str) -> str:
    out = esc(text, quote=False)
    for pat, rep in _INLINE:
        out = pat.sub(rep, out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def md_to_html(text: str) -> str:
    r"""The markdown the stages write (paragraphs, ``-`` lists with indented continuations, ``#`` headings,
    ``| pipe | tables |``, ``**bold**``, ```code```, links) as HTML.

    >>> md_to_html("| a | b |\n|---|---|\n| 1 | `x` |")  # doctest: +NORMALIZE_WHITESPACE
    '<div class="tablewrap"><table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td><code>x</code></td></tr></tbody></table></div>'
    """
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if para:
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if rows:
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            blocks.append(
                f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            )
            rows.clear()

    for line in text.splitlines():
        if line.strip().startswith("|") and line.strip().endswith("|"):
            if not rows:
                flush()
            if not re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*", line.strip()):  # skip the |---| rule
                rows.append(_cells(line))
            continue
        if rows:
            flush()
        if not line.strip():
            flush()
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            flush()
            level = min(6, len(m.group(1)) + 2)
            blocks.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"\s*[-*]\s+(.*)", line):
            if para:
                flush()
            items.append(m.group(1))
        elif items and line.startswith("  "):
            items[-1] += " " + line.strip()
        else:
            if items:
                flush()
            para.append(line.strip())
    flush()
    return "\n".join(blocks)


# ----------------------------------------------------------------------------------------- tables of numbers
def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _short_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 16 and all(_scalar(x) for x in v)


def _scalar_map(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(_scalar(x) or _short_list(x) for x in v.values())


_HASH = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{20,}\b")


def _value(v: Any) -> tuple[str, str]:
    """``(css class, inner HTML)`` of one value."""
    if v is None:
        return "none", "—"
    if isinstance(v, bool):
        return "bool", "yes" if v else "no"
    if isinstance(v, (int, float)):
        return "num", esc(fmt_number(v))
    if isinstance(v, list):
        return "list", esc(", ".join(fmt_number(x) for x in v))
    if isinstance(v, dict):
        return "json", f"<code>{esc(json.dumps(v, default=str))}</code>"
    text = str(v)
    if _HASH.search(text):  # long hashes: a prefix, the full value on hover
        return "hash", f'<span title="{esc(text)}">{esc(_HASH.sub(lambda m: m.group(1) + "…", text))}</span>'
    return "", esc(text)


def _cell(v: Any) -> str:
    cls, inner = _value(v)
    return f'<td class="{cls}">{inner}</td>' if cls else f"<td>{inner}</td>"


def table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str] | None = None, first: str | None = None) -> str:
    """Rows of dicts as an HTML table (columns: ``cols`` or the union of keys in order)."""
    if not rows:
        return ""
    if cols is None:
        cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>" for r in rows)
    cls = ' class="first-key"' if first else ""
    return f'<div class="tablewrap"><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _kv(d: Mapping[str, Any]) -> str:
    body = "".join(f"<tr><th>{esc(str(k))}</th>{_cell(v)}</tr>" for k, v in d.items())
    return f'<div class="tablewrap"><table class="kv"><tbody>{body}</tbody></table></div>'


SKIP_KEYS = frozenset({"report"})  # markdown paragraphs: shown under Findings, not as numbers


def tree(obj: Any, depth: int = 0) -> str:
    """Nested JSON as tables: scalars as key/value rows; sibling maps with the same keys as one table (e.g. per-layer
    metrics side by side); a map of same-shaped maps or a list of records as one table; the rest nested."""
    if _scalar(obj) or _short_list(obj):
        cls, inner = _value(obj)
        return f'<p class="{cls}">{inner}</p>'
    if isinstance(obj, list):
        if all(isinstance(x, dict) and _scalar_map(x) for x in obj):
            return table(obj)
        if all(_scalar(x) for x in obj):
            return f'<p class="list">{esc(", ".join(fmt_number(x) for x in obj))}</p>'
        return "".join(f"<details><summary>[{i}]</summary>{tree(x, depth + 1)}</details>" for i, x in enumerate(obj))
    obj = {k: v for k, v in obj.items() if k not in SKIP_KEYS}
    inner = [v for v in obj.values() if isinstance(v, dict)]
    if obj and len(inner) == len(obj) and all(_scalar_map(v) for v in inner) and len({tuple(v) for v in inner}) == 1:
        return table([{"key": k, **v} for k, v in obj.items()], first="key")
    parts = []
    scal = {k: v for k, v in obj.items() if _scalar(v) or _short_list(v)}
    if scal:
        parts.append(_kv(scal))
    rest = {k: v for k, v in obj.items() if k not in scal}
    groups: dict[tuple, list[str]] = {}
    for k, v in rest.items():
        if isinstance(v, dict) and v and all(_scalar(x) for x in v.values()):
            groups.setdefault(tuple(v), []).append(k)
    grouped = set()
    for keys, names in groups.items():
        if len(names) >= 2:
            rows = [{"key": k, **{n: rest[n][k] for n in names}} for k in keys]
            parts.append(
                f"<details open><summary>{esc(', '.join(names))}</summary>{table(rows, first='key')}</details>"
            )
            grouped.update(names)
    for k, v in rest.items():
        if k in grouped:
            continue
        small = isinstance(v, dict) and len(v) <= 16 and all(_scalar(x) for x in v.values())
        opened = " open" if small or (depth < 2 and not (isinstance(v, list) and len(v) > 16)) else ""
        parts.append(f"<details{opened}><summary>{esc(str(k))}</summary>{tree(v, depth + 1)}</details>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------- page parts
def _b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _json_script(obj_text: str) -> str:
    """JSON text safe inside ``<script type=application/json>`` (``<`` only occurs inside JSON strings)."""
    return obj_text.replace("<", "\\u003c")


def _figure_cards(info: Any) -> tuple[str, list[str], bool]:
    from cotscope.run_info import SECTIONS

    out, data, section, interactive = [], [], None, False
    for i, f in enumerate(info.figures):
        if f.section != section:
            if section is not None:
                out.append("</div>")
            section = f.section
            out.append(f'<h3 id="figs-{esc(section)}">{esc(SECTIONS.get(section, section))}</h3><div class="cards">')
        inst = f' <span class="inst">{esc(f.instance)}</span>' if f.instance else ""
        tabs = '<button class="tab on" data-view="static">Image</button>'
        panes = (
            f'<div class="pane" data-view="static"><img class="fig-img" alt="{esc(f.title)}" '
            f'src="data:image/png;base64,{_b64(f.png)}"></div>'
        )
        if f.plotly is not None:
            interactive = True
            did = f"plotly-{i}"
            data.append(f'<script type="application/json" id="{did}">{_json_script(f.plotly.read_text())}</script>')
            tabs += '<button class="tab" data-view="interactive">Interactive</button>'
            panes += (
                f'<div class="pane" data-view="interactive" hidden><div class="plotly-fig" data-src="{did}">'
                "</div></div>"
            )
        files = " · ".join(
            f'<a href="figures/{esc(p.name)}">{esc(p.suffix.lstrip(".").upper())}</a>'
            for p in (f.png, f.pdf, f.html)
            if p is not None
        )
        src = ", ".join(f"<code>{esc(s)}</code>" for s in f.sources)
        out.append(
            f'<figure class="card" id="fig-{esc(f.name)}" data-fig="{esc(f.name)}">'
            f'<div class="cardhead"><h4>{esc(f.title)}{inst}</h4><div class="tabs">{tabs}</div></div>{panes}'
            f"<figcaption><p>{_inline(f.description)}</p>"
            + (f'<p class="src">Drawn from {src}.</p>' if src else "")
            + f'<p class="files"><code>figures/{esc(f.name)}</code>: {files}</p></figcaption></figure>'
        )
    if section is not None:
        out.append("</div>")
    return "".join(out), data, interactive


def _provenance(info: Any, s: Mapping[str, Any]) -> str:
    parts = []
    models = info.models()
    if models:
        parts.append("<h3>Models</h3>" + table(models))

    def block(title: str, arts: list, cols: Sequence[str]) -> None:
        if not arts:
            return
        rows = [{"file": a.path, **{c: a.meta.get(c) for c in cols}} for a in arts]
        detail = "".join(
            f"<details><summary><code>{esc(a.path)}</code></summary>{tree(a.meta, 1)}</details>" for a in arts
        )
        parts.append(f"<h3>{esc(title)}</h3>{table(rows)}<div class='more'>{detail}</div>")

    block(
        "Direction files",
        info.directions,
        ("model_id", "method", "token_rule", "pairing", "layers", "normalisation", "n_pairs"),
    )
    block(
        "Activation stores and attention runs",
        info.stores,
        ("format", "model_id", "n_items", "n_traces", "layers", "positions", "pairings", "stimulus_hash"),
    )
    block("Sweep tables", info.tables, ("rows", "direction_model", "target_model", "config_hash"))
    block("Exports", info.exports, ("format", "bytes", "model_id", "method", "normalisation"))
    block("Other artifacts", info.others, ("format", "format_version", "created"))
    env = (s.get("environment") or {}).get("libraries") or {}
    now = _libraries_now()
    seen = info.libraries()
    names = sorted(set(env) | set(now) | set(seen))
    if names:
        rows = [
            {
                "library": n,
                "run (summary.json)": env.get(n),
                "artifacts": ", ".join(sorted(seen.get(n, ()))) or None,
                "this report": now.get(n),
            }
            for n in names
        ]
        parts.append("<h3>Libraries</h3>" + table(rows))
    if (s.get("environment") or {}).get("python"):
        e = s["environment"]
        parts.append(f"<p>Python {esc(str(e.get('python')))} on {esc(str(e.get('machine')))}.</p>")
    return "".join(parts) or "<p>No cotscope artifacts found in this run.</p>"


def _stored(info: Any) -> str:
    from cotscope.run_info import rel

    parts = []
    for a in info.analyses:
        parts.append(
            f"<h3>{esc(a.name)} <span class='inst'>{esc(rel(info.run_dir, a.path))}</span></h3>"
            f"<p>{esc(a.model_id)}; token rule <code>{esc(str(a.data['position']))}</code>; "
            f"{esc(str(a.data.get('n_pairs', '?')))} pairs; best layer {esc(str(a.data['best_layer']))}.</p>"
            + table(analysis_rows(a))
        )
    for t in info.tables:
        try:
            rows = sweep_rows(info.run_dir / t.path)
        except Exception as e:  # a table we cannot read is reported, not fatal
            parts.append(f"<h3>{esc(t.path)}</h3><p class='err'>not readable: {esc(str(e))}</p>")
            continue
        parts.append(
            f"<h3>{esc(t.path)}</h3><p>Per-cell means over prompts ({esc(str(t.meta.get('rows')))} rows; "
            f"{esc(str(t.meta.get('direction_model')))} → {esc(str(t.meta.get('target_model')))}).</p>" + table(rows)
        )
    return "".join(parts)


def _stages(s: Mapping[str, Any]) -> str:
    st = s.get("stages") or {}
    if not st:
        return ""
    chips = "".join(
        f'<span class="chip {esc(v.get("status", ""))}" title="{esc(str(v.get("error", "")))}">'
        f"{esc(k)}: {esc(v.get('status', '?'))}"
        + (f" · {esc(fmt_number(v['seconds']))} s" if "seconds" in v else "")
        + "</span>"
        for k, v in st.items()
    )
    return f'<div class="chips">{chips}</div>'


CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--card:#fff;--accent:#0969da;--ok:#1a7f37;--bad:#cf222e;
--warn:#9a6700}
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:var(--bg)}
header.top{background:linear-gradient(120deg,#0d1b2a,#1b3a5c);color:#fff;padding:28px 40px 22px}
header.top h1{margin:0 0 6px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header.top .meta{color:#c9d6e3;font-size:13.5px}
header.top code{background:rgba(255,255,255,.12);color:#fff}
.chips{margin-top:12px;display:flex;flex-wrap:wrap;gap:6px}
.chip{font-size:12.5px;padding:2px 10px;border-radius:999px;background:rgba(255,255,255,.14);color:#fff}
.chip.ok{background:rgba(46,160,67,.35)}.chip.failed{background:rgba(248,81,73,.45)}.chip.skipped{background:rgba(210,153,34,.4)}
.layout{display:flex;gap:28px;max-width:1500px;margin:0 auto;padding:24px 28px}
nav.toc{position:sticky;top:16px;align-self:flex-start;flex:0 0 220px;font-size:13.5px;background:var(--card);
border:1px solid var(--line);border-radius:10px;padding:14px 16px}
nav.toc a{display:block;color:var(--fg);text-decoration:none;padding:3px 0}
nav.toc a.sub{padding-left:12px;color:var(--muted)}
nav.toc a:hover{color:var(--accent)}
main{flex:1;min-width:0}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 26px 22px;margin-bottom:22px}
h2{font-size:21px;margin:18px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:17px;margin:22px 0 10px}
h4{font-size:15px;margin:0}
code{font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#eff2f5;padding:1px 5px;border-radius:4px}
a{color:var(--accent)}
.finding{border-left:3px solid var(--accent);padding:2px 0 2px 16px;margin:14px 0}
.finding h3{margin-top:8px}
.toolbar{display:flex;gap:8px;align-items:center;margin:6px 0 4px;color:var(--muted);font-size:13.5px}
button{font:inherit;font-size:13px;border:1px solid var(--line);background:#f6f8fa;color:var(--fg);border-radius:6px;
padding:3px 11px;cursor:pointer}
button.on{background:var(--accent);border-color:var(--accent);color:#fff}
.cards{display:flex;flex-direction:column;gap:18px}
figure.card{margin:0;border:1px solid var(--line);border-radius:10px;padding:14px 16px;background:#fff}
.cardhead{display:flex;justify-content:space-between;align-items:center;gap:12px;margin-bottom:10px}
.tabs{display:flex;gap:6px}
.inst{font-weight:400;font-size:12.5px;color:var(--muted);background:#eff2f5;border-radius:999px;padding:1px 8px;
margin-left:6px}
.pane{overflow-x:auto}
img.fig-img{display:block;max-width:100%;height:auto;margin:0 auto}
.plotly-fig{min-height:420px}
figcaption{color:var(--muted);font-size:13.5px;margin-top:8px}
figcaption p{margin:4px 0}
.tablewrap{overflow-x:auto;margin:8px 0 14px}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e6eaef;padding:4px 10px;text-align:left;vertical-align:top}
thead th{background:#f6f8fa;border-bottom:1px solid var(--line);font-weight:600}
tbody tr:nth-child(even){background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,"DejaVu Sans Mono",monospace;
font-size:12.5px}
td.none{color:#8c959f}
table.kv th{background:transparent;font-weight:500;color:var(--muted);white-space:nowrap}
table.kv td.num{text-align:left}
details{margin:6px 0 6px 2px}
details>summary{cursor:pointer;font-weight:600;font-size:14px;color:#24292f}
details details{margin-left:14px}
.more details>summary{font-weight:400}
pre{background:#0d1117;color:#e6edf3;border-radius:8px;padding:14px 16px;overflow-x:auto;font-size:13px}
pre code{background:none;color:inherit;padding:0}
ul.skipped{color:var(--muted);font-size:13.5px}
.err{color:var(--bad)}
footer{color:var(--muted);font-size:12.5px;text-align:center;padding:10px 0 30px}
@media (max-width:1000px){.layout{flex-direction:column}nav.toc{position:static;flex:none}}
"""

JS = """
(function(){
  function plotData(div){ return JSON.parse(document.getElementById(div.dataset.src).textContent); }
  function draw(div){
    if(div.dataset.drawn){ Plotly.Plots.resize(div); return Promise.resolve(div); }
    var f = plotData(div), layout = f.layout || {};
    if(layout.width && layout.width > div.clientWidth){ layout.width = div.clientWidth; }  // fit the card
    return Plotly.newPlot(div, f.data || [], layout, {responsive: true, displaylogo: false})
      .then(function(){ div.dataset.drawn = "1"; return div; });
  }
  function setView(card, view){
    var has = card.querySelector('.pane[data-view="' + view + '"]');
    if(!has){ return Promise.resolve(null); }
    card.querySelectorAll('.pane').forEach(function(p){ p.hidden = p.dataset.view !== view; });
    card.querySelectorAll('.tab').forEach(function(b){ b.classList.toggle('on', b.dataset.view === view); });
    return view === 'interactive' ? draw(card.querySelector('.plotly-fig')) : Promise.resolve(null);
  }
  function showAll(view){
    document.querySelectorAll('[data-all]').forEach(function(b){ b.classList.toggle('on', b.dataset.all === view); });
    var cards = Array.prototype.slice.call(document.querySelectorAll('figure.card'));
    return cards.reduce(function(p, c){ return p.then(function(){ return setView(c, view); }); }, Promise.resolve())
      .then(function(){ return cards.length; });
  }
  document.addEventListener('click', function(e){
    var t = e.target.closest('.tab'); if(t){ setView(t.closest('figure.card'), t.dataset.view); }
    var g = e.target.closest('[data-all]'); if(g){ showAll(g.dataset.all); }
  });
  window.cotscopeReport = {showAll: showAll, setView: setView};
})();
"""


def render_html(s: Mapping[str, Any], info: Any, skipped: Mapping[str, str] | None = None) -> str:
    """The report page of a run (``s``: its summary; ``info``: :func:`cotscope.run_info.collect` of it)."""
    from cotscope.run_info import SECTIONS

    run_dir = s.get("run_dir", str(info.run_dir))
    title = str(s.get("title", "cotscope run"))
    toc: list[tuple[str, str, bool]] = []
    body: list[str] = []

    found = findings(s)
    if found:
        toc.append(("findings", "Findings", False))
        body.append(
            '<section id="findings"><h2>Findings</h2>'
            + "".join(f'<div class="finding"><h3>{esc(t)}</h3>{md_to_html(m)}</div>' for t, m in found)
            + "</section>"
        )

    cards, data, interactive = _figure_cards(info)
    skipped = dict(skipped if skipped is not None else s.get("figures_skipped") or {})
    toc.append(("figures", f"Figures ({len(info.figures)})", False))
    for sec in dict.fromkeys(f.section for f in info.figures):
        toc.append((f"figs-{sec}", SECTIONS.get(sec, sec), True))
    toolbar = (
        (
            '<div class="toolbar">Show every figure as <button data-all="static" class="on">image</button>'
            '<button data-all="interactive">interactive</button></div>'
        )
        if interactive
        else ""
    )
    skip_html = (
        (
            "<details><summary>Figures not drawn ("
            + str(len(skipped))
            + ")</summary><ul class='skipped'>"
            + "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in skipped.items())
            + "</ul></details>"
        )
        if skipped
        else ""
    )
    body.append(
        f'<section id="figures"><h2>Figures</h2>{toolbar}'
        + (cards or "<p>No figures were drawn: no stored result any figure reads was found.</p>")
        + skip_html
        + "</section>"
    )

    stored = _stored(info)
    if stored:
        toc.append(("stored", "Stored results", False))
        body.append(
            '<section id="stored"><h2>Stored results</h2><p>The per-layer analyses and sweep tables of this '
            "run, read from their files.</p>" + stored + "</section>"
        )

    nums = {k: v for k, v in s.items() if k not in ("title", "run_dir", "commands", "figures", "figures_skipped")}
    if nums:
        toc.append(("numbers", "Numbers (summary.json)", False))
        raw = esc(json.dumps(s, indent=2, default=str))
        body.append(
            '<section id="numbers"><h2>Numbers</h2><p>Every value of <code>summary.json</code>; maps keyed '
            "the same way (e.g. by layer) share one table.</p>"
            + "".join(f"<details open><summary>{esc(str(k))}</summary>{tree(v, 1)}</details>" for k, v in nums.items())
            + '<details id="raw-summary"><summary>summary.json as stored</summary>'
            f"<pre><code>{raw}</code></pre></details>"
            "</section>"
        )

    toc.append(("provenance", "Provenance", False))
    body.append(f'<section id="provenance"><h2>Provenance</h2>{_provenance(info, s)}</section>')

    toc.append(("reproduce", "Reproduce", False))
    cmds = "\n".join(reproduce_commands(run_dir, s))
    cfg = _kv(s["config"]) if s.get("config") else ""
    body.append(
        f'<section id="reproduce"><h2>Reproduce</h2><p>The commands that made this run (as recorded), then '
        f"the ones that redraw its figures and this report from the stored results:</p>"
        f"<pre><code>{esc(cmds)}</code></pre>"
        + (
            ""
            if s.get("commands")
            else "<p>This run recorded no commands (it has no <code>summary.json</code> "
            "from <code>cotscope demo</code>, <code>cotscope run</code> or a recipe): the provenance above lists "
            "each artifact's model, layers, token rules and stimulus hash.</p>"
        )
        + (f"<h3>Configuration</h3>{cfg}" if cfg else "")
        + "<p>Install the same versions: <code>make setup</code> in a checkout (pinned by "
        "<code>requirements/lock.txt</code>), or the library versions listed under Provenance.</p></section>"
    )

    nav = "".join(f'<a href="#{esc(i)}"{" class=sub" if sub else ""}>{esc(t)}</a>' for i, t, sub in toc)
    total = f" · {fmt_number(s['total_seconds'])} s" if "total_seconds" in s else ""
    plotly = ""
    if interactive:
        from plotly.offline import get_plotlyjs

        plotly = f"<script>{get_plotlyjs()}</script>"
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style>{plotly}</head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><div class="meta">Run <code>{esc(str(run_dir))}</code>{total} · '
        f"report written {esc(_now())} by cotscope {esc(_version())}</div>{_stages(s)}</header>"
        f'<div class="layout"><nav class="toc">{nav}</nav><main>{"".join(body)}</main></div>'
        f"<footer>cotscope report · self-contained: figures, plotly.js and data are embedded in this file</footer>"
        + "".join(data)
        + f"<script>{JS}</script></body></html>\n"
    )
