"""Profiles: the YAML files under configs/ that say which datasets, models and languages to run.

A profile is validated completely when it is loaded, by the typed records below (pydantic); every
error names the file and the offending key path (e.g. ``configs/demo.yaml: models.vit-b-32.random.seed:
expected an integer, got 'x'``). Each record holds its defaults; dataset entries are the kinds of
``conescope.dataset_specs`` (and the source kinds the ingest modules register), model entries the kinds
the modules of ``conescope.model_kinds`` register (``conescope.model_specs``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import AliasPath, BeforeValidator, Field, TypeAdapter, ValidationError, model_validator

from conescope.dataset_specs import DatasetSpec, dataset_entry
from conescope.ingest import source_kinds
from conescope.model_kinds import model_kinds
from conescope.model_specs import ModelSpec, model_entry
from conescope.models import PRECISIONS
from conescope.profile_schema import (
    NAME_PATTERN,
    Flag,
    Lang,
    Number,
    Positive,
    ProfileError,
    Section,
    Text,
    at_least,
    non_empty,
    problem,
    profile_error,
    record,
    yaml_keys,
)

__all__ = ["DatasetSpec", "EmbeddingSpec", "MetricSettings", "ModelSpec", "Profile", "ProfileError", "ReportSettings",
           "ReportSpec", "ScheduleSpec", "TransformSettings", "WarehouseSpec", "load_profile", "parse_profile"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PROFILE = "demo"
_CRON = r"^\s*[0-9*/,\-]+(\s+[0-9A-Za-z*/,\-]+){4}\s*$"
DEVICES = ("auto", "cpu", "cuda")
GEOMETRIES = ("cosine", "dot", "neg_sq_euclidean")
RETRIEVAL_EVAL_SETS = ("test", "all")
TRANSFORM_KINDS = ("identity", "centering", "centering_per_modality", "whitening", "pca", "procrustes", "lstsq",
                   "gap_shift")
K_KINDS = ("whitening", "pca")  # the kinds that keep k components


@record
class EmbeddingSpec(Section):
    """How the embedding engine runs (profile section ``embedding``; conescope/engine.py)."""

    HIDDEN: ClassVar[frozenset[str]] = frozenset({"batch_auto"})
    batch_size: at_least(1) = 32  # with batch_auto, what CPU-side code that needs one number uses
    batch_auto: bool = False  # batch_size: auto -> 256 on CUDA (halved on out-of-memory), 32 on CPU
    device: Literal[DEVICES] = "auto"
    precision: Literal[PRECISIONS] = "auto"  # auto | fp32 | bf16 | fp16: the weights' dtype (conescope/models.py)
    workers: at_least(0) | None = None  # image decoding processes; None ("auto"): one per CPU, at most 16
    text_layers: Flag = False  # also store every text layer's pooled state (for metrics/layers)
    part_rows: at_least(1) = 16384  # rows per committed part: a crash loses at most this much work
    progress_every_s: Positive = 10.0  # seconds between progress lines in the run log

    @classmethod
    def from_yaml(cls, data: dict) -> dict:
        if "batch_auto" in data:
            raise problem("unknown key (write batch_size: auto)", "batch_auto")
        if data.get("batch_size") == "auto":
            data.pop("batch_size")
            data["batch_auto"] = True
        if data.get("workers") == "auto":
            data["workers"] = None
        return data


@record
class ReportSpec(Section):
    """The report figures (profile section ``report``)."""

    max_points: at_least(2) = 2000  # points per modality in the scatter plots and t-SNE maps
    heatmap_pairs: at_least(3) = 60  # sampled pairs in the similarity heatmap
    clusters: at_least(1) = 6  # clusters of the reordered heatmap


@record
class ReportSettings(ReportSpec):
    """What a report page is drawn with: the profile's ``report`` section and its ``seed``."""

    seed: at_least(0) = 0


@record
class ScheduleSpec(Section):
    cron: Text = "0 2 * * *"
    timezone: Text = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _cron_message(cls, data: Any) -> Any:
        cron = data.get("cron") if isinstance(data, dict) else None
        if isinstance(cron, str) and cron and not re.match(_CRON, cron):
            raise problem(f"{cron!r} is not a valid cron string", "cron")
        return data


