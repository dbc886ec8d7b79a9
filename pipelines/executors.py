"""How the steps of a run are executed, chosen with ``CONESCOPE_EXECUTOR`` (docs/scaling.md, "Executors").

- ``in_process`` (unset): every step in the run's process. Runs launched by the automation sensor
  or the UI then cost one process each, which imports torch and loads each model once, instead of
  one process per step that each re-import them (seconds per step: ``python -X importtime -c
  "import pipelines.definitions"``). ``conescope materialize`` always runs in its own process.
- ``multiprocess``: one process per step on this machine (``execution.config.max_concurrent``).
- ``default``: Dagster's default (one process per step for launched runs, run config
  ``execution.config.multiprocess.max_concurrent``).
- ``k8s``: one Kubernetes job per step (dagster-k8s, the ``k8s`` extra); the embedding steps ask for
  one GPU each through their ``dagster-k8s/config`` tag (assets/embeddings.py).
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTORS = ("in_process", "multiprocess", "default", "k8s")
UNSET = "in_process"


def executor_from_name(name: str | None) -> dg.ExecutorDefinition | None:
    """The executor for ``name`` (None: :data:`UNSET`; ``default``: None, Dagster's own choice)."""
    name = name or UNSET
    if name not in EXECUTORS:
        raise ValueError(f"CONESCOPE_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise RuntimeError("CONESCOPE_EXECUTOR=k8s needs dagster-k8s: pip install -e '.[k8s]'") from exc
        return k8s_job_executor
    return None


def executor_from_env() -> dg.ExecutorDefinition | None:
    return executor_from_name(os.environ.get("CONESCOPE_EXECUTOR"))
