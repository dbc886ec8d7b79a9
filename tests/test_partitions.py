"""Every partition the graph declares can materialize: image assets are partitioned by the image
models only, the assets that pair images with texts by the image models' model x lang keys only, and
the mappings between partitionings hold in the asset graph the UI and the daemon use (the repository
snapshot, serialized and read back as a code server sends it)."""

from __future__ import annotations

import copy

import dagster as dg
import pytest
from dagster import deserialize_value, serialize_value

from conescope.profile import Profile, load_profile, parse_profile
from pipelines.dagster_private import RemoteRepository, RepositoryHandle, RepositorySnap
from pipelines.definitions import build_definitions
from pipelines.jobs import IMAGE_JOB, MODEL_LANG_JOB, SUMMARY_JOB, TRAIN_JOB
from pipelines.partitions import model_and_lang, model_lang_key
from pipelines.refresh import execute_plan, full_plan
from tests.conftest import TEXT_ONLY_MODEL, TINY_PROFILE

IMAGE_ONLY = {"embeddings/shapes_image", "embeddings/digits_image", "metrics/image_isotropy",
              "metrics/image_clusters", "metrics/linear_probe"}
# [image model x lang]: the families of image-caption pairs, the fitted transforms and their metrics
PAIRED = {"metrics/modality_gap", "metrics/clip_loss", "metrics/zero_shot", "metrics/retrieval", "metrics/transforms"}


def tiny_with_minilm() -> Profile:
    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"]["minilm"] = TEXT_ONLY_MODEL
    return parse_profile(raw, "tiny-minilm.yaml")


def text_only_profile() -> Profile:
    return parse_profile({**copy.deepcopy(TINY_PROFILE), "models": {"minilm": TEXT_ONLY_MODEL}}, "text.yaml")


@pytest.fixture(params=["demo", "tiny+minilm"])
def profile(request) -> Profile:
    return load_profile("demo") if request.param == "demo" else tiny_with_minilm()


def _models_of(keys: list[str]) -> set[str]:
    return {model_and_lang(k)[0] if "|" in k else k for k in keys}


def test_image_assets_have_partitions_of_image_models_only(profile, tmp_path):
    text_only = {m for m, spec in profile.models.items() if not spec.has_image_tower}
    assert text_only == {"minilm"} and profile.image_models
    graph = build_definitions(profile, str(tmp_path / "data")).resolve_asset_graph()
    image_only, paired = set(), set()
    for key in graph.get_all_asset_keys():
        partitions_def = graph.get(key).partitions_def
        if partitions_def is None:
            continue
        keys = partitions_def.get_partition_keys()
        if key.to_user_string() == "training/checkpoint":  # the models the pipeline trains, image models all
            assert keys == [m for m, spec in profile.models.items() if spec.training() is not None]
            assert set(keys) <= set(profile.image_models)
            continue
        if not text_only & _models_of(keys):
            if keys == profile.image_models:
                image_only.add(key.to_user_string())
            else:
                assert keys == [model_lang_key(m, lang) for m in profile.image_models
                                for lang in profile.languages], key
                paired.add(key.to_user_string())
        else:  # an asset that exists for every model has every model's partitions (or model x lang ones)
            assert keys == list(profile.models) or set(keys) == {
                model_lang_key(m, lang) for m in profile.models for lang in profile.languages}, key
    assert image_only == IMAGE_ONLY
    assert paired == PAIRED | {f"transforms/{kind}" for kind in profile.transforms.kinds}


def test_a_profile_of_text_only_models_builds_no_image_asset(tmp_path):
    defs = build_definitions(text_only_profile(), str(tmp_path / "data"))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    names = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert not names & (IMAGE_ONLY | PAIRED) and not any(n.startswith("transforms/") for n in names)
    assert "metrics/isotropy" in names and "metrics/multilingual" in names
    # no dependency on an asset that is not built (it would show as an external asset)
    assert all(graph.has(parent) for key in graph.get_all_asset_keys() for parent in graph.get(key).parent_keys)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {MODEL_LANG_JOB, SUMMARY_JOB}
    assert IMAGE_JOB not in {j.name for j in defs.resolve_all_job_defs()}


def _remote_graph(defs: dg.Definitions):
    """The asset graph as the webserver and the daemon see it: the repository snapshot serialized by
    the code server and read back (custom partition mappings do not survive this)."""
    snap = deserialize_value(serialize_value(RepositorySnap.from_def(defs.get_repository_def())), RepositorySnap)
    return RemoteRepository(snap, RepositoryHandle.for_test(repository_name=snap.name),
                            auto_materialize_use_sensors=True).asset_graph


