"""Error messages a newcomer reads (issue 14): the line of a mistyped top-level key, and
what was expected in plain words, never pydantic's ("Input should be ...")."""

from __future__ import annotations

import re

import pytest

from compress.engine import prepare
from compress.errors import RecipeError
from tests.conftest import RECIPE

PYDANTIC = re.compile(r"Input should|should be a valid|Field required|validation error|"
                      r"type=|pydantic|expected: ", re.I)


def _line_of(text: str, start: str) -> int:
    return next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith(start))


@pytest.mark.parametrize("typo,right", [("pipline", "pipeline"), ("dat", "data")])
def test_top_level_key_typo_is_reported_on_its_own_line(write_recipe, typo, right):
    """The key's value is a block on the next lines; the error pointed at the first of
    them, one line below the typo."""
    text = RECIPE.replace(f"{right}:\n", f"{typo}:\n")
    path = write_recipe(text)
    with pytest.raises(RecipeError) as e:
        prepare(path)
    line = _line_of(path.read_text(), f"{typo}:")
    assert f"recipe.yaml:{line}: {typo}: unknown key '{typo}'" in str(e.value), str(e.value)


BAD = [  # (replace, with, expected words)
    ("epochs: 10", "epochs: many", "got 'many'; expected a whole number"),
    ("epochs: 10", "epochs: 1.5", "expected a whole number (no fractional part)"),
    ("lr: 3.0e-3", "lr: fast", "got 'fast'; expected a number"),
    ("backend: ort-dynamic-int8", "backend: ort-dynamic-int9", "expected one of"),
    ("seed: 0", "seed: [0]", "got [0]; expected a whole number"),
    ("candidates: [teacher, onnx, int8]", "candidates: teacher", "expected a list"),
]


@pytest.mark.parametrize("old,new,words", BAD)
def test_messages_say_what_was_expected_in_plain_words(write_recipe, old, new, words):
    assert old in RECIPE
    with pytest.raises(RecipeError) as e:
        prepare(write_recipe(RECIPE.replace(old, new)))
    msg = str(e.value)
    assert words in msg and not PYDANTIC.search(msg), msg
    assert re.match(r".*recipe\.yaml:\d+: \S+: ", msg), msg


def test_every_mapped_error_type_reads_plainly():
    """Each pydantic error type the translation knows, and one it does not, as pydantic
    would report them (its own messages, from a real validation)."""
    from typing import Literal

    from pydantic import BaseModel, Field, ValidationError

    from compress.yamlsource import describe_error

    class M(BaseModel):
        a: int = 0
        b: float = 0
        c: bool = False
        d: list[int] = []
        e: Literal["x", "y"] = "x"
        f: int = Field(0, gt=0)
        g: list[int] = Field([], min_length=2)
        h: str = Field("", max_length=2)

    cases = {"a": "x", "b": "x", "c": "maybe", "d": 3, "e": "z", "f": 0, "g": [1],
             "h": "long"}
    for field, value in cases.items():
        with pytest.raises(ValidationError) as e:
            M(**{field: value})
        msg = describe_error(e.value.errors()[0])
        assert msg.startswith(f"got {value!r}; expected ") and not PYDANTIC.search(msg), msg
