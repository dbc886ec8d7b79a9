"""Partitions from the profile: ``model`` (static) and ``lang`` (static, ISO 639-1).

Multi-partition keys order their dimensions by name, so keys read ``lang|model`` (``en|vit-b-32.random``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dagster as dg

from conescope.profile import Profile

MODEL = "model"
LANG = "lang"


@dataclass(frozen=True)
class ProfilePartitions:
    model: dg.StaticPartitionsDefinition
    lang: dg.StaticPartitionsDefinition
    model_lang: dg.MultiPartitionsDefinition

    @property
    def same_model(self) -> dg.MultiToSingleDimensionPartitionMapping:
        """model x lang <-> model: a text partition reads the image embeddings of its model, and a
        per-model asset reads every language of its model."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)  # the mapping is beta; its behaviour is tested here
            return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL)


def profile_partitions(profile: Profile) -> ProfilePartitions:
    model = dg.StaticPartitionsDefinition(list(profile.models))
    lang = dg.StaticPartitionsDefinition(list(profile.languages))
    return ProfilePartitions(model, lang, dg.MultiPartitionsDefinition({MODEL: model, LANG: lang}))


def model_lang_key(model: str, lang: str) -> str:
    """The key string of a model x lang partition: ``lang|model`` (Dagster orders dimensions by name)."""
    return str(dg.MultiPartitionKey({MODEL: model, LANG: lang}))


def model_and_lang(key: str) -> tuple[str, str]:
    """(model, lang) of a model x lang key string, the inverse of :func:`model_lang_key`."""
    lang, model = key.split("|")
    return model, lang


def split_key(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(model, lang) of a model x lang run."""
    return model_and_lang(context.partition_key)
