"""Ingestion of real sources into the normalized manifest: one module per source format.

:func:`ingest` dispatches a profile's dataset entry (``conescope.dataset_specs``) to its reader, with
relative paths resolved against the dataset's raw folder ``<data root>/raw/<dataset>/``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from conescope.ingest.common import IngestError, IngestResult, Reject, TooManyRejects

__all__ = ["IngestError", "IngestResult", "Reject", "TooManyRejects", "ingest"]


def _resolve(raw_dir: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else raw_dir / path


def ingest(spec, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
    """Read the dataset ``spec`` (a real-source DatasetSpec) from ``raw_dir``; ``languages`` are the
    profile's languages this dataset should provide (others in the source are left out)."""
    from conescope.download import DownloadUnavailable, fetch_http, offline

    o, name, n, seed = spec.options, spec.name, spec.n, spec.seed
    at = lambda key: _resolve(raw_dir, o.get(key))  # noqa: E731
    langs = tuple(languages)
    if spec.kind == "coco":
        from conescope.ingest.coco import read_coco

        return read_coco(name, at("annotations"), at("images"), o["first_caption"], seed, n)
    if spec.kind == "coco_karpathy":
        from conescope.ingest.coco import read_karpathy

        return read_karpathy(name, at("split_json"), at("images"), o["first_caption"],
                             tuple(o["splits"]) if o["splits"] else None, n)
    if spec.kind == "cifar100":
        from conescope.ingest.cifar import read_cifar_archive, read_cifar_parquet

        templates = {k: v for k, v in (o["templates"] or {"en": _paper_template()}).items() if k in langs}
        common = {"label": o["label"], "class_names": o["class_names"], "templates": templates,
                  "translations": at("translations"), "limit": n}
        if o["format"] == "python":
            return read_cifar_archive(name, at("archive"), tuple(o["splits"]), **common)
        files = {split: [_resolve(raw_dir, f) for f in paths] for split, paths in o["files"].items()
                 if split in o["splits"]}
        return read_cifar_parquet(name, files, **common)
    if spec.kind == "wikicaps":
        from conescope.ingest.parallel import read_wikicaps_tsv

        return read_wikicaps_tsv(name, at("file"), at("images"), langs, seed, n)
    if spec.kind == "xm3600":
        from conescope.ingest.parallel import read_xm3600

        return read_xm3600(name, at("captions"), at("images"), langs, o["first_caption"], seed, n)
    if spec.kind == "multi30k":
        from conescope.ingest.parallel import read_multi30k

        return read_multi30k(name, at("root"), at("images"), tuple(o["splits"]), langs, n)
    if spec.kind == "sts":
        from conescope.ingest.sts import read_sts_tsv

        return read_sts_tsv(name, at("file"), o["split"], o["lang"], n)
    if spec.kind == "manifest":
        from conescope.ingest.generic import read_generic

        def fetch(url: str) -> Path:
            """An image URL, cached under raw/<ds>/url-cache/; a failure rejects that sample only."""
            suffix = Path(url.split("?")[0]).suffix[:8] or ".img"
            dest = raw_dir / "url-cache" / (hashlib.sha256(url.encode()).hexdigest() + suffix)
            if not dest.is_file() and offline():
                raise DownloadUnavailable(f"{url}: downloads are off (CONESCOPE_OFFLINE / HF_HUB_OFFLINE); "
                                          f"put the image at {dest}")
            return fetch_http(url, dest)

        result = read_generic(name, at("file"), o["labels"], seed, langs[0] if langs else "en", fetch, n)
        keep = result.manifest.texts.column("lang").to_pylist()
        if any(lang not in langs for lang in keep):
            import pyarrow.compute as pc

            texts = result.manifest.texts
            result.manifest = type(result.manifest)(result.manifest.samples,
                                                    texts.filter(pc.is_in(texts.column("lang"),
                                                                          value_set=_array(langs))))
        return result
    if spec.kind == "sweep":
        from conescope.ingest.sweeps import read_sweep

        return read_sweep(name, at("image"), tuple(o["kinds"]), o["steps"], o["maxima"],
                          o["caption"] if o["lang"] in langs else None, o["lang"], seed)
    raise ValueError(f"dataset {name!r}: no reader for kind {spec.kind!r}")


def _paper_template() -> str:
    from conescope.ingest.prompts import PAPER_TEMPLATE

    return PAPER_TEMPLATE


def _array(values):
    import pyarrow as pa

    return pa.array(list(values), type=pa.string())
