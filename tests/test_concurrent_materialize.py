"""Two ``conescope materialize`` started together on a fresh data root (docs/operations.md, "One
materialize per data root"): the second waits for the first, saying so in one line, then finds
everything done; both exit 0; Dagster's storages each hold one migration head (``alembic_version``
with one row; two made every later command fail) and a later command opens them."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PROFILE

REPO = Path(__file__).resolve().parent.parent
# The tiny profile cut to one partition (one model, one language, no transforms): the race is in the
# start of the command (creating Dagster's storage, the first runs), the rest only makes it longer.
PROFILE = {**{k: v for k, v in TINY_PROFILE.items() if k != "transforms"}, "name": "race", "languages": ["en"],
           "datasets": {"shapes": TINY_PROFILE["datasets"]["shapes"]},
           "models": {"tiny.random": TINY_PROFILE["models"]["tiny.random"]}}
WAITING = re.compile(r"^conescope materialize: waiting for the conescope materialize \(pid (\d+)\) that holds (.+)$",
                     re.M)


def _trial(folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    profile = folder / "race.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    root = folder / "data"
    env = {**os.environ, "CONESCOPE_HOME": str(root), "PYTHONPATH": str(REPO)}
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "pipelines.cli", "materialize", "--profile", str(profile)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    took = time.monotonic() - t0
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    waits = [WAITING.findall(out) for out, _ in outs]
    assert sorted(map(len, waits)) == [0, 1], [out[-1500:] for out, _ in outs]  # one waited, once
    waiter = 0 if waits[0] else 1
    holder_pid, home = waits[waiter][0]
    assert int(holder_pid) == procs[1 - waiter].pid and Path(home) == root.resolve()
    # the waiter finds the holder's work: every run but the datasets' (rebuilt always, cheap) is fresh
    lines = [line for line in outs[waiter][0].splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert lines and all("nothing stale" in line for line in lines if " datasets_job " not in line), lines
    assert not any("nothing stale" in line for line in outs[1 - waiter][0].splitlines() if " datasets_job " not in line
                   and re.match(r"\[\d+/\d+\] ", line))
    databases = sorted((root / "dagster_home").rglob("*.db"))
    assert databases
    for db in databases:
        with sqlite3.connect(db) as con:
            tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" in tables:
                assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1, db
    # a later command on the data root opens Dagster's storage (two heads made every one fail)
    check = subprocess.run([sys.executable, "-c", "import dagster as dg\nwith dg.DagsterInstance.get() as i: "
                            "print(len(i.get_runs()))"], cwd=REPO, capture_output=True, text=True,
                           env={**env, "DAGSTER_HOME": str(root / "dagster_home")}, timeout=300)
    assert check.returncode == 0 and int(check.stdout.split()[-1]) > 0, check.stderr[-2000:]
    return took


def test_two_materialize_at_once_on_a_fresh_data_root(tmp_path):
    print(f"two conescope materialize at once: {_trial(tmp_path):.0f} s")


@pytest.mark.heavy
def test_two_materialize_at_once_ten_times(tmp_path):
    took = [_trial(tmp_path / f"trial{i}") for i in range(10)]
    print(f"10 trials of two conescope materialize at once: {sum(took):.0f} s ({', '.join(f'{t:.0f}' for t in took)})")


def test_the_data_root_lock_names_its_holder_and_dies_with_it(tmp_path):
    """``materialize_lock``: a waiter is told the holder's pid; ``kill -9`` of the holder releases it."""
    import signal

    from pipelines.instance import materialize_lock
    from storage.paths import DataRoot

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pipelines.instance import "
                               "materialize_lock\nfrom storage.paths import DataRoot\nfrom pathlib import Path\n"
                               f"with materialize_lock(DataRoot(Path({str(tmp_path)!r}))):\n"
                               "    print('held', flush=True)\n    time.sleep(120)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said: list[str] = []

        def kill_when_told(line: str) -> None:
            said.append(line)
            holder.send_signal(signal.SIGKILL)  # the wait below ends when the OS releases its lock

        t0 = time.monotonic()
        with materialize_lock(DataRoot(tmp_path), log=kill_when_told):
            took = time.monotonic() - t0
        assert said == [f"conescope materialize: waiting for the conescope materialize (pid {holder.pid}) that "
                        f"holds {tmp_path}"]
        assert took < 30
    finally:
        holder.kill()
        holder.wait()