@record
class MetricSettings(Section):
    """How the metric families are computed (profile section ``metrics``)."""

    seed: at_least(0) = 0
    bootstrap: at_least(10) = 1000  # resamples of the bootstrap intervals (CLIP loss, pos_cosine_mean, correlations)
    clip_batch_size: at_least(2) | None = 64  # consecutive batches (Tyshchuk et al.); None ("full"): the full matrix
    logit_scale: Positive | None = None  # None ("model"): the model's own; the paper setting is 100
    # logit geometry; dot / neg_sq_euclidean score raw rows: conescope's own option after Chou & Alam (the
    # authors of Tyshchuk et al. scored L2-normalized rows, where their dot and distance equal the cosine)
    geometry: Literal[GEOMETRIES] = "cosine"
    folds: at_least(2) = 5  # cross-validation folds of the separability probes
    silhouette_exact_max: at_least(10) = 5000  # above this many rows the silhouette is sampled, with a CI
    probe_l2: Positive = 1e-4  # L2 penalty of the linear probe (mean loss + l2/2 ||W||^2)
    # retrieval gallery: the held-out test split (the Karpathy 5k-test protocol of CLIP's COCO numbers)
    # or every row ("all"); a dataset without test rows is evaluated on all of them
    retrieval_eval_set: Literal[RETRIEVAL_EVAL_SETS] = "test"
    reference_lang: Lang | None = None  # multilingual reference; None: en if profiled, else the first
    # Fidelity switches (docs/fidelity.md): the loss as the mean of batch means (Tyshchuk et al.), the
    # Amumo loss rows (loss_i2t_amumo), the distance ratio on raw rows over all n^2 pairs
    # (distance_ratio_sq_raw, Tyshchuk et al. Table 6)
    clip_loss_mean: Literal["samples", "batches"] = "samples"
    amumo_loss: Flag = False
    distance_ratio_raw: Flag = False

    @classmethod
    def from_yaml(cls, data: dict) -> dict:
        if data.get("clip_batch_size") == "full":
            data["clip_batch_size"] = None
        if data.get("logit_scale") == "model":
            data["logit_scale"] = None
        return data


def _fit_eval(value: Any) -> Any:
    """A cross-dataset pair, written ``{fit: <dataset>, eval: <dataset>}``."""
    if not isinstance(value, dict):
        return value
    for key in value:
        if key not in ("fit", "eval"):
            raise problem("unknown key (allowed: eval, fit)", key)
    for key in ("fit", "eval"):
        if key not in value:
            raise problem("missing required key", key)
    if value["fit"] == value["eval"]:
        raise problem(f"fit and eval are both {value['fit']!r}; that is the in_domain protocol")
    return (value["fit"], value["eval"])


