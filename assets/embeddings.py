"""embeddings/<ds>_image [image_model] and embeddings/<ds>_text [model x lang]: tower outputs to Parquet.

The engine (conescope/engine.py) decodes in worker processes and runs the tower on the profile's
device; rows stream into a resumable partition (storage/resumable.py), so an interrupted step
rerun embeds only what is missing. A complete partition whose stored fingerprint (model, weights, data,
preprocessing, precision, engine code) matches is kept as it is, unless the run is tagged
``conescope/force=true`` or a part of it is damaged (storage/integrity.py: then only the damaged
parts are embedded again); the fingerprint's hash is the partition's data version.
The steps are in the "gpu" pool (one step per GPU); their short
warehouse writes (rejects, views) wait on DuckDB's file lock instead of holding the "duckdb" pool.
"""


import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets import keys
from assets.writes import write_rejects
from conescope import code_versions, engine
from conescope.model_specs import EmbeddingModel, Weights
from conescope.profile import EmbeddingSpec, ModelSpec, Profile
from conescope.provenance import git_commit
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.checkpoints import stored_weights
from storage.integrity import verify_parts
from storage.parquet_store import (
    IMAGE_KEY_COLUMNS,
    TEXT_KEY_COLUMNS,
    ParquetColumn,
    read_manifest_table,
    read_provenance,
)
from storage.paths import DataRoot
from storage.resumable import MAIN, ResumablePartition, Stream, fingerprint

LAYERS = "layers"
LAYER_KEY_COLUMNS: list[tuple[str, pa.DataType]] = [("text_id", pa.string()), ("layer", pa.int16())]


@lru_cache(maxsize=3)
def cached_model(spec: ModelSpec, device: str, precision: str = "fp32",
                 weights: Weights | None = None) -> EmbeddingModel:
    # Runs executed in one process (the CLI, tests) reuse the model across steps and partitions; three,
    # so that the demo's models (images of two, then the text partitions of all three) load once each.
    # Trained weights are part of the key by their content hash: a model trained again is loaded again.
    # Called without ``weights`` for every other model, so that the key is the one warm_models made.
    return spec.load(device, precision) if weights is None else spec.load(device, precision, weights)


