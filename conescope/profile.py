"""Profiles: the YAML files under configs/ that say which datasets, models and languages to run.

A profile is validated completely when it is loaded; every error names the file and the offending
key path (e.g. ``configs/demo.yaml: models.vit-b-32.random.seed: expected an integer, got 'x'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conescope.models import PRECISIONS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PROFILE = "demo"

# Partition keys become path segments and Dagster partition keys: keep them plain.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_LANG = re.compile(r"^[a-z]{2,3}$")
_CRON = re.compile(r"^\s*[0-9*/,\-]+(\s+[0-9A-Za-z*/,\-]+){4}\s*$")
GENERATED_KINDS = ("shapes", "digits")
MODEL_KINDS = ("open_clip", "sentence_transformers")
DEVICES = ("auto", "cpu", "cuda")


class ProfileError(ValueError):
    """A profile is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str
    n: int | None  # generated: how many; real sources: at most this many samples (None: all)
    seed: int
    image_size: int = 64
    languages: tuple[str, ...] = ("en", "fr", "de", "ru")  # what its texts can be in (declared)
    has_images: bool = True  # False for text-only sources (STS-B, WikiCaps without images)
    options: dict = field(default_factory=dict, hash=False, compare=False)  # kind-specific keys
    download: tuple = ()  # conescope.download sources fetched into raw/<name>/ when absent
    max_reject_fraction: float = 0.05


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    arch: str  # open_clip: architecture, hf-hub:<repo> or local-dir:<folder>; sentence_transformers: id or folder
    pretrained: str | None
    seed: int
    zero_bias: bool
    package: str | None = None  # sentence_transformers: a pip package that bundles the weights

    @property
    def text_only(self) -> bool:
        return self.kind == "sentence_transformers"


@dataclass(frozen=True)
class EmbeddingSpec:
    """How the embedding engine runs (profile section ``embedding``; conescope/engine.py)."""

    batch_size: int = 32  # with batch_auto, what CPU-side code that needs one number uses
    batch_auto: bool = False  # batch_size: auto -> 256 on CUDA (halved on out-of-memory), 32 on CPU
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16: the weights' dtype (conescope/models.py)
    workers: int | None = None  # image decoding processes; None ("auto"): one per CPU, at most 16
    text_layers: bool = False  # also store every text layer's pooled state (for metrics/layers)
    part_rows: int = 16384  # rows per committed part: a crash loses at most this much work
    progress_every_s: float = 10.0  # seconds between progress lines in the run log


@dataclass(frozen=True)
class ReportSpec:
    max_points: int = 2000  # points per modality in the scatter plots and t-SNE maps
    heatmap_pairs: int = 60  # sampled pairs in the similarity heatmap
    clusters: int = 6  # clusters of the reordered heatmap


@dataclass(frozen=True)
class ScheduleSpec:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class MetricSettings:
    """How the metric families are computed (profile section ``metrics``)."""

    seed: int = 0
    bootstrap: int = 1000  # resamples for the confidence intervals of means over samples
    clip_batch_size: int | None = 64  # consecutive batches (Tyshchuk et al.); None: the full matrix
    logit_scale: float | None = None  # None: the model's own; the paper setting is 100
    geometry: str = "cosine"  # logit geometry: cosine | dot | neg_sq_euclidean
    folds: int = 5  # cross-validation folds of the separability probes
    silhouette_exact_max: int = 5000  # above this many rows the silhouette is sampled, with a CI
    probe_l2: float = 1e-4  # L2 penalty of the linear probe (mean loss + l2/2 ||W||^2)
    # retrieval gallery: the held-out test split (the Karpathy 5k-test protocol of CLIP's COCO numbers)
    # or every row ("all"); a dataset without test rows is evaluated on all of them
    retrieval_eval_set: str = "test"
    reference_lang: str | None = None  # multilingual reference; None: en if profiled, else the first


TRANSFORM_KINDS = ("identity", "centering", "whitening", "pca", "procrustes", "lstsq", "gap_shift")


