"""Text-only sentence-transformers models (e.g. all-MiniLM-L6-v2, the SBERT model of Mickus et al.).

They have no image tower: the pipeline gives them text partitions only. The stored embedding is the
model's pooled output *before* its final ``Normalize`` module, so that, like the CLIP towers, the
raw output is kept and normalization is left to the metrics (the storage contract, docs/storage.md); the
dropped module is recorded in the provenance. Weights come from a local folder, a pip package that
bundles them (``package``: a module with ``get_model_path()`` or ``MODEL_DIR``), or the Hugging Face
hub (cached; offline with ``HF_HUB_OFFLINE=1``). ``precision`` casts the weights as for the CLIP
towers (conescope/models.py: ``auto`` is bf16 where the hardware runs it natively).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TextOnlyModel:
    model: Any  # a SentenceTransformer without its Normalize module
    device: str
    provenance: dict[str, str]
    text_only: bool = True
    precision: str = "fp32"

    @property
    def logit_scale(self) -> None:
        return None  # no image-text head: no contrastive temperature

    @property
    def logit_bias(self) -> None:
        return None

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())


def resolve_weights(model: str, package: str | None) -> str:
    """A folder or hub id to hand to SentenceTransformer."""
    if package is None:
        return model
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise RuntimeError(f"text model {model!r}: package {package!r} is not installed "
                           f"(pip install {package.replace('_', '-')})") from exc
    getter = getattr(module, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(getattr(module, "MODEL_DIR", ""))
    if not (path / "modules.json").is_file():
        raise RuntimeError(f"text model {model!r}: package {package!r} has no sentence-transformers model "
                           f"folder (looked at {path})")
    return str(path)


def load_text_model(model: str, package: str | None, device: str, precision: str = "fp32") -> TextOnlyModel:
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize
    from transformers.utils import logging as hf_logging

    from conescope.models import resolve_device, resolve_precision, torch_dtype

    hf_logging.disable_progress_bar()  # the CLI's output stays one line per run
    device = resolve_device(device)
    source = resolve_weights(model, package)
    try:
        full = SentenceTransformer(source, device=device)
    except Exception as exc:  # the hub client and transformers raise many types for missing weights
        raise RuntimeError(
            f"could not load the sentence-transformers model {model!r}: {type(exc).__name__}: {exc}. Download it "
            f"on a machine with network access into the Hugging Face cache (HF_HOME), or point `model` at a "
            f"local folder, and run with HF_HUB_OFFLINE=1.") from exc
    kept = [m for m in full if not isinstance(m, Normalize)]
    dropped = [type(m).__name__ for m in full if isinstance(m, Normalize)]
    st = SentenceTransformer(modules=kept, device=device)
    st.eval()
    precision = resolve_precision(precision, device)
    if precision != "fp32":
        st.to(torch_dtype(precision))
    provenance = {"arch": model, "pretrained": package or source, "seed": "0", "zero_bias": "false",
                  "kind": "sentence_transformers", "dropped_modules": ",".join(dropped) or "none",
                  "sentence_transformers_version": sentence_transformers.__version__,
                  "torch_version": torch.__version__, "precision": precision, "device": device}
    return TextOnlyModel(st, device, provenance, precision=precision)


def embed_texts_st(loaded: TextOnlyModel, texts: Sequence[str],
                   batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(texts), batch_size):
        stop = min(start + batch_size, len(texts))
        # a tensor rather than numpy: numpy has no bfloat16, so the cast to float32 is ours
        out = loaded.model.encode(list(texts[start:stop]), batch_size=batch_size, convert_to_tensor=True,
                                  normalize_embeddings=False, show_progress_bar=False)
        yield np.arange(start, stop), out.float().cpu().numpy()


def text_layer_states_st(loaded: TextOnlyModel, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Every hidden layer of the transformer (index 0: embeddings output), pooled as the model pools
    its output (mean over real tokens for all-MiniLM-L6-v2; CLS when the pooling module says so)."""
    import torch

    transformer, pooling = loaded.model[0], loaded.model[1]
    mode = getattr(pooling, "pooling_mode", None) or ("cls" if getattr(pooling, "pooling_mode_cls_token", False)
                                                      else "mean")
    layers: list[list[np.ndarray]] = []
    for start in range(0, len(texts), batch_size):
        tokenize = getattr(loaded.model, "preprocess", None) or loaded.model.tokenize
        features = tokenize(list(texts[start:start + batch_size]))
        features = {k: v.to(loaded.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            out = transformer.auto_model(**{k: v for k, v in features.items()
                                            if k in ("input_ids", "attention_mask", "token_type_ids")},
                                         output_hidden_states=True)
        mask = features["attention_mask"].unsqueeze(-1).float()
        for i, state in enumerate(out.hidden_states):
            pooled = state[:, 0] if mode == "cls" else (state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if len(layers) <= i:
                layers.append([])
            layers[i].append(pooled.float().cpu().numpy())
    return [np.concatenate(chunks) for chunks in layers]
