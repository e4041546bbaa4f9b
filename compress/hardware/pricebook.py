"""Price books: what each target costs per hour, and where that figure comes from.

A price book is a YAML file (`prices/*.yaml` beside the catalog; `prices/on-demand-2026.yaml`
is loaded by default, a user's come with `--prices`): `{book: NAME, prices: {TARGET: {...}}}`.
Every entry is a `Price`: provider, instance, per instance or per GPU, the date it was read
and the page it was read on. Without a capture date and a URL it is `unverified`, and says
so wherever it is shown. The catalog holds specs only; nothing is fetched at run time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.errors import InputError
from compress.yamlsource import refuse_absurd_numbers


class Price(BaseModel):
    """One target's price per hour and where it comes from (an entry of a price book)."""

    model_config = ConfigDict(extra="forbid")

    _finite = model_validator(mode="before")(classmethod(
        lambda cls, data: refuse_absurd_numbers(data)))

    price_per_hour: float = Field(ge=0, description="what ONE target (one GPU, or one CPU "
                                                    "instance) costs per hour")
    per: Literal["instance", "gpu"] | None = Field(
        None, description="instance: the price of a whole instance holding exactly this "
                          "target; gpu: a per-GPU share of a multi-GPU instance")
    gpus: int | None = Field(None, ge=1, description="per: gpu: GPUs in the instance")
    provider: str | None = None
    instance: str | None = Field(None, description="instance type, region, terms")
    captured: str | None = Field(None, description="the date the figure was read (YYYY-MM-DD)")
    url: str | None = Field(None, description="the page the figure was read on")
    status: Literal["sourced", "unverified"] | None = Field(
        None, description="sourced: read on `url` on `captured`; unverified otherwise "
                          "(derived when not given)")
    note: str | None = None
    source: str | None = Field(None, description="free text (older prices files)")
    book: str | None = Field(None, description="the price book or file it came from (set "
                                               "by the loader)")

    @model_validator(mode="after")
    def _status(self) -> Price:
        if self.captured is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}",
                                                           str(self.captured)):
            raise ValueError(f"captured: got {self.captured!r}; expected a date YYYY-MM-DD")
        sourced = bool(self.captured and self.url)
        if self.status == "sourced" and not sourced:
            raise ValueError("status: 'sourced' needs both `captured` (the date the price "
                             "was read) and `url` (where)")
        if self.status is None:
            self.status = "sourced" if sourced else "unverified"
        return self

    def summary(self) -> str:
        """One line: who, what, per what, read when and where, and whether unverified."""
        what = ", ".join(x for x in (self.provider, self.instance) if x) or self.source \
            or "no provider named"
        per = {"instance": "per instance", "gpu": f"per GPU (of {self.gpus or '?'})"}.get(
            self.per or "", "per ? (not said)")
        when = f"read {self.captured}" if self.captured else "no capture date"
        where = f" at {self.url}" if self.url else ""
        flag = "" if self.status == "sourced" else "UNVERIFIED, "
        book = f" [{self.book}]" if self.book else ""
        text = f"{what}; {per}; {flag}{when}{where}{book}"
        return text if not self.source or self.source in what else f"{text} ({self.source})"

    def provenance(self) -> dict:
        return {"price_per_hour": self.price_per_hour,
                "source": self.source or self.summary(), "summary": self.summary(),
                **self.model_dump(exclude={"price_per_hour", "source"})}


def apply_prices(raw: dict[str, dict], entries: dict[str, Price], where: Path,
                  book: str | None) -> None:
    for name, price in entries.items():
        if name not in raw:
            raise InputError(f"{where}: prices: price for unknown target {name!r}; known: "
                             f"{', '.join(raw)}")
        price = price.model_copy(update={"book": book or where.name})
        raw[name].update(price_per_hour=price.price_per_hour, price=price.model_dump(),
                         price_source=price.source or price.summary())


def price_lines(prices: dict[str, dict], names=None) -> list[str]:
    """One line per priced target (of `names`, default all): '$/h: provenance', the
    unverified ones flagged; for the console and the HTML report alike. Reads the
    `provenance()["prices"]` form, also as saved by older versions (price and source only)."""
    out = []
    for name, p in prices.items():
        if (names is not None and name not in names) or not p \
                or p.get("price_per_hour") is None:
            continue
        text = p.get("summary") or p.get("source") or "no source recorded"
        out.append(f"{name} ${p['price_per_hour']:g}/h: {text}")
    return out
