"""The daemon of ``conescope dev``: Dagster's own daemons, with one change: the backfill daemon acts
on a backfill as soon as one of its runs ends, instead of once every 30 s.

Dagster's backfill daemon evaluates the backfills in progress once per 30 s
(``execute_backfill_iteration_loop`` in ``dagster/_daemon/backfill.py``; the period is
``DEFAULT_DAEMON_INTERVAL_SECONDS``, not configurable in Dagster 1.13). A backfill requests a layer
of the graph only once the layer above is materialized, and "Materialize all" of the demo is five
layers deep (datasets, embeddings, model x lang, per-model summaries, final reports), so each layer
waited up to 30 s on an idle machine: 70-80 s of the demo's backfill (docs/benchmarks.md, "The daemon
routes": 362 s with Dagster's daemon, 256 s with this one, against 208 s for
``conescope materialize``). Dagster's maintainers describe the same problem and proposed a 2 s period
while backfills are in progress (dagster-io/dagster#11649, #11860; both open).

:class:`PromptBackfillDaemon` runs Dagster's own iteration (``execute_backfill_iteration``: the same
planning, run submission, cancellation and logs) whenever what it acts on changed: a backfill was
requested, canceled or changed status, or a run of a backfill in progress ended; and at the latest
every 30 s, as Dagster does. What changed is polled each second with two indexed queries (the
backfills in progress, and how many of their runs have finished). Everything else is Dagster's
``dagster-daemon run`` as it is (:func:`daemons`), and ``python -m pipelines.daemon dev`` is
Dagster's ``dagster dev`` with this daemon in place of its own (:func:`dev`); ``conescope dev``
runs that. The daemon also starts the run launcher's forkserver once the code location is loaded
(:func:`prestart_launcher`), so the first run does not wait for it.

Its log says what the daemons request and launch, not that they ticked: Dagster's daemons log both at
INFO (no level shows the one without the other), so :data:`PER_TICK` names the lines they repeat on
every tick or poll whatever happens, and :func:`quiet_per_tick_logs` drops those alone (``--log-level``
of ``conescope dev``'s ``dagster dev`` stays ``info``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import click
from dagster import DagsterInstance, RunsFilter, SupersessionWarning, deserialize_value

from pipelines.dagster_private import (
    BACKFILL_ID_TAG,
    DAEMON_MODULE,
    FINISHED_STATUSES,
    BackfillDaemon,
    BulkActionsFilter,
    BulkActionStatus,
    DaemonErrorCapture,
    DagsterDaemon,
    SpanMarker,
    create_daemon_of_type,
    execute_backfill_iteration,
    submit_threadpool_executor,
)

# Dagster's own period: what has not changed by then is evaluated anyway (a backfill waiting on
# something this daemon does not watch, such as a run launched outside it).
FALLBACK_PERIOD_S = 30.0
POLL_S = 1.0
# the statuses Dagster's execute_backfill_iteration acts on
ACTIVE_STATUSES = (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING)


# The lines Dagster's daemons (1.13) log at INFO on every tick or poll whatever happens, by daemon logger:
# idle, the two automation sensors alone gave 6 lines per tick each (about 4,000 an hour); with runs
# queued, the run queue repeats its limits every second. What a tick requests and what is launched
# ("Submitting 2 runs", "Launched 1 runs.", "Creating new run for ...", "Freed 1 slots for run ...")
# is logged at the same level, and stays.
PER_TICK: dict[str, tuple[str, ...]] = {
    "AssetDaemon": (  # dagster/_daemon/asset_daemon.py, declarative_automation/automation_condition_evaluator.py
        r"Checking \d+ assets/checks and \d+ observable source assets? ",
        r"Prefetching asset records for \d+ records\.$",
        r"Done prefetching asset records\.$",
        r"Tick produced 0 runs and ",
        r"Adding \d+ asset evaluations for evaluation ",
        r"Submitting 0 runs for evaluation ",
        r"Finished auto-materialization tick",
    ),
    "SensorDaemon": (  # dagster/_daemon/sensor.py
        r"Checking for new runs for sensor: ",
        r"No run requests returned for .*, skipping$",
    ),
    "QueuedRunCoordinatorDaemon": (  # dagster/_daemon/run_coordinator/queued_run_coordinator_daemon.py
        r"\d+ runs are currently in progress\. Maximum is \d+, won't launch more\.$",
        r"Priority sorting and checking tag concurrency limits for queued runs",
        r"Run \S+ is blocked by global concurrency limits: ",
    ),
    "MonitoringDaemon": (  # dagster/_daemon/monitoring/run_monitoring.py, every 30 s while runs are in progress
        r"Collected \d+ runs for monitoring$",
        r"Checking run \S+$",
    ),
}


class _PerTick(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.INFO or not self.pattern.match(record.getMessage())


def quiet_per_tick_logs() -> None:
    """Drop the :data:`PER_TICK` lines of this process's daemons (a filter on each daemon's logger,
    ``dagster.daemon.<name>``: Dagster's own logging configuration keeps it)."""
    for name, patterns in PER_TICK.items():
        logger = logging.getLogger(f"dagster.daemon.{name}")
        if not any(isinstance(f, _PerTick) for f in logger.filters):
            logger.addFilter(_PerTick(patterns))


