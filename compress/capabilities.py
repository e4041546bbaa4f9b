"""What each compression format runs fast on: a view of the hardware catalog.

The catalog (compress/hardware/catalog.yaml) is the one table of runtime x format x compute
capability x batch regime, each fact with its source. Every quantize backend declares the
catalog format it produces (`Backend.format`); the engine writes it into the artifact's
metadata and the projection reads it there. This module only answers questions from those
two: it holds no facts of its own.
"""

from __future__ import annotations

from compress.hardware.catalog import Catalog, load_catalog

DEVICE_KIND = {"cpu": "cpu", "cuda": "gpu"}


def _fast_paths(fmt: str, catalog: Catalog) -> list[dict]:
    """One entry per catalog runtime that runs `fmt` fast."""
    out = []
    for name, rt in catalog.runtimes.items():
        if fmt in rt.fast:
            out.append({"runtime": name, "device": "cuda" if rt.device == "gpu" else "cpu",
                        "min_compute_capability": rt.fast[fmt] or None,
                        "batch_max": rt.batch_max.get(fmt),
                        "requires": rt.requires.get(fmt)})
    return out


def backend_capabilities(catalog: Catalog | None = None) -> list[dict]:
    """One dict per quantize backend: the format it produces and, from the catalog, the
    runtimes that run that format fast (device, minimum compute capability, batch limit)
    and the ones that run it but slowly (with the reason)."""
    from compress.stages.quantize import BACKENDS

    catalog = catalog or load_catalog()
    out = []
    for name, b in BACKENDS.items():
        fast = _fast_paths(b.format, catalog)
        out.append({
            "name": name, "stage": "quantize", "description": b.description,
            "accepts": sorted(k.value for k in b.accepts), "produces": b.produces.value,
            "format": b.format, "runs_on": list(b.runs_on),
            "devices": sorted({f["device"] for f in fast}), "fast": fast,
            "slow": {n: rt.slow[b.format] for n, rt in catalog.runtimes.items()
                     if b.format in rt.slow},
            "tasks": list(b.tasks), "package": b.package, "notes": list(b.notes),
        })
    return out


def runs_fast_on(name: str, device: str, compute_capability: float | None = None,
                 batch_size: int = 1, catalog: Catalog | None = None,
                 compiled: bool = False) -> bool:
    """Whether a quantize backend's output, or a catalog format, has a fast runtime on
    `device` ('cpu', or 'cuda' with its compute capability) at `batch_size`, e.g.
    runs_fast_on('bf16', 'cuda', 7.5) is False (a T4 has no BF16). A fast path that
    requires torch.compile counts only with `compiled=True`."""
    from compress.stages.quantize import BACKENDS

    catalog = catalog or load_catalog()
    fmt = BACKENDS[name].format if name in BACKENDS else name
    if fmt not in catalog.formats:
        raise KeyError(f"unknown format {name!r}")
    for f in _fast_paths(fmt, catalog):
        if f["device"] != device:
            continue
        need = f["min_compute_capability"]
        if device == "cuda" and need and compute_capability is not None \
                and compute_capability < need:
            continue
        if f["batch_max"] is not None and batch_size > f["batch_max"]:
            continue
        if f["requires"] == "torch.compile" and not compiled:
            continue
        return True
    return False
