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
- files that are not UTF-8 (checked where the file is read, `compress.data`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

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

def check_utf8(path: Path) -> None:
    """Raise InputError naming the file, where the first bad byte is and the likely
    encoding, when a text file is not UTF-8."""
    from compress.errors import InputError

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
