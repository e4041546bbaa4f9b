"""Data validity, checked at plan time (`compress validate`, and `compress run` before any
stage runs): data that would make every quality figure meaningless is refused with the
file, the column and the first offending rows, exit 2.

- texts: empty or missing (NaN);
- labels: empty or missing; a label column whose type differs between train and the other
  sets (`1` vs `1.0` become different class names);
- eval labels the baseline does not know (the training labels when a finetune step makes
  the baseline, else the model config's `id2label`): every such example would be scored
  wrong, and a run would report accuracy 0 with status ok;
- similarity scores that are not numbers;
- files that are not UTF-8 (checked where the file is read: `compress.data.check_utf8`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from compress.data import describe_source

SHOW_ROWS = 5


def rows_text(index) -> str:
    """'rows 3, 8 and 2 more' with 1-based data rows (the header is not counted)."""
    rows = [int(i) + 1 for i in index]
    shown = ", ".join(map(str, rows[:SHOW_ROWS]))
    more = f" and {len(rows) - SHOW_ROWS} more" if len(rows) > SHOW_ROWS else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more} (1-based, header not counted)"


def _blank(series: pd.Series) -> pd.Series:
    """Missing values and strings that are empty after stripping."""
    return series.isna() | (series.astype(str).str.strip() == "")


def frame_problems(df: pd.DataFrame, where: str, text_columns: list[str],
                   label_column: str | None, score_column: str | None = None
                   ) -> list[tuple[str, str]]:
    """(field, message) for each problem of one data set; `where` names the file."""
    out = []
    for fld, col in [("text_column", c) for c in text_columns]:
        bad = df.index[_blank(df[col])]
        if len(bad):
            out.append((fld, f"{where}: column {col!r} has {len(bad)} empty or missing "
                             f"text(s): {rows_text(bad)}"))
    if label_column is not None:
        bad = df.index[_blank(df[label_column])]
        if len(bad):
            out.append(("label_column", f"{where}: column {label_column!r} has {len(bad)} "
                                        f"empty or missing label(s): {rows_text(bad)}"))
    if score_column is not None:
        col = df[score_column]
        numeric = pd.to_numeric(col, errors="coerce")
        bad = df.index[numeric.isna()]
        if len(bad):
            first = col.iloc[int(bad[0])]
            out.append(("score_column", f"{where}: column {score_column!r} must hold numbers; "
                                        f"{len(bad)} value(s) are not (first: {first!r}): "
                                        f"{rows_text(bad)}"))
    return out


def dtype_name(series: pd.Series) -> str:
    s = series.dropna()
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_integer_dtype(s):
        return "integer"
    if pd.api.types.is_float_dtype(s):
        return "float"
    return "text"


def label_type_problem(train: pd.Series, other: pd.Series, train_where: str,
                       other_where: str) -> str | None:
    """Labels are compared as text: integer 1 in one file and float 1.0 in the other never
    match. None when both columns hold the same type."""
    a, b = dtype_name(train), dtype_name(other)
    if a == b:
        return None
    return (f"label column types differ: {train_where} column {train.name!r} holds {a} "
            f"labels (e.g. {train.dropna().astype(str).iloc[0]!r}), {other_where} column "
            f"{other.name!r} holds {b} labels (e.g. {other.dropna().astype(str).iloc[0]!r}); "
            "as class names they would never match: make both the same type")


def model_labels(model_path: str) -> tuple[set[str] | None, str]:
    """The labels a model as given predicts (its config's id2label), and where they came from."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None, str(config)
    id2label = json.loads(config.read_text()).get("id2label")
    if not id2label:
        return None, str(config)
    return {str(v) for v in id2label.values()}, f"{config} (id2label)"


def unknown_labels_problem(eval_labels: pd.Series, known: set[str], known_from: str,
                           eval_where: str) -> str | None:
    """Eval labels outside the labels the baseline knows."""
    labels = eval_labels.dropna().astype(str)
    unknown = sorted(set(labels) - known)
    if not unknown:
        return None
    bad = eval_labels.index[labels.reindex(eval_labels.index).isin(unknown)]
    return (f"{eval_where}: column {eval_labels.name!r} has label(s) the baseline does not "
            f"know: {_listing(unknown)} ({len(bad)} example(s), {rows_text(bad)}); the "
            f"baseline's labels, from {known_from}: {_listing(sorted(known))}. Every such "
            "example would be scored wrong: relabel the eval set or train on its labels")


def _listing(values: list[str], n: int = 12) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


# ---------------------------------------------------------------- encodings

def check_eval_labels(recipe, suite, suite_src, model_path: str,
                      frames: dict, eval_df: pd.DataFrame, candidates: list) -> None:
    """Eval labels must be labels the baseline knows: the training labels when a finetune
    step makes the baseline, else the model config's id2label (exit 2 otherwise)."""
    if suite.task != "text-classification" or not suite.dataset.label_column:
        return
    base = next((c.baseline for c in candidates), None)
    finetunes = [n for n in base.chain() if n.stage == "finetune"] if base else []
    train = recipe.data.get("train")
    if finetunes and train is not None and train.label_column:
        known = set(frames["train"][train.label_column].dropna().astype(str))
        known_from = (f"the training labels of finetune step {finetunes[-1].step!r} "
                      f"({describe_source(train, recipe.base_dir)} column "
                      f"{train.label_column!r})")
    else:
        known, known_from = model_labels(model_path)
        if known is None:
            return  # nothing to compare against (no local config): the run will tell
    msg = unknown_labels_problem(eval_df[suite.dataset.label_column], known, known_from,
                                 describe_source(suite.dataset, suite_src.path.parent))
    if msg:
        raise suite_src.error(("dataset", "label_column"), msg)


def eval_size_warnings(suite, n: int) -> list[str]:
    """Warn when the eval set is too small for the tightest quality threshold ever to be
    decided at the suite's confidence. For accuracy: when a candidate differs from its
    baseline on a single example, the paired interval of the drop reaches about 3/N (the
    97.5% point of a Poisson(1) count), so a max_drop below 3/N can never pass."""
    t = suite.targets
    if t.confidence is None or suite.task != "text-classification" or t.max_drop is None \
            or suite.primary_metric != "accuracy" or t.max_drop <= 0:
        return []
    reach = 3.0 / n
    if reach <= t.max_drop:
        return []
    return [f"the eval set has {n} examples: one changed prediction already gives a drop "
            f"interval reaching about {reach:.3f}, above max_drop {t.max_drop:g}, so that check "
            "can pass only for candidates that agree with the baseline on every example; "
            f"about {math.ceil(3 / t.max_drop - 1e-9)} examples are needed"]
