"""Code versions of the assets: a hash of the code each asset runs and of the profile values it reads.

Dagster marks an asset partition stale when the asset's ``code_version`` differs from the one recorded
with its last materialization, so the version must change exactly when the asset's output may change:

- **Code**: the asset's root modules and every project module they import, transitively (imports
  are read with ``ast``, anywhere in a file, function bodies included; only this project's packages
  are followed: conescope, storage, assets, pipelines). A module counts by its code compiled without
  docstrings (bytecode, names, constants; not line numbers): comments, docstrings, formatting and
  moved lines never change a result, so they never recompute anything. Changing a shared helper
  changes the versions of exactly the assets whose closure holds it.
- **Config**: the profile values the asset reads that change what it stores, as canonical JSON.

The versions are deterministic across processes (sorted module names, sorted JSON keys, no paths,
no timestamps): Dagster's declarative automation compares them between the code server and runs.
Each module's hash and each closure are computed once per process (``clear_cache`` after editing
sources in a test).

Left out of every closure (neither hashed nor followed), each for a reason:

- ``conescope`` (the package ``__init__``): the version string and the notebook entry point;
- ``conescope.provenance``, ``conescope.code_versions``: they compute versions and content hashes,
  which reach an asset only through the versions they compute;
- ``conescope.profile``, ``conescope.profile_schema``, ``conescope.dataset_specs``,
  ``conescope.model_specs``, ``conescope.model_kinds`` (the package ``__init__``): the profile's schema,
  its registries and the protocol a loaded model offers; what they hold reaches an asset as the config
  values hashed with it (and the profile imports every source kind and model kind, so following it
  would make every asset depend on every reader and loader). An asset that runs a kind names the
  kind's module as a root (``type(spec).__module__``), as a dataset names its reader;
- ``conescope.file_lock``: the GPU claim, staging and warehouse partition locks decide who writes and when,
  never what;
- ``conescope.metric_families``: the declaration of the metric families (tables, partitioning, the rows
  each asset owns, the checks' metric names), the shape of the graph and of the warehouse like
  ``assets.keys``; what a metric asset computes is its rows function and its metric modules (the
  family's ``modules``, roots of its version), so adding a metric name to the contract restales
  nothing, and the warehouse code every dataset asset imports does not follow the declaration;
- ``pipelines.*``, ``assets.keys``, the ``assets`` and ``storage`` packages: partition key strings,
  resources, asset keys and pools, the shape of the graph rather than what an asset computes;
- an ``assets.*`` module imported by another asset module (key lists such as ``MODEL_LAYER``, tests
  such as ``has_transforms`` that shape the graph): what it computes reaches the importer through
  data versions.

Hashed but never followed (``OPAQUE``), because they gather what several assets use separately:
``conescope.families`` and ``conescope.partition_metrics`` hold the rows of every metric family and
import every metric module (following them would make each family depend on every other family's
formulas: an asset that measures metrics names its metric modules as roots, ``MetricFamily.modules``,
declared on its family in ``conescope.metric_families``);
``assets.reports`` holds the four report assets and imports every renderer (each report names its
renderer as a root). Their own imports that the assets do use are roots of their own.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conescope.model_specs import ModelSpec
    from conescope.profile import Profile

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("conescope", "storage", "assets", "pipelines")
EXCLUDED = frozenset({
    "conescope", "conescope.provenance", "conescope.code_versions", "conescope.profile", "conescope.profile_schema",
    "conescope.dataset_specs", "conescope.model_specs", "conescope.model_kinds", "conescope.file_lock",
    "conescope.metric_families", "assets",
    "assets.keys", "storage",
})
EXCLUDED_PACKAGES = ("pipelines",)
OPAQUE = frozenset({"conescope.families", "conescope.partition_metrics", "assets.reports"})

# --- roots of each asset family ---------------------------------------------------------------------
DATASET = ("assets.datasets", "assets.writes", "storage.parquet_store")
GENERATED_DATASET = ("conescope.datasets",)
SOURCE_DATASET = ("conescope.ingest", "conescope.download")
# + the module of each model kind embedded (``model_kind``)
# + the module of each trained model's kind (its loader builds the tower that is trained)
CHECKPOINT = ("assets.training", "conescope.training", "storage.checkpoints")
EMBEDDING = ("assets.embeddings", "assets.writes", "conescope.engine", "conescope.models", "storage.resumable",
             "storage.parquet_store")
METRIC_SHARED = ("assets.metrics", "assets.writes", "conescope.partition_metrics", "conescope.families",
                 "conescope.sets", "conescope.metrics.bootstrap", "storage.embedding_sets", "storage.warehouse")
FIT_TRANSFORMS = ("assets.transforms", "conescope.transforms", "conescope.protocols", "conescope.protocol_eval",
                  "storage.transform_store", "storage.embedding_sets")
TRANSFORM_METRICS = (*FIT_TRANSFORMS, "conescope.families", "conescope.metrics.bootstrap", "storage.warehouse")
EXPERIMENT_SHARED = ("assets.experiments", "storage.embedding_sets", "storage.metric_rows", "storage.warehouse")
REPORT_SHARED = ("assets.reports", "conescope.reports.cache", "conescope.reports.report_data",
                 "conescope.reports.thumbs", "storage.embedding_sets", "storage.metric_rows", "storage.parquet_store")


def read_source(module: str) -> str:
    """The source text of a project module (tests replace this to simulate an edit)."""
    return module_path(module).read_text(encoding="utf-8")


def module_path(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def is_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES and module_path(name).is_file()


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(node: ast.AST):
    """Every statement under ``node``, nested blocks included (imports are statements, so expressions,
    most of the tree, are never visited)."""
    for block in _BLOCKS:
        for child in getattr(node, block, ()):
            yield child
            yield from _statements(child)


@cache
def _parsed(module: str) -> tuple[ast.Module, tuple[ast.stmt, ...]]:
    """The module's tree without docstrings, and its import statements (anywhere in the file)."""
    tree = ast.parse(read_source(module))
    imports = []
    for node in [tree, *_statements(tree)]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            imports.append(node)
        elif isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.copy_location(ast.Pass(), first)]
    return tree, tuple(imports)


