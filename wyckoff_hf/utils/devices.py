"""Which torch device a job runs on, checked before any work starts."""

from __future__ import annotations


def check_device(device: str | None, option: str = "--device") -> str:
    """The torch device to run on (default ``cpu``); ``ValueError`` naming ``option`` and the problem when it
    is absent."""
    import torch

    device = device or "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise ValueError(f"{option} {device!r} is not a torch device ({str(err).splitlines()[0]})") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {device}: no CUDA GPU is visible to this torch {torch.__version__} "
                         f"(CPU build, or no GPU); use {option} cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} {device}: Apple MPS is not available here; use {option} cpu")
    return device
