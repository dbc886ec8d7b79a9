"""Running image and text towers over a manifest, batch by batch: the simple entry points.

They run the engine (conescope/engine.py) in the calling process (no decoding workers) with a fixed
batch size, and yield ``(row_indices, embeddings)`` per batch so that callers can write each batch as
it is produced. Embeddings are the raw tower outputs, float32, not normalized (the storage
contract, docs/storage.md). A sample whose image cannot be decoded is skipped and reported through ``on_reject``
rather than failing the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from conescope.models import LoadedModel


def _settings(batch_size: int):
    from conescope.engine import EngineSettings

    return EngineSettings(batch_size=batch_size, workers=0)


def embed_images(loaded: LoadedModel, images: Sequence[bytes | str], batch_size: int,
                 on_reject: Callable[[int, str], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from conescope import engine

    yield from engine.embed_images(loaded, images, _settings(batch_size), on_reject=on_reject)


def embed_texts(loaded: LoadedModel, texts: Sequence[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from conescope import engine

    for rows, emb, _ in engine.embed_texts(loaded, texts, _settings(batch_size)):
        yield rows, emb


def text_layer_states(loaded: LoadedModel, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Pooled hidden states of every layer of the text tower (Wolfe & Caliskan 2022, section 3):
    index 0 is the input to the first block (token + position embeddings), index l the output of
    block l, each pooled at the token the tower itself pools (EOS for CLIP), before ``ln_final`` and
    the projection (a text-only model: every hidden layer, pooled as the model pools). Returns one
    (n, width) float32 array per layer."""
    from conescope import engine

    stacks = [layers for _, _, layers in engine.embed_texts(loaded, texts, _settings(batch_size), with_layers=True)]
    if not stacks:
        return []
    states = np.concatenate(stacks)
    return [np.ascontiguousarray(states[:, layer]) for layer in range(states.shape[1])]
