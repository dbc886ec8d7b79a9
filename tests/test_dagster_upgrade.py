"""The day a new Dagster release appears, one command says what breaks:

    .venv/bin/pytest -m upgrade tests/test_dagster_upgrade.py

installs the newest ``dagster`` and ``dagster-webserver`` the package registry offers (ignoring the
project's ``<1.14`` pin, pyproject.toml) with their dependencies into a scratch folder, puts it in front
of the project's environment, and runs there the adapter's test (every private name conescope uses,
with the parameters it passes: tests/test_dagster_private.py) and the definitions load of the demo
profile, as the code server loads them. Marked ``upgrade`` (needs the registry; not run by default)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("dagster", "dagster-webserver")


@pytest.fixture(scope="module")
def newest(tmp_path_factory) -> tuple[dict[str, str], str]:
    """(environment with the newest release first on the path, its version)."""
    target = tmp_path_factory.mktemp("newest-dagster")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(target),
                              *PACKAGES], capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, f"pip could not install the newest {PACKAGES}:\n{install.stderr[-4000:]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    probe = "import dagster; print(dagster.__version__, dagster.__file__)"
    version, where = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                    timeout=300, check=True).stdout.split()
    assert Path(where).is_relative_to(target), f"the scratch install is not in front: dagster {version} from {where}"
    print(f"newest dagster on the registry: {version}")
    return env, version


def _run(command: list[str], env: dict[str, str], what: str, version: str) -> None:
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"with dagster {version}, {what} fails:\n{(done.stdout + done.stderr)[-6000:]}"


@pytest.mark.upgrade
def test_the_adapter_holds_with_the_newest_dagster(newest):
    env, version = newest
    _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not heavy",
          "tests/test_dagster_private.py"], env, "the adapter's test (pipelines/dagster_private.py)", version)


@pytest.mark.upgrade
def test_the_definitions_load_with_the_newest_dagster(newest, tmp_path):
    env, version = newest
    env = {**env, "CONESCOPE_HOME": str(tmp_path / "data"), "CONESCOPE_PROFILE": "demo"}
    _run([sys.executable, "-c", "import dagster as dg; from pipelines.definitions import defs; "
          "dg.Definitions.validate_loadable(defs); print(dg.__version__)"], env, "the definitions load", version)
