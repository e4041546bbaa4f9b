"""Printed tables never cut a figure (issue 14): the demo-like results table and the
recommendation at 80 and 120 columns and piped (markdown at full width), through the real
console entry point. Before compress.tables, rich shrank number columns: at 120 columns an
accuracy of 0.840 printed as "0", and recommend showed "teach…" and "0.00…"."""

from __future__ import annotations

import json
import re

import pytest

from compress.tables import Col, _fit, _groups, _text
from tests.conftest import run_cli
from tests.test_gate import _row, make_run

NAMES = ("teacher", "onnx", "int8@per_channel=true,reduce_range=false", "int8@per_channel=false")


def demo_rows():
    """Four candidates shaped like the demo's (intervals, fidelity, latency, memory)."""
    rows = []
    for i, (name, acc) in enumerate(zip(NAMES, (0.975, 0.840, 0.80, 0.9730), strict=True)):
        r = _row(name, acc, None if i == 0 else 0.998 - i / 100, 34.4 - 8 * i, 596.0 - 120 * i,
                 quality_bounds={"accuracy_low": acc - 0.015, "accuracy_high": acc + 0.015},
                 primary_delta=acc - 0.975, primary_delta_low=acc - 0.99,
                 primary_delta_high=acc - 0.96)
        r["kind"] = "onnx-quantized" if "int8" in name else "pytorch"
        r["kl_divergence"] = None if i == 0 else 0.0016 * i
        rows.append(r)
    return rows


def expected_figures(rows) -> list[str]:
    """Every figure the results table shows, formatted here from the values."""
    out = []
    for r in rows:
        out.append(f"{r['accuracy']:.3f} ±0.015")
        out.append(f"{r['macro_f1']:.3f}")
        d = r["primary_delta"]
        out.append(f"{d:+.3f}".replace("+", "+") + " ±0.015")
        if r.get("top1_agreement") is not None:
            out.append(f"{r['top1_agreement']:.3f}")
            out.append(f"{r['kl_divergence']:.4f}")
        out += [f"{r['latency_p50_ms']:.1f}", f"{r['latency_p95_ms']:.1f}",
                f"{r['size_mb']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['mem_delta_mb']:.0f}"]
    return out


def whole(figure: str, text: str) -> bool:
    """`figure` appears on one line, not glued to other digits (so "0.8" is not "0.840")."""
    return re.search(r"(?<![\d.])" + re.escape(figure) + r"(?![\d])", text) is not None


@pytest.fixture
def demo_run(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "no-calibration.json"))
    monkeypatch.delenv("COLUMNS", raising=False)
    return make_run(tmp_path / "run", rows=demo_rows())


@pytest.mark.parametrize("columns", [80, 120, None])
def test_results_table_shows_every_figure_whole(demo_run, columns):
    r = run_cli("show", str(demo_run), env={"COLUMNS": str(columns)} if columns else None)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    rows = json.loads((demo_run / "results.json").read_text())["candidates"]
    missing = [f for f in expected_figures(rows) if not whole(f, out)]
    assert not missing, f"figures cut at {columns} columns: {missing}\n{out}"
    assert "…" not in out
    lines = out.splitlines()
    if columns:
        assert max(len(x) for x in lines) <= columns, out
        for header in ("acc", "macro-F1", "agree", "p50", "p95"):  # headers whole too
            assert re.search(rf"(?<![\w-]){re.escape(header)}(?![\w-])", out), (header, out)
    else:  # piped: a markdown table at full width, one line per candidate
        table = [x for x in lines if x.startswith("| ")]
        assert len(table) == 1 + len(rows)
        for name in NAMES:
            assert sum(bool(re.match(rf"\| {re.escape(name)}( \*)? +\|", x))
                       for x in table) == 1, (name, table)
        assert re.search(r"\|\s*agree\s*\|", table[0]) and re.search(r"\|\s*p50 ms\s*\|",
                                                                     table[0])


def test_recommend_tables_show_every_figure_whole(tiny_run, tmp_path, monkeypatch):
    """The tiny real run (projections need its artifacts), with a traffic profile: the
    widest candidate x target table recommend prints, rendered at 80 and 120 columns and
    piped (the recommendation is computed once)."""
    import io

    from rich.console import Console

    from compress import render
    from compress.cli_options import _ask
    from compress.decide import decision as D
    from compress.results import load_run

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    rec, _ = D.compute(load_run(tiny_run), _ask(traffic={"requests_per_day": 1e6},
                                                target=["T4", "L4", "c7i.large"]))
    rows = rec.options[rec.options["status"] != "unsupported"]
    figures = [f"{x[k]:{spec}}" for _, x in rows.iterrows() for k, spec in (
        ("cost_per_1k", ".6f"), ("price_per_hour", ".3f"), ("monthly_cost", ",.0f"))
        if x.get(k) == x.get(k)]
    assert len(figures) == 3 * len(rows) > 0
    figures += [f"{v:.4f}" for v in rec.quality["value"]]
    for columns in (80, 120, None):
        buf = io.StringIO()
        console = Console(file=buf, width=columns, force_terminal=True, color_system=None) \
            if columns else Console(file=buf, soft_wrap=True)
        render.recommendation(console, rec, "tiny")
        out = buf.getvalue()
        missing = [f for f in figures if not whole(f, out)]
        assert not missing, f"figures cut at {columns} columns: {missing}\n{out}"
        assert "…" not in out
        for name in set(rows["candidate"]):
            assert whole(name, out), name
        lines = out.splitlines()
        if columns:
            table = [x for x in lines if x.startswith(("│", "┃"))]
            assert table and max(len(x) for x in table) <= columns, out
        else:  # piped: markdown, one line per pair in the candidate x target table
            start = next(i for i, x in enumerate(lines) if x.startswith("candidate x target"))
            block = [x for x in lines[start + 4:] if x.startswith("| ")]
            block = block[:next((i for i, x in enumerate(block) if "| candidate" in x),
                                len(block))]
            assert len(block) == len(rows), out


def test_fit_shrinks_names_never_numbers():
    """At a width too small for everything, text columns fold and numbers keep their
    width; when even that does not fit, the table splits and repeats the key column."""
    cols = [Col("candidate"), Col("accuracy", True), Col("note"), Col("$ per 1k", True)]
    cells = [[_text(c) for c in r] for r in (
        ["int8@per_channel=true,reduce_range=false", "0.840 ±0.015", "a long note " * 4,
         "0.000643"],
        ["teacher", "0.975 ±0.015", "", "0.006854"])]
    widths = _fit(cols, cells, 60)
    assert widths[1] == len("0.840 ±0.015") and widths[3] == len("0.000643")
    assert sum(widths) + 3 * 4 + 1 <= 60 and widths[0] < len(NAMES[2])
    groups = _groups(cols, cells, 30, key=1)
    assert len(groups) > 1 and all(g[0] == 0 for g in groups)
    assert sorted({i for g in groups for i in g}) == [0, 1, 2, 3]
