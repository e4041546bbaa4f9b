"""Quantize or cast a float PyTorch module in place, by a backend's name.

Used by the quantize stage's PyTorch backends and by the loader (`compress.loading`), which
rebuilds a saved module and re-applies the transform its state dict was saved from. It
imports no stage, so the measurement worker loads a quantized model without the stages.
"""

from __future__ import annotations


def apply_transform(model, spec: dict):
    """Quantize or cast `model` the way backend `spec["backend"]` did; returns the model."""
    import torch

    name = spec["backend"]
    if name == "torch-dynamic-int8":
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                      dtype=torch.qint8)
    if name in ("fp16", "bf16"):
        return model.to(torch.float16 if name == "fp16" else torch.bfloat16)
    if name.startswith("torchao-"):
        from compress.quiet import import_transformers, quiet_fds

        import_transformers()
        with quiet_fds():
            import torchao.quantization as tq
        if name == "torchao-int8-weight":
            cfg = tq.Int8WeightOnlyConfig()
        elif name == "torchao-int8-dynamic":
            cfg = tq.Int8DynamicActivationInt8WeightConfig()
        elif name == "torchao-int4-weight":
            model = model.to(device="cuda", dtype=torch.bfloat16)
            cfg = tq.Int4WeightOnlyConfig(group_size=spec.get("group_size", 128))
        else:
            raise ValueError(f"unknown torchao backend {name!r}")
        with quiet_fds():
            tq.quantize_(model, cfg)
        return model
    raise ValueError(f"no transform for backend {name!r}")
