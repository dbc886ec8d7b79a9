"""Scaling out: the code location loads with each executor, their run config validates, the
embedding steps sit in the "gpu" pool and ask Kubernetes for one GPU each."""

import dagster as dg
import pytest
from dagster_k8s.job import get_user_defined_k8s_config

from pipelines.definitions import build_definitions
from pipelines.executors import executor_from_name
from pipelines.instance import ensure_gpu_pool
from pipelines.jobs import IMAGE_JOB, MODEL_LANG_JOB


@pytest.mark.parametrize(("name", "executor_name", "run_config"), [
    (None, "in_process", {"execution": {"config": {"retries": {"enabled": {}}}}}),
    ("multiprocess", "multiprocess", {"execution": {"config": {"max_concurrent": 4}}}),
    ("k8s", "k8s", {"execution": {"config": {"job_namespace": "conescope", "max_concurrent": 8,
                                             "job_image": "registry.example/conescope:latest",
                                             "env_vars": ["CONESCOPE_HOME=/data", "CONESCOPE_PROFILE=paper"]}}}),
    ("default", "multi_or_in_process_executor",
     {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}),
])
def test_definitions_load_and_run_config_validates_with_each_executor(tiny_profile, data_root, name,
                                                                       executor_name, run_config):
    defs = build_definitions(tiny_profile, str(data_root), executor=executor_from_name(name))
    for job_name in (IMAGE_JOB, MODEL_LANG_JOB):
        job = defs.resolve_job_def(job_name)
        assert job.executor_def.name == executor_name
        assert dg.validate_run_config(job, run_config)["execution"]
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(defs.resolve_job_def(IMAGE_JOB), {"execution": {"config": {"max_concurrent": "x"}}})


def test_unknown_executor_is_named():
    with pytest.raises(ValueError, match="CONESCOPE_EXECUTOR='slurm'"):
        executor_from_name("slurm")


def test_embedding_steps_take_a_gpu_slot_and_one_gpu_per_pod(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root), executor=executor_from_name("k8s"))
    graph = defs.resolve_asset_graph()
    embedding_keys = [k for k in graph.get_all_asset_keys() if k.path[0] == "embeddings"]
    assert len(embedding_keys) == 4
    for key in embedding_keys:
        op = defs.resolve_assets_def(key).op
        assert op.pool == "gpu"
        k8s = get_user_defined_k8s_config(op.tags)
        assert k8s.container_config["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_gpu_pool_gets_one_slot_per_gpu_unless_set(tmp_path, monkeypatch):
    import pipelines.instance as instance_module

    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        monkeypatch.setattr(instance_module, "gpu_count", lambda: 0)
        assert ensure_gpu_pool(instance) == 1  # a CPU machine still runs one embedding step at a time
        instance.event_log_storage.set_concurrency_slots("gpu", 3)
        monkeypatch.setattr(instance_module, "gpu_count", lambda: 8)
        assert ensure_gpu_pool(instance) == 3  # the user's limit stands
    (tmp_path / "other").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "other")) as instance:
        assert ensure_gpu_pool(instance) == 8


@pytest.mark.heavy
def test_image_job_runs_with_the_multiprocess_executor(tmp_path, tiny_profile_path):
    """A real run through the Dagster CLI: each step in its own process, decoding workers inside."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.instance import ensure_dagster_home
    from storage.parquet_store import read_embeddings
    from storage.paths import DataRoot

    root = DataRoot(tmp_path / "data")
    env = {**os.environ, "CONESCOPE_PROFILE": str(tiny_profile_path), "CONESCOPE_HOME": str(root.root),
           "CONESCOPE_EXECUTOR": "multiprocess"}
    saved = os.environ.get("DAGSTER_HOME")
    env["DAGSTER_HOME"] = ensure_dagster_home(root)
    if saved is None:
        os.environ.pop("DAGSTER_HOME")
    else:
        os.environ["DAGSTER_HOME"] = saved
    dagster = str(Path(sys.executable).parent / "dagster")
    repo = Path(__file__).resolve().parent.parent
    for job, tags in (("datasets_job", {}), ("image_job", {"dagster/partition": "tiny.random"})):
        out = subprocess.run([dagster, "job", "execute", "-m", "pipelines.definitions", "-j", job,
                              "--tags", json.dumps(tags)], cwd=repo, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    for ds in ("shapes", "digits"):
        keys, emb = read_embeddings(root.image_embeddings(ds, "tiny.random"))
        assert emb.shape[0] == keys.num_rows > 0
