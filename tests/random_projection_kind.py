"""A model kind defined in one module outside conescope, as a new kind would be written: random
projections of pixels and of hashed words, seeded, built from numpy and run with torch.

Profile entry ``kind: random_projection`` with ``dim`` (output dimension) and ``width`` (text layers).
Images: the pixels of an 8 x 8 RGB thumbnail, projected to ``dim``. Texts: a bag of hashed words
(``VOCAB`` buckets, CRC-32 so that every process hashes alike), through two layers of width ``width``
(a projection, then ``tanh`` of another), projected to ``dim``; the layer states are those two.
Importing the module registers the kind (``tests/test_new_model_kind.py`` does, at test time).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from conescope.model_specs import Capability, ModelSpec, register_model_kind
from conescope.models import resolve_device, resolve_precision, torch_dtype
from conescope.profile_schema import at_least

SIDE = 8  # thumbnail side: SIDE * SIDE * 3 pixel values
VOCAB = 64


class Thumbnail:
    """A PIL image -> its 8 x 8 RGB thumbnail's values in [0, 1], flattened (float32 tensor). Its repr
    is recorded in the embeddings' provenance, so it names the settings only."""

    def __call__(self, image) -> Any:
        import torch

        pixels = np.asarray(image.convert("RGB").resize((SIDE, SIDE)), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels.reshape(-1))

    def __repr__(self) -> str:
        return f"Thumbnail({SIDE})"


def tokenize(texts: list[str]) -> Any:
    """Texts -> word counts in ``VOCAB`` CRC-32 buckets (float32 tensor, one row per text)."""
    import torch

    counts = np.zeros((len(texts), VOCAB), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            counts[i, zlib.crc32(word.encode()) % VOCAB] += 1
    return torch.from_numpy(counts)


@register_model_kind
class RandomProjectionModel(ModelSpec):
    """Profile entry ``kind: random_projection``."""

    kind: Literal["random_projection"]
    dim: at_least(2) = 16
    width: at_least(2) = 8
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.IMAGE_TOWER, Capability.TEXT_LAYERS})
    DESCRIBED_BY: ClassVar[tuple[str, ...]] = ("kind", "seed", "dim")

    def load(self, device: str, precision: str) -> RandomProjection:
        import torch

        device = resolve_device(device)
        precision = resolve_precision(precision, device)
        rng = np.random.default_rng(self.seed)

        def weights(rows: int, cols: int) -> torch.Tensor:
            w = rng.standard_normal((rows, cols)).astype(np.float32) / np.sqrt(rows)
            return torch.from_numpy(w).to(device, torch_dtype(precision))

        provenance = {"kind": "random_projection", "seed": str(self.seed), "dim": str(self.dim),
                      "precision": precision, "device": device}
        return RandomProjection(weights(SIDE * SIDE * 3, self.dim), weights(VOCAB, self.width),
                                weights(self.width, self.width), weights(self.width, self.dim), device, precision,
                                provenance)

    def declared_dimension(self) -> tuple[int | None, str]:
        return self.dim, "the entry's dim"


@dataclass
class RandomProjection:
    image: Any
    words: Any
    hidden: Any
    out: Any
    device: str
    precision: str
    provenance: dict[str, str]
    preprocess: ClassVar[Callable] = Thumbnail()
    tokenizer: ClassVar[Callable] = staticmethod(tokenize)
    logit_scale: ClassVar[float] = 10.0
    logit_bias: ClassVar[None] = None

    def encode_images(self, pixels) -> np.ndarray:
        return (pixels @ self.image).float().cpu().numpy()

    def text_encoder(self, with_layers: bool, words: str | None = None
                     ) -> Callable[[Any], tuple[np.ndarray, np.ndarray | None]]:
        import torch

        if words not in (None, "pooled"):
            raise ValueError(f"a bag of words has no subword tokens: word vector {words!r}")

        def encode(counts) -> tuple[np.ndarray, np.ndarray | None]:
            first = counts @ self.words
            second = torch.tanh(first @ self.hidden)
            out = (second @ self.out).float().cpu().numpy()
            return out, torch.stack([first, second], dim=1).float().cpu().numpy() if with_layers else None

        return encode

    def set_language(self, lang: str) -> None:
        return None
