"""training/checkpoint [trained model]: the weights of each model the pipeline trains (an entry with a
``train`` section, ``kind: open_clip_trained``), trained on the train split of its dataset
(conescope/training.py) and stored with their provenance under the data root (storage/checkpoints.py).

The data version is the content hash of the weights; the model's embedding steps read the checkpoint
(assets/embeddings.py, through the ``trained_model`` partition mappings of pipelines/partitions.py), so
new weights restale that model's embeddings and what is downstream of them, nothing else. A stored
checkpoint whose fingerprint (the entry, the dataset's content hashes, the training code, device type and
precision) matches and whose tensors still hash to what was written is kept, unless the run is tagged
``conescope/force=true``: the same settings train the same weights, so there is nothing to gain. The
step is in the "gpu" pool, like the embedding steps.
"""

import dataclasses
from datetime import UTC, datetime

import dagster as dg
import numpy as np

from assets import keys
from conescope import code_versions, engine
from conescope.models import resolve_precision
from conescope.profile import ModelSpec, Profile
from conescope.provenance import git_commit
from conescope.training import TrainResult, training_pairs
from pipelines.partitions import ProfilePartitions
from pipelines.resources import ConescopeHome
from storage.checkpoints import (
    checkpoint_dir,
    checkpoint_file,
    read_state,
    stored_provenance,
    weights_sha256,
    write_checkpoint,
)
from storage.parquet_store import read_manifest_table, read_provenance
from storage.resumable import fingerprint

CURVE_ROWS = 200  # rows of the loss-curve table in the metadata (every step up to this many)
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """The loss curve in one line of block characters: the mean of each of ``width`` runs of steps,
    scaled between the lowest and the highest."""
    chunks = [float(np.mean(c)) for c in np.array_split(np.asarray(values, dtype=float), min(width, len(values)))]
    low, high = min(chunks), max(chunks)
    span = (high - low) or 1.0
    return "".join(_BARS[round((v - low) / span * (len(_BARS) - 1))] for v in chunks)


def _curve(result: TrainResult) -> dict[str, list[float]]:
    return {"loss": [round(v, 6) for v in result.losses], "logit_scale": [round(v, 6) for v in result.logit_scales],
            "lr": [float(f"{v:.6g}") for v in result.lrs]}


def _metadata(provenance: dict, kept: bool, path) -> dict:
    """What the UI shows of a checkpoint: the loss curve (a table of at most :data:`CURVE_ROWS` steps and
    a one-line sketch), the final loss and logit scale (plotted across materializations), speed and size."""
    curve = provenance["loss_curve"]
    steps = len(curve["loss"])
    shown = sorted({int(i) for i in np.linspace(0, steps - 1, min(steps, CURVE_ROWS))})
    table = dg.MetadataValue.table(
        records=[dg.TableRecord({"step": i + 1, "loss": curve["loss"][i], "logit_scale": curve["logit_scale"][i],
                                 "lr": curve["lr"][i]}) for i in shown],
        schema=dg.TableSchema(columns=[dg.TableColumn("step", "int"), dg.TableColumn("loss", "float"),
                                       dg.TableColumn("logit_scale", "float"), dg.TableColumn("lr", "float")]))
    return {"loss_curve": table, "loss_sparkline": sparkline(curve["loss"]),
            "first_loss": curve["loss"][0], "final_loss": curve["loss"][-1],
            "final_logit_scale": curve["logit_scale"][-1], "steps": steps,
            "steps_per_s": provenance["steps_per_s"], "wall_s": provenance["wall_s"],
            "training_images": provenance["training_images"], "training_captions": provenance["training_captions"],
            "device": provenance["device"], "precision": provenance["compute_precision"],
            "weights_sha256": provenance["weights_sha256"], "kept": kept, "path": dg.MetadataValue.path(str(path))}


