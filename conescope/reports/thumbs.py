"""Image thumbnails for the hover tooltips: small PNGs from the manifest's image bytes, as data URIs."""

from __future__ import annotations

import base64
import io


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


def thumbnails(sample_ids: list[str], images: list[bytes | str | None], prefix: str,
               size: int = 48) -> dict[str, str]:
    """``{prefix/sample_id: data URI}`` for the samples whose image decodes."""
    out = {}
    for sid, png in zip(sample_ids, images, strict=True):
        uri = thumbnail_uri(png, size) if png else None
        if uri:
            out[f"{prefix}/{sid}"] = uri
    return out