@record
class TransformSettings(Section):
    """Which transforms are fitted and how they are evaluated (profile section ``transforms``, whose
    nesting the aliases give); absent section: none. Protocols of Tyshchuk et al. 2023 (Section 5)."""

    kinds: tuple[Literal[TRANSFORM_KINDS], ...] = ()
    k: tuple[at_least(1), ...] = ()  # components kept by whitening-k and PCA-k, one variant per value
    gap_shift_lambdas: non_empty(Number) = Field((0.0, 0.25, 0.5, 0.75, 1.0),
                                                 validation_alias=AliasPath("gap_shift", "lambdas"))
    gap_shift_renormalize: non_empty(Flag) = Field((True,), validation_alias=AliasPath("gap_shift", "renormalize"))
    # fit on the train split, evaluate on the test split
    in_domain: tuple[Text, ...] = Field((), validation_alias=AliasPath("protocols", "in_domain"))
    cross_dataset: tuple[Annotated[tuple[Text, Text], BeforeValidator(_fit_eval)], ...] = Field(
        (), validation_alias=AliasPath("protocols", "cross_dataset"))  # (fit dataset, eval dataset)
    # fit on half the classes, evaluate known and new classes
    class_disjoint: tuple[Text, ...] = Field((), validation_alias=AliasPath("protocols", "class_disjoint", "datasets"))
    class_disjoint_seed: at_least(0) = Field(0, validation_alias=AliasPath("protocols", "class_disjoint", "seed"))
    # Fidelity switches (docs/fidelity.md)
    # ``k: {whitening: [...], pca: [...]}``: a k list per kind, overriding ``k`` (set from ``k`` in YAML)
    k_by_kind: tuple[tuple[Literal[K_KINDS], tuple[at_least(1), ...]], ...] = ()
    whitening_fit_on: non_empty(Literal["joint", "image", "text"]) = Field(
        ("joint",), validation_alias=AliasPath("whitening", "fit_on"))  # one whitening variant each
    pca_variants: non_empty(Literal["centered", "truncated_svd"]) = Field(
        ("centered",), validation_alias=AliasPath("pca", "variants"))
    # torch_gelsy: the authors' torch.linalg.lstsq on float32 rows (lstsq_gelsy)
    lstsq_variants: non_empty(Literal["minimum_norm", "torch_gelsy"]) = Field(
        ("minimum_norm",), validation_alias=AliasPath("lstsq", "variants"))
    # eval_set: the gap of the evaluated rows themselves (transductive, Amumo and Liang et al.), gap_shift_<l>_eval
    gap_shift_gap_of: non_empty(Literal["fit_set", "eval_set"]) = Field(
        ("fit_set",), validation_alias=AliasPath("gap_shift", "gap_of"))
    # datasets whose transforms are fitted on every row and measured on those rows (the authors' Table 5)
    all_rows: tuple[Text, ...] = Field((), validation_alias=AliasPath("protocols", "all_rows"))
    # the rows of the cross-dataset fit set: the train split, or every row (the authors' COCO fits)
    cross_dataset_fit_rows: Literal["train", "all"] = Field(
        "train", validation_alias=AliasPath("protocols", "cross_dataset_fit_rows"))
    # datasets split by torch.randperm (conescope.splits) as the authors split them, not by the manifest
    authors_split: tuple[Text, ...] = Field((), validation_alias=AliasPath("protocols", "authors_split"))
    split_seed: at_least(0) = Field(0, validation_alias=AliasPath("protocols", "split_seed"))
    # seeded (numpy) | authors (torch.randperm of the classes)
    class_disjoint_method: Literal["seeded", "authors"] = Field(
        "seeded", validation_alias=AliasPath("protocols", "class_disjoint", "method"))
    linear_probe: tuple[Text, ...] = ()  # transforms (warehouse names) after which the linear probe is measured
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"k_by_kind"})

    @classmethod
    def from_yaml(cls, data: dict) -> dict:
        """A present section defaults to every kind; ``k`` (a list, or a list per kind) is needed by
        whitening-k and PCA-k."""
        data.setdefault("kinds", list(TRANSFORM_KINDS))
        if isinstance(data["kinds"], list) and not data["kinds"]:
            raise problem("expected a non-empty list, got []", "kinds")
        kinds = set(map(str, data["kinds"])) if isinstance(data["kinds"], list) else set()
        if isinstance(data.get("k"), dict):
            per_kind = data.pop("k")
            for kind, values in per_kind.items():
                if kind not in K_KINDS:
                    raise problem(f"unknown key (allowed: {', '.join(K_KINDS)})", "k", kind)
                if not isinstance(values, list) or not values:
                    raise problem(f"expected a non-empty list, got {values!r}", "k", kind)
            for kind in sorted(kinds & set(K_KINDS) - set(per_kind)):
                raise problem("missing: a k list is needed for every kind that takes k", "k", kind)
            data["k_by_kind"] = [(kind, values) for kind, values in per_kind.items()]
        elif (kinds & set(K_KINDS) or "k" in data) and (not isinstance(data.get("k"), list) or not data["k"]):
            raise problem(f"expected a non-empty list, got {data.get('k')!r}", "k")
        return data

    def ks(self, kind: str) -> tuple[int, ...]:
        """The k values of ``kind`` (whitening or pca)."""
        return dict(self.k_by_kind).get(kind, self.k)

    def datasets(self) -> list[tuple[tuple, str]]:
        """(YAML key path, dataset name) of every dataset the protocols name."""
        return ([(("in_domain", i), d) for i, d in enumerate(self.in_domain)]
                + [(("cross_dataset", i, key), d) for i, pair in enumerate(self.cross_dataset)
                   for key, d in zip(("fit", "eval"), pair, strict=True)]
                + [(("class_disjoint", "datasets", i), d) for i, d in enumerate(self.class_disjoint)]
                + [(("authors_split", i), d) for i, d in enumerate(self.authors_split)]
                + [(("all_rows", i), d) for i, d in enumerate(self.all_rows)])


