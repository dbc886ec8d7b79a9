"""CLIP loss: the symmetric InfoNCE objective CLIP is trained with (Radford et al. 2021, section 2.3
and figure 3), evaluated on held-out pairs as Tyshchuk et al. 2023 (section 4.2) do to score each
transform.

Computed in float64 with torch (matrix products and ``logsumexp`` use every core, several times faster
than ``scipy.special.logsumexp``); batches and the full matrix are processed in row blocks of at most
``_BLOCK_ELEMENTS`` logits, so memory stays bounded for any n.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from conescope.metrics.logits import prepare, similarity_prepared

_BLOCK_ELEMENTS = 1 << 24  # logits held at once (128 MiB in float64)


def _check_pairs(image: np.ndarray, text: np.ndarray, logit_scale: float, batch_size: int | None) -> None:
    if image.ndim != 2 or image.shape != text.shape:
        raise ValueError(f"image and text must be paired (n, d) arrays, got {image.shape} and {text.shape}")
    if image.shape[0] == 0:
        raise ValueError("clip loss needs at least one pair")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    if not math.isfinite(logit_scale):
        raise ValueError(f"logit_scale must be finite, got {logit_scale}")


def _scaled_logits(a: torch.Tensor, b: torch.Tensor, scale: float, geometry: str) -> torch.Tensor:
    """scale * s(a_p, b_q): for cosine and dot the scale multiplies the n x d rows, not the n x n logits."""
    if geometry == "neg_sq_euclidean":
        return scale * similarity_prepared(a, b, geometry)
    return similarity_prepared(scale * a, b, geometry)


def _square_losses(a: torch.Tensor, b: torch.Tensor, scale: float, geometry: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses of one batch (a[i] pairs with b[i]), streamed over row blocks of the logits.

    Row log-sum-exps are complete within a block; column ones are accumulated across blocks with
    ``logaddexp``, so the m x m matrix never exists at once.
    """
    m = a.shape[0]
    rows = max(1, _BLOCK_ELEMENTS // m)
    i2t = torch.empty(m, dtype=a.dtype)
    diag = torch.empty(m, dtype=a.dtype)
    col_lse = torch.full((m,), -math.inf, dtype=a.dtype)
    for start in range(0, m, rows):
        block = _scaled_logits(a[start:start + rows], b, scale, geometry)
        local = torch.arange(block.shape[0])
        d = block[local, start + local]
        diag[start:start + rows] = d
        i2t[start:start + rows] = torch.logsumexp(block, dim=1) - d
        col_lse = torch.logaddexp(col_lse, torch.logsumexp(block, dim=0))
    return i2t, col_lse - diag


def _stacked_losses(a: torch.Tensor, b: torch.Tensor, scale: float,
                    geometry: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses of g equal batches at once, a and b of shape (g, m, d)."""
    block = _scaled_logits(a, b, scale, geometry)
    d = torch.diagonal(block, dim1=-2, dim2=-1)
    i2t = torch.logsumexp(block, dim=-1) - d
    t2i = torch.logsumexp(block, dim=-2) - d
    return i2t.reshape(-1), t2i.reshape(-1)


def clip_loss_per_sample(image: np.ndarray, text: np.ndarray, logit_scale: float, logit_bias: float | None = None,
                         batch_size: int | None = 64, geometry: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Per-pair InfoNCE terms (per_sample_i2t, per_sample_t2i), each of length n, for bootstrap CIs.

    With L the logits of the batch B that holds pair i (L[p, q] = logit_scale * s(image_p, text_q)
    + logit_bias, s from :func:`conescope.metrics.logits.logits`):
    per_sample_i2t[i] = logsumexp_{q in B} L[i, q] - L[i, i] (cross-entropy of the softmax over the
    batch's texts against text i), per_sample_t2i[i] = logsumexp_{p in B} L[p, i] - L[i, i].

    Batches are consecutive runs of ``batch_size`` rows (the last one may be shorter);
    ``batch_size=None`` (or >= n) uses the whole set as one batch, the full n x n matrix.

    ``logit_bias`` shifts every logit of a row (and of a column) by the same constant, which cancels
    between the log-sum-exp and the target logit, so it is accepted and not added (adding it would
    only add rounding); see :func:`clip_loss`.
    """
    image, text = np.asarray(image), np.asarray(text)
    _check_pairs(image, text, logit_scale, batch_size)
    a = torch.from_numpy(prepare(image, geometry))
    b = torch.from_numpy(prepare(text, geometry))
    n, dim = a.shape
    size = n if batch_size is None else min(batch_size, n)
    n_full = n // size * size
    parts = []
    if size * size <= _BLOCK_ELEMENTS:
        rows = max(1, _BLOCK_ELEMENTS // (size * size)) * size
        for start in range(0, n_full, rows):
            stop = min(start + rows, n_full)
            parts.append(_stacked_losses(a[start:stop].reshape(-1, size, dim), b[start:stop].reshape(-1, size, dim),
                                         logit_scale, geometry))
    else:
        for start in range(0, n_full, size):
            parts.append(_square_losses(a[start:start + size], b[start:start + size], logit_scale, geometry))
    if n_full < n:
        parts.append(_square_losses(a[n_full:], b[n_full:], logit_scale, geometry))
    i2t = torch.cat([p[0] for p in parts]).numpy()
    t2i = torch.cat([p[1] for p in parts]).numpy()
    return i2t, t2i


def clip_loss(image: np.ndarray, text: np.ndarray, logit_scale: float, logit_bias: float | None = None,
              batch_size: int | None = 64, geometry: str = "cosine") -> dict[str, float]:
    """Symmetric InfoNCE loss of paired rows (Radford et al. 2021): row i of ``image`` pairs with row i of
    ``text``.

    loss_i2t = mean_i CE(softmax_q L[i, q], target i), loss_t2i = mean_i CE(softmax_p L[p, i], target i),
    loss = (loss_i2t + loss_t2i) / 2, with L the logits within each batch (see
    :func:`clip_loss_per_sample`). Means run over samples, so a shorter last batch weighs by its size.
    The paper setting of Tyshchuk et al. 2023 is ``batch_size=64, logit_scale=100``; ``batch_size=None``
    is the full matrix. Identical pairs everywhere give log(batch size); perfectly separated pairs at a
    large scale give 0.

    ``logit_scale`` is the multiplier (open_clip's ``logit_scale.exp()``). ``logit_bias`` (SigLIP-style
    models) is accepted so that callers can pass a model's parameters as they are, but under the softmax
    cross-entropy a constant added to all logits cancels exactly, so it does not change the value; the
    sigmoid loss those models were trained with is a different objective and is not computed here.
    """
    i2t, t2i = clip_loss_per_sample(image, text, logit_scale, logit_bias, batch_size, geometry)
    loss_i2t, loss_t2i = float(i2t.mean()), float(t2i.mean())
    return {"loss": (loss_i2t + loss_t2i) / 2, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}


def amumo_loss_per_sample(image: np.ndarray, text: np.ndarray, logit_scale: float, batch_size: int = 50,
                          geometry: str = "cosine") -> np.ndarray:
    """Per-pair image -> text InfoNCE terms as the Amumo article computes its loss table (Humer et al.,
    "Amumo", the "original / closed gap" table): consecutive batches of ``batch_size`` (50), the
    remainder that does not fill a batch dropped, one direction only (each image's softmax over the
    texts of its batch). The loss is the mean of these terms (all batches are full, so batch and sample
    means agree)."""
    image, text = np.asarray(image), np.asarray(text)
    n_full = len(image) // batch_size * batch_size
    if n_full == 0:
        raise ValueError(f"Amumo's loss drops the remainder: {len(image)} pairs fill no batch of {batch_size}")
    i2t, _ = clip_loss_per_sample(image[:n_full], text[:n_full], logit_scale, None, batch_size, geometry)
    return i2t
