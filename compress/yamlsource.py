"""YAML loading that remembers where each value came from, so errors can name file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from compress.errors import RecipeError


@dataclass
class YamlSource:
    """A parsed YAML document plus its node tree (for line numbers) and the overrides applied."""

    path: Path
    data: Any
    root: yaml.Node | None
    overridden: set[tuple] = field(default_factory=set)

    @classmethod
    def load(cls, path: str | Path, what: str = "recipe") -> YamlSource:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: {what} file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                              f"offset {exc.start}); save the {what} as UTF-8") from None
        except OSError as exc:
            raise RecipeError(f"{path}: cannot read the {what} ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text)
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except (yaml.YAMLError, RecursionError) as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise RecipeError(f"{path}{line}: not valid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a {what} must be a YAML mapping, got {type(data).__name__}")
        return cls(path=path, data=data, root=root)

    def line(self, loc: tuple) -> int | None:
        """1-based line of the deepest node on `loc` that exists in the file."""
        node, line = self.root, None
        for key in loc:
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
                if pair is None:
                    return line
                # the key's own line: a block value ('pipline:' then '  - id: ...') starts
                # on the next one, where a typo in the key is not
                line, node = pair[0].start_mark.line + 1, pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                if key >= len(node.value):
                    return line
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def where(self, loc: tuple) -> str:
        """'file:line' for a field path, noting values that came from --set."""
        if any(loc[: len(o)] == o for o in self.overridden):
            return f"{self.path} (--set {format_loc(loc)})"
        line = self.line(loc)
        return f"{self.path}:{line}" if line else str(self.path)

    def error(self, loc: tuple, message: str) -> RecipeError:
        field = f"{format_loc(loc)}: " if loc else ""
        return RecipeError(f"{self.where(loc)}: {field}{message}")

    def check_numbers(self) -> None:
        """Refuse NaN, infinities and numbers beyond 1e9 anywhere in the document, naming
        file, line and field (before they reach a loop or an allocation)."""
        found = find_absurd(self.data)
        if found is not None:
            raise self.error(found[0], absurd_message(found[1]))

    def get(self, loc: tuple) -> Any:
        value = self.data
        for key in loc:
            value = value[key]
        return value


ABSURD = 1e9  # no setting of a recipe or suite is meaningfully this large


def refuse_absurd_numbers(data: Any) -> Any:
    """A pydantic `mode="before"` check shared by recipe, stage and suite models: NaN,
    infinities and numbers beyond 1e9 are refused before they reach a loop or an
    allocation (`epochs: 1e308` would otherwise validate as an int and hang the run)."""
    found = find_absurd(data) if isinstance(data, dict) else None
    if found is not None:
        raise ValueError(f"{format_loc(found[0])}: {absurd_message(found[1])}")
    return data


def absurd_message(value: Any) -> str:
    return f"got {value!r}; expected a finite number of at most {ABSURD:.0e} in size"


def find_absurd(value: Any, loc: tuple = ()) -> tuple[tuple, Any] | None:
    """(path, value) of the first absurd number in a document, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return (loc, value) if value != value or abs(value) > ABSURD else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()
    for key, item in items:
        found = find_absurd(item, loc + (key,))
        if found is not None:
            return found
    return None


