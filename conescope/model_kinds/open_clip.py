"""Model kind ``open_clip``: CLIP-like image and text towers loaded through open_clip.

``arch`` is an open_clip architecture name (its config files, and conescope's tiny test architecture
in ``conescope/model_configs/``), ``hf-hub:<repo>`` or ``local-dir:<folder>``; ``pretrained`` a weights
tag of open_clip, or random initialisation. Random initialisation follows Tyshchuk et al. (section 4.1,
"cone at initialisation"): the model is built from its open_clip config under
``torch.manual_seed(seed)``; the ``zero_bias`` variant then sets every bias parameter of both towers
(linear, convolution and layer-norm biases) to zero. The weights are cast to the profile's precision
(``conescope.models``); the logit scale and bias are read before the cast, so the loss uses their
float32 values whatever the precision.

Layer states (Wolfe & Caliskan 2022, section 3): the input of the text transformer and the output of
each of its blocks, pooled at the token the tower itself pools (EOS for CLIP), before ``ln_final`` and
the projection. A word fed alone (a dataset whose ``text_unit`` is ``word``) gets, with ``word_vector:
last_subword`` (the default, Wolfe & Caliskan's ``extraction_id = -2``), the state of its last subword
token, the one before the end token (a causal tower's state there has read the whole word and nothing
after it); ``word_vector: pooled`` keeps the end token as for sentences. The output embedding stays the
tower's own (end token, ``ln_final``, projection) either way.

NLLB-CLIP towers (Visheratin 2023) get the NLLB-200 code of each partition's language
(``conescope.languages``).

A random tower is stated once, in the profile's terms, when it is created (``<name>: random initialisation
(seed <seed>), no pretrained weights``, at INFO on this module's logger, which the embedding steps route
to the run's log); open_clip's own ``No pretrained weights loaded ... Model initialized randomly.`` on
the root logger, which says the same in the library's terms and read as a fault, is dropped for that
creation call only (:func:`random_init_warning_dropped`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import model_validator

from conescope.languages import nllb_code, uses_nllb_codes
from conescope.model_specs import Capability, ModelInfo, ModelSpec, register_model_kind
from conescope.models import resolve_device, resolve_precision, torch_dtype
from conescope.profile_schema import Flag, Text, problem

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
LOG = logging.getLogger(__name__)


@cache
def _register_configs() -> None:
    import open_clip

    # conescope-tiny: a two-layer ViT/transformer pair for fast tests of the real code path.
    open_clip.add_model_config(CONFIG_DIR)


def _config_dirs() -> list[Path]:
    """conescope's model configs, then open_clip's (found without importing open_clip)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    return [CONFIG_DIR, *([Path(spec.origin).parent / "model_configs"] if spec and spec.origin else [])]


@cache
def known_architectures() -> frozenset[str]:
    """The architecture names ``open_clip.list_models()`` gives once conescope's configs are added:
    the stems of the model config files (open_clip's and ``model_configs/``) that hold ``embed_dim``,
    ``vision_cfg`` and ``text_cfg`` (open_clip.factory._rescan_model_configs). Read from the files,
    so that validating a profile does not import open_clip (about 3 s: torch, torchvision,
    transformers), which every process of the code location and every run would pay."""
    import json

    names = set()
    for folder in _config_dirs():
        for path in folder.glob("*.json"):
            if all(k in json.loads(path.read_text()) for k in ("embed_dim", "vision_cfg", "text_cfg")):
                names.add(path.stem)
    return frozenset(names)


def clean_tag(tag: str) -> str:
    """A pretrained tag as open_clip compares it (``open_clip.pretrained._clean_tag``)."""
    return tag.lower().replace("-", "_")


