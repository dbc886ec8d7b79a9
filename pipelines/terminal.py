"""What ``conescope materialize`` prints of its runs while they run: model notes and the progress of long
embedding steps, under the run in progress, through a Dagster logger every job carries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from conescope.engine import ProgressFigures

# Seconds between two progress lines of one step under the run in progress (conescope materialize); a
# step's first line comes once it has embedded that long, so a shorter step prints none.
PROGRESS_EVERY_S = 10.0


def progress_line(step: str, f: ProgressFigures) -> str:
    """``embeddings/digits_image [vit-b-32.random]: 1,024/1,797 rows, 210 rows/s, ETA 4 s``."""
    rate = f"{f.rate:,.0f}" if f.rate >= 10 else f"{f.rate:.1f}"
    eta = f"ETA {f.eta_s:,.0f} s" if f.eta_s is not None else "ETA unknown"
    resumed = f", {f.resumed:,} from an earlier run" if f.resumed else ""
    return f"{step}: {f.done:,}/{f.total:,} rows, {rate} rows/s, {eta}{resumed}"


class TerminalLines(logging.Handler):
    """What ``conescope materialize`` prints of its runs' logs while they run, indented under the run
    in progress (after a line naming it, printed before its first such line): the log records the
    assets mark for it (``extra`` keys in assets/keys.py), a model created, in the profile's terms
    (every one), and an embedding step's progress, at most one line per ``every_s`` seconds of the
    step (default :data:`PROGRESS_EVERY_S`; the engine itself logs at most every
    ``embedding.progress_every_s`` of the profile). It reaches the runs as a Dagster logger
    (:func:`run_loggers`, given to ``build_definitions``), which ``execute_plan`` names in each run's
    config; every other record stays in the run's event log only."""

    LOGGER = "conescope_terminal"  # its key among the loggers (a run uses those its run config names)
    # the engine spaces its lines by its own clock; one that arrives a hair early is not dropped
    SLACK = 0.95

    def __init__(self, log: Callable[[str], None] = print, every_s: float | None = None) -> None:
        super().__init__(logging.INFO)
        self.log = log
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.run("")

    def run(self, header: str) -> None:
        """The planned run now in progress."""
        self.header, self.printed_at = header, {}

    def _print(self, line: str) -> None:
        if self.header:
            self.log(f"{self.header} ...")
            self.header = ""
        self.log(f"  {line}")

    def emit(self, record: logging.LogRecord) -> None:
        from assets.keys import MODEL_NOTE_EXTRA, PROGRESS_EXTRA

        note = getattr(record, MODEL_NOTE_EXTRA, None)
        if note is not None:
            self._print(note)
            return
        progress = getattr(record, PROGRESS_EXTRA, None)
        if progress is None:
            return
        step, figures = progress
        if figures.elapsed_s - self.printed_at.get(step, 0.0) < self.every_s * self.SLACK:
            return
        self.printed_at[step] = figures.elapsed_s
        self._print(progress_line(step, figures))



def run_loggers(terminal: logging.Handler | None = None) -> dict[str, dg.LoggerDefinition]:
    """The loggers of every job: Dagster's console logger (``execute_plan`` sets its level) and
    :class:`TerminalLines`' (``terminal``; without one, the code location's, it drops what it gets),
    so that a run ``conescope materialize`` made, whose config names both, can be re-executed from the UI."""
    handler = terminal or logging.NullHandler()

    @dg.logger(description="conescope materialize: model notes and embedding progress in the terminal")
    def conescope_terminal(_init_context) -> logging.Logger:
        logger = logging.Logger("conescope.materialize", logging.INFO)
        logger.addHandler(handler)
        return logger

    return {"console": dg.colored_console_logger, TerminalLines.LOGGER: conescope_terminal}
