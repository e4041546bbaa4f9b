"""`compress report`: one self-contained HTML page holding its plots (synthetic run)."""

from __future__ import annotations

import re

from compress.report import build_report
from tests.conftest import run_cli
from tests.test_gate import make_run


def test_report_is_self_contained_and_holds_the_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    from compress.decide.decision import Ask

    run = make_run(tmp_path / "run", targets={"max_drop": 0.02})
    prices = tmp_path / "prices.yaml"   # local-cpu is a deployment target only when priced
    prices.write_text("prices: {local-cpu: {price_per_hour: 0.08925, source: test}}\n")
    r = build_report(run, tmp_path / "out" / "report.html", ask=Ask(prices=str(prices)))
    page = r.path.read_text()
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', page)
    assert refs and all(x.startswith("data:image/png;base64,") for x in refs), refs
    # nothing is loaded from elsewhere (a price's source URL is cited as text, not loaded)
    assert not re.search(r"(?:src|href|@import|url\()\s*=?\s*[\"']?https?://", page)
    assert "<td class=\"l\">https://" in page and "Prices and catalog" in page
    assert page.count("data:image/png;base64,") == 3
    assert set(r.plots) == {"pareto", "latency_size", "cost_per_target"}
    for png, svg in r.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "<svg" in svg.read_text()[:400]
    # the recommendation (int8 at the cheapest local price meeting max_drop 0.02)
    assert r.winner and r.winner["candidate"] == "int8"
    assert "Recommended: int8 on local-cpu" in page
    for heading in ("Candidates", "Quality vs cost", "Latency vs size", "Prices and catalog",
                    "Provenance", "Cost per target"):
        assert f"<h2>{heading}" in page
    assert 'class="tag measured"' in page and "local-cpu" in page
    # why tiny does not qualify: its drop and the interval on it, beyond max_drop
    assert re.search(r"drop \+0\.0500 \(95% interval \+0\.0\d+\.\.\+0\.0\d+\) &gt; 0\.02", page)


def test_report_cli_default_path(tmp_path):
    run = make_run(tmp_path / "run", targets={"max_drop": 0.02})
    r = run_cli("report", str(run), env={"COMPRESS_CALIBRATION": str(tmp_path / "n.json")},
                timeout=120)
    assert r.returncode == 0, r.stderr
    assert (run / "report.html").is_file() and (run / "report_plots" / "pareto.svg").is_file()
    bad = run_cli("report", str(tmp_path / "nope"), timeout=120)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr
