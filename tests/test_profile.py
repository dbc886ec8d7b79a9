import copy
import re

import pytest
import yaml

from conescope.profile import ProfileError, load_profile, parse_profile
from tests.conftest import TINY_PROFILE
from tests.doc_pages import section


def test_demo_profile_is_the_default_and_matches_the_issue(monkeypatch):
    monkeypatch.delenv("CONESCOPE_PROFILE", raising=False)
    profile = load_profile()
    assert profile.name == "demo"
    assert set(profile.datasets) == {"shapes", "digits"}
    assert set(profile.models) == {"vit-b-32.random", "vit-b-32.random-nobias", "minilm", "tiny.trained"}
    assert not profile.models["minilm"].has_image_tower
    assert profile.image_models == ["vit-b-32.random", "vit-b-32.random-nobias", "tiny.trained"]
    assert profile.models["tiny.trained"].training().dataset == "shapes"
    assert profile.datasets["shapes"].classes == "colour_shape"  # 20 classes: class-disjoint needs >= 10
    assert profile.languages == ("en", "fr", "de", "ru")
    assert profile.models["vit-b-32.random-nobias"].zero_bias
    assert profile.models["vit-b-32.random"].arch == "ViT-B-32"


def test_profile_from_env_path(monkeypatch, tiny_profile_path):
    monkeypatch.setenv("CONESCOPE_PROFILE", str(tiny_profile_path))
    assert load_profile().name == "tiny"


def _broken(mutate) -> dict:
    raw = copy.deepcopy(TINY_PROFILE)
    mutate(raw)
    return raw


@pytest.mark.parametrize("mutate, key, problem", [
    (lambda r: r.pop("models"), "models", "missing required key"),
    (lambda r: r.update(extra=1), "extra", "unknown key"),
    (lambda r: r["datasets"]["shapes"].update(n="many"), "datasets.shapes.n", "expected an integer"),
    (lambda r: r["datasets"]["shapes"].update(kind="svg"), "datasets.shapes.kind", "not one of"),
    (lambda r: r["datasets"]["digits"].update(n=5000), "datasets.digits.n", "1797"),
    (lambda r: r["models"]["tiny.random"].update(arch="ViT-Q-99"), "models.tiny.random.arch", "unknown open_clip"),
    (lambda r: r["models"]["tiny.random"].update(zero_bias="yes"), "models.tiny.random.zero_bias", "true or false"),
    (lambda r: r["models"]["tiny.random"].update(pretrained="openai", zero_bias=True),
     "models.tiny.random.zero_bias", "random initialisation only"),
    (lambda r: r.update(languages=["en", "english"]), "languages[1]", "does not match"),
    (lambda r: r.update(languages=["en", "es"]), "languages", "'es'"),
    (lambda r: r.update(languages=["en", "en"]), "languages", "duplicate"),
    (lambda r: r["embedding"].update(device="tpu"), "embedding.device", "not one of"),
    (lambda r: r["embedding"].update(batch_size=0), "embedding.batch_size", ">= 1"),
    (lambda r: r.update(schedule={"cron": "every night"}), "schedule.cron", "not a valid cron"),
    (lambda r: r["models"].update({"Bad Name": r["models"]["tiny.random"]}), "models.Bad Name", "must match"),
])
def test_profile_errors_name_the_key(mutate, key, problem):
    with pytest.raises(ProfileError) as err:
        parse_profile(_broken(mutate), "configs/broken.yaml")
    message = str(err.value)
    assert message.startswith(f"configs/broken.yaml: {key}:"), message
    assert problem in message


def test_missing_profile_lists_the_available_ones():
    with pytest.raises(ProfileError, match="demo"):
        load_profile("no-such-profile")


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="bad.yaml: not valid YAML"):
        load_profile(str(path))


def test_tiny_profile_round_trips(tiny_profile_path):
    profile = load_profile(str(tiny_profile_path))
    assert profile.embedding.batch_size == 5
    assert yaml.safe_load(tiny_profile_path.read_text())["name"] == profile.name


