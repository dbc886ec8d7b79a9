"""Ingestion of real sources into the normalized manifest: one module per source format.

Each module defines its source kinds (a record of ``conescope.dataset_specs`` registered with
``register_source``: the kind's YAML keys, languages, whether it has images, and its reader);
:func:`source_kinds` imports every module of this package, so a new module is found without a list.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path

from conescope.dataset_specs import SourceDataset, registered_sources
from conescope.ingest.common import IngestError, IngestResult, Reject, TooManyRejects

__all__ = ["IngestError", "IngestResult", "Reject", "TooManyRejects", "ingest", "source_kinds"]


@cache
def source_kinds() -> dict[str, type[SourceDataset]]:
    """Every registered source kind: ``kind`` -> its record class."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return registered_sources()


def ingest(spec: SourceDataset, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
    """Read the dataset ``spec`` (a real-source entry) from ``raw_dir``; ``languages`` are the
    profile's languages this dataset should provide (others in the source are left out)."""
    return spec.read(raw_dir, tuple(languages))