@cache
def known_pretrained() -> dict[str, frozenset[str]]:
    """The pretrained tags of every architecture, as ``open_clip.list_pretrained()`` gives them, read
    from open_clip's ``pretrained.py`` with ``ast`` (as :func:`known_architectures` reads the configs)
    so that validating a profile does not import open_clip: the ``_PRETRAINED`` mapping of architecture
    to ``dict(tag=_pcfg(...), ...)``, each tag also under ``<arch>-quickgelu`` when its entry sets
    ``quick_gelu=True``. Empty when open_clip is not installed."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        return {}
    tree = ast.parse((Path(spec.origin).parent / "pretrained.py").read_text(encoding="utf-8"))
    named = {node.targets[0].id: node.value for node in tree.body
             if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}

    def tags(value: ast.expr) -> dict[str, bool]:
        """tag -> whether its entry sets quick_gelu=True, of a ``dict(tag=_pcfg(...))`` expression."""
        value = named.get(value.id, value) if isinstance(value, ast.Name) else value
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict"):
            raise ValueError(f"open_clip pretrained.py: unexpected entry {ast.unparse(value)[:60]}")
        return {kw.arg: isinstance(kw.value, ast.Call) and any(
            k.arg == "quick_gelu" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in kw.value.keywords) for kw in value.keywords if kw.arg}

    table = named.get("_PRETRAINED")
    if not isinstance(table, ast.Dict):
        raise ValueError("open_clip pretrained.py: no _PRETRAINED mapping")
    known: dict[str, frozenset[str]] = {}
    quick: dict[str, frozenset[str]] = {}
    for key, value in zip(table.keys, table.values, strict=True):
        if not isinstance(key, ast.Constant):
            raise ValueError("open_clip pretrained.py: a _PRETRAINED key that is not a name")
        found = tags(value)
        known[key.value] = frozenset(found)
        if any(found.values()):
            quick[f"{key.value}-quickgelu"] = frozenset(t for t, q in found.items() if q)
    return {**known, **quick}


@register_model_kind
class OpenClipModel(ModelSpec):
    """Profile entry ``kind: open_clip``: image and text towers."""

    kind: Literal["open_clip"]
    arch: Text
    pretrained: Text | None = None
    zero_bias: Flag = False
    # the layer state of a word fed alone: its last subword token (Wolfe & Caliskan) or the end token
    word_vector: Literal["last_subword", "pooled"] = "last_subword"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.IMAGE_TOWER, Capability.TEXT_LAYERS})
    DESCRIBED_BY: ClassVar[tuple[str, ...]] = ("arch", "pretrained", "seed", "zero_bias")

    @model_validator(mode="after")
    def _consistent(self) -> OpenClipModel:
        if find_spec("open_clip") is None:  # found without importing it (seconds: torch, torchvision)
            raise problem("kind open_clip needs the pip package open_clip_torch (pip install open_clip_torch)",
                          "kind")
        hub = self.arch.startswith("hf-hub:")
        if not hub and not self.arch.startswith("local-dir:") and self.arch not in known_architectures():
            raise problem(f"unknown open_clip architecture {self.arch!r}", "arch")
        if hub and self.pretrained is not None:
            raise problem("an hf-hub: model brings its own weights; leave pretrained out", "pretrained")
        if self.zero_bias and (self.pretrained is not None or hub):
            raise problem("zeroing biases applies to random initialisation only", "zero_bias")
        if self.pretrained is not None and not hub and not self.arch.startswith("local-dir:"):
            self._known_tag()
        return self

    def _known_tag(self) -> None:
        """``pretrained`` is a tag open_clip knows for ``arch``, or a checkpoint file (open_clip loads
        one given as a path)."""
        tags = known_pretrained().get(self.arch, frozenset())
        if clean_tag(self.pretrained or "") in tags or Path(self.pretrained or "").is_file():
            return
        if not tags:
            raise problem(f"open_clip has no pretrained weights for {self.arch}; leave pretrained out (random "
                          f"initialisation under seed) or give a checkpoint file", "pretrained")
        raise problem(f"open_clip has no pretrained weights {self.pretrained!r} for {self.arch} (its tags: "
                      f"{', '.join(sorted(tags))})", "pretrained")

    def load(self, device: str, precision: str) -> LoadedModel:
        loaded = load_model(self.arch, self.pretrained, self.seed, self.zero_bias, device, precision)
        if random_init(self.arch, self.pretrained):
            LOG.info("%s: random initialisation (seed %d%s), no pretrained weights", self.name, self.seed,
                     ", biases zeroed" if self.zero_bias else "")
        return loaded

    def declared_dimension(self) -> tuple[int | None, str]:
        """``embed_dim`` of the open_clip config (the folder's ``open_clip_config.json`` for
        ``local-dir:``), read as JSON so that no torch import is needed; an hf-hub model's config is
        known only once it is fetched."""
        import json

        if self.arch.startswith("local-dir:"):
            path = Path(self.arch.removeprefix("local-dir:")) / "open_clip_config.json"
            if path.is_file():
                return int(json.loads(path.read_text())["model_cfg"]["embed_dim"]), f"{path.name} of the model folder"
        elif ":" not in self.arch:
            for directory in _config_dirs():
                path = directory / f"{self.arch}.json"
                if path.is_file():
                    return int(json.loads(path.read_text())["embed_dim"]), f"open_clip config {self.arch}"
        return super().declared_dimension()

    def paper_info(self) -> ModelInfo:
        return ModelInfo(self.arch, self.pretrained, self.zero_bias)

    def words_as(self) -> str:
        return self.word_vector


@dataclass
class LoadedModel:
    """An open_clip model, its preprocessing and tokenizer (``conescope.model_specs.EmbeddingModel``)."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    provenance: dict[str, str]
    precision: str = "fp32"  # the weights' dtype: fp32 | bf16 | fp16
    logits: tuple[float, float | None] | None = None  # float32 (scale, bias), read before a cast

    @property
    def dtype(self):
        return torch_dtype(self.precision)

    @property
    def logit_scale(self) -> float:
        if self.logits is not None:
            return self.logits[0]
        return float(self.model.logit_scale.exp().item())

    @property
    def logit_bias(self) -> float | None:
        if self.logits is not None:
            return self.logits[1]
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.item())

    def encode_images(self, pixels) -> np.ndarray:
        return self.model.encode_image(pixels, normalize=False).float().cpu().numpy()

    def text_encoder(self, with_layers: bool, words: str | None = None
                     ) -> Callable[[Any], tuple[np.ndarray, np.ndarray | None]]:
        """tokens -> (embeddings, pooled states of every layer or None); ``words="last_subword"``: each
        text is one word and its layer states are those of the token before the end token."""
        import torch

        model = self.model
        if with_layers:
            with capture_text_layers(model):  # fail before any work if the tower has no layers to read
                pass
        pool_type = getattr(model, "text_pool_type", "argmax")
        eos_id = getattr(model, "text_eos_id", None)
        last_subword = words == "last_subword"
        if last_subword and with_layers and pool_type not in ("argmax", "eos"):
            raise ValueError(f"{self.provenance.get('arch')}: the tower pools at its {pool_type!r} token, so it has "
                             f"no end token to read a word's last subword before; set word_vector: pooled")

        def word_states(state, tokens):
            end = tokens.argmax(dim=-1) if pool_type == "argmax" else (tokens == eos_id).int().argmax(dim=-1)
            return state[torch.arange(state.shape[0], device=state.device), end - 1]

        # Hooks are set around each forward pass, never across the engine's yields.
        def encode(tokens) -> tuple[np.ndarray, np.ndarray | None]:
            layer_ctx = capture_text_layers(model) if with_layers else contextlib.nullcontext([])
            with layer_ctx as captured:
                out = model.encode_text(tokens, normalize=False)
                if not with_layers:
                    return out.float().cpu().numpy(), None
                from open_clip.transformer import text_global_pool

                pooled = [(word_states(s, tokens) if last_subword else
                           text_global_pool(s, tokens, pool_type, eos_token_id=eos_id)).float() for s in captured]
                return out.float().cpu().numpy(), torch.stack(pooled, dim=1).cpu().numpy()

        return encode

    def set_language(self, lang: str) -> str | None:
        """NLLB-CLIP tokenizes with the NLLB-200 source-language token (``fra_Latn``)."""
        arch = self.provenance.get("arch", "")
        if not uses_nllb_codes(arch):
            return None
        code = nllb_code(lang)
        setter = getattr(self.tokenizer, "set_language", None)
        if setter is None:
            raise ValueError(f"{arch}: its tokenizer cannot be switched to {code}")
        setter(code)
        return code


