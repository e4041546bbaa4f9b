"""The figures of the HTML report (compress.report), drawn with matplotlib so that they read
at a glance:

- the Pareto plot keeps its legend outside the axes (it covered points), labels each
  point once even where several candidates sit on it, and chooses x ticks that do not
  collide (a log axis only when costs span more than a decade and a half; a narrow range
  on a log axis labelled every minor tick);
- the cost-per-target bars use a scale on which the recommended pair's bar is at least a
  fifth of the axis (`bar_fraction`): linear when the costs are within a factor of about
  4.5, else a log axis whose floor sits low enough (the old floor, just under the cheapest
  bar, made the winner a sliver).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pandas as pd

from compress.quality_checks import _num
from compress.results import LOWER_IS_BETTER

MIN_BAR_FRACTION = 0.25   # aimed at; the test holds every plot to at least 0.2
LINEAR_UP_TO = 4.5        # max/min cost ratio still drawn on a linear axis from 0


def save(fig, name: str, plot_dir: Path, saved: dict) -> str:
    """Save PNG + SVG beside the page; return the PNG as base64 for embedding."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    png, svg = plot_dir / f"{name}.png", plot_dir / f"{name}.svg"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    png.write_bytes(buf.getvalue())
    fig.savefig(svg, format="svg", bbox_inches="tight")
    saved[name] = [png, svg]
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _money(v: float, _pos=None) -> str:
    return f"${v:,.0f}" if v >= 100 else f"${v:.3g}"


