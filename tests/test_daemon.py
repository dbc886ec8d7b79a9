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
    "dagster.daemon.AssetDaemon": {
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
    "dagster.daemon.SensorDaemon": {"Checking for new runs for sensor: my_sensor": False,
                     "No run requests returned for my_sensor, skipping": False,
                     "Sensor refresh_automation_images skipped: Sensor function returned an empty result": False,
                     "Launching run for my_sensor": True},
    "dagster.daemon.QueuedRunCoordinatorDaemon": {
        "2 runs are currently in progress. Maximum is 1, won't launch more.": False,
        "Priority sorting and checking tag concurrency limits for queued runs.": False,
        "Run 1234-abcd is blocked by global concurrency limits: pool gpu": False,
        "Launched 1 runs.": True},
    "dagster.daemon.MonitoringDaemon": {"Collected 2 runs for monitoring": False, "Checking run 1234-abcd": False,
                         "Freed 1 slots for run 1234-abcd with status FAILURE": True},
    "dagster.daemon.BackfillDaemon": {"Evaluating asset backfill abcdefgh": True},
    "dagster": {"__repository__ - refresh_automation - Prefetching asset records for 31 records.": False,
                "__repository__ - refresh_automation_images - Done prefetching asset records.": False,
                "__repository__ - refresh_automation - embeddings/digits_text evaluation result: 4 requested "
                "(fr|tiny.random,en|tiny.random) (0.084 seconds)": True,
                "__ASSET_JOB - 60a78339 - datasets__digits - digits: 24 samples, 20 texts": True},
}
PLAIN = "2026-12-07 17:30:00 +0000 - {logger} - {level} - {message}"
# the "colored" format Dagster's CLI uses on a terminal (coloredlogs: each field in its escape codes)
COLORED = "\x1b[32m2026-12-07 17:30:00 +0000\x1b[0m - {logger} - \x1b[34m{level}\x1b[0m - {message}"


@pytest.mark.parametrize("form", [PLAIN, COLORED])
def test_the_daemons_per_tick_lines_are_dropped_and_what_they_request_stays(form):
    for logger, messages in MESSAGES.items():
        for message, kept in messages.items():
            line = form.format(logger=logger, level="INFO", message=message) + "\n"
            assert per_tick_line(line) is not kept, line
            # at another level, a line always shows
            assert not per_tick_line(form.format(logger=logger, level="WARNING", message=message))


def test_lines_of_other_loggers_are_never_dropped():
    message = "Checking for new runs for sensor: my_sensor"
    for logger in ("dagster.code_server", "dagster.daemon", "dagster.daemon.SensorDaemonX", "dagster-webserver"):
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
