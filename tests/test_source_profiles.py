"""The real-data profiles load and validate; dataset entries of every source kind report bad keys by
file and key path; a profile needing a download fails at once offline, naming what to fetch."""

import copy

import dagster as dg
import pytest

from conescope.download import HttpSource, HubSource
from conescope.ingest.parallel import XM3600_LANGUAGES
from conescope.profile import ProfileError, load_profile, parse_profile
from tests.conftest import TINY_PROFILE


def test_paper_profile():
    p = load_profile("paper")
    assert set(p.datasets) == {"coco", "cifar100", "wikicaps"}
    assert {m.arch + "/" + m.pretrained for m in p.models.values()} == {
        "ViT-B-32/openai", "RN101/openai", "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"}
    coco, cifar, wiki = p.datasets["coco"], p.datasets["cifar100"], p.datasets["wikicaps"]
    assert coco.first_caption and coco.languages == ("en",) and coco.seed == 0
    assert cifar.templates == {"en": "low-resolution photo of a {}"}
    assert cifar.splits == ("train", "test")
    assert cifar.download[0].sha256 == "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
    assert wiki.languages == ("en", "fr", "de", "ru") and not wiki.has_images
    assert p.dataset_languages("coco") == ("en",) and p.dataset_languages("wikicaps") == p.languages
    assert p.metrics.logit_scale == 100 and p.metrics.clip_batch_size == 64


def test_xm3600_profile():
    p = load_profile("xm3600")
    assert len(p.languages) == 36 and set(p.languages) == set(XM3600_LANGUAGES)
    assert p.dataset_languages("xm3600") == p.languages
    assert {m.arch for m in p.models.values()} == {"xlm-roberta-base-ViT-B-32", "nllb-clip-base"}
    images = p.datasets["xm3600"].download[1]
    assert isinstance(images, HttpSource) and images.unpack_to == "images"


def test_paper_profile_builds_its_graph(tmp_path):
    from pipelines.definitions import build_definitions

    defs = build_definitions(load_profile("paper"), str(tmp_path))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"datasets/coco", "embeddings/coco_image", "embeddings/wikicaps_text"} <= keys
    assert "embeddings/wikicaps_image" not in keys  # WikiCaps is text only


def test_paper_profile_offline_fails_at_once_naming_what_to_fetch(tmp_path, monkeypatch):
    from pipelines.definitions import build_definitions
    from pipelines.refresh import failure_message

    monkeypatch.setenv("CONESCOPE_OFFLINE", "1")
    defs = build_definitions(load_profile("paper"), str(tmp_path))
    result = defs.resolve_job_def("datasets_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    assert not result.success
    messages = [failure_message(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    coco = next(m for m in messages if "'coco'" in m)
    assert "val2014.zip" in coco and str(tmp_path / "raw" / "coco") in coco and "CONESCOPE_OFFLINE" in coco
    assert any("cifar-100-python.tar.gz" in m for m in messages)
    assert not (tmp_path / "datasets" / "coco").exists()


def _with_dataset(entry, languages=("en",)):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"]["real"] = entry
    raw["languages"] = list(languages)
    return raw


@pytest.mark.parametrize("entry, key, problem", [
    ({"kind": "coco", "first_caption": "yes"}, "datasets.real.first_caption", "true or false"),
    ({"kind": "coco", "annotation": "x.json"}, "datasets.real.annotation", "unknown key"),
    ({"kind": "coco", "max_reject_fraction": 2}, "datasets.real.max_reject_fraction", "[0, 1]"),
    ({"kind": "cifar100", "format": "png"}, "datasets.real.format", "not one of"),
    ({"kind": "cifar100", "format": "parquet"}, "datasets.real.files", "needs files"),
    ({"kind": "cifar100", "class_names": "pretty"}, "datasets.real.class_names", "not one of"),
    ({"kind": "cifar100", "templates": {"en": "no slot"}}, "datasets.real.templates.en", "exactly one"),
    ({"kind": "cifar100", "templates": {"fr": "une photo de {}"}}, "datasets.real.templates",
     "translated class names"),
    ({"kind": "wikicaps"}, "datasets.real.file", "missing required key"),
    ({"kind": "xm3600", "languages": ["en", "xx"]}, "datasets.real.languages", "not in Crossmodal-3600"),
    ({"kind": "multi30k", "languages": ["ru"]}, "datasets.real.languages", "not in Multi30k"),
    ({"kind": "sweep", "image": "a.png", "kinds": ["spin"]}, "datasets.real.kinds[0]", "not one of"),
    ({"kind": "sweep", "image": "a.png", "steps": 1}, "datasets.real.steps", ">= 2"),
    ({"kind": "coco", "download": [{"url": "ftp://x", "file": "a"}]}, "datasets.real.download[0].url", "http"),
    ({"kind": "coco", "download": [{"url": "http://x", "file": "a", "sha256": "abc"}]},
     "datasets.real.download[0].sha256", "64 lowercase hex"),
    ({"kind": "coco", "download": [{"hub": "a/b"}]}, "datasets.real.download[0].file", "missing required key"),
])
def test_source_dataset_errors_name_the_key(entry, key, problem):
    with pytest.raises(ProfileError) as info:
        parse_profile(_with_dataset(entry), "configs/x.yaml")
    assert str(info.value).startswith(f"configs/x.yaml: {key}:"), str(info.value)
    assert problem in str(info.value)


def test_languages_are_per_dataset():
    # a profile language must be declared by some dataset; datasets may cover only some of them
    p = parse_profile(_with_dataset({"kind": "xm3600", "languages": ["en", "sw", "fil"]},
                                    languages=("en", "fr", "sw", "fil")), "x.yaml")
    assert p.dataset_languages("real") == ("en", "sw", "fil") and p.dataset_languages("shapes") == ("en", "fr")
    with pytest.raises(ProfileError, match=r"languages: 'ja' is in no dataset's languages"):
        parse_profile(_with_dataset({"kind": "coco"}, languages=("en", "ja")), "x.yaml")
    hub = parse_profile(_with_dataset({"kind": "coco", "download": [
        {"hub": "org/coco", "file": "a.json", "revision": "main"}]}), "x.yaml").datasets["real"].download[0]
    assert hub == HubSource("org/coco", "a.json", "main", "dataset")