class _Lines(logging.Handler):
    def __init__(self, log: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log(record.getMessage())


@contextmanager
def project_log_to(log: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, what conescope's own logger says (at INFO and above: a model kind stating
    how it created a model, e.g. a random initialisation, conescope/model_kinds/open_clip.py) goes to
    ``log`` alone: the run's log in a step, stderr in the forkserver's warm-up. Around
    :func:`cached_model`, so a model is stated once, where it is created."""
    logger, handler = logging.getLogger("conescope"), _Lines(log)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def step_model(context, spec: ModelSpec, device: str, precision: str, paths: DataRoot) -> EmbeddingModel:
    """:func:`cached_model` in a step: a model created here is stated in the run's log (and under the
    run in the terminal of ``conescope materialize``). A model the pipeline trains gets the weights of
    its stored checkpoint (``training/checkpoint``, storage/checkpoints.py)."""
    weights = stored_weights(paths, spec.name) if spec.training() is not None else None
    with project_log_to(lambda line: context.log.info(line, extra={keys.MODEL_NOTE_EXTRA: line})):
        return cached_model(spec, device, precision) if weights is None else \
            cached_model(spec, device, precision, weights)


def step_progress(context, label: str, total: int, every_s: float, done_before: int) -> engine.Progress:
    """The engine's progress lines in the run's log, each with its figures and the step it measures
    (``<asset> [<partition>]``) for ``conescope materialize`` to print under the run in progress."""
    step = f"{context.asset_key.to_user_string()} [{context.partition_key}]"

    def log(line: str) -> None:
        context.log.info(line, extra={keys.PROGRESS_EXTRA: (step, progress.figures())})

    progress = engine.Progress(label, total, log, every_s, done_before=done_before)
    return progress


def warm_models(profile: Profile | None = None) -> list[str]:
    """Create the profile's models in :func:`cached_model` (as many as it holds), where the embedding
    steps will run them on the CPU; returns their names. The run launcher's forkserver
    (pipelines/forkserver.py) calls it once, so that the runs forked from it find their model made:
    a model created per run costs 1-3 s (the CLI makes each once for all its runs). Nothing on a
    GPU: CUDA cannot be used in a forked child once the parent has. A model that fails to load is
    left to the step, which reports why; a model the pipeline trains is left to the step too (its
    checkpoint may not exist yet, or be trained again before the step runs)."""
    from conescope.models import resolve_device
    from conescope.profile import load_profile

    profile = profile or load_profile()
    cfg = profile.embedding
    if resolve_device(cfg.device) != "cpu":
        return []
    warmed = []
    loadable = [spec for spec in profile.models.values() if spec.training() is None]
    for spec in loadable[:cached_model.cache_info().maxsize]:
        try:
            with project_log_to(lambda line: print(f"warm_models: {line}", file=sys.stderr)):
                cached_model(spec, "cpu", cfg.precision)
        except Exception as exc:  # noqa: BLE001 - the step loads it again and fails with the reason
            print(f"warm_models: {spec.name} not preloaded: {exc}", file=sys.stderr)
            continue
        warmed.append(spec.name)
    return warmed


def engine_settings(spec: EmbeddingSpec) -> engine.EngineSettings:
    return engine.EngineSettings(batch_size=None if spec.batch_auto else spec.batch_size, workers=spec.workers)


def _provenance(loaded: EmbeddingModel, spec: ModelSpec, dataset: str, data_sha256: str,
                **extra) -> tuple[dict, dict]:
    """(provenance stored in the files, the part of it a resumed run must match). ``code_version`` is
    the code of the embedding engine and of the model's kind (conescope/code_versions.py), not the
    commit: a commit that leaves them alone leaves the fingerprint alone. The stored provenance adds
    the fingerprint's hash, the commit and the time."""
    stable = {**loaded.provenance, "model": spec.name, "dataset": dataset, "data_sha256": data_sha256,
              "code_version": code_versions.embedding_code(spec), "logit_scale": loaded.logit_scale,
              "logit_bias": loaded.logit_bias, "precision": loaded.precision,
              "preprocessing": repr(loaded.preprocess), **extra}
    # A resumed run may get another GPU of the same kind: the fingerprint keeps the device type only.
    resume_key = {**stable, "device": loaded.device.split(":")[0]}
    return ({**stable, "fingerprint": fingerprint(resume_key), "git_commit": git_commit(),
             "created_at": datetime.now(UTC).isoformat()}, resume_key)


def forced(context) -> bool:
    return context.run.tags.get(keys.FORCE_TAG) == "true"


def stored_partition(context, provenance: dict, *targets) -> bool:
    """Whether every target directory holds a complete, intact partition written with this
    fingerprint (and the run is not forced): the step then keeps it instead of embedding again. A
    damaged part (storage/integrity.py) is logged, naming the file, and the partition is embedded
    again, keeping its intact parts."""
    if forced(context):
        return False
    firsts = [next(iter(sorted(t.glob("part-*.parquet"))), None) for t in targets]
    try:
        same = all(f is not None and read_provenance(f).get("fingerprint") == provenance["fingerprint"]
                   for f in firsts)
    except (OSError, pa.ArrowException):  # the first part itself is damaged
        same = True
    if not same:
        return False
    damages = [d for t in targets for d in verify_parts(t)]
    for d in damages:
        context.log.warning(f"{d.path} is damaged ({d.reason}); embedding its rows again")
    return not damages


def _kept(context, target, provenance: dict) -> dg.MaterializeResult:
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in target.glob("part-*.parquet"))
    context.log.info(f"{target}: complete with the same fingerprint ({provenance['fingerprint']}), kept; "
                     f"tag the run {keys.FORCE_TAG}=true to embed again")
    return dg.MaterializeResult(metadata={"rows": rows, "resumed_rows": 0, "embedded_rows": 0, "kept": True,
                                          "path": dg.MetadataValue.path(str(target))},
                                data_version=dg.DataVersion(provenance["fingerprint"]))


def _metadata(run: engine.EngineRun, n: int, resumed: int, unit: str, path) -> dict:
    return {"rows": n, "resumed_rows": resumed, "embedded_rows": run.embedded, "device": run.device,
            "precision": run.precision,
            f"{unit}_per_s": round(run.per_second, 2), "batch_size": run.batch_size, "workers": run.workers,
            "oom_backoffs": len(run.backoffs), "path": dg.MetadataValue.path(str(path))}


