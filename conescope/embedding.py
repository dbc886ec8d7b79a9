"""Running image and text towers over a manifest, batch by batch.

Both functions yield ``(row_indices, embeddings)`` per batch so that callers can write each batch as
it is produced (peak memory stays one batch). Embeddings are the raw tower outputs, float32, not
normalized (DESIGN.md, storage contract). A sample whose image cannot be decoded is skipped and
reported through ``on_reject`` rather than failing the batch.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from conescope.models import LoadedModel


def _decode(image: bytes | str):
    """An RGB image from encoded bytes or from a file path (samples ingested by reference)."""
    from PIL import Image

    with Image.open(image if isinstance(image, str) else io.BytesIO(image)) as img:
        return img.convert("RGB")


def embed_images(loaded: LoadedModel, images: Sequence[bytes | str], batch_size: int,
                 on_reject: Callable[[int, str], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import torch

    for start in range(0, len(images), batch_size):
        rows, tensors = [], []
        for i in range(start, min(start + batch_size, len(images))):
            try:
                tensors.append(loaded.preprocess(_decode(images[i])))
                rows.append(i)
            except Exception as exc:  # PIL raises many types for corrupt data
                if on_reject is None:
                    raise
                on_reject(i, f"image could not be decoded: {exc}")
        if not rows:
            continue
        with torch.inference_mode():
            out = loaded.model.encode_image(torch.stack(tensors).to(loaded.device), normalize=False)
        yield np.asarray(rows), out.float().cpu().numpy()


def embed_texts(loaded: LoadedModel, texts: Sequence[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import torch

    if getattr(loaded, "text_only", False):  # a sentence-transformers model (conescope.text_models)
        from conescope.text_models import embed_texts_st

        yield from embed_texts_st(loaded, texts, batch_size)
        return

    for start in range(0, len(texts), batch_size):
        stop = min(start + batch_size, len(texts))
        tokens = loaded.tokenizer(list(texts[start:stop])).to(loaded.device)
        with torch.inference_mode():
            out = loaded.model.encode_text(tokens, normalize=False)
        yield np.arange(start, stop), out.float().cpu().numpy()


def text_layer_states(loaded: LoadedModel, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Pooled hidden states of every layer of the text tower (Wolfe & Caliskan 2022, section 3):
    index 0 is the input to the first block (token + position embeddings), index l the output of
    block l, each pooled at the token the tower itself pools (EOS for CLIP), before ``ln_final`` and
    the projection. Returns one (n, width) float32 array per layer."""
    import torch
    from open_clip.transformer import text_global_pool

    if getattr(loaded, "text_only", False):
        from conescope.text_models import text_layer_states_st

        return text_layer_states_st(loaded, texts, batch_size)
    model = loaded.model
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__}: layer-wise states need an open_clip text transformer "
                         f"with resblocks (CLIP-style towers); this model's text tower is not one")
    pool_type = getattr(model, "text_pool_type", "argmax")
    eos_id = getattr(model, "text_eos_id", None)
    captured: list[torch.Tensor] = []
    hooks = [model.transformer.register_forward_pre_hook(lambda _m, args, _kw=None: captured.append(args[0]))]
    hooks += [b.register_forward_hook(lambda _m, _in, out: captured.append(out)) for b in blocks]
    layers: list[list[np.ndarray]] = [[] for _ in range(len(blocks) + 1)]
    try:
        for start in range(0, len(texts), batch_size):
            tokens = loaded.tokenizer(list(texts[start:start + batch_size])).to(loaded.device)
            captured.clear()
            with torch.inference_mode():
                model.encode_text(tokens)
            for i, state in enumerate(captured):
                pooled = text_global_pool(state, tokens, pool_type, eos_token_id=eos_id)
                layers[i].append(pooled.float().cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
    return [np.concatenate(chunks) for chunks in layers]
