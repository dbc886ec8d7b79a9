"""Augmentation sweeps as datasets (Humer et al., Amumo): one image transformed in N steps.

Each sweep is one kind of change applied with a growing strength, step 0 being the original:

- ``rotate``: 0 .. ``max`` degrees (counter-clockwise, same canvas, black corners);
- ``blur``: Gaussian blur of radius 0 .. ``max`` pixels;
- ``shift``: horizontal translation by 0 .. ``max`` of the width (wrapping around, so no pixel is invented);
- ``noise``: additive Gaussian noise of std 0 .. ``max`` (in 0-255 units), seeded, clipped to [0, 255].

The label of a sample is its step index (so clusters and probes read the strength), ``label_name`` says
``<kind>=<value>``. An optional caption (one text per sample, the same sentence) lets the gap metrics
watch the image embeddings move against a fixed text.
"""

from __future__ import annotations

import io
from dataclasses import field
from pathlib import Path
from typing import Literal

import numpy as np

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import IngestResult, ManifestBuilder, need_file
from conescope.profile_schema import Lang, Number, Text, at_least, non_empty

SWEEP_KINDS = ("rotate", "blur", "shift", "noise")
DEFAULT_MAX = {"rotate": 180.0, "blur": 8.0, "shift": 0.5, "noise": 80.0}


def sweep_image(img, kind: str, value: float, rng: np.random.Generator):
    """``img`` (a PIL RGB image) changed by ``kind`` with strength ``value``."""
    from PIL import Image, ImageFilter

    if kind == "rotate":
        return img.rotate(value, resample=Image.Resampling.BILINEAR)
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=value))
    if kind == "shift":
        pixels = np.asarray(img)
        return Image.fromarray(np.roll(pixels, int(round(value * pixels.shape[1])), axis=1))
    if kind == "noise":
        pixels = np.asarray(img).astype(np.float64) + rng.normal(0.0, value, size=np.asarray(img).shape)
        return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    raise ValueError(f"unknown sweep kind {kind!r} (expected one of {', '.join(SWEEP_KINDS)})")


def read_sweep(name: str, image: Path, kinds: tuple[str, ...], steps: int, maxima: dict[str, float] | None = None,
               caption: str | None = None, lang: str = "en", seed: int = 0) -> IngestResult:
    from PIL import Image

    need_file(image, name, "sweep source image")
    if steps < 2:
        raise ValueError(f"dataset {name!r}: a sweep needs at least 2 steps, got {steps}")
    with Image.open(image) as src:
        base = src.convert("RGB")
    b = ManifestBuilder(name, validate_images=False)
    rng = np.random.default_rng(seed)
    maxima = {**DEFAULT_MAX, **(maxima or {})}
    for kind in kinds:
        for step, value in enumerate(np.linspace(0.0, maxima[kind], steps)):
            buf = io.BytesIO()
            sweep_image(base, kind, float(value), rng).save(buf, format="PNG")
            sid = f"{name}-{kind}-{step:03d}"
            b.add_sample(sid, "test", buf.getvalue(), step, f"{kind}={value:g}")
            if caption:
                b.add_text(f"{sid}-{lang}", sid, None, lang, caption)
    return b.result({"format": "sweep", "kinds": list(kinds), "steps": steps,
                     "maxima": {k: maxima[k] for k in kinds}, "seed": seed})


@register_source
class SweepSource(SourceDataset):
    """Profile entry ``kind: sweep``: ``image`` changed in ``steps`` steps by each of ``kinds`` up to
    ``maxima``; ``caption`` (in ``lang``) gives every sample one text."""

    kind: Literal["sweep"]
    image: Text
    kinds: non_empty(Literal[SWEEP_KINDS]) = SWEEP_KINDS
    steps: at_least(2) = 8
    maxima: dict[Literal[SWEEP_KINDS], Number] | None = field(default=None, hash=False)  # a mapping: not hashable
    caption: Text | None = None
    lang: Lang = "en"

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.lang,) if self.caption else ()

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_sweep(self.name, self.at(raw_dir, self.image), self.kinds, self.steps, self.maxima,
                          self.caption if self.lang in languages else None, self.lang, self.seed)
