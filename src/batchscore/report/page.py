"""The report as one self-contained HTML page: inline CSS, each chart an SVG inlined as a data: image.

Nothing is fetched when the page opens (no script, no font, no CDN), so it reads the same from a laptop's
disk, an object store's console or a mail attachment. Every value from the data (labels, group values,
texts, paths) goes through `html.escape`; the charts are images, so an SVG can run nothing either.
"""

from __future__ import annotations

import base64
import html
import os
import re
import time
from typing import Any

import numpy as np

from . import plots
from .collect import OTHER, TOP_GROUPS, Facts, ModelFacts, Overflow, Sample

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;
color:#1b1b1b;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{margin-top:1.4em}.sub{color:#555;margin-top:2px}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.text{max-width:640px;white-space:pre-wrap;word-break:break-word}
img.plot{display:block;max-width:100%;height:auto;margin:10px 0}
.state{display:inline-block;padding:2px 8px;border-radius:4px;font-weight:600}
.complete{background:#d8f0dc}.running{background:#fdf0c8}.warn{background:#fbe0dc;padding:6px 10px;border-radius:4px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return _e(value)


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{_n(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>" for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _facts_table(pairs: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs if v not in (None, ""))
    return f"<table>{rows}</table>"


class Charts:
    """The page's charts, in order: each is an inline image, and a PNG file under `png_dir` when given."""

    def __init__(self, png_dir: str | None):
        self.png_dir = png_dir
        self.names: list[str] = []

    def add(self, fig: Any, name: str, alt: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "chart"
        while name in self.names:
            name += "-2"
        self.names.append(name)
        png = os.path.join(self.png_dir, name + ".png") if self.png_dir else None
        svg = plots.render(fig, png)
        data = base64.b64encode(svg.encode()).decode("ascii")
        return f'<img class="plot" data-chart="{_e(name)}" alt="{_e(alt)}" src="data:image/svg+xml;base64,{data}">'


def render_page(facts: Facts, png_dir: str | None = None, name: str | None = None) -> tuple[str, list[str]]:
    """The HTML page, and the names of its charts (the PNG files' stems); `name`: what the page calls the output
    (default: its URL)."""
    charts = Charts(png_dir)
    name = name or facts.survey.layout.url()
    with plots.style():
        body = [_header(facts, name), _run(facts), _warnings(facts), _bad_records(facts)]
        several = len(facts.models) > 1
        for model in facts.models:
            body.append(_model(facts, model, charts, several))
        if not facts.models:
            body.append("<h2>Results</h2><p>No committed rows yet: nothing to plot.</p>")
        body.append(_time(facts, charts))
    body.append(
        f'<p class="sub">Computed by batchscore in {facts.seconds:.1f} s, streaming {facts.rows_read:,} rows from '
        f"{len(facts.files):,} files, at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>"
    )
    title = f"batchscore report: {name}"
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    return page, charts.names


def _progress(facts: Facts) -> tuple[int, int | None]:
    return len(facts.survey.parts), facts.survey.num_chunks


def _header(facts: Facts, name: str) -> str:
    survey = facts.survey
    if survey.complete:
        state = '<span class="state complete">complete</span>'
    else:
        done, total = _progress(facts)
        share = f" ({done / total:.0%})" if total else ""
        state = (
            f'<span class="state running">in progress: {done:,} of {_n(total) if total else "?"} chunks{share}</span>'
        )
    return f'<h1>batchscore report</h1><p class="sub">{_e(name)} &nbsp; {state}</p>'


def _seconds(facts: Facts) -> float | None:
    summary = facts.summary
    if isinstance(summary.get("seconds"), (int, float)):
        return float(summary["seconds"])
    starts = [t["finished"] - (t["seconds"] or 0) for t in facts.chunk_times if t.get("finished")]
    started = [p.progress["started"] for p in facts.survey.parts if isinstance(p.progress.get("started"), (int, float))]
    first = min(started or starts or [0.0])
    return time.time() - first if first else None


def _run(facts: Facts) -> str:
    s, survey = facts.summary, facts.survey
    config, identity = survey.config, survey.identity or {}
    seconds = _seconds(facts)
    rows = s.get("rows") or 0
    listed = identity.get("models")
    models: list[Any] = listed if isinstance(listed, list) else [identity]
    model_names = (
        [m.get("model") for m in survey.metadata.get("models", [])]
        if isinstance(survey.metadata.get("models"), list)
        else [survey.metadata.get("model")]
    )
    model_lines = []
    for name, own in zip(model_names, models):
        fingerprint = own.get("model") if isinstance(own, dict) else None
        hashed = ""
        if isinstance(fingerprint, dict):
            hashed = fingerprint.get("commit") or (fingerprint.get("content_sha256") or "")[:16]
        model_lines.append(f"{name} ({hashed})" if hashed else str(name))
    changed = {k: v for k, v in identity.items() if k not in ("input", "columns", "model", "models") and v is not None}
    for number, own in enumerate(models if len(models) > 1 else []):
        changed |= {f"model {number + 1} {k}": v for k, v in own.items() if k != "model"}
    tokens = s.get("real_tokens") or 0
    shards = s.get("shards")
    pairs: list[tuple[str, Any]] = [
        ("input", s.get("input") or config.get("input")),
        ("model", "; ".join(model_lines)),
        ("options that change scores", ", ".join(f"{k}={v}" for k, v in changed.items())),
        ("rows", f"{rows:,}"),
        ("rows without text", f"{s.get('empty_text_rows') or 0:,}"),
        ("time", f"{seconds:,.1f} s" if seconds else None),
        ("rows/s", f"{rows / seconds:,.0f}" if seconds else None),
        ("tokens/s", f"{tokens / seconds:,.0f}" if seconds and tokens else None),
        ("device", s.get("device")),
        ("threads", s.get("threads")),
        ("shards", len(shards) if isinstance(shards, list) else None),
        ("batchscore", survey.metadata.get("batchscore_version")),
    ]
    if not survey.complete:
        done, total = _progress(facts)
        pairs.insert(
            0, ("progress", f"{done:,} of {total:,} chunks ({done / total:.1%})" if total else f"{done:,} chunks")
        )
    return "<h2>The run</h2>" + _facts_table(pairs)


def _warnings(facts: Facts) -> str:
    survey = facts.survey
    found = list(survey.notes)
    if survey.damaged:
        found.append(f"{len(survey.damaged)} unreadable parts (chunks {_list(survey.damaged)}): a rerun redoes them.")
    if survey.other_runs:
        found.append(
            f"{len(survey.other_runs)} parts of a run with other settings "
            f"(chunks {_list(survey.other_runs)}): left out."
        )
    if survey.foreign:
        found.append(f"Files batchscore did not write: {', '.join(survey.foreign[:5])}.")
    return "".join(f'<p class="warn">{_e(line)}</p>' for line in found)


def _bad_records(facts: Facts) -> str:
    """--on-bad-row quarantine: how many records were set aside, of which kinds, a few of each (escaped)."""
    from ..output.layout import quarantine_path
    from ..quarantine.rows import KINDS

    s = facts.summary
    if not s.get("bad_rows"):
        return ""
    place = s.get("quarantine") or quarantine_path(facts.survey.layout.url())
    kinds = s.get("bad_row_kinds") or {}
    out = [
        "<h2>Bad records</h2>",
        f"<p>{_n(s['bad_rows'])} of {_n(s.get('records'))} records read were bad: {_n(s.get('quarantined_rows'))} "
        f"without an output row, {_n(s.get('error_rows'))} output rows with null results and an <code>error</code>. "
        f"All are in <code>{_e(place)}</code> (<code>batchscore redrive</code> writes them back as an input file).</p>",
        _table(["kind", "records", "what it is"], [[k, n, KINDS.get(k, "")] for k, n in kinds.items()], {1}),
    ]
    if facts.bad_samples:
        rows = []
        for e in facts.bad_samples:
            where = e["source_file"] or ""
            where += (
                f", line {e['line']:,}"
                if e["line"] is not None
                else f", row {e['row']:,}"
                if e["row"] is not None
                else ""
            )
            rows.append(
                f"<tr><td>{_e(e['error_kind'])}</td><td>{_e(where)}</td><td>{_e(e['error_message'])}</td>"
                f'<td class="text">{_e(e["raw"])}</td></tr>'
            )
        head = "<tr><th>kind</th><th>where</th><th>why</th><th>record as read</th></tr>"
        out.append(f"<h3>The first of each kind</h3><table>{head}{''.join(rows)}</table>")
    return "".join(out)


def _list(values: list[int]) -> str:
    return ", ".join(map(str, values[:20])) + (", ..." if len(values) > 20 else "")


def _model(facts: Facts, model: ModelFacts, charts: Charts, several: bool) -> str:
    prefix = model.prefix
    title = f"Results: {prefix}label, {prefix}score" if several or prefix else "Results"
    out = [f"<h2>{_e(title)}</h2>"]
    scored = model.scored
    if not scored:
        return out[0] + "<p>No scored rows yet.</p>"
    labels = model.labels
    out.append(charts.add(plots.labels_chart(labels, model.counts), f"{prefix}labels", "Label distribution"))
    low_share = sum(model.low_confidence) / scored
    rows = [
        [
            name,
            model.counts[i],
            f"{model.counts[i] / scored:.1%}",
            model.low_confidence[i],
            f"{model.low_confidence[i] / max(model.counts[i], 1):.1%}",
        ]
        for i, name in sorted(enumerate(labels), key=lambda p: -model.counts[p[0]])
    ]
    if not model.regression:
        out.append(
            f"<p><b>{sum(model.low_confidence):,} rows ({low_share:.1%})</b> score below the low-confidence "
            f"threshold {facts.threshold:g}.</p>"
        )
    out.append(_table(["label", "rows", "share", f"score < {facts.threshold:g}", "of the label"], rows, {1, 3}))
    threshold = None if model.regression else facts.threshold
    title = "Values per label" if model.regression else "Score distribution per label"
    out.append(
        charts.add(
            plots.score_histograms(labels, model.hist, model.low, model.high, threshold, title),
            f"{prefix}scores",
            title,
        )
    )
    if model.margin is not None and model.margin.sum():
        out.append(
            charts.add(plots.margin_chart(model.margin), f"{prefix}margin", "Margin between the first two labels")
        )
    for grouping in facts.by:
        groups = model.groups.get(grouping.title, {})
        overflow = model.overflow.get(grouping.title) or Overflow()
        if not groups:
            continue
        ranked = sorted(groups.items(), key=lambda g: (-sum(g[1]), g[0]))
        shown = ranked[:TOP_GROUPS]
        rest = ranked[TOP_GROUPS:]
        other = _Other(rest, overflow, scored)
        if other.rows:
            shown.append((f"{OTHER}: {other.values_text} values", other.counts(len(labels))))
        out.append(f"<h3>Label mix by {_e(grouping.title)}</h3>")
        out.append(
            charts.add(
                plots.groups_chart(
                    grouping.title, labels, [(n, list(c) + [0] * (len(labels) - len(c))) for n, c in shown]
                ),
                f"{prefix}by-{grouping.column}-{grouping.unit or 'value'}",
                f"Label mix by {grouping.title}",
            )
        )
        if other.rows:
            out.append(f'<p class="other">{_e(other.say(len(shown) - 1, len(groups)))}</p>')
    out.append(_long_texts(facts, model, charts))
    out.append(_samples(facts, model))
    return "\n".join(out)


class _Other:
    """What one --by's "other" bar holds: the groups past the TOP_GROUPS drawn, and the values past MAX_GROUPS."""

    def __init__(self, rest: list[tuple[str, list[int]]], overflow: Overflow, scored: int):
        self.rest, self.overflow, self.scored = rest, overflow, scored
        self.rows = sum(sum(c) for _, c in rest) + overflow.rows
        self.values = len(rest) + overflow.values
        self.more = overflow.more  # the number of distinct values past MAX_GROUPS is a lower bound
        self.values_text = f"more than {self.values:,}" if self.more else f"{self.values:,}"

    def counts(self, labels: int) -> list[int]:
        total = [0] * labels
        for _, counts in [*self.rest, ("", self.overflow.counts)]:
            for label, n in enumerate(counts):
                total[label] += n
        return total

    def say(self, drawn: int, kept: int) -> str:
        """What "other" holds: the values past those drawn and, when memory's cap cut, the values read after it."""
        rows = f"{self.rows:,} rows, {self.rows / max(self.scored, 1):.1%}"
        overflow = self.overflow
        if not overflow.rows:
            return (
                f"The {drawn:,} largest of {kept:,} values are drawn; the other {len(self.rest):,} values ({rows}) "
                f"are summed as '{OTHER}'."
            )
        after = f"more than {overflow.values:,}" if self.more else f"{overflow.values:,}"
        counted = f"Only the first {kept:,} distinct values read are counted one by one"
        if self.rest:
            said = (
                f"{counted}, and the {drawn:,} largest of them drawn; the other {len(self.rest):,} of them and "
                f"{after} values read after ({rows}) are summed as '{OTHER}'"
            )
        elif self.more:
            said = f"{counted}, and drawn; the other values, {after} of them ({rows}), are summed as '{OTHER}'"
        else:
            said = f"{counted}, and drawn; the other {after} values ({rows}) are summed as '{OTHER}'"
        return said + " (one read after may be larger than a group drawn)."


def _model_summary(facts: Facts, model: ModelFacts) -> dict[str, Any]:
    listed = facts.summary.get("models")
    if isinstance(listed, list):
        for own in listed:
            if (own.get("prefix") or "") == model.prefix:
                return own
    return facts.summary


def _long_texts(facts: Facts, model: ModelFacts, charts: Charts) -> str:
    own = _model_summary(facts, model)
    out = ["<h3>Long texts</h3>"]
    if model.windows_column is None:
        rows = own.get("truncated_rows") or 0
        out.append(
            f"<p>Truncate mode: {rows:,} rows were longer than the model reads; "
            f"{own.get('truncated_tokens') or 0:,} of their tokens were never scored.</p>"
        )
        return "".join(out)
    out.append(
        f"<p>Window mode: {own.get('windows') or 0:,} windows scored; {own.get('windowed_rows') or 0:,} rows took "
        f"more than one; {own.get('truncated_rows') or 0:,} rows reached --max-windows "
        f"({own.get('truncated_tokens') or 0:,} tokens past it not scored).</p>"
    )
    if model.windows is not None and model.windows.sum():
        from .collect import MAX_WINDOW_BIN

        out.append(
            charts.add(plots.windows_chart(model.windows, MAX_WINDOW_BIN), f"{model.prefix}windows", "Windows per row")
        )
    return "".join(out)


def _sample_rows(facts: Facts, samples: list[Sample]) -> str:
    header = (
        ["row (from 0)"]
        + (["id"] if facts.id_column else [])
        + ["label", "score"]
        + (["text"] if facts.text_column else [])
    )
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for s in samples:
        cells = [f'<td class="n">{_n(s.number)}</td>']
        if facts.id_column:
            cells.append(f"<td>{_e(s.id)}</td>")
        cells += [f"<td>{_e(s.label)}</td>", f'<td class="n">{s.score:.4f}</td>']
        if facts.text_column:
            cells.append(f'<td class="text">{_e(s.text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _samples(facts: Facts, model: ModelFacts) -> str:
    if not facts.samples:
        return ""
    out = []
    if model.lowest and not model.regression:
        out.append(f"<h3>The {len(model.lowest)} lowest-confidence rows</h3>")
        out.append(_sample_rows(facts, model.lowest))
    for label in sorted(model.random, key=lambda i: -model.counts[i]):
        picked = sorted(model.random[label], key=lambda s: s.number or 0)
        out.append(f"<h3>{len(picked)} random rows labelled {_e(model.labels[label])}</h3>")
        out.append(_sample_rows(facts, picked))
    return "".join(out)


def _time(facts: Facts, charts: Charts) -> str:
    times = [t for t in facts.chunk_times if t.get("seconds") is not None and t.get("finished") is not None]
    out = ["<h2>Time</h2>"]
    if not times:
        out.append("<p>The parts of this output do not record their timing (written by an older batchscore).</p>")
        return "".join(out)
    seconds = [t["seconds"] for t in times]
    out.append(
        f"<p>{len(times):,} chunks; seconds per chunk: median {np.median(seconds):.2f}, slowest {max(seconds):.2f}.</p>"
    )
    out.append(charts.add(plots.time_chart(times), "time", "Seconds per chunk over the run"))
    return "".join(out)
