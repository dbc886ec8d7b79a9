"""Profile entries of models, the registry of model kinds, and the one interface a loaded model offers.

A model kind is one record class, defined and registered (:func:`register_model_kind`) in its own module
under ``conescope/model_kinds/``: its fields are its YAML keys (``kind: Literal["<name>"]`` first), it
says what it can do (``capabilities``), and ``load(device, precision)`` returns an
:class:`EmbeddingModel`. The engine, the assets, the checks and the reports use only that protocol,
the capabilities and the record's methods below (the output dimension its config declares, what the
reports print about it), never a kind's own fields. Adding a kind touches its module and its tests
only; ``conescope.model_kinds.model_kinds`` finds every module, and the profile picks the record by
``kind`` among the kinds registered when it is read (:func:`model_entry`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol

from pydantic import PlainValidator, TypeAdapter

from conescope.profile_schema import KindRegistry, Section, at_least, record, tagged_union

if TYPE_CHECKING:
    import numpy as np
    import torch


class Capability(StrEnum):
    """What a model kind can do beyond embedding texts (every model has a text tower: the model x lang
    partitions are every model's)."""

    IMAGE_TOWER = "image_tower"  # embeds images: the model gets image partitions and the image-text metrics
    TEXT_LAYERS = "text_layers"  # gives the pooled state of every text layer (``embedding.text_layers``)


class EmbeddingModel(Protocol):
    """A loaded model, as the embedding engine (``conescope.engine``) and the embedding assets run it."""

    device: str  # where it runs: "cpu", "cuda", "cuda:1"
    precision: str  # the weights' dtype: fp32 | bf16 | fp16 (``conescope.models``)
    provenance: dict[str, str]  # what was loaded (name, weights, library versions): stored with every row
    # image -> float tensor, run in the decoding workers; None without an image tower. Its repr is part
    # of the embeddings' provenance and resume fingerprint: it must name settings, not memory addresses
    preprocess: Callable[[Any], torch.Tensor] | None
    # list of texts -> a batch, run in the loader (worker processes on CUDA); None: the text encoder
    # takes the strings themselves (the model tokenizes inside) and texts are batched in process
    tokenizer: Callable[[list[str]], Any] | None

    @property
    def logit_scale(self) -> float | None:
        """The contrastive temperature's inverse (float32, as trained); None without an image-text head."""

    @property
    def logit_bias(self) -> float | None:
        """SigLIP's logit bias; None for a softmax (CLIP) loss or no head."""

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Raw image-tower outputs, float32 ``(n, d)``, of preprocessed images already on ``device`` in
        the weights' dtype. Called under ``torch.inference_mode``, and only when ``preprocess`` is set."""

    def text_encoder(self, with_layers: bool, words: str | None = None
                     ) -> Callable[[Any], tuple[np.ndarray, np.ndarray | None]]:
        """A function from a text batch (the tokenizer's output, a tensor moved to ``device``; or the
        strings when ``tokenizer`` is None) to the raw text-tower outputs, float32 ``(n, d)``, and with
        ``with_layers`` the ``(n, n_layers + 1, width)`` pooled state of every layer (index 0: the input
        to the first block). ``words``: None for sentences; for words fed alone, the word vector the
        model's entry names (:meth:`ModelSpec.words_as`): ``pooled`` (the layer states pooled as for a
        sentence) or ``last_subword`` (the state of the word's last subword token, before the end
        token). Called under ``torch.inference_mode``; fails at once when the tower cannot give the
        layer states asked for."""

    def set_language(self, lang: str) -> str | None:
        """Point the tokenizer at ``lang`` (ISO 639) when the tower needs it; returns the code used."""


@dataclass(frozen=True)
class ModelInfo:
    """What the paper report matches published numbers on (Tyshchuk et al. measure open_clip towers)."""

    arch: str
    pretrained: str | None
    zero_bias: bool


@dataclass(frozen=True)
class Weights:
    """Weights the pipeline trained for a model (its checkpoint asset), as its loader takes them: the
    content hash of the tensors (the checkpoint's data version, which alone identifies them: two
    ``Weights`` of one hash are equal) and a function that reads the tensors, checked against it."""

    sha256: str
    read: Callable[[], Mapping[str, torch.Tensor]] = field(compare=False, repr=False)


@record
class ModelSpec(Section):
    """What every model entry has: its name (the profile key) and the seed of a random initialisation;
    base of the kinds (registered with :func:`register_model_kind`)."""

    HIDDEN: ClassVar[frozenset[str]] = frozenset({"name"})
    name: str = ""
    seed: at_least(0) = 0
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # the provenance keys a report prints to say which model it shows (``describe``)
    DESCRIBED_BY: ClassVar[tuple[str, ...]] = ("seed",)

    @property
    def has_image_tower(self) -> bool:
        return Capability.IMAGE_TOWER in self.capabilities

    @property
    def has_text_layers(self) -> bool:
        return Capability.TEXT_LAYERS in self.capabilities

    def load(self, device: str, precision: str, weights: Weights | None = None) -> EmbeddingModel:
        """The model on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:<i>``) with its weights at
        ``precision`` (``conescope.models.resolve_precision``), in eval mode; ``weights``: the trained
        weights of a model that has :meth:`training` settings (None for every other model)."""
        raise NotImplementedError(f"model kind {type(self).__name__} defines no loader")

    # The training types are conescope.training's (TrainSettings, TrainingPairs, TrainResult), named in the
    # docstrings only: that module runs the engine, which imports this one.
    def training(self) -> Any:
        """The training settings (``conescope.training.TrainSettings``) of a model whose weights the
        pipeline trains (a checkpoint asset per such model, read by its embedding steps); None for a
        model that comes with its weights."""
        return None

    def trained_with(self, settings: Any) -> ModelSpec:
        """This entry with ``settings`` as its training settings (the profile fills in their defaults)."""
        raise NotImplementedError(f"model kind {type(self).__name__} is not trained by the pipeline")

    def train_weights(self, pairs: Any, device: str, precision: str, log: Callable[[str], None] | None = None) -> Any:
        """Train the model on ``pairs`` (``conescope.training.TrainingPairs``) with its :meth:`training`
        settings; returns a ``conescope.training.TrainResult``."""
        raise NotImplementedError(f"model kind {type(self).__name__} is not trained by the pipeline")

    def declared_dimension(self) -> tuple[int | None, str]:
        """(the output dimension the model's configuration declares, where that was read), read without
        loading the model; None when only loading it would say (the dimension check then compares the
        model's embedding files with each other)."""
        return None, "the model's other embedding files"

    def describe(self, provenance: Mapping[str, Any]) -> dict[str, Any]:
        """What a report prints to say which model it shows, from the provenance its embeddings were
        stored with."""
        return {k: provenance[k] for k in self.DESCRIBED_BY if k in provenance}

    def paper_info(self) -> ModelInfo | None:
        """The model as the published numbers name theirs; None when no published setting can match."""
        return None

    def words_as(self) -> str:
        """The layer states of a word fed alone (a dataset whose ``text_unit`` is ``word``): ``pooled``,
        as the tower pools a sentence, unless the kind's entry says otherwise (``word_vector``)."""
        return "pooled"


_KINDS = KindRegistry("model kind")


def register_model_kind(cls: type[ModelSpec]) -> type[ModelSpec]:
    """Class decorator: ``cls`` (a :class:`ModelSpec` with a ``kind`` literal), made a profile record,
    is a model kind."""
    return _KINDS.register(cls)


def registered_model_kinds() -> dict[str, type[ModelSpec]]:
    """The model kinds registered so far (``conescope.model_kinds.model_kinds`` registers them all)."""
    return _KINDS.registered()


@cache
def _adapter(kinds: tuple[tuple[str, type[ModelSpec]], ...]) -> TypeAdapter:
    return TypeAdapter(tagged_union(dict(kinds), lambda m: m.get("kind")))


def model_entry(kinds: Callable[[], dict[str, type[ModelSpec]]]) -> Any:
    """The type of a profile's model entry: the record of its ``kind`` among ``kinds()`` when the entry
    is validated, so that a kind registered after the profile module was imported counts (pydantic
    reports the errors of the nested validation at the entry's location)."""

    def validate(value: Any) -> ModelSpec:
        return _adapter(tuple(kinds().items())).validate_python(value)

    return Annotated[ModelSpec, PlainValidator(validate)]
