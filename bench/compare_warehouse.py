"""Compare the warehouses of two data roots: every metric table row by its key, values to a tolerance.

    python -m bench.compare_warehouse HOME_A HOME_B [--tol 1e-9]

A row's key is every column that says what was measured (dataset, model, lang, modality, transform,
fit set, eval set, metric, and layer where the table has it); ``value``, ``ci_low`` and ``ci_high``
must agree to ``--tol`` (absolute), ``n`` and ``params`` exactly. ``computed_at`` and
``code_version`` are ignored: they say when and by which commit, not what. ``datasets.rejects`` is
compared as a set of (dataset, model, stage, sample_id, reason). Exits 0 when equal, 1 with the
differences otherwise. Used to show that a refactoring left the demo's numbers as they were.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import duckdb

from conescope.metric_families import METRIC_TABLES

KEY = ["dataset", "model", "lang", "modality", "transform", "fit_set", "eval_set", "metric"]
CLOSE = ["value", "ci_low", "ci_high"]
EXACT = ["n", "params"]
REJECT_KEY = "dataset, model, stage, sample_id, reason"


def _rows(con: duckdb.DuckDBPyConnection, table: str) -> tuple[list[str], dict[tuple, dict]]:
    columns = {c[0] for c in con.execute(f"DESCRIBE metrics.{table}").fetchall()}
    key = KEY + (["layer"] if "layer" in columns else [])
    cursor = con.execute(f"SELECT {', '.join(key + CLOSE + EXACT)} FROM metrics.{table}")
    out: dict[tuple, dict] = {}
    for row in cursor.fetchall():
        k, rest = tuple(row[:len(key)]), dict(zip(CLOSE + EXACT, row[len(key):], strict=True))
        if k in out:
            raise ValueError(f"metrics.{table}: key {k} occurs twice")
        out[k] = rest
    return key, out


def _differs(a: dict, b: dict, tol: float) -> list[str]:
    out = []
    for col in CLOSE:
        x, y = a[col], b[col]
        if (x is None) != (y is None) or (x is not None and not (
                (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol)):
            out.append(f"{col}: {x!r} vs {y!r}")
    out += [f"{col}: {a[col]!r} vs {b[col]!r}" for col in EXACT if a[col] != b[col]]
    return out


def compare(home_a: Path, home_b: Path, tol: float = 1e-9) -> list[str]:
    """Every difference between the warehouses under two data roots, one line each (empty: equal)."""
    problems: list[str] = []
    with duckdb.connect(str(home_a / "warehouse.duckdb"), read_only=True) as con_a, \
            duckdb.connect(str(home_b / "warehouse.duckdb"), read_only=True) as con_b:
        for table in METRIC_TABLES:
            key, rows_a = _rows(con_a, table)
            _, rows_b = _rows(con_b, table)
            for k in sorted(rows_a.keys() - rows_b.keys(), key=str):
                problems.append(f"metrics.{table}: only in A: {dict(zip(key, k, strict=True))}")
            for k in sorted(rows_b.keys() - rows_a.keys(), key=str):
                problems.append(f"metrics.{table}: only in B: {dict(zip(key, k, strict=True))}")
            for k in sorted(rows_a.keys() & rows_b.keys(), key=str):
                for diff in _differs(rows_a[k], rows_b[k], tol):
                    problems.append(f"metrics.{table} {dict(zip(key, k, strict=True))}: {diff}")
            print(f"metrics.{table}: {len(rows_a)} rows in A, {len(rows_b)} in B")
        sql = f"SELECT {REJECT_KEY} FROM datasets.rejects"
        rejects_a, rejects_b = set(con_a.execute(sql).fetchall()), set(con_b.execute(sql).fetchall())
        problems += [f"datasets.rejects: only in A: {r}" for r in sorted(rejects_a - rejects_b, key=str)]
        problems += [f"datasets.rejects: only in B: {r}" for r in sorted(rejects_b - rejects_a, key=str)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("home_a", type=Path)
    parser.add_argument("home_b", type=Path)
    parser.add_argument("--tol", type=float, default=1e-9, help="absolute tolerance of value, ci_low, ci_high")
    args = parser.parse_args(argv)
    problems = compare(args.home_a, args.home_b, args.tol)
    for line in problems[:200]:
        print(line)
    print("equal" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
