"""Model kind ``sentence_transformers``: text-only models (e.g. all-MiniLM-L6-v2, the SBERT model of
Mickus et al.).

They have no image tower: the pipeline gives them text partitions only. The stored embedding is the
model's pooled output *before* its final ``Normalize`` module, so that, like the CLIP towers, the
raw output is kept and normalization is left to the metrics (the storage contract, docs/storage.md); the
dropped module is recorded in the provenance. Weights come from a local folder, a pip package that
bundles them (``package``: a module with ``get_model_path()`` or ``MODEL_DIR``), or the Hugging Face
hub (cached; offline with ``HF_HUB_OFFLINE=1``). ``precision`` casts the weights as for every kind
(``conescope.models``: ``auto`` is bf16 where the hardware runs it natively). The model tokenizes and
batches inside its own encoder, so the engine hands it the strings.

A word fed alone (a dataset whose ``text_unit`` is ``word``) is embedded like a sentence: ``[CLS] word
[SEP]``. Its layer states are, with ``word_vector: pooled`` (the default), pooled as the model pools its
output (the mean over every token, ``[CLS]`` and ``[SEP]`` included, for all-MiniLM-L6-v2), so that the
last layer's state is the model's own word embedding; with ``word_vector: last_subword`` they are the
state of the word's last subword token, the one before ``[SEP]`` (Wolfe & Caliskan's choice for CLIP,
``extraction_id = -2``; in a bidirectional encoder that token has read the whole input either way). The
output embedding stays the model's pooled output.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import model_validator

from conescope.model_specs import Capability, ModelInfo, ModelSpec, register_model_kind
from conescope.models import resolve_device, resolve_precision, torch_dtype
from conescope.profile_schema import Text, problem


@register_model_kind
class SentenceTransformersModel(ModelSpec):
    """Profile entry ``kind: sentence_transformers``: a text-only model (a hub id or a folder),
    optionally bundled by a pip package."""

    kind: Literal["sentence_transformers"]
    model: Text  # a hub id or a folder
    package: Text | None = None  # a pip package that bundles the weights
    # the layer states of a word fed alone: pooled as the model pools, or its last subword's state
    word_vector: Literal["pooled", "last_subword"] = "pooled"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.TEXT_LAYERS})
    DESCRIBED_BY: ClassVar[tuple[str, ...]] = ("arch", "pretrained", "seed", "zero_bias")

    @model_validator(mode="after")
    def _installed(self) -> SentenceTransformersModel:
        """The libraries the kind loads with, and ``package``, are installed (found without importing
        them: importing sentence-transformers takes seconds, and every process reads the profile)."""
        if importlib.util.find_spec("sentence_transformers") is None:
            raise problem("kind sentence_transformers needs the pip package sentence-transformers "
                          "(pip install sentence-transformers)", "kind")
        if self.package is not None and importlib.util.find_spec(self.package) is None:
            raise problem(f"package {self.package!r} is not installed (pip install "
                          f"{self.package.replace('_', '-')})", "package")
        return self

    def load(self, device: str, precision: str) -> TextOnlyModel:
        return load_text_model(self.model, self.package, device, precision)

    def paper_info(self) -> ModelInfo:
        # the paper report has always matched a text-only model by its name alone (no weights tag)
        return ModelInfo(self.model, None, False)

    def words_as(self) -> str:
        return self.word_vector


@dataclass
class TextOnlyModel:
    """A SentenceTransformer without its Normalize module (``conescope.model_specs.EmbeddingModel``)."""

    model: Any
    device: str
    provenance: dict[str, str]
    precision: str = "fp32"
    preprocess: ClassVar[None] = None  # no image tower
    tokenizer: ClassVar[None] = None  # tokenizes inside its encoder: the engine hands over the strings

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

    def text_encoder(self, with_layers: bool, words: str | None = None
                     ) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray | None]]:
        """strings -> (embeddings, pooled states of every layer or None); the states are pooled as the
        model pools, or with ``words="last_subword"`` taken at each word's last subword token."""

        def encode(batch: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
            emb = np.concatenate([e for _, e in embed_texts_st(self, batch, len(batch))])
            layers = (np.stack(text_layer_states_st(self, batch, len(batch), words), axis=1)
                      if with_layers else None)
            return emb, layers

        return encode

    def set_language(self, lang: str) -> None:
        return None  # one tokenizer for every language


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

    hf_logging.disable_progress_bar()  # the CLI's output stays one line per run
    device = resolve_device(device)
    source = resolve_weights(model, package)
    try:
        full = SentenceTransformer(source, device=device)
    except Exception as exc:  # the hub client and transformers raise many types for missing weights
        from huggingface_hub.constants import HF_HUB_CACHE

        folder = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}"
        raise RuntimeError(
            f"could not load the sentence-transformers model {model!r}: {type(exc).__name__}: {exc}. The model "
            f"goes into the Hugging Face cache (HF_HOME, HF_HUB_CACHE) at {folder}: on a machine with network "
            f"access run `huggingface-cli download {model}` and copy that folder to the same place here (or "
            f"point `model` at a local folder, or name a pip package bundling it in `package`); run with "
            f"HF_HUB_OFFLINE=1.") from exc
    kept = [m for m in full if not isinstance(m, Normalize)]
    dropped = [type(m).__name__ for m in full if isinstance(m, Normalize)]
    st = SentenceTransformer(modules=kept, device=device)
    st.eval()
    precision = resolve_precision(precision, device)
    if precision != "fp32":
        st.to(torch_dtype(precision))
    # arch / pretrained / seed / zero_bias: the keys every stored embedding has recorded since the
    # first text-only model, kept so that stored partitions and their fingerprints stay valid
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


def text_layer_states_st(loaded: TextOnlyModel, texts: Sequence[str], batch_size: int,
                         words: str | None = None) -> list[np.ndarray]:
    """Every hidden layer of the transformer (index 0: embeddings output), pooled as the model pools
    its output (mean over real tokens for all-MiniLM-L6-v2; CLS when the pooling module says so); with
    ``words="last_subword"``, the state of the token before the last real one (``[SEP]``)."""
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
        # the tokenizer pads on the right: the last real token ([SEP]) is at (real tokens - 1)
        before_end = features["attention_mask"].sum(1) - 2
        for i, state in enumerate(out.hidden_states):
            if words == "last_subword":
                pooled = state[torch.arange(state.shape[0], device=state.device), before_end]
            else:
                pooled = state[:, 0] if mode == "cls" else (state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if len(layers) <= i:
                layers.append([])
            layers[i].append(pooled.float().cpu().numpy())
    return [np.concatenate(chunks) for chunks in layers]