def backfill_state(instance: DagsterInstance) -> tuple[tuple[tuple[str, str], ...], int]:
    """What a backfill iteration acts on: the backfills in progress (id, status) and how many of
    their runs have ended. An iteration is due when it changed."""
    backfills = instance.get_backfills(filters=BulkActionsFilter(statuses=list(ACTIVE_STATUSES)))
    ids = sorted(b.backfill_id for b in backfills)
    ended = instance.get_runs_count(RunsFilter(tags={BACKFILL_ID_TAG: ids}, statuses=FINISHED_STATUSES)) \
        if ids else 0
    return tuple(sorted((b.backfill_id, b.status.value) for b in backfills)), ended


class PromptBackfillDaemon(BackfillDaemon):
    """Dagster's backfill daemon, iterating when a backfill or one of its runs changed (see the module
    docstring). Its type and heartbeats are Dagster's ``BACKFILL``, so the UI shows it as the
    backfill daemon. Backfills are evaluated one after another in this thread (Dagster's
    ``backfills.use_threads`` pool is not used: an iteration submitted to a busy pool would be skipped
    and its trigger lost); ``backfills.num_submit_workers`` is honoured."""

    def __init__(self, settings: Mapping[str, Any], poll_s: float = POLL_S,
                 fallback_period_s: float = FALLBACK_PERIOD_S) -> None:
        super().__init__(settings={**settings, "num_workers": 0})
        self.poll_s = poll_s
        self.fallback_period_s = fallback_period_s

    def core_loop(self, workspace_process_context, shutdown_event: threading.Event) -> Iterator:
        instance = workspace_process_context.instance
        seen: object = None
        last = float("-inf")
        while not shutdown_event.is_set():
            try:
                state = backfill_state(instance)
            except Exception:  # the storage is unreachable for a moment: Dagster's period still holds
                yield DaemonErrorCapture.process_exception(
                    exc_info=sys.exc_info(), logger=self._logger, log_message="could not read the backfills")
                state = seen
            if state != seen or time.monotonic() - last >= self.fallback_period_s:
                seen, last = state, time.monotonic()
                yield SpanMarker.START_SPAN
                try:
                    yield from execute_backfill_iteration(
                        workspace_process_context, self._logger,
                        submit_threadpool_executor=submit_threadpool_executor(self))
                except Exception:
                    yield DaemonErrorCapture.process_exception(
                        exc_info=sys.exc_info(), logger=self._logger, log_message="BackfillDaemon caught an error")
                yield SpanMarker.END_SPAN
            shutdown_event.wait(self.poll_s)
            yield None


def daemons(instance: DagsterInstance) -> Sequence[DagsterDaemon]:
    """The daemons ``dagster-daemon run`` creates for this instance, with the backfill daemon replaced."""
    return [PromptBackfillDaemon(instance.get_backfill_settings())
            if daemon_type == BackfillDaemon.daemon_type() else create_daemon_of_type(daemon_type, instance)
            for daemon_type in instance.get_required_daemon_types()]