def note(context, line: str) -> None:
    """A line of the run's log that ``conescope materialize`` also prints under the run (how a model
    was made, as the embedding steps state a random tower)."""
    context.log.info(line, extra={keys.MODEL_NOTE_EXTRA: line})


def _stable(spec: ModelSpec, data_sha256: dict, device: str, precision: str) -> dict:
    """What the weights depend on: a stored checkpoint with the same is kept."""
    return {"model": spec.name, "entry": dataclasses.asdict(spec), "data_sha256": data_sha256,
            "code_version": code_versions.checkpoint_code(spec), "device": device.split(":")[0],
            "precision": precision}


def checkpoint_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    if parts.trained_model is None:
        return []
    datasets = sorted({profile.models[m].training().dataset for m in parts.trained_model_keys})

    @dg.asset(key=keys.CHECKPOINT, deps=[keys.dataset(ds) for ds in datasets], partitions_def=parts.trained_model,
              code_version=code_versions.checkpoint(profile), group_name="training", pool=keys.GPU_POOL,
              op_tags=keys.GPU_STEP_TAGS, kinds={"pytorch", "safetensors"},
              description="The weights of each model the pipeline trains (CLIP loss on its dataset's train split), "
                          "with their provenance and loss curve")
    def checkpoint(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        spec, cfg, paths = profile.models[context.partition_key], profile.embedding, conescope.paths
        settings = spec.training()
        folder = paths.dataset_dir(settings.dataset)
        data_sha = {name: read_provenance(folder / f"{name}.parquet").get("data_sha256", "")
                    for name in ("samples", "texts")}
        with engine.claimed_device(cfg.device, paths.scratch / "gpus") as device:
            precision = resolve_precision(cfg.precision, device)
            stable = _stable(spec, data_sha, device, precision)
            key = fingerprint(stable)
            stored = stored_provenance(paths, spec.name)
            if stored is not None and stored.get("fingerprint") == key and \
                    context.run.tags.get(keys.FORCE_TAG) != "true":
                try:
                    read_state(checkpoint_file(paths, spec.name), stored["weights_sha256"])
                except ValueError as exc:
                    context.log.warning(f"{exc}; training again")
                else:
                    context.log.info(f"{spec.name}: checkpoint with the same fingerprint ({key}) kept; tag the run "
                                     f"{keys.FORCE_TAG}=true to train again")
                    return dg.MaterializeResult(metadata=_metadata(stored, True, checkpoint_dir(paths, spec.name)),
                                                data_version=dg.DataVersion(stored["weights_sha256"]))
            pairs = training_pairs(settings.dataset, read_manifest_table(folder, "samples"),
                                   read_manifest_table(folder, "texts"), settings.languages)
            note(context, f"{spec.name}: training {settings.steps} steps of {settings.batch_size} pairs on "
                          f"{len(pairs.images)} images of {settings.dataset} ({pairs.n_captions} captions), "
                          f"{device}, {precision}")
            result = spec.train_weights(pairs, device, precision, log=context.log.info)
        sha = weights_sha256(result.state)
        provenance = {**stable, "fingerprint": key, "weights_sha256": sha, "train": dataclasses.asdict(settings),
                      "training_images": result.n_images,
                      "training_captions": result.n_captions, "wall_s": round(result.wall_s, 3),
                      "steps_per_s": round(result.steps_per_s, 3), "compute_precision": result.precision,
                      "device": result.device, "loss_curve": _curve(result), **result.extra,
                      "git_commit": git_commit(), "created_at": datetime.now(UTC).isoformat()}
        file = write_checkpoint(paths, spec.name, result.state, provenance)
        note(context, f"{spec.name}: trained, loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f} in "
                      f"{result.wall_s:.1f} s ({result.steps_per_s:.1f} steps/s)")
        return dg.MaterializeResult(metadata=_metadata(provenance, False, file.parent),
                                    data_version=dg.DataVersion(sha))

    return [checkpoint]
