"""The layout of the data root (``CONESCOPE_HOME``, default ``./data``): every artefact hangs off it."""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "data"


class ReadOnlyDataRoot(PermissionError):
    """The data root (or Dagster's home in it) cannot be written: a read-only mount or no permission."""


@dataclass(frozen=True)
class DataRoot:
    root: Path

    @classmethod
    def from_env(cls) -> DataRoot:
        return cls(Path(os.environ.get("CONESCOPE_HOME") or DEFAULT_HOME).resolve())

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def scratch(self) -> Path:
        """Temporary outputs live here, outside every glob that readers use, until renamed in place."""
        return self.root / "tmp"

    def raw_dir(self, dataset: str) -> Path:
        """Source files of a real dataset, as downloaded or put there by hand."""
        return self.root / "raw" / dataset

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / "datasets" / dataset

    def image_embeddings(self, dataset: str, model: str) -> Path:
        return self.root / "embeddings" / dataset / "image" / f"model={model}"

    def text_embeddings(self, dataset: str, model: str, lang: str) -> Path:
        return self.root / "embeddings" / dataset / "text" / f"model={model}" / f"lang={lang}"

    def transforms_dir(self, kind: str, model: str, lang: str) -> Path:
        """Fitted transforms of one kind and partition, one ``.npz`` per variant and fit set."""
        return self.root / "transforms" / kind / f"model={model}" / f"lang={lang}"

    def text_layers(self, dataset: str, model: str, lang: str) -> Path:
        """Pooled hidden states of every text-tower layer (profile key ``embedding.text_layers``)."""
        return self.root / "embeddings" / dataset / "text_layers" / f"model={model}" / f"lang={lang}"

    def report_dir(self, model: str, lang: str) -> Path:
        return self.root / "reports" / model / lang

    # Report names start with "_": model names and language codes cannot, so they never clash.
    def multilingual_report_dir(self, model: str) -> Path:
        return self.root / "reports" / model / "_multilingual"

    def summary_report_dir(self, kind: str) -> Path:
        """``comparison`` and ``paper``: the reports over every model."""
        return self.root / "reports" / f"_{kind}"

    @property
    def report_cache(self) -> Path:
        """Slow report results (t-SNE maps) keyed by a hash of their input data."""
        return self.root / "cache" / "reports"

    def require_writable(self, command: str) -> None:
        """Raise :class:`ReadOnlyDataRoot`, one line naming the folder and that it is read-only, when a
        file cannot be created in the data root or in Dagster's home there (whose SQLite databases
        would otherwise fail later as "unable to open database file", naming nothing)."""
        folder = self.root
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for folder in (self.root, self.dagster_home):
                if folder.is_dir():
                    with tempfile.TemporaryFile(dir=folder):
                        pass
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            why = "the file system is mounted read-only" if exc.errno == errno.EROFS else "no write permission"
            raise ReadOnlyDataRoot(f"{folder}: read-only ({why}); conescope {command} writes the data root "
                                   f"(datasets, embeddings, warehouse, Dagster's runs): make it writable or set "
                                   f"CONESCOPE_HOME to a writable copy") from exc
