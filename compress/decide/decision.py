"""The saved decision: `recommendation.json` in the run directory.

`compress recommend` computes the recommendation and saves it with every input it used
(catalog files and a digest of the merged catalog, prices, calibration, traffic, targets
and SLO, targets considered, the request setting, threads, seed, the serving model's
version). gate, report and export read it (`decide`): asked for nothing different they
use it as saved; asked for different inputs, they recompute with the saved inputs
overridden by what was asked, and say what differs. Data flows one way: a later command
never silently recomputes the decision with other defaults.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from compress.errors import InputError

FILE = "recommendation.json"
SCHEMA_VERSION = 1
SERVING_MODEL = "dynamic-batching-sim/1"


class DecisionInputs(BaseModel):
    """Everything the recommendation depends on besides the run's own figures."""

    model_config = ConfigDict(extra="forbid")

    catalog_files: list[str]              # extra catalog files (the shipped one is implied)
    price_file: str | None = None
    price_books: list[str] = []           # price books applied, the default one first
    prices: dict[str, float | None]       # $/h per target actually used
    catalog_digest: str                   # merged targets, formats, runtimes, defaults
    calibration_path: str | None = None
    calibration: str                      # name (created, path)
    calibration_digest: str | None = None
    traffic: dict | None = None           # requests_per_day, peak_factor
    targets: dict                         # quality thresholds and the latency SLO
    target_names: list[str] | None = None
    setting: dict                         # seq_len, gen_tokens
    threads: int = 1
    quality_batch: int | None = None
    seed: int = 0
    confidence: float | None = None       # level of the quality checks (None: point values)
    serving_model: str = SERVING_MODEL