@contextlib.contextmanager
def capture_text_layers(model: Any) -> Iterator[list]:
    """Record the input of an open_clip text transformer and the output of each of its blocks during
    the forward passes made inside the block (the list is appended to; clear it between passes)."""
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__}: layer-wise states need an open_clip text transformer "
                         f"with resblocks (CLIP-style towers); this model's text tower is not one")
    captured: list = []
    hooks = [model.transformer.register_forward_pre_hook(lambda _m, args, _kw=None: captured.append(args[0]))]
    hooks += [b.register_forward_hook(lambda _m, _in, out: captured.append(out)) for b in blocks]
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


def zero_biases(model: Any) -> int:
    """Set every parameter named ``*bias`` to zero; returns how many tensors were zeroed.

    ``logit_bias`` (SigLIP) is a loss parameter, not a tower bias, and is left alone.
    """
    import torch

    count = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and name != "logit_bias":
                param.zero_()
                count += 1
    return count


def where_weights_go(arch: str, pretrained: str | None) -> str:
    """Where open_clip looks for the weights of ``arch`` / ``pretrained`` and how to put them there: a
    file of a Hugging Face repository in the hub cache (open_clip tries the safetensors file first), or
    a URL's file in open_clip's own cache."""
    import os

    from huggingface_hub.constants import HF_HUB_CACHE
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
    from open_clip.pretrained import get_pretrained_cfg

    if arch.startswith("hf-hub:"):
        repo, filename = arch.removeprefix("hf-hub:"), HF_WEIGHTS_NAME
    else:
        cfg = get_pretrained_cfg(arch, pretrained or "")
        repo, filename = os.path.split(cfg.get("hf_hub", ""))
        if not repo and cfg.get("url"):
            url = cfg["url"]
            return (f"Put {url.rsplit('/', 1)[-1]} (from {url}, fetched on a machine with network access) into "
                    f"{Path('~/.cache/clip').expanduser()}")
        if not repo:
            return f"open_clip knows no download for {arch}/{pretrained}"
    files = f"{HF_SAFE_WEIGHTS_NAME} (or {filename or HF_WEIGHTS_NAME})"
    if arch.startswith("hf-hub:"):
        files += " and open_clip_config.json"
    folder = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    return (f"The weights go into the Hugging Face cache (HF_HOME, HF_HUB_CACHE) at {folder}: on a machine with "
            f"network access run `huggingface-cli download {repo} {files.split()[0]}` (the repository's {files}) "
            f"and copy that folder to the same place here")