def _embed_images(context, ds: str, spec: ModelSpec, cfg: EmbeddingSpec, paths, ids: list, manifest,
                  loaded: EmbeddingModel, provenance: dict, stable: dict):
    target = paths.image_embeddings(ds, spec.name)
    run = engine.EngineRun()
    with ResumablePartition({MAIN: Stream(target, IMAGE_KEY_COLUMNS)}, paths.scratch, provenance, stable,
                            part_rows=cfg.part_rows, salvage=not forced(context)) as part:
        pending = [i for i, sid in enumerate(ids) if sid not in part.done_keys]
        progress = step_progress(context, f"{ds} images, {spec.name}", len(ids), cfg.progress_every_s,
                                 done_before=len(ids) - len(pending))

        def reject(i: int, reason: str) -> None:
            context.log.warning(f"{ds}: skipping sample {ids[i]}: {reason}")
            part.reject(i, ids[i], reason)

        # encoded bytes, or the file of a sample ingested by reference (image_path)
        images = ParquetColumn(manifest, "image", fallback="image_path")
        for rows, emb in engine.embed_images(loaded, images, engine_settings(cfg),
                                             pending, reject, progress, run):
            part.write(rows, {MAIN: ({"sample_id": [ids[i] for i in rows]}, emb)})
        n = part.finalize()
    return n, part, run


def trained_deps(parts: ProfilePartitions, mapping: dg.StaticPartitionMapping) -> list[dg.AssetDep]:
    """The checkpoint of the models the pipeline trains, read by their partitions only (``mapping``);
    none without a trained model."""
    return [dg.AssetDep(keys.CHECKPOINT, partition_mapping=mapping)] if parts.trained_model is not None else []


