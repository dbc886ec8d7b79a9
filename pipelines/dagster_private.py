"""Every name conescope takes from Dagster's private modules (``dagster._*``, ``dagster_shared``), in one
place: the only module that imports them. Nothing else in the project (tests included) imports a
private Dagster module; ``tests/test_dagster_private.py`` checks that, and checks every name below
against the installed Dagster: it must import, and accept the parameters conescope passes it. A
Dagster upgrade that removes or changes one fails there, naming it, instead of in a running daemon.

Each entry: the name conescope uses -> (module, attribute in it or None for the module itself, the
parameters conescope passes, why no public API does). A name is imported on first use
(``from pipelines.dagster_private import X`` inside a function stays lazy), so importing this module
costs nothing.

Beyond imports, conescope relies on two private details, checked by the same test:
- ``DagsterDaemon._submit_threadpool_executor``, the pool ``BackfillDaemon.core_loop`` hands to
  ``execute_backfill_iteration`` (:func:`submit_threadpool_executor`);
- ``dagster._cli.dev.open_ipc_subprocess``, the function ``dagster dev`` starts its daemon with
  (``python -m dagster._daemon``, :data:`DAEMON_MODULE`), replaced by ``pipelines.daemon.dev``.
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
_DAEMON = ("dagster-daemon run with the prompt backfill daemon in place of Dagster's (pipelines/daemon.py); "
           "the daemon framework has no public API")
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
    # pipelines/instance.py, pipelines/daemon.py
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
    # pipelines/daemon.py
    "BulkActionsFilter": Private("dagster._core.execution.backfill", "BulkActionsFilter", ("statuses",), _DAEMON),
    "BulkActionStatus": Private("dagster._core.execution.backfill", "BulkActionStatus", (), _DAEMON),
    "FINISHED_STATUSES": Private("dagster._core.storage.dagster_run", "FINISHED_STATUSES", (), _DAEMON),
    "BACKFILL_ID_TAG": Private("dagster._core.storage.tags", "BACKFILL_ID_TAG", (), _DAEMON),
    "execute_backfill_iteration": Private("dagster._daemon.backfill", "execute_backfill_iteration",
                                          ("workspace_process_context", "logger", "submit_threadpool_executor"),
                                          _DAEMON),
    "create_daemon_of_type": Private("dagster._daemon.controller", "create_daemon_of_type",
                                     ("daemon_type", "instance"), _DAEMON),
    "daemon_controller_from_instance": Private(
        "dagster._daemon.controller", "daemon_controller_from_instance",
        ("instance", "workspace_load_target", "gen_daemons", "heartbeat_tolerance_seconds", "log_level",
         "code_server_log_level", "log_format"), _DAEMON),
    "BackfillDaemon": Private("dagster._daemon.daemon", "BackfillDaemon", ("settings",), _DAEMON),
    "DagsterDaemon": Private("dagster._daemon.daemon", "DagsterDaemon", (), _DAEMON),
    "SpanMarker": Private("dagster._daemon.daemon", "SpanMarker", (), _DAEMON),
    "DaemonErrorCapture": Private("dagster._daemon.utils", "DaemonErrorCapture", (), _DAEMON),
    "WorkspaceProcessContext": Private("dagster._core.workspace.context", "WorkspaceProcessContext",
                                       ("instance", "workspace_load_target"), _DAEMON),
    "assert_no_remaining_opts": Private("dagster._cli.utils", "assert_no_remaining_opts", (), _DAEMON),
    "get_instance_for_cli": Private("dagster._cli.utils", "get_instance_for_cli", ("instance_ref",), _DAEMON),
    "WorkspaceOpts": Private("dagster._cli.workspace.cli_target", "WorkspaceOpts", (), _DAEMON),
    "workspace_opts_to_load_target": Private("dagster._cli.workspace.cli_target", "workspace_opts_to_load_target",
                                             (), _DAEMON),
    "get_heartbeat_tolerance": Private("dagster._daemon.cli", "_get_heartbeat_tolerance", (),
                                       "dagster-daemon run's heartbeat tolerance (DAGSTER_DAEMON_HEARTBEAT_TOLERANCE)"),
    "daemon_run_command": Private("dagster._daemon.cli", "run_command", (),
                                  "dagster-daemon run's click options, which pipelines.daemon run takes as they are"),
    "capture_interrupts": Private("dagster._utils.interrupts", "capture_interrupts", (), _DAEMON),
    "setup_interrupt_handlers": Private("dagster._utils.interrupts", "setup_interrupt_handlers", (), _DAEMON),
    "interrupt_on_ipc_shutdown_message": Private("dagster_shared.ipc", "interrupt_on_ipc_shutdown_message", (),
                                                 "the shutdown pipe dagster dev hands its daemon"),
    "dagster_dev_cli": Private("dagster._cli.dev", None, (),
                               "dagster dev, its daemon started as python -m pipelines.daemon (module docstring)"),
    # tests
    "PartitionBackfill": Private("dagster._core.execution.backfill", "PartitionBackfill", (), _TESTS),
    "RemoteRepository": Private("dagster._core.remote_representation.external", "RemoteRepository", (), _TESTS),
    "RepositorySnap": Private("dagster._core.remote_representation.external_data", "RepositorySnap", (), _TESTS),
    "RepositoryHandle": Private("dagster._core.remote_representation.handle", "RepositoryHandle", (), _TESTS),
    "ReconstructableRepository": Private("dagster._core.definitions.reconstruct", "ReconstructableRepository", (),
                                         _TESTS),
    "ModuleTarget": Private("dagster._core.workspace.load_target", "ModuleTarget", (), _TESTS),
}

# What dagster dev runs as its daemon (the argv it hands open_ipc_subprocess: python -m dagster._daemon ...).
DAEMON_MODULE = "dagster._daemon"


def resolve(name: str) -> Any:
    """The object ``name`` of :data:`PRIVATE` stands for, imported now."""
    entry = PRIVATE[name]
    module = importlib.import_module(entry.module)
    return module if entry.attribute is None else getattr(module, entry.attribute)


def submit_threadpool_executor(daemon: Any) -> Any:
    """The pool a Dagster daemon submits backfill runs with (``DagsterDaemon._submit_threadpool_executor``;
    None unless ``backfills.num_submit_workers`` is set)."""
    return daemon._submit_threadpool_executor


def __getattr__(name: str) -> Any:
    if name not in PRIVATE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = resolve(name)
    globals()[name] = value
    return value