@record
class ClusterTrainingSpec(Section):
    """The isotropy-against-clusters experiment of Mickus et al. 2024 (profile section ``cluster_training``;
    ``conescope.metrics.isotropy_clusters``): the labelled datasets whose stored text embeddings are
    trained under a linear head (none: the experiment is not built), the number of full-batch Adam
    updates, how often the trajectory is recorded, the seeds of the runs and Adam's learning rate."""

    datasets: tuple[Text, ...] = ()
    updates: at_least(1) = 1000  # Mickus et al.'s 1,000 updates
    record_every: at_least(1) = 50  # step 0, every record_every updates, and the last
    seeds: non_empty(at_least(0)) = (0, 1, 2)  # one run per seed: the head's initialisation
    lr: Positive = 1e-3  # Adam's default


@record
class WarehouseSpec(Section):
    """Where metric rows go (profile section ``warehouse``; storage/warehouse.py): the embedded DuckDB
    file, or DuckLake with a ``sqlite:<path>`` or ``postgres:<dsn>`` catalog and its Parquet
    ``data_path`` (relative paths: relative to the data root)."""

    kind: Literal["duckdb", "ducklake"] = "duckdb"
    catalog: Annotated[Text, Field(pattern=r"^(sqlite|postgres):.+")] | None = None
    data_path: Text = "lake"

    @model_validator(mode="after")
    def _catalog(self) -> WarehouseSpec:
        if self.kind == "ducklake" and self.catalog is None:
            raise problem("missing required key (kind: ducklake)", "catalog")
        if self.kind == "duckdb" and self.catalog is not None:
            raise problem("only for kind: ducklake", "catalog")
        return self


DatasetEntry = dataset_entry(source_kinds())
ModelEntry = model_entry(model_kinds)


