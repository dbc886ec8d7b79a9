"""Where and at which precision a model runs: the device and compute-precision policy every model kind
applies when it loads (``conescope/model_kinds/``).

Precision (``embedding.precision``): ``fp32``, or the weights themselves cast to ``bf16`` / ``fp16``
(``model.to(dtype)``, as OpenAI's CLIP loader does with fp16 on CUDA; autocast alone keeps fp32
weights and converts them on every call, which measured slower than fp32 on the CPU). ``auto`` picks
``bf16`` where the hardware multiplies bfloat16 natively (CUDA devices with bf16 support, CPUs with
AMX-BF16 or AVX512-BF16) and ``fp32`` elsewhere, where bfloat16 is emulated and slower.
"""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def native_bf16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 natively: a CUDA device with bf16 support, or a CPU with
    AVX512-BF16 or AMX (oneDNN then runs bf16 GEMMs several times faster than fp32; elsewhere bf16
    is emulated and slower than fp32)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(requested: str, device: str) -> str:
    """The precision a model runs at on ``device``: ``auto`` is ``bf16`` where bf16 is native
    (:func:`native_bf16`), else ``fp32``; an explicit choice is kept."""
    if requested not in PRECISIONS:
        raise ValueError(f"embedding.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("embedding.device is 'cuda' but torch sees no CUDA device")
    return requested
