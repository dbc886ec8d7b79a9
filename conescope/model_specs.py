"""Profile entries of models, one record per model kind, picked by ``kind``.

- ``open_clip``: an architecture (an open_clip name, ``hf-hub:<repo>`` or ``local-dir:<folder>``) with
  a pretrained tag, or random initialisation with a fixed seed (optionally every bias zeroed);
- ``sentence_transformers``: a text-only model (a hub id or a folder), optionally bundled by a pip package.

Adding a model kind: a record here (in :data:`MODEL_KINDS`) and its loader in ``conescope/models.py``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from conescope.profile_schema import Flag, Section, Text, at_least, problem, record, tagged_union


@record
class ModelSpec(Section):
    """What every model entry has: its name (the profile key) and the seed of a random initialisation."""

    HIDDEN: ClassVar[frozenset[str]] = frozenset({"name"})
    name: str = ""
    seed: at_least(0) = 0
    text_only: ClassVar[bool] = False


@record
class OpenClipModel(ModelSpec):
    kind: Literal["open_clip"]
    arch: Text
    pretrained: Text | None = None
    zero_bias: Flag = False

    @model_validator(mode="after")
    def _consistent(self) -> OpenClipModel:
        hub = self.arch.startswith("hf-hub:")
        if not hub and not self.arch.startswith("local-dir:"):
            from conescope.models import known_architectures  # open_clip import is slow: only when needed

            if self.arch not in known_architectures():
                raise problem(f"unknown open_clip architecture {self.arch!r}", "arch")
        if hub and self.pretrained is not None:
            raise problem("an hf-hub: model brings its own weights; leave pretrained out", "pretrained")
        if self.zero_bias and (self.pretrained is not None or hub):
            raise problem("zeroing biases applies to random initialisation only", "zero_bias")
        return self


@record
class SentenceTransformersModel(ModelSpec):
    kind: Literal["sentence_transformers"]
    model: Text  # a hub id or a folder
    package: Text | None = None  # a pip package that bundles the weights
    text_only: ClassVar[bool] = True
    pretrained: ClassVar[None] = None
    zero_bias: ClassVar[bool] = False

    @property
    def arch(self) -> str:
        """What the loader is given (the same attribute as an open_clip architecture)."""
        return self.model


MODEL_KINDS: dict[str, type[ModelSpec]] = {"open_clip": OpenClipModel,
                                           "sentence_transformers": SentenceTransformersModel}
ModelEntry = tagged_union(MODEL_KINDS, lambda m: m.get("kind"))
