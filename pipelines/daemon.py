"""What ``conescope dev`` prints of Dagster's daemon: what the daemons request and launch, not that they
ticked.

``conescope dev`` runs Dagster's own ``dagster dev`` (its webserver, its daemons, its code server) and
reads their output. Dagster's daemons log at INFO both the lines they repeat on every tick or poll
whatever happens and the lines that say what a tick requested or the queue launched ("Submitting 2
runs", "Launched 1 runs.", "Creating new run for ...", "Freed 1 slots for run ..."); no level shows the
one without the other; so does the code server for each automation tick. :data:`PER_TICK` names the
repeated lines, by logger, and
:func:`per_tick_line` recognises them in the output so that ``conescope dev`` drops those alone. Plain
``dagster dev`` prints them all: the filter is the one difference between the two (docs/operations.md).
"""

from __future__ import annotations

import re

# The lines Dagster's daemons (1.13) log at INFO on every tick or poll whatever happens, by logger:
# idle, the two automation sensors alone gave 6 lines per tick each (about 4,000 an hour); with runs
# queued, the run queue repeats its limits every second.
PER_TICK: dict[str, tuple[str, ...]] = {
    # dagster/_daemon/asset_daemon.py, declarative_automation/automation_condition_evaluator.py
    "dagster.daemon.AssetDaemon": (
        r"Checking \d+ assets/checks and \d+ observable source assets? ",
        r"Prefetching asset records for \d+ records\.$",
        r"Done prefetching asset records\.$",
        r"Tick produced 0 runs and ",
        r"Adding \d+ asset evaluations for evaluation ",
        r"Submitting 0 runs for evaluation ",
        r"Finished auto-materialization tick",
    ),
    "dagster.daemon.SensorDaemon": (  # dagster/_daemon/sensor.py
        r"Checking for new runs for sensor: ",
        r"No run requests returned for .*, skipping$",
        r"Sensor \S+ skipped: Sensor function returned an empty result$",
    ),
    "dagster.daemon.QueuedRunCoordinatorDaemon": (  # dagster/_daemon/run_coordinator/queued_run_coordinator_daemon.py
        r"\d+ runs are currently in progress\. Maximum is \d+, won't launch more\.$",
        r"Priority sorting and checking tag concurrency limits for queued runs",
        r"Run \S+ is blocked by global concurrency limits: ",
    ),
    # dagster/_daemon/monitoring/run_monitoring.py, every 30 s while runs are in progress
    "dagster.daemon.MonitoringDaemon": (
        r"Collected \d+ runs for monitoring$",
        r"Checking run \S+$",
    ),
    # the automation conditions evaluated in the code server (use_user_code_server), each tick of each sensor
    "dagster": (
        r"__repository__ - \S+ - Prefetching asset records for \d+ records\.$",
        r"__repository__ - \S+ - Done prefetching asset records\.$",
    ),
}
_PATTERNS = {name: re.compile("|".join(f"(?:{p})" for p in patterns)) for name, patterns in PER_TICK.items()}
# Dagster's console log line ("colored" format): "<time> - <logger> - <LEVEL> - <message>"
_LINE = re.compile(r"^\S+ \S+ [+-]\d{4} - (?P<logger>[\w.]+) - (?P<level>[A-Z]+) - (?P<message>.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def per_tick_line(line: str) -> bool:
    """Whether ``line`` of ``dagster dev``'s output is an INFO line of :data:`PER_TICK`."""
    match = _LINE.match(_ANSI.sub("", line.rstrip("\r\n")))
    if match is None or match["level"] != "INFO" or match["logger"] not in _PATTERNS:
        return False
    return _PATTERNS[match["logger"]].match(match["message"]) is not None