def format_loc(loc: tuple) -> str:
    """('pipeline', 1, 'with', 'lr') -> 'pipeline[1].with.lr'."""
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def validation_error(src: YamlSource, exc: ValidationError, prefix: tuple = (),
                     model: Any = None) -> RecipeError:
    """Pydantic's errors as one message: file:line, field path, value and expectation."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(k for k in err["loc"] if not _is_union_tag(k))
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1]) if model is not None else None
            msg = f"unknown key {loc[-1]!r}"
            if allowed:
                msg += f"; expected one of: {', '.join(sorted(allowed))}"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = describe_error(err)
        lines.append(f"{src.where(loc)}: " + (f"{format_loc(loc)}: " if loc else "") + msg)
    return RecipeError("\n".join(lines))


_PLAIN = {  # pydantic error type -> what was expected, in the user's words
    "int_parsing": "a whole number", "int_type": "a whole number",
    "int_from_float": "a whole number (no fractional part)",
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "text", "list_type": "a list", "tuple_type": "a list",
    "set_type": "a list", "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
    "none_required": "nothing (null)",
}
_BOUNDS = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
           "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}


def expectation(err: dict) -> str:
    """What one pydantic error expected, in plain words ('a whole number', "one of 'a',
    'b'"), never pydantic's own wording ('Input should be a valid integer, unable to parse
    string as an integer')."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"a number {words} {ctx.get(key)}"
    if kind in ("literal_error", "enum"):
        return f"one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"a mapping with a {ctx.get('discriminator')!s} field"
    if kind in ("too_short", "string_too_short"):
        n = ctx.get("min_length")
        return f"at least {n} {'character' if kind.startswith('string') else 'item'}(s)"
    if kind in ("too_long", "string_too_long"):
        n = ctx.get("max_length")
        return f"at most {n} {'character' if kind.startswith('string') else 'item'}(s)"
    if kind == "missing":
        return "a value (this field is required)"
    msg = err["msg"].removeprefix("Value error, ")
    msg = re.sub(r"^(Input|Value) should (be|have) ", "", msg)
    return re.sub(r"^(\w+) should (be|have) ", r"a \1 with ", msg).lower() \
        if re.match(r"^\w+ should ", msg) else msg


def describe_error(err: dict, width: int = 80) -> str:
    """'got <value>; expected <what>' for one pydantic error (a value error's own text)."""
    if err["type"] == "value_error":
        return err["msg"].removeprefix("Value error, ")
    text = repr(err.get("input"))
    text = text if len(text) <= width else text[:width - 3] + "..."
    return f"got {text}; expected {expectation(err)}"


def _is_union_tag(key: Any) -> bool:
    # pydantic inserts the member type name ('str', 'function-after[...]') into union locs
    return isinstance(key, str) and ("[" in key or key in {"str", "int", "float", "bool", "list"})


def _allowed_keys(model: Any, loc: tuple) -> list[str] | None:
    """Field names (by alias) of the pydantic model found at `loc`, for 'expected one of'."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    current = model
    for key in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            fld = next((f for n, f in current.model_fields.items()
                        if n == key or f.alias == key), None)
            if fld is None:
                return None
            current = fld.annotation
        elif isinstance(key, int) or get_origin(current) in (dict, list):
            args = [a for a in get_args(current) if a is not type(None)]
            current = args[-1] if args else None
        else:
            args = [a for a in get_args(current)
                    if isinstance(a, type) and issubclass(a, BaseModel)]
            if not args:
                return None
            current = args[0]
            fld = current.model_fields.get(key)
            current = fld.annotation if fld else None
        # unwrap Optional / unions down to a model when there is one
        args = [a for a in get_args(current) if isinstance(a, type) and issubclass(a, BaseModel)]
        if args and not (isinstance(current, type) and issubclass(current, BaseModel)):
            current = args[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return None


def apply_overrides(src: YamlSource, overrides: list[str], list_key_field: str = "id") -> None:
    """Apply `--set key.path=value` overrides to the raw document, before validation.

    Values are parsed as YAML (`3` is an int, `[1, 2]` a list). In a list of mappings an
    item can be named by its `id` (`pipeline.teacher.with.epochs=1`) or its index.
    """
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"--set {item}: empty key path")
        node, loc = src.data, []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, list_key_field)
                if index is None:
                    ids = [str(x.get(list_key_field)) for x in node if isinstance(x, dict)]
                    raise RecipeError(f"--set {item}: no item {part!r} in {format_loc(tuple(loc))}"
                                      f" (items: {', '.join(ids) or 'none'})")
                loc.append(index)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                loc.append(part)
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(f"--set {item}: {format_loc(tuple(loc))} is a value, "
                                  "not a mapping")
        src.overridden.add(tuple(loc))


def _list_index(node: list, part: str, key_field: str) -> int | None:
    if part.isdigit() and int(part) < len(node):
        return int(part)
    for i, x in enumerate(node):
        if isinstance(x, dict) and str(x.get(key_field)) == part:
            return i
    return None
