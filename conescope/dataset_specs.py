"""Profile entries of datasets: the generated kinds (``shapes``, ``digits``), the base every real-source
kind builds on, and the registry of source kinds.

A source kind is one record class, defined and registered (:func:`register_source`) in its own reader
module under ``conescope/ingest/``: its fields are its YAML keys, it says which languages its texts are
in (``languages``), whether it has images (``has_images``), and it reads itself (``read``). Adding a
kind touches that module and its tests only; ``conescope.ingest.source_kinds`` finds every module.

Paths are relative to the dataset's raw folder ``<data root>/raw/<dataset>/`` unless absolute. Keys
every source kind takes: ``n`` (keep at most this many samples; all when absent), ``seed`` (the 80/20
split), ``max_reject_fraction`` (default 0.05), ``download`` (a list of files to fetch when absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from conescope.download import HttpSource, HubSource, Source
from conescope.profile_schema import (
    Flag,
    KindRegistry,
    Number,
    Section,
    Text,
    at_least,
    problem,
    record,
    tagged_union,
)

if TYPE_CHECKING:
    from conescope.ingest.common import IngestResult

GENERATED_LANGUAGES = ("en", "fr", "de", "ru")
DIGITS_SAMPLES = 1797  # scikit-learn's digits


BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


@record
class DatasetSpec(Section):
    """What every dataset entry has: its name (the profile key) and its seed."""

    HIDDEN: ClassVar[frozenset[str]] = frozenset({"name"})
    name: str = ""
    seed: at_least(0) = 0
    # What one text is: ``sentence`` (a caption, a prompt), or ``word`` (a word fed alone: the text
    # embedding step takes the model kind's word vector for its layer states, docs/fidelity.md)
    text_unit: ClassVar[str] = "sentence"

    @property
    def is_source(self) -> bool:
        """Read from files by an ingest reader (rather than generated)."""
        return isinstance(self, SourceDataset)


@record
class GeneratedDataset(DatasetSpec):
    """Rendered or bundled offline data (``conescope.datasets``), every text in four languages."""

    n: at_least(2)
    image_size: at_least(16) = 64
    languages: ClassVar[tuple[str, ...]] = GENERATED_LANGUAGES
    has_images: ClassVar[bool] = True
    download: ClassVar[tuple[Source, ...]] = ()
    max_reject_fraction: ClassVar[float] = 0.05


@record
class ShapesDataset(GeneratedDataset):
    """Generated image-caption pairs (shapes and colours), parallel captions in every language."""

    kind: Literal["shapes"]
    classes: Literal["shape", "colour_shape"] = "shape"  # 4 classes, or 20 (colour x shape)


@record
class DigitsDataset(GeneratedDataset):
    """scikit-learn's digits, one class prompt per digit and language."""

    kind: Literal["digits"]

    @model_validator(mode="after")
    def _at_most_digits(self) -> DigitsDataset:
        if self.n > DIGITS_SAMPLES:
            raise problem(f"scikit-learn's digits has {DIGITS_SAMPLES} samples, asked for {self.n}", "n")
        return self


GENERATED_KINDS: dict[str, type[GeneratedDataset]] = {"shapes": ShapesDataset, "digits": DigitsDataset}

_SHA256 = r"^[0-9a-f]{64}$"


@record
class HttpEntry(Section):
    url: Text
    file: Text
    sha256: Text | None = None
    unpack: Flag = False
    provides: Text | None = None
    unpack_to: Text | None = None

    @model_validator(mode="after")
    def _checked(self) -> HttpEntry:
        if not self.url.startswith(("http://", "https://")):
            raise problem(f"expected an http(s) URL, got {self.url!r}", "url")
        if self.sha256 is not None and (len(self.sha256) != 64 or any(c not in "0123456789abcdef"
                                                                      for c in self.sha256)):
            raise problem("expected 64 lowercase hex digits", "sha256")
        return self

    def source(self) -> HttpSource:
        return HttpSource(self.url, self.file, self.sha256, self.unpack, self.provides, self.unpack_to)


@record
class HubEntry(Section):
    hub: Text
    file: Text
    revision: Text | None = None
    repo_type: Literal["dataset", "model"] = "dataset"

    def source(self) -> HubSource:
        return HubSource(self.hub, self.file, self.revision, self.repo_type)


DownloadEntry = tagged_union({"hub": HubEntry, "http": HttpEntry}, lambda m: "hub" if "hub" in m else "http")


def _sources(entries: tuple) -> tuple[Source, ...]:
    return tuple(e.source() for e in entries)


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise problem(f"expected a number in [0, 1], got {value!r}")
    return value


@record
class SourceDataset(DatasetSpec):
    """Base of the real-source kinds (registered with :func:`register_source`)."""

    n: at_least(2) | None = None
    max_reject_fraction: Annotated[Number, AfterValidator(_fraction)] = 0.05
    # conescope.download sources fetched into raw/<name>/ when absent (validated as YAML entries)
    download: Annotated[tuple[DownloadEntry, ...], AfterValidator(_sources)] = Field(default=())
    image_size: ClassVar[int] = 64  # recorded in the provenance; sources keep their own image sizes
    has_images: ClassVar[bool] = True

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        """The dataset read from ``raw_dir``; ``languages``: the profile's languages it should provide."""
        raise NotImplementedError(f"source kind {type(self).__name__} defines no reader")

    @staticmethod
    def at(raw_dir: Path, value: str | None) -> Path | None:
        """``value`` (a path from the profile) resolved against the raw folder unless absolute;
        ``bundled:<folder>/<file>`` names a file shipped in ``conescope/bundled/`` (with its provenance),
        so that a profile on the bundled benchmarks runs offline from a fresh clone."""
        if value is None:
            return None
        if value.startswith(BUNDLED_PREFIX):
            return BUNDLED_DIR / value.removeprefix(BUNDLED_PREFIX)
        path = Path(value)
        return path if path.is_absolute() else raw_dir / path


_SOURCES = KindRegistry("source kind")


def register_source(cls: type[SourceDataset]) -> type[SourceDataset]:
    """Class decorator: ``cls`` (a :class:`SourceDataset` with a ``kind`` literal), made a profile
    record, is a source kind."""
    return _SOURCES.register(cls)


def registered_sources() -> dict[str, type[SourceDataset]]:
    """The source kinds registered so far (``conescope.ingest.source_kinds`` registers them all)."""
    return _SOURCES.registered()


def dataset_entry(sources: dict[str, type[SourceDataset]]) -> Any:
    """The tagged union of every dataset kind, picked by ``kind``."""
    return tagged_union({**GENERATED_KINDS, **sources}, lambda m: m.get("kind"))