def _code_digest(code, digest) -> None:
    """What a code object does, without where: its bytecode, names and constants (nested functions and
    classes recursively); not its file name or line numbers, so moving code changes nothing."""
    digest.update(code.co_code)
    digest.update(code.co_exceptiontable)
    digest.update(repr((code.co_name, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                        code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_digest(const, digest)
        elif isinstance(const, frozenset):  # iteration order follows the hash seed: sort it
            digest.update(repr(sorted(map(repr, const))).encode())
        else:
            digest.update(f"{type(const).__name__}:{const!r};".encode())


@cache
def module_digest(module: str) -> str:
    """SHA-256 of the module's code compiled without docstrings: comments, docstrings, formatting and
    line positions change nothing, any change to what runs changes it (same Python version)."""
    digest = hashlib.sha256()
    _code_digest(compile(_parsed(module)[0], module, "exec", dont_inherit=True), digest)
    return digest.hexdigest()


@cache
def imports_of(module: str) -> frozenset[str]:
    """The project modules ``module`` imports anywhere in its file (``from pkg import sub`` counts
    as ``pkg.sub`` when ``sub`` is a module, as ``pkg`` otherwise)."""
    package = module if module_path(module).name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _parsed(module)[1]:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        else:
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return frozenset(m for m in found if m != module and is_module(m))


def _excluded(module: str) -> bool:
    return module in EXCLUDED or module.split(".")[0] in EXCLUDED_PACKAGES


@cache
def closure(roots: tuple[str, ...]) -> tuple[str, ...]:
    """The modules whose code an asset with these roots runs, sorted: the roots, then what they
    import transitively, less the excluded modules; opaque modules are included but never followed
    (roots or not), and an asset module reached from another module is left out (module docstring).
    A root may be any module of the repository (a model kind that a test registers lives in tests/);
    imports are followed into the project's packages only."""
    for root in roots:
        if not module_path(root).is_file():
            raise ValueError(f"code version root {root!r} is not a module of this project")
    seen, todo = set(roots), list(roots)
    while todo:
        module = todo.pop()
        if module in OPAQUE:
            continue
        for dep in imports_of(module):
            if dep in seen or _excluded(dep) or (dep.startswith("assets.") and dep not in roots):
                continue
            seen.add(dep)
            todo.append(dep)
    return tuple(sorted(seen))


def version(roots: Iterable[str], config: Any = None) -> str:
    """The code version of an asset: 16 hex digits of a SHA-256 over the digest of every module of
    the roots' closure and the canonical JSON of ``config``."""
    digest = hashlib.sha256()
    for module in closure(tuple(sorted(set(roots)))):
        digest.update(f"{module}={module_digest(module)}\n".encode())
    digest.update(json.dumps(config, sort_keys=True, default=str, separators=(",", ":")).encode())
    return digest.hexdigest()[:16]


def clear_cache() -> None:
    for fn in (_parsed, module_digest, imports_of, closure):
        fn.cache_clear()


# --- the versions of each asset family ----------------------------------------------------------------

def _dump(section) -> Any:
    """A profile record (a pydantic dataclass) as plain data; ``version`` writes it as sorted JSON."""
    return dataclasses.asdict(section)


def dataset(profile: Profile, name: str) -> str:
    """datasets/<name>: its generator or its source kind's reader, and its spec and languages (not the
    profile's name: a renamed profile builds the same manifest)."""
    spec = profile.datasets[name]
    roots = (*DATASET, *((*SOURCE_DATASET, type(spec).__module__) if spec.is_source else GENERATED_DATASET))
    return version(roots, {"spec": _dump(spec), "languages": list(profile.dataset_languages(name))})


def model_kind(spec: ModelSpec) -> str:
    """The module that defines the kind of ``spec`` (its loader and loaded model)."""
    return type(spec).__module__


def embedding_code(spec: ModelSpec) -> str:
    """The code that embeds with ``spec``: the engine and the model's kind alone, what the stored
    provenance and the resume fingerprint of an embedding partition record (the model, weights, data
    and settings are recorded beside it). Another kind's module is not part of it, so adding or
    editing a kind leaves the other kinds' stored partitions valid."""
    return version((*EMBEDDING, model_kind(spec)))


def checkpoint(profile: Profile) -> str:
    """training/checkpoint: the training code and the kinds of the trained models, every trained model's
    entry (architecture, seed, the ``train`` section with its seed and languages filled in) and the
    settings that change the weights: ``precision`` (bf16 autocast where native) and ``device``. Editing
    one trained model changes the version for every trained model's partition; their steps then keep
    each stored checkpoint whose fingerprint (its own model only) still matches (assets/training.py)."""
    specs = {name: spec for name, spec in profile.models.items() if spec.training() is not None}
    settings = {"precision": profile.embedding.precision, "device": profile.embedding.device}
    return version((*CHECKPOINT, *{model_kind(spec) for spec in specs.values()}),
                   {"models": {name: _dump(spec) for name, spec in specs.items()}, "embedding": settings})


def checkpoint_code(spec: ModelSpec) -> str:
    """The code that trains ``spec``'s weights (the training code and its kind alone), what a
    checkpoint's provenance and fingerprint record beside the entry and the data it was trained on."""
    return version((*CHECKPOINT, model_kind(spec)))


def _embedded(spec: ModelSpec) -> dict:
    """A model's entry as its embeddings depend on it: its training settings left out, which reach them
    through the data version of its checkpoint (``training/checkpoint``), so a changed training setting
    restales the embeddings of that model only, once its checkpoint is trained again."""
    training = spec.training()
    return {key: value for key, value in _dump(spec).items()
            if training is None or getattr(spec, key, None) is not training}


def embedding(profile: Profile, modality: str) -> str:
    """embeddings/<ds>_<modality>: the engine and the kinds of its models, and every model's spec (a
    trained model's less its training settings: :func:`_embedded`) with the settings that change the
    stored values: ``precision``, ``device`` (kernels differ between CPU and
    GPU), ``text_layers`` (text only). Not ``workers``, ``part_rows``, ``progress_every_s`` (decoding
    processes, commit size, logging: the rows are the same), nor ``batch_size``: it changes the rows
    only in the last float32 bits (the kernels block the matrix products differently; measured at most
    5e-7 on unit-scale values, tests/test_staleness.py), as a resumed run or an out-of-memory back-off
    already does within one partition; hashing it would make a tuning change re-embed everything.
    Adding or editing one model changes the version for every model's partitions; their steps then keep
    each stored partition whose fingerprint (its own model only) still matches (assets/embeddings.py)."""
    specs = {name: spec for name, spec in profile.models.items() if modality == "text" or spec.has_image_tower}
    models = {name: _embedded(spec) for name, spec in specs.items()}
    settings = {"precision": profile.embedding.precision, "device": profile.embedding.device}
    if modality == "text":
        settings["text_layers"] = profile.embedding.text_layers
    kinds = {model_kind(spec) for spec in specs.values()}
    return version((*EMBEDDING, *kinds), {"models": models, "embedding": settings})


def metric_family(profile: Profile, modules: Iterable[str]) -> str:
    """metrics/<family>: the family's own metric modules, the shared row code (records, bootstrap
    CIs, pairing, the warehouse rows) and the ``metrics`` section of the profile."""
    return version((*METRIC_SHARED, *modules), {"metrics": _dump(profile.metrics)})


def fit_transforms(profile: Profile) -> str:
    return version(FIT_TRANSFORMS, {"transforms": _dump(profile.transforms)})


def transform_metrics(profile: Profile, modules: Iterable[str]) -> str:
    """metrics/transforms: fitting and evaluation code with the metric modules of every table it
    writes (``modules``), and the ``transforms`` and ``metrics`` sections."""
    return version((*TRANSFORM_METRICS, *modules),
                   {"transforms": _dump(profile.transforms), "metrics": _dump(profile.metrics)})


def experiment(profile: Profile, modules: Iterable[str], *, training: bool) -> str:
    """experiments/<name>: its modules (``Experiment.modules`` in ``conescope/metric_families.py``), the
    shared experiment code, and the sections it reads: ``metrics`` (the silhouette's sampling, the
    bootstrap's seed and resamples) and, for the training experiment (``training``), the
    ``cluster_training`` section (datasets, updates, records, seeds, learning rate) and the languages
    (which texts it trains); the cross-transform experiment reads neither."""
    config: dict[str, Any] = {"metrics": _dump(profile.metrics)}
    if training:
        config.update(cluster_training=_dump(profile.cluster_training), languages=list(profile.languages))
    return version((*EXPERIMENT_SHARED, *modules), config)


def report(profile: Profile, renderer: str, *, models: bool = False) -> str:
    """reports/<kind>: its renderer (``conescope.reports.<kind>``) and the ``report`` section, seed,
    profile name and languages it prints; ``models``: also every model and dataset entry (the
    comparison and paper reports name them)."""
    config: dict[str, Any] = {"report": _dump(profile.report), "seed": profile.seed, "profile": profile.name,
                              "languages": list(profile.languages), "reference_lang": profile.reference_lang}
    if models:
        config["models"] = {name: _dump(spec) for name, spec in profile.models.items()}
        config["datasets"] = {name: _dump(spec) for name, spec in profile.datasets.items()}
    return version((*REPORT_SHARED, renderer), config)
