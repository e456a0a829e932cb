"""The report's charts, drawn with matplotlib's object API (no pyplot: no global state, no GUI back end).

Each function takes plain numbers and returns a `Figure`; `render` turns one into SVG (inlined in the page)
and, when asked, a PNG file. Text from the data (labels, group values) is drawn as text, never parsed as
math: a value holding `$` stays as written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Colour-blind-safe (Okabe-Ito), then matplotlib's tab20 for runs with many labels or shards.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STYLE: dict[str, Any] = {
    "text.parse_math": False,  # a label or a group value with `$` is text, not mathtext
    "svg.fonttype": "none",  # text stays text in the SVG: small, selectable
    "svg.hashsalt": "batchscore",  # the same output gives the same SVG
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
MAX_LABEL_CHARS = 40


def colour(index: int) -> str:
    if index < len(PALETTE):
        return PALETTE[index]
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab20"](index % 20)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def short(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    text = " ".join(str(text).split())  # a newline in a value would break the axis
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def labels_chart(labels: list[str], counts: list[int]) -> Figure:
    """Rows per label, most first, with count and share at each bar's end."""
    order = np.argsort(counts, kind="stable")  # barh draws bottom-up: the largest ends on top
    total = max(sum(counts), 1)
    fig = _figure(7, 0.9 + 0.32 * len(labels))
    ax = fig.add_subplot()
    names = [short(labels[i]) for i in order]
    values = [counts[i] for i in order]
    bars = ax.barh(range(len(order)), values, color=[colour(int(i)) for i in order])
    ax.set_yticks(range(len(order)), names)
    ax.bar_label(bars, labels=[f" {v:,} ({v / total:.1%})" for v in values], fontsize=8)
    ax.set_xlabel("rows")
    ax.set_xlim(0, max(values, default=1) * 1.3 or 1)
    ax.set_title("Label distribution")
    return fig


def score_histograms(
    labels: list[str], hist: dict[int, np.ndarray], low: float, high: float, threshold: float | None, title: str
) -> Figure:
    """One histogram per label, side by side, on one score scale; the low-confidence threshold as a line."""
    shown = [i for i in range(len(labels)) if i in hist][:12]
    columns = min(len(shown), 4) or 1
    rows = -(-len(shown) // columns) or 1
    fig = _figure(min(2.6 * columns + 0.6, 11), 1.9 * rows + 0.5)
    edges = np.linspace(low, high, len(next(iter(hist.values()), np.zeros(40))) + 1)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, label in zip(axes.flat, shown):
        counts = hist[label]
        ax.stairs(counts, edges, fill=True, color=colour(label), alpha=0.85)
        if threshold is not None:
            ax.axvline(threshold, color="#444444", linestyle="--", linewidth=0.8)
        ax.set_title(f"{short(labels[label], 24)} ({int(counts.sum()):,})", fontsize=9)
        ax.set_xlim(low, high)
    fig.suptitle(title)
    fig.supxlabel("score")
    fig.supylabel("rows")
    return fig


def margin_chart(margin: np.ndarray) -> Figure:
    fig = _figure(7, 2.6)
    ax = fig.add_subplot()
    ax.stairs(margin, np.linspace(0, 1, len(margin) + 1), fill=True, color=PALETTE[0])
    ax.set_xlim(0, 1)
    ax.set_xlabel("best score - second score")
    ax.set_ylabel("rows")
    ax.set_title("Margin between the first two labels (small: the model hesitates)")
    return fig


def groups_chart(title: str, labels: list[str], groups: list[tuple[str, list[int]]]) -> Figure:
    """Label mix per group (share of the group's rows, stacked), with each group's row count."""
    fig = _figure(8, 1.2 + 0.28 * len(groups))
    ax = fig.add_subplot()
    names = [short(name) for name, _ in groups][::-1]
    matrix = np.array([counts for _, counts in groups], dtype=np.float64)[::-1].reshape(len(groups), len(labels))
    totals = matrix.sum(axis=1)
    shares = matrix / np.maximum(totals, 1)[:, None]
    left = np.zeros(len(groups))
    for label, name in enumerate(labels):
        ax.barh(range(len(groups)), shares[:, label], left=left, color=colour(label), label=short(name, 24))
        left += shares[:, label]
    ax.set_yticks(range(len(groups)), [f"{n} ({int(t):,})" for n, t in zip(names, totals)])
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
    ax.set_xlabel("share of the group's rows")
    ax.set_title(f"Label mix by {title}")
    fig.legend(loc="outside lower center", ncols=min(len(labels), 6), frameon=False, fontsize=8)
    return fig


def windows_chart(windows: np.ndarray, last: int) -> Figure:
    fig = _figure(7, 2.6)
    ax = fig.add_subplot()
    counts = windows[1:]
    ax.bar(range(1, len(counts) + 1), counts, color=PALETTE[2])
    ax.set_xlabel(f"windows per row ({last} = {last} or more)")
    ax.set_ylabel("rows")
    ax.set_yscale("log" if counts.max(initial=0) > 100 * max(counts[counts > 0].min(initial=1), 1) else "linear")
    ax.set_title("Long texts: windows scored per row")
    return fig


def time_chart(times: list[dict[str, Any]]) -> Figure:
    """Seconds per chunk against when it finished, one colour per shard: a straggling shard shows."""
    fig = _figure(8, 3.0)
    ax = fig.add_subplot()
    start = min(t["finished"] - (t["seconds"] or 0) for t in times)
    shards = sorted({t["shard"] for t in times})
    for number, shard in enumerate(shards):
        mine = sorted((t for t in times if t["shard"] == shard), key=lambda t: t["finished"])
        x = [(t["finished"] - start) / 60 for t in mine]
        y = [t["seconds"] for t in mine]
        ax.plot(x, y, marker="o", markersize=3, linewidth=0.8, color=colour(number), label=f"shard {shard}")
    ax.set_xlabel("minutes since the first chunk began")
    ax.set_ylabel("seconds per chunk")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_title("Time per chunk, by shard")
    if len(shards) > 1:
        ax.legend(fontsize=8, ncols=min(len(shards), 8), frameon=False)
    return fig


def style() -> Any:
    """The charts' settings, for as long as figures are made and saved (matplotlib reads some at creation)."""
    import matplotlib

    return matplotlib.rc_context(STYLE)  # type: ignore[arg-type]  # its stubs list every rc key as a literal


def render(fig: Figure, png: str | None = None) -> str:
    """The figure as SVG text (call inside `style()`); also written as a PNG file at `png` when given."""
    import io

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    if png is not None:
        fig.savefig(png, format="png", dpi=110)
    return buffer.getvalue()
