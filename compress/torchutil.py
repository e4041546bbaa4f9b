"""Small torch facts shared by stages, the loader and the runners (torch imported lazily)."""

from __future__ import annotations


def cuda_available() -> bool:
    """Whether torch is installed here and sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def forward_args(model) -> set[str]:
    """The argument names of `model.forward` (which of input_ids, token_type_ids,
    position_ids, use_cache... it takes)."""
    import inspect

    return set(inspect.signature(model.forward).parameters)
