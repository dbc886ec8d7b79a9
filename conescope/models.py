"""Loading CLIP-like towers through open_clip.

Random initialisation follows Tyshchuk et al. (section 4.1, "cone at initialisation"): the model is
built from its open_clip config under ``torch.manual_seed(seed)``; the ``zero_bias`` variant then
sets every bias parameter of both towers (linear, convolution and layer-norm biases) to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


@cache
def _register_configs() -> None:
    import open_clip

    # conescope-tiny: a two-layer ViT/transformer pair for fast tests of the real code path.
    open_clip.add_model_config(_CONFIG_DIR)


def known_architectures() -> set[str]:
    import open_clip

    _register_configs()
    return set(open_clip.list_models())


@dataclass
class LoadedModel:
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    provenance: dict[str, str]

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    @property
    def logit_bias(self) -> float | None:
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.item())


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


def load_model(arch: str, pretrained: str | None, seed: int, zero_bias: bool, device: str = "auto") -> LoadedModel:
    """Build an open_clip model in eval mode on ``device`` with its preprocessing and tokenizer."""
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
    provenance = {
        "arch": arch,
        "pretrained": pretrained or "random",
        "seed": str(seed),
        "zero_bias": str(zero_bias).lower(),
        "biases_zeroed": str(zeroed),
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "precision": "fp32",
        "device": device,
    }
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(arch), device, provenance)
