"""benchmarks/peers.py reads a compress run's candidates with the p50 their run measured, and
skips those far slower than the run's baseline (scoring 445 articles through a 1.3 s/article
candidate took longer than every other flow together and stopped a bbc-news-full comparison)."""

from benchmarks.peers import candidates, too_slow


def test_candidates_carry_their_runs_ratio_to_the_baseline(tiny_run):
    cands = candidates(tiny_run)
    base = [c for c in cands if c["baseline"]]
    assert len(base) == 1 and base[0]["run_ratio"] == 1.0
    others = [c for c in cands if not c["baseline"]]
    assert others and all(c["run_ratio"] and c["run_ratio"] > 0 for c in others)


def test_too_slow_skips_only_candidates_beyond_the_limit(tiny_run):
    cands = [c for c in candidates(tiny_run) if not c["baseline"]]
    keep, skipped = too_slow(cands, max_slowdown=1e9)
    assert keep == cands and skipped == []
    slowest = max(cands, key=lambda c: c["run_ratio"])
    keep, skipped = too_slow(cands, max_slowdown=slowest["run_ratio"] * 0.999)
    assert slowest not in keep and len(skipped) == 1
    assert slowest["name"] in skipped[0] and f"{slowest['run_ratio']:.1f}x" in skipped[0]
