"""What ``conescope dev`` prints of Dagster's daemons (pipelines/daemon.py): the lines they repeat on every
tick are dropped, what a tick requests or the queue launches stays, and so does everything else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.daemon import per_tick_line
from pipelines.supervise import run_supervised

# Messages as Dagster 1.13's daemons write them: True when conescope dev prints them.
MESSAGES = {
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
    "BackfillDaemon": {"Evaluating asset backfill abcdefgh": True},
}
PLAIN = "2026-12-07 17:30:00 +0000 - dagster.daemon.{daemon} - {level} - {message}"
# the "colored" format Dagster's CLI uses on a terminal (coloredlogs: each field in its escape codes)
COLORED = ("\x1b[32m2026-12-07 17:30:00 +0000\x1b[0m - \x1b[34mdagster.daemon.{daemon}\x1b[0m - "
           "\x1b[32m{level}\x1b[0m - {message}")


@pytest.mark.parametrize("form", [PLAIN, COLORED])
def test_the_daemons_per_tick_lines_are_dropped_and_what_they_request_stays(form):
    for daemon, messages in MESSAGES.items():
        for message, kept in messages.items():
            line = form.format(daemon=daemon, level="INFO", message=message) + "\n"
            assert per_tick_line(line) is not kept, line
            # at another level, a line always shows
            assert not per_tick_line(form.format(daemon=daemon, level="WARNING", message=message))


def test_lines_of_other_loggers_are_never_dropped():
    message = "Checking for new runs for sensor: my_sensor"
    for logger in ("dagster", "dagster.code_server", "dagster.daemon", "dagster.daemon.SensorDaemonX"):
        assert not per_tick_line(f"2026-12-07 17:30:00 +0000 - {logger} - INFO - {message}")
    assert not per_tick_line(message)  # a bare line (a run's print, a traceback)
    assert not per_tick_line("")


def test_the_supervised_output_passes_through_the_filter_in_order(tmp_path):
    """``conescope dev``'s copy of the output of ``dagster dev`` and everything under it: stdout and stderr,
    children included, line by line, less the dropped lines."""
    script = ("import subprocess, sys\n"
              "print('one', flush=True)\n"
              "print('drop me', file=sys.stderr, flush=True)\n"
              "subprocess.run([sys.executable, '-c', 'print(\"child\")'])\n"
              "print('two', flush=True)\n")
    out = tmp_path / "out.txt"
    code = ("import sys\n"
            "from pipelines.supervise import run_supervised\n"
            f"sys.exit(run_supervised([sys.executable, '-c', {script!r}], drop_line=lambda s: s.startswith('drop')))\n")
    with out.open("w") as handle:
        rc = subprocess.run([sys.executable, "-c", code], stdout=handle, timeout=60).returncode
    assert rc == 0
    assert out.read_text().splitlines() == ["one", "child", "two"]
    assert run_supervised([sys.executable, "-c", "import sys; sys.exit(3)"], drop_line=lambda s: False) == 3
