"""Every name conescope takes from Dagster's private modules (``dagster._*``, ``dagster_shared``), in one
place: the only module that imports them. Nothing else in the project (tests included) imports a
private Dagster module; ``tests/test_dagster_private.py`` checks that, and checks every name below
against the installed Dagster: it must import, and accept the parameters conescope passes it. A
Dagster upgrade that removes or changes one fails there, naming it, instead of in a running daemon.

Each entry: the name conescope uses -> (module, attribute in it or None for the module itself, the
parameters conescope passes, why no public API does). A name is imported on first use
(``from pipelines.dagster_private import X`` inside a function stays lazy), so importing this module
costs nothing.

Beyond these imports conescope relies on no private detail: ``conescope dev`` runs Dagster's own
``dagster dev`` and daemons, and reads only their output (pipelines/daemon.py).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple


class Private(NamedTuple):
    module: str
    attribute: str | None
    parameters: tuple[str, ...]
    why: str


_STALENESS = ("Dagster's own stale/missing rule as the UI shows it; no public API evaluates it "
              "(pipelines/staleness.py: the CLI's plan and the automation's StaleOrMissing)")
_LAUNCHER = "the run launcher interface (RunLauncher subclasses), not exported publicly (pipelines/launcher.py)"
_TESTS = "tests only: building the objects Dagster hands to the code under test"

PRIVATE: dict[str, Private] = {
    # pipelines/staleness.py
    "AssetGraphView": Private("dagster._core.asset_graph_view.asset_graph_view", "AssetGraphView",
                              ("temporal_context", "instance", "asset_graph"), _STALENESS),
    "CachingStaleStatusResolver": Private("dagster._core.definitions.data_version", "CachingStaleStatusResolver",
                                          ("instance", "asset_graph", "loading_context"), _STALENESS),
    "StaleStatus": Private("dagster._core.definitions.data_version", "StaleStatus", (), _STALENESS),
    "TemporalContext": Private("dagster._core.definitions.temporal_context", "TemporalContext",
                               ("effective_dt", "last_event_id"), _STALENESS),
    "get_current_datetime": Private("dagster._time", "get_current_datetime", (), _STALENESS),
    # pipelines/forkserver.py
    "cli_main": Private("dagster._cli", "main", (),
                        "the dagster command in a forked child (sys.argv set): dagster api execute_run"),
    # pipelines/instance.py
    "InstanceRef": Private("dagster._core.instance.ref", "InstanceRef", (),
                           "opening an instance from a home folder with overrides before dagster.yaml exists"),
    # pipelines/launcher.py
    "CheckRunHealthResult": Private("dagster._core.launcher.base", "CheckRunHealthResult", ("status", "msg"),
                                    _LAUNCHER),
    "LaunchRunContext": Private("dagster._core.launcher.base", "LaunchRunContext", (), _LAUNCHER),
    "WorkerStatus": Private("dagster._core.launcher.base", "WorkerStatus", (), _LAUNCHER),
    "RepositoryPythonOrigin": Private("dagster._core.origin", "RepositoryPythonOrigin", (), _LAUNCHER),
    "ExecuteRunArgs": Private("dagster._grpc.types", "ExecuteRunArgs", ("job_origin", "run_id", "instance_ref"),
                              "the argument of dagster api execute_run, which the forked child runs"),
    # tests
    "RemoteRepository": Private("dagster._core.remote_representation.external", "RemoteRepository", (), _TESTS),
    "RepositorySnap": Private("dagster._core.remote_representation.external_data", "RepositorySnap", (), _TESTS),
    "RepositoryHandle": Private("dagster._core.remote_representation.handle", "RepositoryHandle", (), _TESTS),
    "ReconstructableRepository": Private("dagster._core.definitions.reconstruct", "ReconstructableRepository", (),
                                         _TESTS),
}


def resolve(name: str) -> Any:
    """The object ``name`` of :data:`PRIVATE` stands for, imported now."""
    entry = PRIVATE[name]
    module = importlib.import_module(entry.module)
    return module if entry.attribute is None else getattr(module, entry.attribute)


def __getattr__(name: str) -> Any:
    if name not in PRIVATE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = resolve(name)
    globals()[name] = value
    return value
