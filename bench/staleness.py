"""Benchmark of what a refresh recomputes: prints figures, asserts nothing.

    .venv/bin/python bench/staleness.py [--home data] [--profile demo] [--module conescope.metrics.clusters]
                                        [--dataset shapes]

Needs a complete ``conescope materialize`` of the profile in ``--home`` (default ``CONESCOPE_HOME``,
else ``./data``); that data root is only read. Three refreshes, each a ``conescope materialize`` in
a subprocess on its own copy of the data root (with its Dagster home):

- ``nothing``: nothing changed;
- ``module``: a function appended to ``--module`` (in a copy of the project's code, run from there);
- ``dataset``: ``--dataset``'s ``n`` lowered by a tenth (a copy of the profile).

For each: the wall time of the command, the forward passes (rows embedded: the ``embedded_rows`` of
the embedding materializations it made, from the copy's event log) and what each planned run ran (the
command's own lines). ``RESULT <name> <value>`` lines for scripts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CODE = ("conescope", "storage", "assets", "pipelines", "configs", "workspace.yaml")


def _forward_passes(dagster_home: Path, after: int) -> tuple[int, int]:
    """(rows embedded, embedding materializations) recorded after event ``after``."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        rows = steps = 0
        for key in instance.get_asset_keys():
            if key.path[0] != "embeddings":
                continue
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=10000).records
            for record in records:
                meta = record.asset_materialization.metadata
                rows += int(meta["embedded_rows"].value) if "embedded_rows" in meta else 0
                steps += 1
        return rows, steps


def _last_event(dagster_home: Path) -> int:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return instance.event_log_storage.get_maximum_record_id() or 0


def _refresh(name: str, home: Path, work: Path, profile: str, code: Path) -> None:
    root = work / f"data-{name}"
    shutil.copytree(home, root)
    dagster_home = root / "dagster_home"
    after = _last_event(dagster_home)
    env = {**os.environ, "CONESCOPE_HOME": str(root), "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "materialize", "--profile", profile],
                         cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{name}: conescope materialize failed:\n{out.stderr}")
    rows, steps = _forward_passes(dagster_home, after)
    ran = [line for line in out.stdout.splitlines() if line.startswith("[") and "nothing stale" not in line]
    print(f"\n== {name}: {seconds:.1f} s, {rows} rows embedded in {steps} embedding steps; runs that ran something:")
    print("\n".join(f"   {line}" for line in ran) or "   (none)")
    print(f"RESULT {name}_s {seconds:.1f}")
    print(f"RESULT {name}_embedded_rows {rows}")
    print(f"RESULT {name}_runs_with_work {len(ran)}")
    shutil.rmtree(root)


def _code_copy(work: Path, module: str | None) -> Path:
    code = work / ("code-edited" if module else "code")
    for name in CODE:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, code / name)
    if module:
        path = code.joinpath(*module.split(".")).with_suffix(".py")
        path.write_text(path.read_text() + "\n\ndef _bench_edit() -> int:\n    return 1\n")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("CONESCOPE_HOME", "data"))
    parser.add_argument("--profile", default=os.environ.get("CONESCOPE_PROFILE", "demo"))
    parser.add_argument("--module", default="conescope.metrics.clusters")
    parser.add_argument("--dataset", default="shapes")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    if not (home / "dagster_home").is_dir():
        sys.exit(f"{home}: no Dagster home; run conescope materialize first")
    from conescope.profile import resolve_profile_path

    with tempfile.TemporaryDirectory(prefix="conescope-staleness-") as tmp:
        work = Path(tmp)
        code = _code_copy(work, None)
        _refresh("nothing", home, work, args.profile, code)
        _refresh("module", home, work, args.profile, _code_copy(work, args.module))
        raw = yaml.safe_load(resolve_profile_path(args.profile).read_text())
        spec = raw["datasets"][args.dataset]
        spec["n"] = max(2, int(spec["n"] * 0.9))
        changed = work / "changed.yaml"
        changed.write_text(yaml.safe_dump(raw))
        _refresh("dataset", home, work, str(changed), code)


if __name__ == "__main__":
    main()