@record
class Profile(Section):
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"source"})
    name: Annotated[Text, Field(pattern=NAME_PATTERN)]
    source: str = ""  # the file it was read from, as error messages name it
    seed: at_least(0) = 0
    languages: non_empty(Lang)
    datasets: dict[str, DatasetEntry]
    models: dict[str, ModelEntry]
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    metrics: MetricSettings = Field(default_factory=MetricSettings)
    transforms: TransformSettings = Field(default_factory=TransformSettings)
    warehouse: WarehouseSpec = Field(default_factory=WarehouseSpec)
    cluster_training: ClusterTrainingSpec = Field(default_factory=ClusterTrainingSpec)

    @classmethod
    def from_yaml(cls, data: dict) -> dict:
        """Entries learn their names from their keys; the protocols default to every dataset."""
        for section, what in (("datasets", "dataset"), ("models", "model")):
            entries = data.get(section)
            if not isinstance(entries, dict) or not entries:
                if section in data:
                    raise problem("expected a non-empty mapping of name -> settings", section)
                continue
            named = {}
            for key, entry in entries.items():
                if not re.match(NAME_PATTERN, str(key)):
                    raise problem(f"{what} name must match {NAME_PATTERN}", section, str(key))
                if isinstance(entry, dict) and "name" in entry:
                    raise problem("unknown key (an entry's name is its key)", section, str(key), "name")
                named[str(key)] = {**entry, "name": str(key)} if isinstance(entry, dict) else entry
            data[section] = named
        transforms = data.get("transforms")
        if isinstance(transforms, dict) and isinstance(data.get("datasets"), dict):
            protocols = transforms.get("protocols", {})
            if isinstance(protocols, dict) and "in_domain" not in protocols:
                data["transforms"] = {**transforms, "protocols": {**protocols, "in_domain": list(data["datasets"])}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if len(set(self.languages)) != len(self.languages):
            raise problem(f"duplicate language in {list(self.languages)}", "languages")
        declared = {lang for spec in self.datasets.values() for lang in spec.languages}
        for lang in self.languages:
            if lang not in declared:
                raise problem(f"{lang!r} is in no dataset's languages (datasets declare: "
                              f"{', '.join(sorted(declared))})", "languages")
        if not any(spec.has_images for spec in self.datasets.values()) and \
                any(spec.has_image_tower for spec in self.models.values()):
            raise problem("no dataset has images, but the profile has image-capable models", "datasets")
        ref = self.metrics.reference_lang
        if ref is not None and ref not in self.languages:
            raise problem(f"{ref!r} is not one of the profile's languages", "metrics", "reference_lang")
        for at, dataset in self.transforms.datasets():
            if dataset not in self.datasets:
                raise problem(f"{dataset!r} is not one of the profile's datasets ({', '.join(self.datasets)})",
                              "transforms", "protocols", *at)
        for i, dataset in enumerate(self.cluster_training.datasets):
            if dataset not in self.datasets:
                raise problem(f"{dataset!r} is not one of the profile's datasets ({', '.join(self.datasets)})",
                              "cluster_training", "datasets", i)
        for name, spec in list(self.models.items()):
            if spec.training() is not None:
                self.models[name] = self._training_defaults(name, spec)
        return self

    def _training_defaults(self, name: str, spec: ModelSpec) -> ModelSpec:
        """A trained model's entry with the defaults of its training settings that the profile gives:
        ``seed`` (the profile's) and ``languages`` (every profile language its dataset has texts in),
        after checking that its dataset is one of the profile's, with images, in those languages."""
        settings, at = spec.training(), ("models", name, "train")
        dataset = self.datasets.get(settings.dataset)
        if dataset is None:
            raise problem(f"{settings.dataset!r} is not one of the profile's datasets ({', '.join(self.datasets)})",
                          *at, "dataset")
        if not dataset.has_images:
            raise problem(f"{settings.dataset!r} has no images to train image and text towers on", *at, "dataset")
        available = self.dataset_languages(settings.dataset)
        if not available:
            raise problem(f"{settings.dataset!r} has no texts in the profile's languages", *at, "dataset")
        for i, lang in enumerate(settings.languages or ()):
            if lang not in available:
                raise problem(f"{lang!r} is not a language of both the profile and {settings.dataset!r} "
                              f"({', '.join(available)})", *at, "languages", i)
        return spec.trained_with(dataclasses.replace(
            settings, seed=self.seed if settings.seed is None else settings.seed,
            languages=settings.languages or available))

    @property
    def image_models(self) -> list[str]:
        """Models with an image tower: the image assets are partitioned over these only."""
        return [m for m, spec in self.models.items() if spec.has_image_tower]

    def dataset_languages(self, dataset: str) -> tuple[str, ...]:
        """The profile's languages that ``dataset`` has texts in (its text partitions hold rows)."""
        declared = self.datasets[dataset].languages
        return tuple(lang for lang in self.languages if lang in declared)

    def image_datasets(self) -> list[str]:
        return [ds for ds, spec in self.datasets.items() if spec.has_images]

    @property
    def reference_lang(self) -> str:
        if self.metrics.reference_lang:
            return self.metrics.reference_lang
        return "en" if "en" in self.languages else self.languages[0]


_PROFILE = TypeAdapter(Profile)


def parse_profile(raw: Any, source: str) -> Profile:
    """Validate a parsed YAML document and build a :class:`Profile`."""
    if isinstance(raw, dict) and "source" in raw:  # set here, from the file name
        raise ProfileError(f"{source}: source: unknown key (allowed: {', '.join(sorted(yaml_keys(Profile)))})")
    try:
        return _PROFILE.validate_python({**raw, "source": source} if isinstance(raw, dict) else raw)
    except ValidationError as exc:
        raise profile_error(source, exc) from None


def resolve_profile_path(name_or_path: str) -> Path:
    """A profile is either a path to a YAML file or a name under configs/ (``demo``)."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in (".yaml", ".yml") else CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ProfileError(f"profile {name_or_path!r}: no file {path} (profiles in configs/: "
                           f"{', '.join(available)}; set CONESCOPE_PROFILE to a name or a .yaml path)")
    return path


def load_profile(name_or_path: str | None = None) -> Profile:
    """Load and validate a profile; default from ``CONESCOPE_PROFILE``, else ``demo``."""
    name_or_path = name_or_path or os.environ.get("CONESCOPE_PROFILE") or DEFAULT_PROFILE
    path = resolve_profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path.name}: not valid YAML: {exc}") from exc
    source = f"configs/{path.name}" if path.parent == CONFIG_DIR else path.name
    return parse_profile(raw, source)