def _x_axis(ax, xs: list[float]) -> None:
    """A cost axis whose tick labels do not collide: log only over a wide range, major
    ticks only, few of them, slanted."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    lo, hi = min(xs), max(xs)
    if lo > 0 and hi / lo > 30:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, min_n_ticks=2))
    ax.xaxis.set_major_formatter(FuncFormatter(_money))
    for label in ax.get_xticklabels():
        label.set_rotation(20)
        label.set_horizontalalignment("right")


def pareto_plot(rec, metric: str, plt):
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    opts = rec.options.merge(rec.quality[["candidate", "value", "passes_quality"]],
                             on="candidate", how="left")
    x = rec.ranking                  # cost_per_1k, or monthly_cost with a traffic profile
    ok = opts[(opts["status"] == "ok") & opts[x].notna() & opts["value"].notna()]
    for prov, marker in (("measured", "o"), ("projected", "^")):
        for passes, colour, word in ((True, "#5aa469", "meets"), (False, "#d9776b", "misses")):
            sub = ok[(ok["provenance"] == prov) & (ok["passes_quality"] == passes)]
            if len(sub):
                ax.scatter(sub[x], sub["value"], marker=marker, alpha=.35, color=colour,
                           label=f"{prov}, {word} quality targets")
    front = rec.pareto
    if len(front):
        ax.plot(front["cost"], front["value"], "-", color="#c0392b", lw=1.5, zorder=2,
                label="Pareto frontier")
        for _, p in front.iterrows():
            ax.scatter([p["cost"]], [p["value"]], s=70, zorder=3,
                       marker="o" if p["provenance"] == "measured" else "^",
                       color="#2e7d32" if p["passes_quality"] else "#c0392b")
        # one label per point: candidates on the same target at the same cost and quality
        groups = front.groupby(["cost", "value", "target"], sort=False)["candidate"]
        for (cost, value, target), names in groups:
            ax.annotate(f"{', '.join(names)} @ {target}", (cost, value),
                        textcoords="offset points", xytext=(6, 4), fontsize=8)
    if rec.winner:
        w = rec.winner
        ax.scatter([w.get(rec.ranking)], [w.get("value")], s=240, facecolors="none",
                   edgecolors="#2e7d32", lw=2, zorder=4, label="recommended")
    xs = [float(v) for v in ok[x]] + [float(v) for v in front["cost"]] if len(front) \
        else [float(v) for v in ok[x]]
    if xs:
        _x_axis(ax, xs)
    xlabel = "cost per 1k inferences" if rec.ranking == "cost_per_1k" else "monthly cost"
    ax.set_xlabel(xlabel + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    ax.set_title("Quality vs cost: Pareto frontier (red line; green = meets targets)")
    ax.grid(alpha=.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def latency_size_plot(summary: pd.DataFrame, plt):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    s = summary[summary["status"] == "ok"]
    for _, r in s.iterrows():
        size, p50, p95 = _num(r.get("size_mb")), _num(r.get("latency_p50_ms")), \
            _num(r.get("latency_p95_ms"))
        if size is None or p50 is None:
            continue
        ax.errorbar([size], [p50], yerr=[[0], [max((p95 or p50) - p50, 0)]], fmt="o",
                    capsize=4, color="#1f77b4")
        ax.annotate(r["candidate"], (size, p50), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    first = s.iloc[0] if len(s) else {}
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("latency p50 (ms), bar to p95")
    ax.set_title(f"Latency vs size (measured here: batch {first.get('batch_size', '-')}, "
                 f"{first.get('seq_len', '-')} tokens, {first.get('threads', '-')} thread(s))")
    ax.grid(alpha=.3)
    return fig


def cost_scale(costs: list[float], focus: float) -> tuple[str, float, float]:
    """(scale, bottom, top) of a bar axis on which the bar of `focus` (the recommended
    pair's cost) spans at least MIN_BAR_FRACTION of the axis, every bar visible."""
    lo, hi = min(costs), max(costs)
    top = hi * 1.08
    if hi / lo <= LINEAR_UP_TO:
        return "linear", 0.0, top
    top = hi * 1.5
    # log axis: (log f - log b) / (log top - log b) >= F  <=>  b <= (f / top^F)^(1 / (1 - F))
    f = MIN_BAR_FRACTION
    bottom = min(lo / 1.5, (focus / top ** f) ** (1 / (1 - f)))
    return "log", bottom, top


def bar_fraction(ax, value: float) -> float:
    """How much of the y axis a bar of `value` (drawn from the axis bottom) spans."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / (hi - lo)


def cost_per_target_plot(top: list[str], opts: pd.DataFrame, plt, winner: dict | None = None):
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    ok = opts[(opts["status"] == "ok") & opts["cost_per_1k"].notna()]
    ok = ok.sort_values("cost_per_1k").groupby(["candidate", "target"], as_index=False).first()
    shown = ok[ok["candidate"].isin(top)]
    targets = sorted(set(shown["target"]))
    width = 0.8 / max(len(top), 1)
    for i, cand in enumerate(top):
        sub = ok[ok["candidate"] == cand].set_index("target")
        xs = [j + i * width for j, t in enumerate(targets) if t in sub.index]
        ys = [sub.loc[t, "cost_per_1k"] for t in targets if t in sub.index]
        bars = ax.bar(xs, ys, width, label=cand)
        for b, t in zip(bars, [t for t in targets if t in sub.index], strict=True):
            if sub.loc[t, "provenance"] == "measured":
                b.set_hatch("//")
            if winner and cand == winner.get("candidate") and t == winner.get("target"):
                b.set_edgecolor("#2e7d32")
                b.set_linewidth(2.5)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(targets))], targets, rotation=30,
                  ha="right")
    costs = [float(c) for c in shown["cost_per_1k"]]
    if costs:
        focus = float(winner["cost_per_1k"]) if winner and winner.get("cost_per_1k") \
            else min(costs)
        scale, bottom, top_ = cost_scale(costs, focus)
        ax.set_yscale(scale)
        ax.set_ylim(bottom, top_)
    ax.set_ylabel("cost per 1k inferences ($" + (", log scale)" if ax.get_yscale() == "log"
                                                 else ")"))
    ax.set_title("Cost per target, top candidates (hatched = measured here, plain = projected;"
                 "\ngreen outline = recommended)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=.3, axis="y")
    return fig
