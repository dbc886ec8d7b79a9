"""The daemon of ``conescope dev`` (pipelines/daemon.py): when its backfill daemon iterates, what it
reads to decide, and that ``conescope dev`` runs it in place of Dagster's with every other daemon
of the instance unchanged."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from pipelines import daemon as daemon_module
from pipelines.daemon import PromptBackfillDaemon, backfill_state, daemons
from pipelines.dagster_private import BackfillDaemon, BulkActionStatus, PartitionBackfill, SpanMarker


@dg.asset
def leaf() -> int:
    return 1


def _backfill(instance: dg.DagsterInstance, backfill_id: str, status=BulkActionStatus.REQUESTED) -> None:
    instance.add_backfill(PartitionBackfill(backfill_id=backfill_id, status=status, from_failure=False, tags={},
                                            backfill_timestamp=time.time()))


def test_backfill_state_counts_the_ended_runs_of_backfills_in_progress_only():
    with dg.instance_for_test() as instance:
        assert backfill_state(instance) == ((), 0)
        _backfill(instance, "b1")
        _backfill(instance, "done", BulkActionStatus.COMPLETED_SUCCESS)
        assert backfill_state(instance) == ((("b1", "REQUESTED"),), 0)
        dg.materialize([leaf], instance=instance, tags={"dagster/backfill": "b1"})
        dg.materialize([leaf], instance=instance, tags={"dagster/backfill": "done"})  # not in progress
        dg.materialize([leaf], instance=instance)  # no backfill
        assert backfill_state(instance) == ((("b1", "REQUESTED"),), 1)
        instance.update_backfill(instance.get_backfill("b1").with_status(BulkActionStatus.CANCELING))
        assert backfill_state(instance) == ((("b1", "CANCELING"),), 1)


class _Clock:
    """``time.monotonic`` for the loop, advanced by the shutdown event's wait instead of sleeping."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Shutdown:
    """Set after ``polls`` waits; ``done`` is the number of polls so far."""

    def __init__(self, clock: _Clock, polls: int):
        self.clock, self.polls, self.done = clock, polls, 0

    def is_set(self) -> bool:
        return self.done >= self.polls

    def wait(self, seconds: float) -> None:
        self.clock.now += seconds
        self.done += 1


class _Context:
    instance = None


def _iterations(monkeypatch, states: list, fallback_s: float = 30.0) -> list[int]:
    """Run the loop over one scripted backfill state per poll (1 s apart); the polls it iterated at."""
    clock = _Clock()
    shutdown = _Shutdown(clock, len(states))
    calls = []

    def iteration(_context, _logger, submit_threadpool_executor=None):
        calls.append(shutdown.done)
        yield None

    monkeypatch.setattr(daemon_module, "backfill_state", lambda _instance: states[shutdown.done])
    monkeypatch.setattr(daemon_module, "execute_backfill_iteration", iteration)
    monkeypatch.setattr(daemon_module.time, "monotonic", clock.monotonic)
    with PromptBackfillDaemon({}, poll_s=1.0, fallback_period_s=fallback_s) as backfills:
        out = list(backfills.core_loop(_Context(), shutdown))
    assert out.count(SpanMarker.START_SPAN) == out.count(SpanMarker.END_SPAN) == len(calls)
    assert out.count(None) >= len(states)  # a heartbeat chance each poll
    return calls


def test_iterates_when_a_backfill_or_one_of_its_runs_changes_and_otherwise_every_30_s(monkeypatch):
    idle = ((), 0)
    one = ((("b1", "REQUESTED"),), 0)
    ran = ((("b1", "REQUESTED"),), 1)
    canceling = ((("b1", "CANCELING"),), 1)
    states = [idle] * 5 + [one] * 4 + [ran] * 3 + [canceling] * 2 + [idle] * 40
    calls = _iterations(monkeypatch, states)
    # first poll (nothing known yet), the new backfill, its run's end, the cancel, its end; then idle
    # polls only at Dagster's period
    assert calls[:5] == [0, 5, 9, 12, 14], calls
    assert calls[5:] == [44], calls


def test_without_changes_it_iterates_at_dagster_period_only(monkeypatch):
    calls = _iterations(monkeypatch, [((("b1", "REQUESTED"),), 3)] * 95, fallback_s=30.0)
    assert calls == [0, 30, 60, 90]