def _image_asset(ds: str, profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    version = code_versions.embedding(profile, "image")

    @dg.asset(key=keys.image_embeddings(ds), partitions_def=parts.image_model,
              deps=[keys.dataset(ds), *trained_deps(parts, parts.trained_to_image_model)],
              code_version=version,
              group_name="embeddings", pool=keys.GPU_POOL, op_tags=keys.GPU_STEP_TAGS,
              kinds={"pytorch", "parquet"},
              description=f"Image-tower embeddings of {ds} (raw, float32) per model")
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        spec, cfg = profile.models[context.partition_key], profile.embedding
        paths = conescope.paths
        ids = read_manifest_table(paths.dataset_dir(ds), "samples", ["sample_id"]).column("sample_id").to_pylist()
        manifest = paths.dataset_dir(ds) / "samples.parquet"
        with engine.claimed_device(cfg.device, paths.scratch / "gpus") as device:
            loaded = step_model(context, spec, device, cfg.precision, paths)
            provenance, stable = _provenance(loaded, spec, ds, read_provenance(manifest).get("data_sha256", ""),
                                             modality="image")
            if stored_partition(context, provenance, paths.image_embeddings(ds, spec.name)):
                return _kept(context, paths.image_embeddings(ds, spec.name), provenance)
            n, part, run = _embed_images(context, ds, spec, cfg, paths, ids, manifest, loaded, provenance, stable)
        rejected = write_rejects(conescope, ds, spec.name, "embed_image",
                                 [(r["key"], r["reason"]) for r in part.previous_rejects], version)
        conescope.warehouse.refresh_views(paths.root, [ds])
        return dg.MaterializeResult(metadata={**_metadata(run, n, part.resumed_rows, "images",
                                                        paths.image_embeddings(ds, spec.name)),
                                              "rejected": rejected, "logit_scale": loaded.logit_scale},
                                    data_version=dg.DataVersion(provenance["fingerprint"]))

    return _asset


def _text_batch(cols: dict[str, list], rows, emb, layers) -> dict:
    batch = {MAIN: ({name: [values[i] for i in rows] for name, values in cols.items()}, emb)}
    if layers is not None:  # long format: one row per text and layer, texts in order, layers ascending
        n_layers = layers.shape[1]
        batch[LAYERS] = ({"text_id": [cols["text_id"][i] for i in rows for _ in range(n_layers)],
                          "layer": np.tile(np.arange(n_layers, dtype=np.int16), len(rows))},
                         layers.reshape(-1, layers.shape[2]))
    return batch


def _text_asset(ds: str, profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    @dg.asset(key=keys.text_embeddings(ds), deps=[keys.dataset(ds), *trained_deps(parts, parts.trained_to_model_lang)],
              partitions_def=parts.model_lang,
              code_version=code_versions.embedding(profile, "text"),
              group_name="embeddings", pool=keys.GPU_POOL, op_tags=keys.GPU_STEP_TAGS,
              kinds={"pytorch", "parquet"},
              description=f"Text-tower embeddings of {ds} (captions or class prompts) per model and language"
                          + ("; with the pooled state of every text layer" if profile.embedding.text_layers else ""))
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        spec, cfg, paths = profile.models[model], profile.embedding, conescope.paths
        texts = read_manifest_table(paths.dataset_dir(ds), "texts")
        texts = texts.filter(pc.equal(texts.column("lang"), lang))
        if lang not in profile.dataset_languages(ds):
            # the dataset declares no texts in this language: the partition is empty by design
            declared = ", ".join(profile.datasets[ds].languages)
            context.log.info(f"{ds}: no {lang} texts (the dataset declares {declared})")
            return dg.MaterializeResult(metadata={"rows": 0, "skipped": f"{ds} has no texts in {lang}"})
        if texts.num_rows == 0:
            raise ValueError(f"dataset {ds!r} declares language {lang!r} but its manifest has no {lang} texts "
                             f"(see datasets.rejects and the source files); rematerialize datasets/{ds}")
        cols = {name: texts.column(name).to_pylist() for name, _ in TEXT_KEY_COLUMNS}
        data_sha = read_provenance(paths.dataset_dir(ds) / "texts.parquet").get("data_sha256", "")
        target, layers_dir = paths.text_embeddings(ds, model, lang), paths.text_layers(ds, model, lang)
        streams = {MAIN: Stream(target, TEXT_KEY_COLUMNS)}
        with_layers = cfg.text_layers and spec.has_text_layers
        # a word fed alone: its layer states are the word vector the model's entry names (docs/fidelity.md)
        words = spec.words_as() if profile.datasets[ds].text_unit == "word" else None
        if with_layers:
            streams[LAYERS] = Stream(layers_dir, LAYER_KEY_COLUMNS, vector="state")
        with engine.claimed_device(cfg.device, paths.scratch / "gpus") as device:
            loaded = step_model(context, spec, device, cfg.precision, paths)
            code = loaded.set_language(lang)  # e.g. NLLB-CLIP: the tokenizer's source-language token
            provenance, stable = _provenance(loaded, spec, ds, data_sha, modality="text", lang=lang,
                                             text_layers=with_layers,
                                             **({"text_language_code": code} if code else {}),
                                             **({"word_vector": words} if words else {}))
            if stored_partition(context, provenance, *(s.target for s in streams.values())):
                return _kept(context, target, provenance)
            run = engine.EngineRun()
            with ResumablePartition(streams, paths.scratch, provenance, stable, part_rows=cfg.part_rows,
                                    salvage=not forced(context)) as part:
                pending = [i for i, tid in enumerate(cols["text_id"]) if tid not in part.done_keys]
                progress = step_progress(context, f"{ds} texts ({lang}), {model}", len(cols["text_id"]),
                                         cfg.progress_every_s, done_before=len(cols["text_id"]) - len(pending))
                for rows, emb, layers in engine.embed_texts(loaded, cols["text"], engine_settings(cfg), pending,
                                                            with_layers, progress, run, words):
                    part.write(rows, _text_batch(cols, rows, emb, layers))
                n = part.finalize()
        if not with_layers and layers_dir.exists():
            shutil.rmtree(layers_dir)  # states of an earlier run would not match these embeddings
        conescope.warehouse.refresh_views(paths.root, [ds])
        return dg.MaterializeResult(metadata={**_metadata(run, n, part.resumed_rows, "texts", target),
                                              "text_layers": with_layers},
                                    data_version=dg.DataVersion(provenance["fingerprint"]))

    return _asset


def embedding_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    out = []
    for ds, spec in profile.datasets.items():
        if spec.has_images and parts.image_model is not None:
            out.append(_image_asset(ds, profile, parts))
        if profile.dataset_languages(ds):
            out.append(_text_asset(ds, profile, parts))
    return out
