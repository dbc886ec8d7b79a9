"""Loading CLIP-like towers through open_clip, at the compute precision of the profile.

Random initialisation follows Tyshchuk et al. (section 4.1, "cone at initialisation"): the model is
built from its open_clip config under ``torch.manual_seed(seed)``; the ``zero_bias`` variant then
sets every bias parameter of both towers (linear, convolution and layer-norm biases) to zero.

Precision (``embedding.precision``): ``fp32``, or the weights themselves cast to ``bf16`` / ``fp16``
(``model.to(dtype)``, as OpenAI's CLIP loader does with fp16 on CUDA; autocast alone keeps fp32
weights and converts them on every call, which measured slower than fp32 on the CPU). ``auto`` picks
``bf16`` where the hardware multiplies bfloat16 natively (CUDA devices with bf16 support, CPUs with
AMX-BF16 or AVX512-BF16) and ``fp32`` elsewhere, where bfloat16 is emulated and slower. The logit
scale and bias are read before the cast, so the loss uses their float32 values whatever the precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@cache
def _register_configs() -> None:
    import open_clip

    # conescope-tiny: a two-layer ViT/transformer pair for fast tests of the real code path.
    open_clip.add_model_config(_CONFIG_DIR)


@cache
def known_architectures() -> frozenset[str]:
    """The architecture names ``open_clip.list_models()`` gives once conescope's configs are added:
    the stems of the model config files (open_clip's and ``model_configs/``) that hold ``embed_dim``,
    ``vision_cfg`` and ``text_cfg`` (open_clip.factory._rescan_model_configs). Read from the files,
    so that validating a profile does not import open_clip (about 3 s: torch, torchvision,
    transformers), which every process of the code location and every run would pay."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("open_clip")
    folders = [_CONFIG_DIR, *([Path(spec.origin).parent / "model_configs"] if spec and spec.origin else [])]
    names = set()
    for folder in folders:
        for path in folder.glob("*.json"):
            if all(k in json.loads(path.read_text()) for k in ("embed_dim", "vision_cfg", "text_cfg")):
                names.add(path.stem)
    return frozenset(names)


@dataclass
class LoadedModel:
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    provenance: dict[str, str]
    precision: str = "fp32"  # the weights' dtype: fp32 | bf16 | fp16
    logits: tuple[float, float | None] | None = None  # float32 (scale, bias), read before a cast

    @property
    def dtype(self):
        return torch_dtype(self.precision)

    @property
    def logit_scale(self) -> float:
        if self.logits is not None:
            return self.logits[0]
        return float(self.model.logit_scale.exp().item())

    @property
    def logit_bias(self) -> float | None:
        if self.logits is not None:
            return self.logits[1]
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.item())


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


def zero_biases(model: Any) -> int:
    """Set every parameter named ``*bias`` to zero; returns how many tensors were zeroed.

    ``logit_bias`` (SigLIP) is a loss parameter, not a tower bias, and is left alone.
    """
    import torch

    count = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and name != "logit_bias":
                param.zero_()
                count += 1
    return count


def load_model(arch: str, pretrained: str | None, seed: int, zero_bias: bool, device: str = "auto",
               precision: str = "fp32") -> LoadedModel:
    """Build an open_clip model in eval mode on ``device`` with its preprocessing and tokenizer, its
    weights at ``precision`` (see :func:`resolve_precision`; the module docstring)."""
    import open_clip
    import torch

    _register_configs()
    device = resolve_device(device)
    torch.manual_seed(seed)
    try:
        if arch.startswith("hf-hub:"):
            # open_clip falls back to random weights (with a log line) when an hf-hub repository's weights
            # cannot be fetched; fetching them first turns that into an error
            from open_clip.pretrained import download_pretrained_from_hf

            download_pretrained_from_hf(arch.removeprefix("hf-hub:"))
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    except Exception as exc:  # open_clip raises several types for missing weights
        if pretrained is None and not arch.startswith("hf-hub:"):
            raise
        weights = arch if pretrained is None else f"{arch}/{pretrained}"
        raise RuntimeError(
            f"could not load weights {weights}: {type(exc).__name__}: {exc}. Download them on a machine with "
            f"network access into the Hugging Face cache (HF_HOME, e.g. by loading the model once there) and "
            f"copy that cache here; run with HF_HUB_OFFLINE=1."
        ) from exc
    zeroed = zero_biases(model) if zero_bias else 0
    model.eval()
    precision = resolve_precision(precision, device)
    loaded = LoadedModel(model, preprocess, None, device, {})
    logits = (loaded.logit_scale, loaded.logit_bias)
    if precision != "fp32":
        model.to(torch_dtype(precision))
    provenance = {
        "arch": arch,
        "pretrained": pretrained or "random",
        "seed": str(seed),
        "zero_bias": str(zero_bias).lower(),
        "biases_zeroed": str(zeroed),
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "precision": precision,
        "device": device,
    }
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(arch), device, provenance, precision, logits)