def _tf(mutate):
    return lambda r: mutate(r["transforms"])


@pytest.mark.parametrize("mutate, key, problem", [
    (_tf(lambda t: t.update(kinds=["rotation"])), "transforms.kinds[0]", "not one of"),
    (_tf(lambda t: t.update(kinds=[])), "transforms.kinds", "non-empty list"),
    (_tf(lambda t: t.pop("k")), "transforms.k", "non-empty list"),
    (_tf(lambda t: t.update(k=[0])), "transforms.k[0]", ">= 1"),
    (_tf(lambda t: t.update(extra=1)), "transforms.extra", "unknown key"),
    (_tf(lambda t: t["gap_shift"].update(lambdas=[0.5, "one"])), "transforms.gap_shift.lambdas[1]", "a number"),
    (_tf(lambda t: t["gap_shift"].update(renormalize=["yes"])), "transforms.gap_shift.renormalize[0]", "true or false"),
    (_tf(lambda t: t["protocols"].update(in_domain=["coco"])), "transforms.protocols.in_domain[0]", "'coco' is not"),
    (_tf(lambda t: t["protocols"].update(cross_dataset=[{"fit": "shapes"}])),
     "transforms.protocols.cross_dataset[0].eval", "missing required key"),
    (_tf(lambda t: t["protocols"].update(cross_dataset=[{"fit": "shapes", "eval": "shapes"}])),
     "transforms.protocols.cross_dataset[0]", "in_domain protocol"),
    (_tf(lambda t: t["protocols"]["class_disjoint"].update(seed=-1)), "transforms.protocols.class_disjoint.seed",
     ">= 0"),
    (_tf(lambda t: t["protocols"]["class_disjoint"].update(datasets=["cifar"])),
     "transforms.protocols.class_disjoint.datasets[0]", "not one of the profile's datasets"),
])
def test_transform_section_errors_name_the_key(mutate, key, problem):
    with pytest.raises(ProfileError) as err:
        parse_profile(_broken(mutate), "configs/broken.yaml")
    message = str(err.value)
    assert message.startswith(f"configs/broken.yaml: {key}:"), message
    assert problem in message


def test_transform_section_parses_and_defaults(monkeypatch):
    monkeypatch.delenv("CONESCOPE_PROFILE", raising=False)
    demo = load_profile().transforms
    assert demo.kinds == ("identity", "centering", "whitening", "pca", "procrustes", "lstsq", "gap_shift")
    assert demo.cross_dataset == (("shapes", "digits"), ("digits", "shapes"))
    assert demo.class_disjoint == ("shapes", "digits")
    assert 0.0 in demo.gap_shift_lambdas and 1.0 in demo.gap_shift_lambdas
    raw = copy.deepcopy(TINY_PROFILE)
    raw.pop("transforms")
    assert parse_profile(raw, "x.yaml").transforms.kinds == ()  # absent section: no transforms
    raw["transforms"] = {"kinds": ["procrustes"]}
    minimal = parse_profile(raw, "x.yaml").transforms
    assert minimal.in_domain == ("shapes", "digits") and minimal.k == () and minimal.cross_dataset == ()


@pytest.mark.parametrize("mutate, key, problem", [
    (_tf(lambda t: t["gap_shift"].update(lambda_=[1])), "transforms.gap_shift.lambda_",
     "unknown key (allowed: gap_of, lambdas, renormalize)"),
    (_tf(lambda t: t["protocols"]["cross_dataset"][0].update(fits="x")), "transforms.protocols.cross_dataset[0].fits",
     "unknown key (allowed: eval, fit)"),
    (_tf(lambda t: t.update(protocols=["shapes"])), "transforms.protocols", "expected a mapping, got list"),
    (lambda r: r["embedding"].update(batch_auto=True), "embedding.batch_auto", "unknown key"),
    (lambda r: r["datasets"]["shapes"].update(name="other"), "datasets.shapes.name", "unknown key"),
    (lambda r: r["datasets"]["shapes"].update(size=3), "datasets.shapes.size",
     "unknown key (allowed: classes, image_size, kind, n, seed)"),
    (lambda r: r["datasets"].update(shapes=["shapes"]), "datasets.shapes", "expected a mapping, got list"),
    (lambda r: r["datasets"]["shapes"].pop("kind"), "datasets.shapes.kind", "missing required key"),
    (lambda r: r.update(metrics={"reference_lang": "de"}), "metrics.reference_lang",
     "'de' is not one of the profile's"),
    (lambda r: r.update(metrics={"clip_batch_size": "all"}), "metrics.clip_batch_size", "expected an integer"),
])
def test_nested_and_derived_keys_are_checked(mutate, key, problem):
    with pytest.raises(ProfileError) as err:
        parse_profile(_broken(mutate), "configs/broken.yaml")
    assert str(err.value).startswith(f"configs/broken.yaml: {key}: {problem}"), str(err.value)


