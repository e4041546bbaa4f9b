"""What each compression format can run on, as data the recommender can query.

Built from the quantize backends' own declarations (compress.stages.quantize) plus the
export/optimisation levels, so there is one source of truth. A recommendation must never
pick a format that the target cannot run fast: `runs_fast_on` answers that per target.
"""

from __future__ import annotations

EXPORT_CAPABILITIES = [
    {"name": "onnx-fp32", "stage": "export", "produces": "onnx", "runs_on": ["cpu", "cuda"],
     "devices": ["cpu", "cuda"], "min_compute_capability": None, "bits": 32,
     "weight_format": "float32", "activation_format": "float32",
     "notes": ["optimize O1-O3 are device-independent fusions"]},
    {"name": "onnx-O4-fp16", "stage": "export", "produces": "onnx", "runs_on": ["cuda"],
     "devices": ["cuda"], "min_compute_capability": 7.0, "bits": 16,
     "weight_format": "float16", "activation_format": "float16",
     "notes": ["O4 converts to fp16 for GPU targets; refused at validation without CUDA"]},
]

def backend_capabilities() -> list[dict]:
    """One dict per quantize backend: where it runs, where it runs fast, formats, notes."""
    from compress.stages.quantize import BACKENDS

    out = []
    for name, b in BACKENDS.items():
        out.append({
            "name": name, "stage": "quantize", "description": b.description,
            "accepts": sorted(k.value for k in b.accepts), "produces": b.produces.value,
            "runs_on": list(b.runs_on), "devices": list(b.devices),
            "min_compute_capability": b.min_compute_capability, "bits": b.bits,
            "weight_format": b.weight_format, "activation_format": b.activation_format,
            "tasks": list(b.tasks), "package": b.package, "notes": list(b.notes),
        })
    return out


def all_capabilities() -> list[dict]:
    return backend_capabilities() + [dict(c) for c in EXPORT_CAPABILITIES]


def runs_fast_on(name: str, device: str, compute_capability: float | None = None) -> bool:
    """Whether format `name` has fast kernels on `device` ('cpu' or 'cuda' with its compute
    capability), e.g. runs_fast_on('bf16', 'cuda', 7.5) is False (T4 has no BF16)."""
    cap = next((c for c in all_capabilities() if c["name"] == name), None)
    if cap is None:
        raise KeyError(f"unknown format {name!r}")
    if device not in cap["devices"]:
        return False
    need = cap["min_compute_capability"]
    return device != "cuda" or need is None or compute_capability is None \
        or compute_capability >= need