class SavedRecommendation(BaseModel):
    """recommendation.json: typed and versioned."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["compress.recommendation"] = "compress.recommendation"
    created: str
    run: str
    metric: str
    ranking: str
    inputs: DecisionInputs
    winner: dict | None
    explanation: list[str]
    provenance: dict
    options: list[dict]
    quality: list[dict]
    pareto: list[dict]


@dataclass
class Ask:
    """What a command asks for; None means 'as saved' (or the default when nothing is
    saved)."""

    catalog_files: list[str] | None = None
    prices: str | None = None
    calibration: str | None = None
    traffic: dict | None = None
    targets: dict | None = None            # overrides of the suite's targets
    target_names: list[str] | None = None
    confidence: float | None | str = "suite"   # "suite": the suite's targets.confidence

    def empty(self) -> bool:
        return (self.confidence == "suite" and not self.catalog_files
                and self.prices is None and self.calibration is None
                and self.traffic is None and not any(
                    v is not None for v in (self.targets or {}).values())
                and not self.target_names)


@dataclass
class Decision:
    rec: object                            # compress.decide.recommend.Recommendation
    inputs: DecisionInputs
    source: str                            # "saved" or "computed"
    differs: list[str] = field(default_factory=list)
    path: Path | None = None

    def describe(self) -> str:
        """One line for the user: where the decision came from."""
        if self.source == "saved":
            return f"using the saved recommendation {self.path}"
        if self.path is None:
            return ("no saved recommendation in the run (run `compress recommend RUN`); "
                    "computed with the suite's targets and the default catalog")
        if not self.differs:
            return f"recomputed; same inputs as the saved recommendation {self.path}"
        return (f"recomputed: differs from the saved recommendation {self.path} in "
                + "; ".join(self.differs))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def catalog_digest(catalog) -> str:
    return _digest({"targets": {n: t.model_dump() for n, t in catalog.targets.items()},
                    "formats": {n: f.model_dump() for n, f in catalog.formats.items()},
                    "runtimes": {n: r.model_dump() for n, r in catalog.runtimes.items()},
                    "defaults": catalog.defaults.model_dump()})


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):            # numpy scalars
        return _clean(v.item())
    return v


def _records(df: pd.DataFrame) -> list[dict]:
    """The frame's rows as JSON-ready dicts, every float at full precision (pandas'
    to_json keeps 10 decimal places, which rounded a cost per 1k of 4.9469e-07 to 4.947e-07
    and let the saved options disagree with the winner)."""
    return [_clean(r) for r in df.to_dict("records")]


def compute(run, ask: Ask | None = None):
    """(Recommendation, DecisionInputs) for a run with these inputs (suite defaults where
    the ask says nothing)."""
    from compress.decide.cost import Traffic
    from compress.decide.recommend import _cal_name, recommend_run
    from compress.hardware import calibrate as C
    from compress.hardware.catalog import load_catalog

    ask = ask or Ask()
    catalog = load_catalog(ask.catalog_files or [], ask.prices)
    cal = C.load(ask.calibration)
    if ask.traffic and "requests_per_day" not in ask.traffic:
        raise InputError("--peak-factor needs --requests-per-day (or a saved "
                         "recommendation with a traffic profile)")
    traffic = Traffic(**ask.traffic) if ask.traffic else None
    rec = recommend_run(run, ask.targets, catalog, cal, traffic, ask.target_names,
                        confidence=ask.confidence)
    suite = run.manifest["suite"]["resolved"]
    lat = suite.get("latency") or {}
    p = rec.provenance
    inputs = DecisionInputs(
        catalog_files=[str(f) for f in ask.catalog_files or []],
        price_file=str(ask.prices) if ask.prices else None,
        price_books=list(catalog.price_books),
        prices={n: t.price_per_hour for n, t in catalog.targets.items()},
        catalog_digest=catalog_digest(catalog),
        calibration_path=(cal or {}).get("path"), calibration=_cal_name(cal),
        calibration_digest=_digest({k: v for k, v in cal.items() if k != "path"})
        if cal else None,
        traffic=p["traffic"], targets=_clean(p["targets"]),
        target_names=list(ask.target_names) if ask.target_names else None,
        setting={"seq_len": (lat.get("seq_lens") or [128])[0],
                 "gen_tokens": lat.get("gen_tokens", 0) if suite.get("task") == "causal-lm"
                 else 0},
        threads=int(lat.get("threads") or 1),
        quality_batch=(suite.get("quality") or {}).get("batch_size"),
        seed=int(run.manifest.get("seed") or 0), confidence=rec.confidence)
    return rec, inputs


def save(run, rec, inputs: DecisionInputs) -> Path:
    from compress.store import write_json

    record = SavedRecommendation(
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), run=str(run.path),
        metric=rec.metric, ranking=rec.ranking, inputs=inputs,
        winner=_clean(rec.winner), explanation=list(rec.explanation),
        provenance=_clean(json.loads(json.dumps(rec.provenance, default=str))),
        options=_records(rec.options), quality=_records(rec.quality),
        pareto=_records(rec.pareto))
    path = Path(run.path) / FILE
    write_json(path, record.model_dump(mode="json"))
    return path


def load(run) -> SavedRecommendation | None:
    """The run's saved recommendation, or None. A file that is not a valid record (or of
    another schema version) is an error naming it."""
    path = Path(run.path) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc}); run `compress recommend` "
                         "again") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise InputError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}; "
                         "run `compress recommend` again")
    try:
        return SavedRecommendation.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{path}: not a valid recommendation record: "
                         f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def as_recommendation(saved: SavedRecommendation):
    """The saved record as a Recommendation (DataFrames), for readers."""
    from compress.decide.recommend import Recommendation

    return Recommendation(saved.winner, pd.DataFrame(saved.quality),
                          pd.DataFrame(saved.options), pd.DataFrame(saved.pareto),
                          list(saved.explanation), dict(saved.provenance), saved.metric,
                          saved.ranking)


def differences(old: DecisionInputs, new: DecisionInputs) -> list[str]:
    """What differs between two sets of inputs, in words."""
    out = []
    a, b = old.model_dump(), new.model_dump()
    for key in ("traffic", "targets", "target_names", "setting", "threads", "quality_batch",
                "seed", "confidence", "serving_model", "calibration", "catalog_files",
                "price_file", "price_books"):
        if key == "price_books" and not a[key]:   # saved before books were recorded
            continue
        if a[key] != b[key]:
            out.append(f"{key}: {a[key]} (saved) -> {b[key]}")
    changed = [f"{t} {a['prices'].get(t)} -> {b['prices'].get(t)}"
               for t in sorted(set(a["prices"]) | set(b["prices"]))
               if a["prices"].get(t) != b["prices"].get(t)]
    if changed:
        out.append("prices: " + ", ".join(changed))
    if a["catalog_digest"] != b["catalog_digest"] and not changed and \
            a["catalog_files"] == b["catalog_files"]:
        out.append("catalog contents (specs) changed")
    if a["calibration"] == b["calibration"] and \
            a["calibration_digest"] != b["calibration_digest"]:
        out.append("calibration contents changed")
    return out


def decide(run, ask: Ask | None = None) -> Decision:
    """The decision a reader (gate, report, export) should use: the saved one when nothing
    different is asked; otherwise recomputed from the saved inputs overridden by the ask,
    with what differs."""
    ask = ask or Ask()
    saved = load(run)
    path = Path(run.path) / FILE
    if saved is not None and ask.empty():
        return Decision(as_recommendation(saved), saved.inputs, "saved", path=path)
    if saved is not None:
        s = saved.inputs
        cal = ask.calibration or (s.calibration_path if s.calibration_path
                                  and Path(s.calibration_path).is_file() else None)
        ask = Ask(catalog_files=ask.catalog_files or s.catalog_files or None,
                  prices=ask.prices or s.price_file, calibration=cal,
                  traffic={**(s.traffic or {}), **ask.traffic} if ask.traffic
                  else s.traffic,
                  targets={**s.targets, **{k: v for k, v in (ask.targets or {}).items()
                                           if v is not None}},
                  target_names=ask.target_names or s.target_names,
                  confidence=ask.confidence if ask.confidence != "suite"
                  else (s.confidence if "confidence" in s.model_fields_set else "suite"))
    rec, inputs = compute(run, ask)
    if saved is None:
        return Decision(rec, inputs, "computed")
    return Decision(rec, inputs, "computed", differences(saved.inputs, inputs), path)