@pytest.mark.parametrize("where", ["definitions", "remote"])
def test_partition_mappings_in_the_asset_graph(where, tmp_path):
    profile = tiny_with_minilm()
    defs = build_definitions(profile, str(tmp_path / "data"))
    graph = defs.resolve_asset_graph() if where == "definitions" else _remote_graph(defs)
    image, text = dg.AssetKey(["embeddings", "shapes_image"]), dg.AssetKey(["embeddings", "shapes_text"])
    iso, multilingual = dg.AssetKey(["metrics", "isotropy"]), dg.AssetKey(["metrics", "multilingual"])
    report, image_iso = dg.AssetKey(["reports", "partition_report"]), dg.AssetKey(["metrics", "image_isotropy"])
    clip_loss = dg.AssetKey(["metrics", "clip_loss"])

    def parents(child: dg.AssetKey, partition: str, parent: dg.AssetKey) -> set[str]:
        result = graph.get_parent_partition_keys_for_child(partition, parent, child)
        assert not result.required_but_nonexistent_partition_keys
        return set(result.partitions_subset.get_partition_keys())

    for lang in profile.languages:
        # a text-only model's model x lang partition has no image parent; an image model's has its own
        assert parents(iso, f"{lang}|minilm", image) == set()
        assert parents(report, f"{lang}|minilm", image_iso) == set()
        assert parents(report, f"{lang}|minilm", clip_loss) == set()
        assert set(graph.get_child_partition_keys_of_parent(f"{lang}|minilm", text, clip_loss)) == set()
        for model in profile.image_models:
            key = model_lang_key(model, lang)
            assert parents(iso, key, image) == {model}
            assert parents(report, key, image_iso) == {model}
            # the pairs of a partition read its image model's images and its own texts; its report reads them
            assert parents(clip_loss, key, image) == {model}
            assert parents(clip_loss, key, text) == {key}
            assert parents(report, key, clip_loss) == {key}
    for model in profile.models:  # a per-model partition reads every language of its model
        assert parents(multilingual, model, text) == {model_lang_key(model, lang) for lang in profile.languages}
    assert set(graph.get_child_partition_keys_of_parent("tiny.random", image, iso)) == {
        "en|tiny.random", "fr|tiny.random"}


def tiny_with_trained() -> Profile:
    """The tiny profile, minilm and a model the pipeline trains (``kind: open_clip_trained``)."""
    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"]["minilm"] = TEXT_ONLY_MODEL
    raw["models"]["tiny.trained"] = {"kind": "open_clip_trained", "arch": "conescope-tiny",
                                     "train": {"dataset": "shapes", "steps": 2, "batch_size": 4, "warmup_steps": 0}}
    return parse_profile(raw, "tiny-trained.yaml")


@pytest.mark.parametrize("where", ["definitions", "remote"])
def test_the_checkpoint_is_read_by_the_partitions_of_its_trained_model_only(where, tmp_path):
    """``trained_model`` holds the trained model alone; its checkpoint is a parent of that model's image
    and model x lang partitions, of no other model's (neither an untrained image model nor a text-only
    one), in the serialized snapshot too."""
    profile = tiny_with_trained()
    defs = build_definitions(profile, str(tmp_path / "data"))
    graph = defs.resolve_asset_graph() if where == "definitions" else _remote_graph(defs)
    checkpoint = dg.AssetKey(["training", "checkpoint"])
    image, text = dg.AssetKey(["embeddings", "shapes_image"]), dg.AssetKey(["embeddings", "shapes_text"])
    assert graph.get(checkpoint).partitions_def.get_partition_keys() == ["tiny.trained"]

    def parents(child: dg.AssetKey, partition: str) -> set[str]:
        result = graph.get_parent_partition_keys_for_child(partition, checkpoint, child)
        assert not result.required_but_nonexistent_partition_keys
        return set(result.partitions_subset.get_partition_keys())

    for model in profile.models:
        trained = {"tiny.trained"} if model == "tiny.trained" else set()
        if profile.models[model].has_image_tower:
            assert parents(image, model) == trained
        for lang in profile.languages:
            assert parents(text, model_lang_key(model, lang)) == trained
    assert set(graph.get_child_partition_keys_of_parent("tiny.trained", checkpoint, text)) == {
        model_lang_key("tiny.trained", lang) for lang in profile.languages}
    train_job = defs.resolve_job_def(TRAIN_JOB)
    assert train_job.asset_layer.selected_asset_keys == {checkpoint}
    assert train_job.partitions_def.get_partition_keys() == ["tiny.trained"]
    assert TRAIN_JOB not in {j.name for j in build_definitions(tiny_with_minilm(), str(tmp_path / "d2"))
                             .resolve_all_job_defs()}


@pytest.mark.parametrize("make_profile", [tiny_with_minilm, text_only_profile], ids=["tiny+minilm", "text-only"])
def test_every_partition_materializes_and_every_check_passes(make_profile, tmp_path):
    """The whole graph of the tiny profile plus a text-only model (and of a profile with the text-only
    model alone), every partition of every asset, in process as ``conescope materialize`` runs it: no
    failed step, and every asset check of every partition evaluated (the jobs run the checks of their
    assets) and passed."""
    profile = make_profile()
    defs = build_definitions(profile, str(tmp_path / "data"))
    instance = dg.DagsterInstance.ephemeral()
    assert execute_plan(defs, full_plan(profile, "all"), instance, log=lambda _: None)

    graph = defs.resolve_asset_graph()
    expected = {(key, p) for key in graph.materializable_asset_keys
                for p in (graph.get(key).partitions_def.get_partition_keys() if graph.get(key).partitions_def
                          else [None])}
    materialized, evaluations, failed_steps = set(), {}, []
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.is_step_failure:
                failed_steps.append(event.step_key)
            elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialized.add((event.asset_key, event.partition))
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                data = event.asset_check_evaluation_data
                evaluations[(data.asset_check_key, data.partition)] = data
    assert not failed_steps
    assert materialized == expected
    checks = {(check, p) for check in graph.asset_check_keys for key, p in expected if key == check.asset_key}
    assert set(evaluations) == checks
    failed = {f"{k.asset_key.to_user_string()} {k.name} [{p}]": e.description
              for (k, p), e in evaluations.items() if not e.passed}
    assert not failed
