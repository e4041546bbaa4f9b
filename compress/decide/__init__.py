"""Decisions from measured (and projected) figures: cost per target, the recommendation."""


def __getattr__(name):  # compress.decide.recommend / .cost without importing them first
    if name in ("recommend", "cost"):
        import importlib

        return importlib.import_module(f"compress.decide.{name}")
    raise AttributeError(name)