def test_every_error_of_a_section_gets_its_own_line():
    raw = _broken(lambda r: r.update(metrics={"seed": "x", "folds": 1}))
    with pytest.raises(ProfileError) as err:
        parse_profile(raw, "p.yaml")
    assert str(err.value).splitlines() == ["p.yaml: metrics.seed: expected an integer, got 'x'",
                                           "p.yaml: metrics.folds: must be >= 2, got 1"]


def test_absent_sections_take_the_defaults_of_their_records():
    import dataclasses

    from conescope.profile import EmbeddingSpec, MetricSettings, ReportSettings, ReportSpec, ScheduleSpec

    raw = {k: v for k, v in copy.deepcopy(TINY_PROFILE).items() if k not in ("embedding", "report", "transforms")}
    p = parse_profile(raw, "p.yaml")
    assert (p.embedding, p.report, p.schedule, p.metrics) == (EmbeddingSpec(), ReportSpec(), ScheduleSpec(),
                                                              MetricSettings())
    # the report pages add the seed to the profile's report settings, nothing else
    assert dataclasses.asdict(ReportSettings()) == {**dataclasses.asdict(ReportSpec()), "seed": 0}
    raw["metrics"] = {"clip_batch_size": "full", "logit_scale": 100}
    m = parse_profile(raw, "p.yaml").metrics
    assert m.clip_batch_size is None and m.logit_scale == 100.0 and isinstance(m.logit_scale, float)
    assert dataclasses.replace(m, retrieval_eval_set="all").retrieval_eval_set == "all"


def test_the_readme_profile_sample_is_a_valid_profile():
    """The README's annotated profile (## Profiles) parses with every section it shows."""
    (block, *_) = re.findall(r"```yaml\n(.*?)```", section("README.md", "## Profiles"), flags=re.S)
    raw = yaml.safe_load(block)
    profile = parse_profile(raw, "README.md")
    assert set(raw) >= {"datasets", "models", "embedding", "metrics", "transforms", "cluster_training"}
    assert profile.cluster_training.datasets == ("shapes",)


def test_the_text_profile_is_the_two_experiments_in_one_run():
    """configs/text.yaml is configs/wolfe.yaml's datasets and minilm (scored with real weights in
    tests/test_words_minilm.py) with configs/mickus.yaml's data and experiment (walked in
    tests/test_isotropy_clusters.py), so what those tests check is what it runs, and the demo's random
    tower as the baseline."""
    text, wolfe, mickus, demo = (load_profile(name) for name in ("text", "wolfe", "mickus", "demo"))
    assert {k: v for k, v in text.datasets.items() if k != "shapes"} == {**wolfe.datasets, **mickus.datasets}
    # the baseline: the demo's random tower, with the image dataset an open_clip model needs
    assert text.models == {"minilm": wolfe.models["minilm"], "vit-b-32.random": demo.models["vit-b-32.random"]}
    assert text.datasets["shapes"].kind == "shapes"
    assert text.models["minilm"].model == mickus.models["minilm"].model
    assert text.cluster_training == mickus.cluster_training
    assert text.embedding == wolfe.embedding and text.metrics == wolfe.metrics
