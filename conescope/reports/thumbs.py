"""Image thumbnails for the hover tooltips: small PNGs from the manifest's image bytes, as data URIs.

A report plots a few thousand points at most, whatever the size of its dataset, so thumbnails are
decoded when a figure asks for one (:class:`LazyThumbnails`), not for every sample of the manifest:
at 40,000 samples decoding all of them took longer than the rest of the report.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator, Mapping, Sequence


def thumbnail_uri(png: bytes | str, size: int = 48) -> str | None:
    """A data URI of the image (encoded bytes, or the path of an image file) shrunk to fit ``size`` x
    ``size`` (None when it is not a readable image: a corrupt or missing sample has no thumbnail rather
    than failing the report)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=True)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class LazyThumbnails(Mapping[str, str | None]):
    """``{prefix/sample_id: data URI}`` over a manifest's images, each decoded on first access and
    kept. A key is present when its sample has an image (bytes or a path); its value is None when
    that image does not decode. ``digest`` identifies the sources (for cache keys) without decoding."""

    def __init__(self, sample_ids: Sequence[str], images: Sequence[bytes | str | None], prefix: str,
                 size: int = 48):
        self.size = size
        self._sources = {f"{prefix}/{sid}": src for sid, src in zip(sample_ids, images, strict=True) if src}
        self._decoded: dict[str, str | None] = {}
        self._digest: str | None = None

    def __getitem__(self, key: str) -> str | None:
        if key not in self._decoded:
            self._decoded[key] = thumbnail_uri(self._sources[key], self.size)
        return self._decoded[key]

    def __contains__(self, key: object) -> bool:
        return key in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    @property
    def decoded(self) -> int:
        """How many thumbnails have been decoded so far."""
        return len(self._decoded)

    @property
    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256(str(self.size).encode())
            for key, src in self._sources.items():
                h.update(key.encode() + b"\0" + (src if isinstance(src, bytes) else str(src).encode()) + b"\0")
            self._digest = h.hexdigest()
        return self._digest


def thumbnails(sample_ids: list[str], images: list[bytes | str | None], prefix: str,
               size: int = 48) -> LazyThumbnails:
    """The thumbnails of a manifest's samples, decoded when asked for."""
    return LazyThumbnails(sample_ids, images, prefix, size)


def thumbs_digest(thumbs: Mapping[str, str | None]) -> str:
    """A hash of a thumbnail mapping's content: the sources of a lazy one, the URIs of a plain dict."""
    if isinstance(thumbs, LazyThumbnails):
        return thumbs.digest
    h = hashlib.sha256()
    for key in sorted(thumbs):
        h.update(key.encode() + b"\0" + str(thumbs[key]).encode() + b"\0")
    return h.hexdigest()
