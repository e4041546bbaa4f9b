"""Price books: every price says where it comes from, or that it is unverified; the
catalog holds specs only; user books add and override, nothing is fetched."""

from __future__ import annotations

import pytest
import yaml

from compress.errors import InputError
from compress.hardware.catalog import CATALOG_FILE, DEFAULT_PRICE_BOOKS, load_catalog
from compress.hardware.pricebook import price_lines


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_the_catalog_holds_specs_and_the_book_holds_prices():
    """One source of truth: no target in catalog.yaml carries a price."""
    raw = yaml.safe_load(CATALOG_FILE.read_text())
    for t in raw["targets"]:
        assert not {"price_per_hour", "price_source", "price"} & set(t), t["name"]
    assert "prices" not in raw


def test_every_default_price_names_its_provenance(cat):
    assert cat.price_books == ["on-demand-2026"]
    priced = {n: t.price for n, t in cat.targets.items() if t.price}
    assert len(priced) >= 8
    for name, p in priced.items():
        assert p.provider and p.instance and p.per in ("instance", "gpu") and p.url, name
        assert p.book == "on-demand-2026"
        # sourced means read on a page on a date; anything else says unverified, aloud
        assert (p.status == "sourced") == bool(p.captured and p.url), name
        assert ("UNVERIFIED" in p.summary()) == (p.status == "unverified"), name
        assert "midpoint" not in (p.note or "").lower() and "[DESIGN]" not in p.summary()


def test_no_invented_prices(cat):
    # local-cpu is this machine: only its user prices it
    assert cat["local-cpu"].price is None
    # an A10 price comes from a provider that rents A10s (not AWS, which rents the A10G),
    # read on a dated page: not the midpoint of a range
    a10 = cat["A10"].price
    assert a10.status == "sourced" and a10.provider != "AWS" and a10.captured
    # targets with no sourced single-GPU price stay unpriced, and say how to price them
    for name in ("A100-80GB", "H200"):
        assert cat[name].price_per_hour is None


def test_a_user_book_adds_and_overrides_target_by_target(tmp_path):
    book = tmp_path / "spot.yaml"
    book.write_text("book: my-spot\nprices:\n"
                    "  T4: {price_per_hour: 0.2, provider: AWS, instance: g4dn.xlarge spot, "
                    "per: instance, captured: '2026-11-29', url: 'https://example.org/spot'}\n"
                    "  H200: {price_per_hour: 3.5, source: my contract}\n")
    c = load_catalog(prices=book)
    assert c.price_books == ["on-demand-2026", "my-spot"]
    assert c["T4"].price_per_hour == 0.2 and c["T4"].price.status == "sourced"
    assert c["T4"].price.book == "my-spot"
    # a price with no date or URL is taken, and marked unverified wherever it is shown
    assert c["H200"].price.status == "unverified" and c["H200"].price_source == "my contract"
    assert "UNVERIFIED" in c.prices()["H200"]["summary"]
    # the targets it does not name keep the default book's price and provenance
    assert c["A10"].price == load_catalog()["A10"].price
    prov = c.provenance()
    assert prov["price_books"] == ["on-demand-2026", "my-spot"]
    assert prov["prices"]["T4"]["url"] == "https://example.org/spot"
    lines = price_lines(prov["prices"], {"T4", "H200"})
    assert len(lines) == 2 and any("UNVERIFIED" in x and "H200" in x for x in lines)


@pytest.mark.parametrize("entry, words", [
    ("{price_per_hour: 1, status: sourced, url: 'https://x'}", ["status", "captured"]),
    ("{price_per_hour: 1, captured: 'last week', url: 'https://x'}", ["captured", "YYYY-MM-DD"]),
    ("{price_per_hour: 1, per: hour}", ["per", "hour"]),
])
def test_a_bad_price_entry_names_file_field_and_value(tmp_path, entry, words):
    f = tmp_path / "bad.yaml"
    f.write_text(f"prices:\n  T4: {entry}\n")
    with pytest.raises(InputError) as e:
        load_catalog(prices=f)
    msg = str(e.value)
    assert str(f) in msg and "T4" in msg and all(w in msg for w in words), msg


def test_default_books_are_shipped_files():
    for b in DEFAULT_PRICE_BOOKS:
        assert b.is_file() and b.parent.name == "prices"
