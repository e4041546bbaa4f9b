"""Issue 15: a fast subset of benchmarks/malformed_inputs.py. Generated malformed recipes,
suites, data files, model folders, run files, calibration, catalog, prices and verdict
files each end in exit 2 with a one-paragraph message and no traceback (in-process)."""

from __future__ import annotations

import random
import shutil
from collections import Counter

from benchmarks.malformed_inputs import judge, make_cases


def test_generated_malformed_inputs_are_each_an_exit_2(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    cases = make_cases(tmp_path / "work", per_class=1, seed=7, run_dir=run_dir,
                       shipped=False)
    # every class once, plus a seeded sample of the rest: fast, and still every class
    rng = random.Random(7)
    first = {}
    for c in cases:
        first.setdefault(c.cls, c)
    rest = [c for c in cases if first[c.cls] is not c]
    chosen = list(first.values()) + rng.sample(rest, min(20, len(rest)))
    for case in chosen:
        judge(case)
    bad = [(c.cls, c.note, c.outcome, c.message[-400:]) for c in chosen
           if c.outcome != "exit2"]
    assert not bad, bad
    classes = Counter(c.cls.split(":")[0] for c in chosen)
    assert {"recipe", "suite", "data", "model", "override", "run-file", "calibration",
            "catalog", "prices", "baseline-verdict"} <= set(classes), classes
