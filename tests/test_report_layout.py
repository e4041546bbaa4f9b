"""The HTML report reads well (issue 14): the candidate x target table is short (at most
30 rows, the rest one click away), unsupported pairs sit in one section with each reason
once, the cost bars let the winner be seen, the Pareto plot's tick labels do not collide
and its legend covers no point, and the provenance shows the --set overrides."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from compress import report_plots as P
from compress.report import MAX_ROWS, build_report


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


@pytest.fixture
def tiny_rec(tiny_run, tmp_path, monkeypatch):
    from compress.decide import decision as D
    from compress.results import load_run

    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    return D.compute(load_run(tiny_run), D.Ask(traffic={"requests_per_day": 1e6}))[0]


def test_report_page_tables(run_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    m = json.loads((run_copy / "manifest.json").read_text())
    m["recipe"]["overrides"] = ["data.train.limit=40", "suite.latency.iterations=3"]
    m["git"] = None
    (run_copy / "manifest.json").write_text(json.dumps(m))
    r = build_report(run_copy, tmp_path / "report.html", top=3)
    page = r.path.read_text()
    section = page.split("<h2>Cost per target", 1)[1].split("<h2>", 1)[0]
    main, _, rest = section.partition("<details>")
    body = lambda html: re.findall(r"<tbody>(.*?)</tbody>", html, re.S)  # noqa: E731
    main_rows = body(main)[0].count("<tr>")
    assert 0 < main_rows <= MAX_ROWS
    extra = body(rest.split("</details>", 1)[0])[0].count("<tr>") if rest else 0
    from compress.decide import decision as D
    from compress.results import load_run

    opts = D.decide(load_run(run_copy), None).rec.options
    assert opts["candidate"].nunique() <= 3      # top=3: every candidate's pairs are listed
    supported = opts[opts["status"] != "unsupported"]
    assert main_rows + extra == len(supported)
    assert (extra > 0) == (len(supported) > MAX_ROWS)
    # the pairs table holds no unsupported row; one section names each reason once
    assert ">unsupported<" not in section.split("<h3>Not supported", 1)[0]
    bad = opts[opts["status"] == "unsupported"]
    assert len(bad)  # the tiny run's INT8 model has no GPU path: there is something to group
    assert f"<h3>Not supported ({len(bad)} pair(s), {bad['reason'].nunique()} reason(s))" \
        in page
    import html

    for why in bad["reason"].unique():
        assert page.count(html.escape(why)) == 1, why
    # every table can scroll sideways instead of widening the page
    assert page.count("<table>") == page.count('<div class="scroll"><table>')
    # provenance: the overrides the manifest records, and why git is missing
    prov = page.split("<h2>Provenance", 1)[1]
    assert "data.train.limit=40; suite.latency.iterations=3" in prov
    assert "not recorded (the recipe&#x27;s folder is not in a git repository)" in prov
    assert ">None<" not in prov


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _check_pareto(fig):
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
              if t.get_visible() and t.get_text() and
              ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(boxes) >= 2, [t.get_text() for t in labels]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not _overlaps(boxes[i], boxes[j]), (labels[i].get_text(),
                                                       labels[j].get_text())
    legend = ax.get_legend().get_window_extent(renderer)
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points)
    for x, y in points:
        assert x0 <= x <= x1 and y0 <= y <= y1, (x, y, ax.get_xlim(), ax.get_ylim())
        px, py = ax.transData.transform((x, y))
        assert not (legend.x0 <= px <= legend.x1 and legend.y0 <= py <= legend.y1), (x, y)


def _synthetic_rec(costs, values, ranking="cost_per_1k"):
    """A recommendation-shaped object: every pair meets quality, the cheapest wins."""
    n = len(costs)
    opts = pd.DataFrame({"candidate": [f"c{i % 4}" for i in range(n)],
                         "target": [f"t{i}" for i in range(n)], "status": ["ok"] * n,
                         "provenance": ["projected"] * (n - 1) + ["measured"],
                         ranking: costs, "cost_per_1k": costs})
    quality = pd.DataFrame({"candidate": [f"c{i}" for i in range(4)],
                            "value": values[:4], "passes_quality": [True] * 4})
    best = int(np.argmin(costs))
    front = pd.DataFrame({"candidate": [opts["candidate"][best]], "target":
                          [opts["target"][best]], "cost": [costs[best]],
                          "value": [quality.set_index("candidate")["value"][
                              opts["candidate"][best]]],
                          "provenance": ["projected"], "passes_quality": [True]})
    winner = {"candidate": front["candidate"][0], "target": front["target"][0],
              ranking: costs[best], "cost_per_1k": costs[best], "value": front["value"][0]}
    return SimpleNamespace(options=opts, quality=quality, pareto=front, ranking=ranking,
                           winner=winner)


@pytest.mark.parametrize("costs", [
    list(np.geomspace(2.15e-4, 4.31e-3, 6)),  # 1.3 decades: the log axis labelled 3 and
                                              # 4 x 10^-4 on top of each other
    list(np.geomspace(1e-4, 3e-4, 12)),       # points everywhere: legend "best" covered some
    [0.0005, 0.0007, 0.001, 0.004, 0.02, 0.11, 0.5],            # three decades
    [65.0, 130.0, 384.0, 588.0, 1433.0, 3285.0, 6570.0]])       # monthly dollars
def test_pareto_ticks_do_not_collide_and_the_legend_covers_no_point(plt, costs):
    rec = _synthetic_rec(costs, [0.97, 0.96, 0.95, 0.99])
    _check_pareto(P.pareto_plot(rec, "accuracy", plt))


def test_pareto_plot_of_a_real_run(plt, tiny_rec):
    _check_pareto(P.pareto_plot(tiny_rec, "accuracy", plt))


@pytest.mark.parametrize("costs", [
    [0.0021, 0.0043, 0.012, 0.019, 0.048, 0.095, 0.19],      # the tiny run's spread
    [1e-5, 3e-4, 0.002, 0.03, 0.1],                          # four decades
    [0.0010, 0.0012, 0.0020, 0.0031],                        # narrow: linear from 0
    [2e-3, 2.1e-3, 2e-1]])                                   # winner among the cheap ones
def test_winner_bar_is_at_least_a_fifth_of_the_axis(plt, costs):
    rec = _synthetic_rec(costs, [0.97, 0.96, 0.95, 0.99])
    top = list(dict.fromkeys(rec.options["candidate"]))
    fig = P.cost_per_target_plot(top, rec.options, plt, rec.winner)
    ax = fig.axes[0]
    assert P.bar_fraction(ax, rec.winner["cost_per_1k"]) >= 0.2
    lo, hi = ax.get_ylim()
    assert lo <= min(costs) and max(costs) <= hi       # every bar shows, none is cut
    if max(costs) / min(costs) <= P.LINEAR_UP_TO:
        assert ax.get_yscale() == "linear" and lo == 0


def test_winner_bar_of_a_real_run(plt, tiny_rec):
    top = list(dict.fromkeys(tiny_rec.options[tiny_rec.options["status"] == "ok"]
                             ["candidate"]))
    fig = P.cost_per_target_plot(top, tiny_rec.options, plt, tiny_rec.winner)
    assert tiny_rec.winner
    assert P.bar_fraction(fig.axes[0], tiny_rec.winner["cost_per_1k"]) >= 0.2