@dataclass(frozen=True)
class TransformSettings:
    """Which transforms are fitted and how they are evaluated (profile section ``transforms``);
    absent section: none. Protocols of Tyshchuk et al. 2023 (Section 5)."""

    kinds: tuple[str, ...] = ()
    k: tuple[int, ...] = ()  # components kept by whitening-k and PCA-k, one variant per value
    gap_shift_lambdas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    gap_shift_renormalize: tuple[bool, ...] = (True,)
    in_domain: tuple[str, ...] = ()  # fit on the train split, evaluate on the test split
    cross_dataset: tuple[tuple[str, str], ...] = ()  # (fit dataset, eval dataset)
    class_disjoint: tuple[str, ...] = ()  # fit on half the classes, evaluate known and new classes
    class_disjoint_seed: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    seed: int
    languages: tuple[str, ...]
    datasets: dict[str, DatasetSpec]
    models: dict[str, ModelSpec]
    embedding: EmbeddingSpec = field(default_factory=EmbeddingSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    metrics: MetricSettings = field(default_factory=MetricSettings)
    transforms: TransformSettings = field(default_factory=TransformSettings)

    @property
    def image_models(self) -> list[str]:
        """Models with an image tower: the image assets are partitioned over these only."""
        return [m for m, spec in self.models.items() if not spec.text_only]

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


class _Reader:
    """Typed access to a YAML mapping that reports errors as ``file: key.path: problem``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.source}: {path}: {problem}")

    def mapping(self, value: Any, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(f"{path}.{key}" if path else str(key),
                                f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value:
                raise self.fail(f"{path}.{key}" if path else key, "missing required key")
        return value

    def integer(self, value: Any, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def string(self, value: Any, path: str, choices: tuple[str, ...] | None = None,
               pattern: re.Pattern | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(path, f"{value!r} is not one of {', '.join(choices)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(path, f"{value!r} does not match {pattern.pattern}")
        return value


def _dataset(r: _Reader, name: str, raw: Any) -> DatasetSpec:
    path = f"datasets.{name}"
    if not _NAME.match(str(name)):
        raise r.fail(path, f"dataset name must match {_NAME.pattern}")
    from conescope.dataset_specs import SOURCE_KINDS, parse_source_dataset

    if isinstance(raw, dict) and raw.get("kind") in SOURCE_KINDS:
        return DatasetSpec(name=name, kind=raw["kind"], **parse_source_dataset(r, name, raw, _LANG))
    m = r.mapping(raw, path, {"kind", "n", "seed", "image_size"}, {"kind", "n"})
    kind = r.string(m["kind"], f"{path}.kind", GENERATED_KINDS + SOURCE_KINDS)
    spec = DatasetSpec(
        name=name,
        kind=kind,
        n=r.integer(m["n"], f"{path}.n", minimum=2),
        seed=r.integer(m.get("seed", 0), f"{path}.seed", minimum=0),
        image_size=r.integer(m.get("image_size", 64), f"{path}.image_size", minimum=16),
    )
    if kind == "digits" and spec.n > 1797:
        raise r.fail(f"{path}.n", f"scikit-learn's digits has 1797 samples, asked for {spec.n}")
    return spec


def _model(r: _Reader, name: str, raw: Any) -> ModelSpec:
    path = f"models.{name}"
    if not _NAME.match(str(name)):
        raise r.fail(path, f"model name must match {_NAME.pattern}")
    if isinstance(raw, dict) and raw.get("kind") == "sentence_transformers":
        return _text_model(r, name, raw)
    m = r.mapping(raw, path, {"kind", "arch", "pretrained", "seed", "zero_bias"}, {"kind", "arch"})
    kind = r.string(m["kind"], f"{path}.kind", MODEL_KINDS)
    arch = r.string(m["arch"], f"{path}.arch")
    from conescope.models import known_architectures  # open_clip import is slow: only when needed

    if not arch.startswith(("hf-hub:", "local-dir:")) and arch not in known_architectures():
        raise r.fail(f"{path}.arch", f"unknown open_clip architecture {arch!r}")
    pretrained = m.get("pretrained")
    if pretrained is not None:
        pretrained = r.string(pretrained, f"{path}.pretrained")
    if arch.startswith("hf-hub:") and pretrained is not None:
        raise r.fail(f"{path}.pretrained", "an hf-hub: model brings its own weights; leave pretrained out")
    zero_bias = r.boolean(m.get("zero_bias", False), f"{path}.zero_bias")
    if zero_bias and (pretrained is not None or arch.startswith("hf-hub:")):
        raise r.fail(f"{path}.zero_bias", "zeroing biases applies to random initialisation only")
    return ModelSpec(name=name, kind=kind, arch=arch, pretrained=pretrained,
                     seed=r.integer(m.get("seed", 0), f"{path}.seed", minimum=0), zero_bias=zero_bias)


def _text_model(r: _Reader, name: str, raw: dict) -> ModelSpec:
    """A text-only sentence-transformers model: ``model`` (hub id or folder), optional ``package``."""
    path = f"models.{name}"
    m = r.mapping(raw, path, {"kind", "model", "package", "seed"}, {"kind", "model"})
    package = m.get("package")
    return ModelSpec(name=name, kind="sentence_transformers", arch=r.string(m["model"], f"{path}.model"),
                     pretrained=None, seed=r.integer(m.get("seed", 0), f"{path}.seed", minimum=0),
                     zero_bias=False, package=None if package is None else r.string(package, f"{path}.package"))


GEOMETRIES = ("cosine", "dot", "neg_sq_euclidean")
RETRIEVAL_EVAL_SETS = ("test", "all")


def _metrics(r: _Reader, raw: Any, languages: tuple[str, ...]) -> MetricSettings:
    d = MetricSettings()
    m = r.mapping(raw, "metrics", set(d.__dataclass_fields__))

    def number(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise r.fail(f"metrics.{key}", f"expected a positive number, got {value!r}")
        return float(value)

    batch = m.get("clip_batch_size", d.clip_batch_size)
    scale = m.get("logit_scale", "model")
    ref = m.get("reference_lang", d.reference_lang)
    if ref is not None and ref not in languages:
        raise r.fail("metrics.reference_lang", f"{ref!r} is not one of the profile's languages")
    return MetricSettings(
        seed=r.integer(m.get("seed", d.seed), "metrics.seed", minimum=0),
        bootstrap=r.integer(m.get("bootstrap", d.bootstrap), "metrics.bootstrap", minimum=10),
        clip_batch_size=None if batch in (None, "full") else r.integer(batch, "metrics.clip_batch_size", 2),
        logit_scale=None if scale in (None, "model") else number("logit_scale", scale),
        geometry=r.string(m.get("geometry", d.geometry), "metrics.geometry", GEOMETRIES),
        folds=r.integer(m.get("folds", d.folds), "metrics.folds", minimum=2),
        silhouette_exact_max=r.integer(m.get("silhouette_exact_max", d.silhouette_exact_max),
                                       "metrics.silhouette_exact_max", minimum=10),
        probe_l2=number("probe_l2", m.get("probe_l2", d.probe_l2)),
        retrieval_eval_set=r.string(m.get("retrieval_eval_set", d.retrieval_eval_set), "metrics.retrieval_eval_set",
                                    RETRIEVAL_EVAL_SETS),
        reference_lang=ref,
    )


def _transforms(r: _Reader, raw: Any, datasets: dict[str, DatasetSpec]) -> TransformSettings:
    d = TransformSettings()
    m = r.mapping(raw, "transforms", {"kinds", "k", "gap_shift", "protocols"})

    def items(value: Any, path: str) -> list:
        if not isinstance(value, list) or not value:
            raise r.fail(path, f"expected a non-empty list, got {value!r}")
        return value

    def dataset(value: Any, path: str) -> str:
        name = r.string(value, path)
        if name not in datasets:
            raise r.fail(path, f"{name!r} is not one of the profile's datasets ({', '.join(datasets)})")
        return name

    kinds = tuple(r.string(v, f"transforms.kinds[{i}]", TRANSFORM_KINDS)
                  for i, v in enumerate(items(m.get("kinds", list(TRANSFORM_KINDS)), "transforms.kinds")))
    ks: tuple[int, ...] = ()
    if "whitening" in kinds or "pca" in kinds or "k" in m:
        ks = tuple(r.integer(v, f"transforms.k[{i}]", minimum=1)
                   for i, v in enumerate(items(m.get("k"), "transforms.k")))
    g = r.mapping(m.get("gap_shift", {}), "transforms.gap_shift", {"lambdas", "renormalize"})
    lambdas = []
    for i, v in enumerate(items(g.get("lambdas", list(d.gap_shift_lambdas)), "transforms.gap_shift.lambdas")):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise r.fail(f"transforms.gap_shift.lambdas[{i}]", f"expected a number, got {v!r}")
        lambdas.append(float(v))
    renorm_raw = items(g.get("renormalize", list(d.gap_shift_renormalize)), "transforms.gap_shift.renormalize")
    renorm = tuple(r.boolean(v, f"transforms.gap_shift.renormalize[{i}]") for i, v in enumerate(renorm_raw))
    p = r.mapping(m.get("protocols", {}), "transforms.protocols", {"in_domain", "cross_dataset", "class_disjoint"})
    in_domain_raw = items(p.get("in_domain", list(datasets)), "transforms.protocols.in_domain")
    in_domain = tuple(dataset(v, f"transforms.protocols.in_domain[{i}]") for i, v in enumerate(in_domain_raw))
    cross = []
    for i, v in enumerate(p.get("cross_dataset") or []):
        path = f"transforms.protocols.cross_dataset[{i}]"
        pair = r.mapping(v, path, {"fit", "eval"}, {"fit", "eval"})
        fit, ev = dataset(pair["fit"], f"{path}.fit"), dataset(pair["eval"], f"{path}.eval")
        if fit == ev:
            raise r.fail(path, f"fit and eval are both {fit!r}; that is the in_domain protocol")
        cross.append((fit, ev))
    cd = r.mapping(p.get("class_disjoint", {}), "transforms.protocols.class_disjoint", {"datasets", "seed"})
    disjoint = tuple(dataset(v, f"transforms.protocols.class_disjoint.datasets[{i}]")
                     for i, v in enumerate(cd.get("datasets") or []))
    return TransformSettings(
        kinds=kinds, k=ks, gap_shift_lambdas=tuple(lambdas), gap_shift_renormalize=renorm, in_domain=in_domain,
        cross_dataset=tuple(cross), class_disjoint=disjoint,
        class_disjoint_seed=r.integer(cd.get("seed", d.class_disjoint_seed),
                                      "transforms.protocols.class_disjoint.seed", minimum=0))


def _embedding(r: _Reader, m: dict) -> EmbeddingSpec:
    d = EmbeddingSpec()
    batch, workers = m.get("batch_size", d.batch_size), m.get("workers", "auto")
    every = m.get("progress_every_s", d.progress_every_s)
    if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
        raise r.fail("embedding.progress_every_s", f"expected a positive number of seconds, got {every!r}")
    return EmbeddingSpec(
        batch_size=d.batch_size if batch == "auto" else r.integer(batch, "embedding.batch_size", minimum=1),
        batch_auto=batch == "auto",
        device=r.string(m.get("device", d.device), "embedding.device", DEVICES),
        precision=r.string(m.get("precision", d.precision), "embedding.precision", PRECISIONS),
        workers=None if workers == "auto" else r.integer(workers, "embedding.workers", minimum=0),
        text_layers=r.boolean(m.get("text_layers", d.text_layers), "embedding.text_layers"),
        part_rows=r.integer(m.get("part_rows", d.part_rows), "embedding.part_rows", minimum=1),
        progress_every_s=float(every),
    )


def parse_profile(raw: Any, source: str) -> Profile:
    """Validate a parsed YAML document and build a :class:`Profile`."""
    r = _Reader(source)
    top = r.mapping(raw, "", {"name", "seed", "languages", "datasets", "models", "embedding", "report",
                              "schedule", "metrics", "transforms"}, {"name", "languages", "datasets", "models"})
    name = r.string(top["name"], "name", pattern=_NAME)
    langs = top["languages"]
    if not isinstance(langs, list) or not langs:
        raise r.fail("languages", "expected a non-empty list of ISO 639-1 codes")
    languages = tuple(r.string(v, f"languages[{i}]", pattern=_LANG) for i, v in enumerate(langs))
    if len(set(languages)) != len(languages):
        raise r.fail("languages", f"duplicate language in {list(languages)}")
    for key in ("datasets", "models"):
        if not isinstance(top[key], dict) or not top[key]:
            raise r.fail(key, "expected a non-empty mapping of name -> settings")
    datasets = {str(k): _dataset(r, str(k), v) for k, v in top["datasets"].items()}
    models = {str(k): _model(r, str(k), v) for k, v in top["models"].items()}
    for lang in languages:
        if not any(lang in spec.languages for spec in datasets.values()):
            raise r.fail("languages", f"{lang!r} is in no dataset's languages (datasets declare: "
                                      f"{', '.join(sorted({x for s in datasets.values() for x in s.languages}))})")
    if not any(spec.has_images for spec in datasets.values()) and not all(s.text_only for s in models.values()):
        raise r.fail("datasets", "no dataset has images, but the profile has image-capable models")

    emb = r.mapping(top.get("embedding", {}), "embedding", set(EmbeddingSpec.__dataclass_fields__) - {"batch_auto"})
    report = r.mapping(top.get("report", {}), "report", {"max_points", "heatmap_pairs", "clusters"})
    sched = r.mapping(top.get("schedule", {}), "schedule", {"cron", "timezone"})
    cron = r.string(sched.get("cron", "0 2 * * *"), "schedule.cron")
    if not _CRON.match(cron):
        raise r.fail("schedule.cron", f"{cron!r} is not a valid cron string")
    metrics = _metrics(r, top.get("metrics", {}), languages)
    transforms = _transforms(r, top["transforms"], datasets) if "transforms" in top else TransformSettings()
    return Profile(
        name=name,
        source=source,
        seed=r.integer(top.get("seed", 0), "seed", minimum=0),
        languages=languages,
        datasets=datasets,
        models=models,
        embedding=_embedding(r, emb),
        report=ReportSpec(max_points=r.integer(report.get("max_points", 2000), "report.max_points", 2),
                          heatmap_pairs=r.integer(report.get("heatmap_pairs", 60), "report.heatmap_pairs", 3),
                          clusters=r.integer(report.get("clusters", 6), "report.clusters", 1)),
        schedule=ScheduleSpec(cron=cron,
                              timezone=r.string(sched.get("timezone", "UTC"), "schedule.timezone")),
        metrics=metrics,
        transforms=transforms,
    )


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
