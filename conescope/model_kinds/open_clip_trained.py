"""Model kind ``open_clip_trained``: an open_clip CLIP whose weights the pipeline trains on a profile
dataset (``conescope.training``), for a model that works where no pretrained weights can be fetched.

The entry takes the keys of ``kind: open_clip`` that describe a random tower (``arch``: an open_clip
architecture name or a config of ``conescope/model_configs/``; ``seed``: its initialisation, the same
tower a ``kind: open_clip`` entry with that seed embeds; ``word_vector``) and a ``train`` section (the
keys of ``conescope.training.TrainSettings``). The weights are the checkpoint asset's
(``assets/training.py``), which the embedding steps pass to :meth:`OpenClipTrainedModel.load`: the tower
is built as for a random initialisation, then the trained tensors are loaded into it and cast to the
profile's precision. The logit scale and bias are read from the float32 tensors, as for any open_clip
model. Its provenance says ``pretrained: trained`` with the weights' content hash (``weights_sha256``), the
training dataset and steps, so an embedding partition's fingerprint changes with the weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import model_validator

from conescope.model_kinds.open_clip import LOG, LoadedModel, OpenClipModel, load_model
from conescope.model_specs import ModelInfo, Weights, register_model_kind
from conescope.profile_schema import problem
from conescope.training import TrainingPairs, TrainResult, TrainSettings, train_clip


@register_model_kind
class OpenClipTrainedModel(OpenClipModel):
    """Profile entry ``kind: open_clip_trained``: image and text towers trained by the pipeline."""

    kind: Literal["open_clip_trained"]
    train: TrainSettings
    DESCRIBED_BY: ClassVar[tuple[str, ...]] = ("arch", "pretrained", "seed", "trained_on", "train_steps")

    @model_validator(mode="after")
    def _trainable(self) -> OpenClipTrainedModel:
        if self.pretrained is not None:
            raise problem("a trained model starts from the random initialisation under seed; leave pretrained out",
                          "pretrained")
        if ":" in self.arch:
            raise problem("a trained model is built from an open_clip architecture name or a config of "
                          "conescope/model_configs/, not from an hf-hub: or local-dir: model", "arch")
        if self.zero_bias:
            raise problem("zero_bias applies to untrained random towers only", "zero_bias")
        return self

    def training(self) -> TrainSettings:
        return self.train

    def trained_with(self, settings: TrainSettings) -> OpenClipTrainedModel:
        return dataclasses.replace(self, train=settings)

    def train_weights(self, pairs: TrainingPairs, device: str, precision: str,
                      log: Callable[[str], None] | None = None) -> TrainResult:
        """The tower of ``seed``, float32 on ``device``, trained on ``pairs`` (``conescope.training``)."""
        start = load_model(self.arch, None, self.seed, False, device, "fp32")
        result = train_clip(start.model, start.preprocess, start.tokenizer, pairs, self.train, device, precision, log)
        result.extra.update({k: start.provenance[k] for k in ("open_clip_version", "torch_version")})
        return result

    def load(self, device: str, precision: str, weights: Weights | None = None) -> LoadedModel:
        if weights is None:
            raise ValueError(f"{self.name}: its weights are trained by the pipeline; materialize "
                             f"training/checkpoint [{self.name}] first")
        loaded = load_model(self.arch, None, self.seed, False, device, precision)
        state = weights.read()
        loaded.model.load_state_dict(state)  # copy_ casts each tensor to the weights' dtype and device
        bias = state.get("logit_bias")
        logits = (float(state["logit_scale"].float().exp()), None if bias is None else float(bias.float()))
        settings = self.train
        languages = ", ".join(settings.languages or ())
        provenance = {**loaded.provenance, "pretrained": "trained", "weights_sha256": weights.sha256,
                      "trained_on": f"{settings.dataset} ({languages})" if languages else settings.dataset,
                      "train_steps": str(settings.steps)}
        LOG.info("%s: weights trained by the pipeline (%d steps on %s, weights %s)", self.name, settings.steps,
                 settings.dataset, weights.sha256[:12])
        return dataclasses.replace(loaded, provenance=provenance, logits=logits)

    def paper_info(self) -> ModelInfo | None:
        """None: no published numbers are of a model trained here."""
        return None