def random_init(arch: str, pretrained: str | None) -> bool:
    """Built from its config without weights: no ``pretrained``, and an architecture name rather than
    an ``hf-hub:`` repository or a ``local-dir:`` folder, which bring their weights."""
    return pretrained is None and ":" not in arch


class _RandomInitWarning(logging.Filter):
    """Drops open_clip's ``No pretrained weights loaded for model '<arch>'. Model initialized randomly.``
    (``open_clip.factory.create_model``, ``logging.warning`` on the root logger) and nothing else."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.message = f"No pretrained weights loaded for model '{arch}'. Model initialized randomly."

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and record.levelno == logging.WARNING and record.getMessage() == self.message)


@contextlib.contextmanager
def random_init_warning_dropped(arch: str) -> Iterator[None]:
    """While a random tower of ``arch`` is created: open_clip's warning that it is random is dropped
    (the caller states it in the profile's terms); every other record, of open_clip or not, passes."""
    root, dropped = logging.getLogger(), _RandomInitWarning(arch)
    root.addFilter(dropped)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def load_model(arch: str, pretrained: str | None, seed: int, zero_bias: bool, device: str = "auto",
               precision: str = "fp32") -> LoadedModel:
    """Build an open_clip model in eval mode on ``device`` with its preprocessing and tokenizer, its
    weights at ``precision`` (``conescope.models.resolve_precision``; the module docstring)."""
    import open_clip
    import torch

    _register_configs()
    device = resolve_device(device)
    torch.manual_seed(seed)
    try:
        if arch.startswith("hf-hub:"):
            # open_clip falls back to random weights (with a log line) when an hf-hub repository's weights
            # cannot be fetched; fetching them first turns that into an error
            from open_clip.pretrained import download_pretrained_from_hf

            download_pretrained_from_hf(arch.removeprefix("hf-hub:"))
        # random by request: OpenClipModel.load states it in the profile's terms
        with random_init_warning_dropped(arch) if random_init(arch, pretrained) else contextlib.nullcontext():
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    except Exception as exc:  # open_clip raises several types for missing weights
        if pretrained is None and not arch.startswith("hf-hub:"):
            raise
        weights = arch if pretrained is None else f"{arch}/{pretrained}"
        raise RuntimeError(f"could not load weights {weights}: {type(exc).__name__}: {exc}. "
                           f"{where_weights_go(arch, pretrained)}; run with HF_HUB_OFFLINE=1.") from exc
    zeroed = zero_biases(model) if zero_bias else 0
    model.eval()
    precision = resolve_precision(precision, device)
    loaded = LoadedModel(model, preprocess, None, device, {})
    logits = (loaded.logit_scale, loaded.logit_bias)
    if precision != "fp32":
        model.to(torch_dtype(precision))
    provenance = {
        "arch": arch,
        "pretrained": pretrained or "random",
        "seed": str(seed),
        "zero_bias": str(zero_bias).lower(),
        "biases_zeroed": str(zeroed),
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "precision": precision,
        "device": device,
    }
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(arch), device, provenance, precision, logits)