def test_an_error_in_an_iteration_is_reported_and_the_loop_goes_on(monkeypatch):
    clock = _Clock()
    calls = []

    def failing(_context, _logger, submit_threadpool_executor=None):
        calls.append(clock.now)
        raise RuntimeError("storage went away")
        yield  # a generator, as Dagster's

    states = iter([((), 0), ((("b1", "REQUESTED"),), 0), ((("b1", "REQUESTED"),), 0)])
    monkeypatch.setattr(daemon_module, "backfill_state", lambda _i: next(states))
    monkeypatch.setattr(daemon_module, "execute_backfill_iteration", failing)
    monkeypatch.setattr(daemon_module.time, "monotonic", clock.monotonic)
    with PromptBackfillDaemon({}, poll_s=1.0) as backfills:
        out = list(backfills.core_loop(_Context(), _Shutdown(clock, 3)))
    errors = [item for item in out if item is not None and not isinstance(item, SpanMarker)]
    assert len(calls) == 2 and len(errors) == 2
    assert "storage went away" in errors[0].message


def test_the_instance_daemons_are_dagster_s_with_the_backfill_daemon_replaced():
    with dg.instance_for_test(overrides={"run_coordinator": {
            "module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}) as instance:
        created = daemons(instance)
        types = [d.daemon_type() for d in created]
        assert types == list(instance.get_required_daemon_types())
        backfill = [d for d in created if d.daemon_type() == BackfillDaemon.daemon_type()]
        assert len(backfill) == 1 and isinstance(backfill[0], PromptBackfillDaemon)
        assert not [d for d in created if d is not backfill[0] and isinstance(d, PromptBackfillDaemon)]
        assert "QUEUED_RUN_COORDINATOR" in types
        for d in created:
            d.__exit__(None, None, None)


@pytest.mark.parametrize("argv", [[], ["serve"]])
def test_the_module_names_its_commands(argv):
    with pytest.raises(SystemExit) as exc:
        daemon_module.main(argv)
    assert "dev|run" in str(exc.value.code)


def test_the_daemons_log_what_they_request_and_launch_and_not_that_they_ticked():
    """The lines Dagster's daemons repeat every tick (PER_TICK) are dropped from their loggers; what a
    tick requests or the queue launches, logged at the same level, stays (messages as Dagster 1.13
    writes them)."""
    import logging

    daemon_module.quiet_per_tick_logs()
    daemon_module.quiet_per_tick_logs()  # once per logger, however often it is called
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    lines = {
        "AssetDaemon": {
            "Checking 26 assets/checks and 0 observable source assets for refresh_automation in "
            "pipelines.definitions in thread dagster-daemon-ASSET": False,
            "Prefetching asset records for 31 records.": False,
            "Done prefetching asset records.": False,
            "Tick produced 0 runs and 26 asset evaluations for evaluation ID 1 for refresh_automation": False,
            "Adding 26 asset evaluations for evaluation 1 for refresh_automation": False,
            "Submitting 0 runs for evaluation 3 for refresh_automation in pipelines.definitions": False,
            "Finished auto-materialization tick for refresh_automation in pipelines.definitions": False,
            "Tick produced 2 runs and 5 asset evaluations for evaluation ID 7 for refresh_automation": True,
            "Submitting 2 runs for evaluation 7 for refresh_automation in pipelines.definitions": True,
        },
        "SensorDaemon": {"Checking for new runs for sensor: my_sensor": False,
                         "No run requests returned for my_sensor, skipping": False,
                         "Launching run for my_sensor": True},
        "QueuedRunCoordinatorDaemon": {
            "2 runs are currently in progress. Maximum is 1, won't launch more.": False,
            "Priority sorting and checking tag concurrency limits for queued runs.": False,
            "Run 1234-abcd is blocked by global concurrency limits: pool gpu": False,
            "Launched 1 runs.": True},
        "MonitoringDaemon": {"Collected 2 runs for monitoring": False, "Checking run 1234-abcd": False,
                             "Freed 1 slots for run 1234-abcd with status FAILURE": True},
    }
    for name, messages in lines.items():
        logger = logging.getLogger(f"dagster.daemon.{name}")
        handler, level = Keep(), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            for message in messages:
                logger.info(message)
            logger.warning("Checking for new runs for sensor: my_sensor")  # a warning is never dropped
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        assert seen == [m for m, kept in messages.items() if kept] + ["Checking for new runs for sensor: my_sensor"]
        seen.clear()
