"""compress: declarative model compression (distil, prune, quantize, export), measured and
priced. The Python API below is what the CLI and the notebooks use.

    import compress
    run = compress.run_recipe("recipes/demo-bbc-news.yaml")
    run.table()                          # pandas DataFrame
    compress.load_run("runs/...").table()
"""

__version__ = "0.1.0"


SUBPACKAGES = ("decide", "hardware", "measure", "stages", "confidence", "quality_checks",
               "stats", "gate", "results", "engine", "report", "export")


def __getattr__(name):  # lazy: the measurement worker imports this package without torch
    if name in ("run_recipe", "prepare"):
        from compress import engine

        return getattr(engine, name)
    if name in ("load_run", "Run"):
        from compress import results

        return getattr(results, name)
    if name in SUBPACKAGES:  # compress.decide.recommend... works after `import compress`
        import importlib

        return importlib.import_module(f"compress.{name}")
    if name == "load_recipe":
        from compress.recipe import load_recipe

        return load_recipe
    raise AttributeError(name)


__all__ = ["load_recipe", "load_run", "prepare", "run_recipe", "Run"]
