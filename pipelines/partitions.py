"""Partitions from the profile, and the mappings between them.

- ``image_model``: the models with an image tower (the profile's ``image_models``). Every asset that
  exists only for image towers (image embeddings, the image metric families) is partitioned by it, so
  a text-only model has no image partition anywhere: every partition the UI shows can materialize.
  ``None`` when the profile has no image model (those assets are then not built at all).
- ``model``: every model, for the per-model assets that exist for every model (the multilingual
  metrics and report).
- ``model_lang``: one partition per model and language. A flat static definition whose key strings are
  those of a ``model x lang`` multi-partition, ``lang|model`` (``en|vit-b-32.random``): built and parsed
  here only (:func:`model_lang_key`, :func:`model_and_lang`), kept so that run tags, stored runs and
  tests keep their keys.
- ``image_model_lang``: the ``model_lang`` keys of the models with an image tower, for the assets that
  pair images with texts (the image-text metric families, the fitted transforms and their metrics): a
  text-only model has no partition of them. ``None`` without an image model.
- ``trained_model``: the models whose weights the pipeline trains (entries with training settings,
  ``ModelSpec.training``), for their checkpoint (``training/checkpoint``): a model that comes with its
  weights has no checkpoint partition. ``None`` without a trained model. The embedding assets read it
  through ``trained_to_image_model`` and ``trained_to_model_lang``: the partitions of a trained model read
  its checkpoint, every other model's read none, so a changed training setting restales the trained
  model's embeddings (and what is downstream of them) only.

Why static, with explicit ``StaticPartitionMapping`` s (Dagster 1.13): ``MultiToSingleDimensionPartitionMapping``
requires the single-dimension side to equal the multi dimension (so image assets would need a partition
per text-only model), ``MultiPartitionMapping`` requires both sides multi, and a custom
``PartitionMapping`` subclass is not serialized to the remote asset graph that the UI and the daemon
use (only Dagster's own mappings are). ``StaticPartitionMapping`` is Dagster's own and maps between two
static definitions with any correspondence.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from conescope.profile import Profile

IMAGE_MODEL, MODEL, MODEL_LANG, IMAGE_MODEL_LANG, TRAINED_MODEL, UNPARTITIONED = (
    "image_model", "model", "model_lang", "image_model_lang", "trained_model", "unpartitioned")


@dataclass(frozen=True)
class ProfilePartitions:
    """The partitionings of one profile and the mappings between them. The mappings are Dagster's own
    ``StaticPartitionMapping``: the only builtin mapping that relates two partitionings with different
    model sets and reaches the UI and the daemon (the constraints are in the module docstring)."""

    image_model: dg.StaticPartitionsDefinition | None
    model: dg.StaticPartitionsDefinition
    model_lang: dg.StaticPartitionsDefinition
    image_model_lang: dg.StaticPartitionsDefinition | None
    # model -> its model x lang keys, in the profile's language order
    lang_keys: dict[str, list[str]]
    trained_model: dg.StaticPartitionsDefinition | None = None

    @property
    def image_to_model_lang(self) -> dg.StaticPartitionMapping:
        """image_model -> model_lang or image_model_lang: a model x lang partition reads the image
        partition of its model; a text-only model's model x lang partitions have no image parent."""
        return dg.StaticPartitionMapping({m: self.lang_keys[m] for m in self.image_model_keys})

    @property
    def same_image_key(self) -> dg.StaticPartitionMapping:
        """model_lang <-> image_model_lang, either way: a partition reads the partition of the same key; a
        text-only model's model x lang partitions have none (neither parent nor child) on the image side."""
        return dg.StaticPartitionMapping({k: k for m in self.image_model_keys for k in self.lang_keys[m]})

    @property
    def model_lang_to_model(self) -> dg.StaticPartitionMapping:
        """model_lang -> model: a per-model asset reads every language of its model."""
        return dg.StaticPartitionMapping({key: m for m, keys in self.lang_keys.items() for key in keys})

    @property
    def trained_to_image_model(self) -> dg.StaticPartitionMapping:
        """trained_model -> image_model: a trained model's image partition reads its checkpoint."""
        return dg.StaticPartitionMapping({m: m for m in self.trained_model_keys if m in self.image_model_keys})

    @property
    def trained_to_model_lang(self) -> dg.StaticPartitionMapping:
        """trained_model -> model_lang: each language of a trained model reads its checkpoint."""
        return dg.StaticPartitionMapping({m: self.lang_keys[m] for m in self.trained_model_keys})

    def name_of(self, partitions_def: dg.PartitionsDefinition | None) -> str:
        """``image_model``, ``model``, ``model_lang``, ``image_model_lang``, ``trained_model`` or
        ``unpartitioned``: the partitioning of an asset.
        By identity: with no text-only model in the profile, ``image_model`` and ``model`` hold the
        same keys (and compare equal), yet the image assets and the per-model ones stay apart."""
        if partitions_def is None:
            return UNPARTITIONED
        for name in (IMAGE_MODEL, MODEL, MODEL_LANG, IMAGE_MODEL_LANG, TRAINED_MODEL):
            if getattr(self, name) is partitions_def:
                return name
        raise ValueError(f"{partitions_def} is none of the profile's partitionings (pipelines/partitions.py)")

    @property
    def image_model_keys(self) -> list[str]:
        return self.image_model.get_partition_keys() if self.image_model is not None else []

    @property
    def trained_model_keys(self) -> list[str]:
        return self.trained_model.get_partition_keys() if self.trained_model is not None else []


def profile_partitions(profile: Profile) -> ProfilePartitions:
    image_models = profile.image_models
    trained = [m for m, spec in profile.models.items() if spec.training() is not None]
    lang_keys = {m: [model_lang_key(m, lang) for lang in profile.languages] for m in profile.models}
    return ProfilePartitions(
        image_model=dg.StaticPartitionsDefinition(image_models) if image_models else None,
        model=dg.StaticPartitionsDefinition(list(profile.models)),
        model_lang=dg.StaticPartitionsDefinition([key for keys in lang_keys.values() for key in keys]),
        image_model_lang=dg.StaticPartitionsDefinition([key for m in image_models for key in lang_keys[m]])
        if image_models else None,
        lang_keys=lang_keys,
        trained_model=dg.StaticPartitionsDefinition(trained) if trained else None)


def model_lang_key(model: str, lang: str) -> str:
    """The key string of a model x lang partition: ``lang|model`` (the order of Dagster's multi-partition
    keys, whose dimensions sort by name; kept so that earlier runs and stored tags keep their keys)."""
    return f"{lang}|{model}"


def model_and_lang(key: str) -> tuple[str, str]:
    """(model, lang) of a model x lang key string, the inverse of :func:`model_lang_key`."""
    lang, model = key.split("|")
    return model, lang


def split_key(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(model, lang) of a model x lang run."""
    return model_and_lang(context.partition_key)