def prestart_launcher(instance: DagsterInstance, launcher: object, load_target: object) -> int:
    """Start the run launcher's forkserver for every code location of the workspace, so that the
    first run after ``conescope dev`` starts does not wait for it (``PreforkRunLauncher.prestart``);
    the number started. Another launcher: nothing. A failure is logged and left to the first run,
    which reports it in its own log."""
    prestart = getattr(launcher, "prestart", None)
    if prestart is None:
        return 0
    from pipelines.dagster_private import WorkspaceProcessContext

    started = 0
    try:
        with WorkspaceProcessContext(instance, load_target) as context:
            for location in context.create_request_context().code_locations:
                for repo in location.get_repositories().values():
                    started += bool(prestart(repo.get_python_origin()))
    except Exception as exc:
        logging.getLogger("dagster.daemon").warning("conescope: could not start the run launcher's forkserver "
                                                    "ahead of the first run: %s", exc)
    return started


def _run(code_server_log_level: str, log_level: str, log_format: str, instance_ref: str | None,
         shutdown_pipe: int | None, **workspace_options: object) -> None:
    """Dagster's ``dagster-daemon run`` (same options, same shutdown), its daemons from :func:`daemons`."""
    from pipelines.dagster_private import (
        InstanceRef,
        WorkspaceOpts,
        assert_no_remaining_opts,
        capture_interrupts,
        daemon_controller_from_instance,
        get_heartbeat_tolerance,
        get_instance_for_cli,
        interrupt_on_ipc_shutdown_message,
        setup_interrupt_handlers,
        workspace_opts_to_load_target,
    )

    workspace_opts = WorkspaceOpts.extract_from_cli_options(workspace_options)
    assert_no_remaining_opts(workspace_options)
    setup_interrupt_handlers()
    quiet_per_tick_logs()
    try:
        with ExitStack() as stack:
            if shutdown_pipe:
                stack.enter_context(interrupt_on_ipc_shutdown_message(shutdown_pipe))
            stack.enter_context(capture_interrupts())
            ref = deserialize_value(instance_ref, InstanceRef) if instance_ref else None
            instance = stack.enter_context(get_instance_for_cli(instance_ref=ref))
            load_target = workspace_opts_to_load_target(workspace_opts)
            # the launcher is made here, before the daemon threads: the instance makes it lazily, unlocked
            threading.Thread(target=prestart_launcher, args=(instance, instance.run_launcher, load_target),
                             name="conescope-prestart", daemon=True).start()
            with daemon_controller_from_instance(
                    instance, workspace_load_target=load_target, gen_daemons=daemons,
                    heartbeat_tolerance_seconds=get_heartbeat_tolerance(), log_level=log_level,
                    code_server_log_level=code_server_log_level, log_format=log_format) as controller:
                controller.check_daemon_loop()
    except KeyboardInterrupt:
        return


def _run_command() -> click.Command:
    from pipelines.dagster_private import daemon_run_command

    return click.Command("run", params=list(daemon_run_command.params), callback=_run,
                         help="Dagster's dagster-daemon run, with the backfill daemon of pipelines.daemon.")


def dev(argv: Sequence[str]) -> None:
    """Dagster's ``dagster dev`` (``argv``: its options): the webserver, the code server and the
    daemon, the daemon started as ``python -m pipelines.daemon run`` with the same arguments."""
    from pipelines.dagster_private import dagster_dev_cli as dagster_dev

    spawn = dagster_dev.open_ipc_subprocess

    def open_ipc_subprocess(parts: Sequence[str], **kwargs: Any):
        parts = list(parts)
        if parts[1:3] == ["-m", DAEMON_MODULE]:
            parts[1:3] = ["-m", "pipelines.daemon"]
        return spawn(parts, **kwargs)

    dagster_dev.open_ipc_subprocess = open_ipc_subprocess
    with warnings.catch_warnings():
        # "Use 'dg dev' instead": dg dev starts Dagster's daemon, without the changes above
        warnings.filterwarnings("ignore", message="Function `dev_command` is superseded",
                                category=SupersessionWarning)
        dagster_dev.dev_command.main(args=list(argv), prog_name="dagster dev")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dev"]:
        dev(argv[1:])
    elif argv[:1] == ["run"]:
        _run_command().main(args=argv[1:], prog_name="pipelines.daemon run")
    else:
        sys.exit("usage: python -m pipelines.daemon dev|run [Dagster's options]")


if __name__ == "__main__":
    main()
