"""Contrastive training of a CLIP model on the image-caption pairs of a profile dataset: the weights of a
model of kind ``open_clip_trained`` (``conescope/model_kinds/open_clip_trained.py``), so that the demo has
a model that works without any downloaded weights.

The loss is open_clip's own ``ClipLoss`` (``open_clip/loss.py``), the symmetric InfoNCE loss of CLIP
(Radford et al. 2021, Figure 3): for a batch of B pairs with L2-normalized image rows x_i and text rows
y_j and logit scale s = 1/T,

    L = (CE(s X Y^T, I) + CE(s Y X^T, I)) / 2

with CE the mean cross-entropy of each row against its own pair (the diagonal). The optimizer and its
settings are those of open_clip's training script (``open_clip_train/main.py``): AdamW with betas (0.9,
0.98) and eps 1e-6, weight decay on the weight matrices only (no decay on gains, biases, layer norms,
the logit scale, or any parameter with fewer than 2 dimensions), the learning rate per step from
``open_clip_train/scheduler.py`` (``cosine_lr``: linear warmup then cosine decay to 0; ``const_lr``:
linear warmup then constant), and the learned logit scale clamped to [0, ln 100] after each step
(``open_clip_train/train.py``). The temperature starts at ``init_temperature`` (CLIP's 0.07) and is
learned, or held fixed (``learn_temperature: false``: Liang et al. 2022, section 4 and Figure 3, train
at fixed temperatures to show how the modality gap depends on it; ``configs/liang.yaml``).

Determinism: the model starts from the random initialisation of its entry's ``seed`` (the same tower a
``kind: open_clip`` entry with that seed embeds); the batches come from ``numpy.random.default_rng(seed)``
of the training settings: each epoch a permutation of the training images, cut into batches of
``batch_size`` (a remainder smaller than a batch is left out of that epoch), and for each image one of its captions in
the training languages, drawn uniformly (so no image appears twice in a batch, where it would be its own
negative). Images are decoded and preprocessed once (the embedding's preprocessing, no augmentation),
texts tokenized once. On the CPU, torch's deterministic algorithms are enforced during training: the same
settings give bit-identical weights on the same machine (``tests/test_training.py``). On CUDA the
non-deterministic kernels only warn.

Precision follows the embedding engine's policy (``conescope.models.resolve_precision``): where bf16 is
native (and ``embedding.precision`` allows it) the forward and backward passes run under
``torch.autocast`` in bfloat16, while the weights the optimizer updates, its state and the stored
checkpoint stay float32 (mixed precision as in open_clip's ``--precision amp_bf16``); fp16 and fp32 run in
float32 (fp16 training needs loss scaling, which a small model does not need).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StrictFloat, model_validator

from conescope.profile_schema import Flag, Lang, Positive, Section, Text, at_least, problem, record

SCHEDULES = ("cosine", "constant")
CLIP_BETAS = (0.9, 0.98)  # open_clip_train/params.py: the defaults for ViT towers
CLIP_EPS = 1e-6
MAX_LOGIT_SCALE = math.log(100)  # open_clip_train/train.py clamps the learned logit scale to [0, ln 100]
NonNegative = Annotated[StrictFloat, Field(ge=0)]


@record
class TrainSettings(Section):
    """The ``train`` section of a trained model's entry, its defaults sized for a small architecture
    (``conescope-tiny``) on a few hundred captioned images; ``seed`` and ``languages`` default to the
    profile's (filled in when the profile is read, ``conescope.profile``), so the stored settings are
    complete."""

    dataset: Text  # a profile dataset with images and captions; its train split is trained on
    steps: at_least(1) = 500
    batch_size: at_least(2) = 32
    lr: Positive = 1e-3
    schedule: Literal[SCHEDULES] = "cosine"
    warmup_steps: at_least(0) = 50
    weight_decay: NonNegative = 0.2  # open_clip's default, on the weight matrices only
    init_temperature: Positive = 0.07  # CLIP's initial temperature (logit scale 1/0.07)
    learn_temperature: Flag = True
    seed: at_least(0) | None = None  # None: the profile's seed
    languages: tuple[Lang, ...] | None = None  # None: every profile language the dataset has texts in

    @model_validator(mode="after")
    def _consistent(self) -> TrainSettings:
        if self.warmup_steps and self.warmup_steps >= self.steps:
            raise problem(f"must be below steps ({self.steps}), got {self.warmup_steps}", "warmup_steps")
        if self.languages is not None and not self.languages:
            raise problem("expected a non-empty list, got []", "languages")
        if self.languages is not None and len(set(self.languages)) != len(self.languages):
            raise problem(f"duplicate language in {list(self.languages)}", "languages")
        return self


@dataclass(frozen=True)
class TrainingPairs:
    """The training images of a dataset (encoded bytes, or the file of an image ingested by reference)
    and, for each, its captions in the training languages, in manifest order."""

    dataset: str
    sample_ids: list[str]
    images: list[Any]
    captions: list[list[str]]

    @property
    def n_captions(self) -> int:
        return sum(map(len, self.captions))


def training_pairs(dataset: str, samples, texts, languages: Sequence[str]) -> TrainingPairs:
    """The pairs of the ``train`` split of a manifest (pyarrow tables ``samples`` and ``texts``,
    ``conescope.datasets``): every training image that has a caption (a text with its ``sample_id``) in
    one of ``languages``. Class prompts (no ``sample_id``) are not captions."""
    wanted = set(languages)
    captions: dict[str, list[str]] = {}
    for sid, lang, text in zip(texts.column("sample_id").to_pylist(), texts.column("lang").to_pylist(),
                               texts.column("text").to_pylist(), strict=True):
        if sid is not None and lang in wanted and text:
            captions.setdefault(sid, []).append(text)
    paths = samples.column("image_path").to_pylist() if "image_path" in samples.column_names \
        else [None] * samples.num_rows
    ids, images, caps = [], [], []
    for sid, split, image, path in zip(samples.column("sample_id").to_pylist(), samples.column("split").to_pylist(),
                                       samples.column("image").to_pylist(), paths, strict=True):
        if split == "train" and sid in captions and (image is not None or path is not None):
            ids.append(sid)
            images.append(image if image is not None else path)
            caps.append(captions[sid])
    if not ids:
        raise ValueError(f"dataset {dataset!r} has no training image with a caption in {', '.join(languages)} "
                         f"(class prompts are not captions); train on a captioned dataset such as kind: shapes")
    return TrainingPairs(dataset, ids, images, caps)


@dataclass
class TrainResult:
    """The trained weights (float32, on the CPU) and how training went, step by step."""

    state: dict[str, Any]
    losses: list[float]  # the batch loss before each step's update
    logit_scales: list[float]  # exp(logit_scale) used in each step
    lrs: list[float]
    wall_s: float
    n_images: int
    n_captions: int
    device: str
    precision: str  # bf16: autocast with float32 weights; fp32
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return len(self.losses) / self.wall_s if self.wall_s > 0 else float("inf")


@contextlib.contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Torch's deterministic algorithms while the block runs (an error for an op that has none on the
    CPU, a warning on CUDA), then the process's setting as it was."""
    import torch

    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=not device.startswith("cpu"))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _no_decay(name: str, param) -> bool:
    """open_clip_train/main.py's ``exclude``: gains, biases, norms and the logit scale take no weight decay."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def train_clip(model, preprocess: Callable, tokenizer: Callable, pairs: TrainingPairs, settings: TrainSettings,
               device: str = "cpu", precision: str = "fp32", log: Callable[[str], None] | None = None) -> TrainResult:
    """Train the open_clip CLIP ``model`` (built by the caller: its initialisation is the caller's) on
    ``pairs`` with ``settings`` (module docstring: loss, optimizer, schedule, batches, determinism,
    precision); returns its float32 weights and the loss curve. ``precision`` is the resolved precision
    of the engine's policy (``conescope.models.resolve_precision``); ``log`` gets about ten progress
    lines."""
    import torch
    from open_clip.loss import ClipLoss
    from open_clip_train.scheduler import const_lr, cosine_lr

    from conescope.engine import decode_image

    n, batch = len(pairs.images), settings.batch_size
    if n < batch:
        raise ValueError(f"train.batch_size {batch} is more than the {n} captioned training images of "
                         f"{pairs.dataset!r}; lower it or grow the dataset")
    seed = 0 if settings.seed is None else settings.seed
    started = time.perf_counter()
    with deterministic(device):
        torch.manual_seed(seed)
        images = torch.stack([preprocess(decode_image(image)) for image in pairs.images])
        counts = np.array([len(c) for c in pairs.captions])
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        tokens = tokenizer([c for caps in pairs.captions for c in caps])
        model.to(device).float().train()
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1.0 / settings.init_temperature))
        model.logit_scale.requires_grad_(settings.learn_temperature)
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for name, p in trainable if _no_decay(name, p)], "weight_decay": 0.0},
             {"params": [p for name, p in trainable if not _no_decay(name, p)], "weight_decay": settings.weight_decay}],
            lr=settings.lr, betas=CLIP_BETAS, eps=CLIP_EPS)
        schedule = (cosine_lr if settings.schedule == "cosine" else const_lr)(
            optimizer, settings.lr, settings.warmup_steps, settings.steps)
        loss_fn = ClipLoss()
        autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) \
            if precision == "bf16" else contextlib.nullcontext()
        rng = np.random.default_rng(seed)
        order, at = rng.permutation(n), 0
        losses, scales, lrs = [], [], []
        every = max(1, settings.steps // 10)
        for step in range(settings.steps):
            if at + batch > n:  # a new epoch; the remainder smaller than a batch is left out of the last one
                order, at = rng.permutation(n), 0
            rows = order[at:at + batch]
            at += batch
            chosen = first[rows] + rng.integers(0, counts[rows])
            lrs.append(float(schedule(step)))
            with autocast:
                image_features = model.encode_image(images[torch.from_numpy(rows)].to(device), normalize=True)
                text_features = model.encode_text(tokens[torch.from_numpy(chosen)].to(device), normalize=True)
                scale = model.logit_scale.exp()
                loss = loss_fn(image_features.float(), text_features.float(), scale.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if settings.learn_temperature:
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            losses.append(float(loss.detach()))
            scales.append(float(scale.detach()))
            if log is not None and (step + 1) % every == 0:
                log(f"step {step + 1}/{settings.steps}: loss {losses[-1]:.4f}, logit scale {scales[-1]:.2f}, "
                    f"lr {lrs[-1]:.2e}")
        model.eval()
        state = {name: t.detach().float().cpu().clone() for name, t in model.state_dict().items()}
    return TrainResult(state, losses, scales, lrs, time.perf_counter() - started, n, pairs.n_captions, device,
                       "bf16" if precision == "bf16" else "fp32")

