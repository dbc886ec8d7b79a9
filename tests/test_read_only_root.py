"""A data root that cannot be written (a read-only mount, no permission): ``conescope materialize`` and
``conescope dev`` stop at once with one line naming the folder and that it is read-only, where Dagster's
SQLite storage used to fail with "unable to open database file" and no path; ``conescope sql`` reads a
DuckDB warehouse there, and says why a DuckLake SQLite catalog there cannot be read.

The mount is real where this process may mount (root with CAP_SYS_ADMIN: ``unshare -m`` and a read-only
bind mount, private to the child); as root, permissions alone make nothing read-only, so the
no-permission path is taken by an injected ``EACCES``."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from storage.warehouse import LakeConfig, Warehouse, metric_rows
from tests.conftest import TINY_PROFILE

REPO = Path(__file__).resolve().parent.parent


def _rows(n: int = 50):
    return metric_rows([{"dataset": "d", "model": "m", "lang": "en", "modality": "text", "metric": f"i{i}",
                         "value": 1.0, "n": 1} for i in range(n)])


def _can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount --bind -o ro {probe} {probe} && ! touch {probe}/x 2>/dev/null"],
                          capture_output=True, timeout=60)
    return done.returncode == 0


def _read_only(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """``conescope argv`` in a child that sees ``root`` mounted read-only."""
    command = " ".join(["exec", sys.executable, "-m", "pipelines.cli", *(f"'{a}'" for a in argv)])
    env = {**os.environ, "CONESCOPE_HOME": str(root), "PYTHONPATH": str(REPO)}
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount --bind -o ro {root} {root} && {command}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_read_only_mount_is_named_in_one_line(tmp_path, monkeypatch):
    if not _can_mount_read_only(tmp_path):
        pytest.skip("this process may not mount (needs root with CAP_SYS_ADMIN for unshare -m)")
    from pipelines.instance import ensure_dagster_home
    from storage.paths import DataRoot

    root = tmp_path / "data"
    Warehouse(root / "warehouse.duckdb").replace_rows("metrics.isotropy", _rows(), {"model": "m", "lang": "en"})
    Warehouse(root / "warehouse.duckdb", LakeConfig("sqlite:lake.sqlite")).replace_rows(
        "metrics.isotropy", _rows(), {"model": "m", "lang": "en"})
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test: ensure_dagster_home sets it
    ensure_dagster_home(DataRoot(root))  # a complete data root: Dagster's home is there
    lake = tmp_path / "lake.yaml"
    lake.write_text(yaml.safe_dump({**{k: v for k, v in TINY_PROFILE.items() if k != "transforms"},
                                    "warehouse": {"kind": "ducklake", "catalog": "sqlite:lake.sqlite"}}))

    done = _read_only(root, "materialize", "--profile", "tiny")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"conescope: error: {root}: read-only (the file system is mounted read-only); conescope materialize "
        f"writes the data root (datasets, embeddings, warehouse, Dagster's runs): make it writable or set "
        f"CONESCOPE_HOME to a writable copy (--debug shows the traceback)"], done.stderr
    done = _read_only(root, "sql", "SELECT count(*) AS n FROM metrics.isotropy", "--format", "csv")
    assert done.returncode == 0 and done.stdout.splitlines() == ['"n"', "50"], done.stderr
    done = _read_only(root, "sql", "SELECT count(*) AS n FROM metrics.isotropy", "--profile", str(lake))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"conescope: error: {root}: read-only (the file system is mounted read-only); "
                                  f"SQLite reads the DuckLake catalog lake.sqlite only where it can create "
                                  f"lake.sqlite-shm beside it"), done.stderr


@pytest.mark.parametrize("command", ["materialize", "dev"])
def test_no_write_permission_is_named_in_one_line(data_root, tiny_profile_path, monkeypatch, capsys, command):
    import storage.paths

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(storage.paths.tempfile, "TemporaryFile", refused)
    monkeypatch.setenv("CONESCOPE_PROFILE", str(tiny_profile_path))
    assert main([command] + (["--profile", str(tiny_profile_path)] if command == "materialize" else [])) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"conescope: error: {data_root}: read-only (no write permission); conescope "
                                f"{command} writes the data root (datasets, embeddings, warehouse, Dagster's "
                                f"runs): make it writable or set CONESCOPE_HOME to a writable copy (--debug "
                                f"shows the traceback)"]
    assert not (data_root / "dagster_home").exists(), "nothing is started"
