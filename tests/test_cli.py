"""``conescope sql``: read-only queries printed as a table, errors as one line."""

import duckdb
import pytest

from pipelines.cli import main
from storage.warehouse import Warehouse, metric_rows


def _warehouse(root):
    wh = Warehouse(root / "warehouse.duckdb")
    wh.replace_rows("metrics.isotropy", metric_rows([{"dataset": "d", "model": "m", "lang": "en", "modality": "text",
                                                      "metric": "i1", "value": 0.25, "n": 4}]),
                    {"model": "m", "lang": "en"})
    return wh


def test_sql_prints_a_table(data_root, capsys):
    _warehouse(data_root)
    assert main(["sql", "SELECT model, lang, metric, value FROM metrics.isotropy"]) == 0
    out = capsys.readouterr().out
    assert "0.25" in out and "i1" in out and "model" in out


def test_sql_csv(data_root, capsys):
    _warehouse(data_root)
    assert main(["sql", "SELECT metric, value FROM metrics.isotropy", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"metric","value"', '"i1",0.25']


def test_sql_is_read_only(data_root, capsys):
    _warehouse(data_root)
    assert main(["sql", "DELETE FROM metrics.isotropy"]) == 2
    assert "read-only" in capsys.readouterr().err.lower()
    with duckdb.connect(str(data_root / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM metrics.isotropy").fetchone()[0] == 1


def test_sql_without_warehouse_says_what_to_run(data_root, capsys):
    assert main(["sql", "SELECT 1"]) == 2
    assert "conescope materialize" in capsys.readouterr().err


def test_sql_writes_nothing_anywhere(data_root, tmp_path, capsys):
    """COPY, ATTACH, CREATE and SET are refused, inside and outside the data root; the views' Parquet
    files stay readable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wh = _warehouse(data_root)
    part = data_root / "embeddings" / "d" / "image" / "model=m"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"sample_id": ["a", "b"]}), part / "part-00000.parquet")
    wh.refresh_views(data_root, ["d"])
    assert main(["sql", "SELECT count(*) AS n FROM embeddings.d_image", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"n"', "2"]
    outside, inside = tmp_path / "out.csv", data_root / "embeddings" / "out.csv"
    attempts = [f"COPY (SELECT 1) TO '{outside}'", f"COPY (SELECT 1) TO '{inside}'",
                f"ATTACH '{tmp_path / 'other.duckdb'}' AS o (READ_ONLY false); CREATE TABLE o.t (a INT)",
                f"ATTACH '{data_root / 'embeddings' / 'x.duckdb'}' AS o",
                "SELECT 1; CREATE TABLE metrics.t (a INT)", "SET enable_external_access = true",
                f"SELECT * FROM read_csv('{tmp_path / 'tiny.csv'}')"]
    (tmp_path / "tiny.csv").write_text("a\n1\n")
    for query in attempts:
        assert main(["sql", query]) == 2, query
        err = capsys.readouterr().err
        assert err.startswith("conescope: error: ") and len(err.strip().splitlines()) == 1, err
    assert not outside.exists() and not inside.exists()
    assert not (tmp_path / "other.duckdb").exists() and not (data_root / "embeddings" / "x.duckdb").exists()


def test_views_follow_a_moved_data_root(data_root, tmp_path, capsys, monkeypatch):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    wh = _warehouse(data_root)
    part = data_root / "embeddings" / "d" / "image" / "model=m"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"sample_id": ["a", "b"]}), part / "part-00000.parquet")
    wh.refresh_views(data_root, ["d"])
    moved = tmp_path / "moved"
    shutil.copytree(data_root, moved)
    pq.write_table(pa.table({"sample_id": ["only one"]}), moved / "embeddings/d/image/model=m/part-00000.parquet")
    monkeypatch.setenv("CONESCOPE_HOME", str(moved))
    assert main(["sql", "SELECT sample_id FROM embeddings.d_image", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"sample_id"', '"only one"']
    shutil.rmtree(data_root)  # the copy does not depend on the original
    assert main(["sql", "SELECT count(*) FROM embeddings.d_image", "--format", "csv"]) == 0


def test_errors_are_one_line_and_debug_shows_the_traceback(data_root, tmp_path, capsys):
    import pytest
    import yaml

    from tests.conftest import TINY_PROFILE

    bad = tmp_path / "demo.yaml"
    datasets = {**TINY_PROFILE["datasets"], "shapes": {**TINY_PROFILE["datasets"]["shapes"], "image_sise": 32}}
    bad.write_text(yaml.safe_dump({**TINY_PROFILE, "datasets": datasets}))
    assert main(["materialize", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conescope: error: demo.yaml: datasets.shapes.image_sise: unknown key (allowed: ")
    assert len(err.strip().splitlines()) == 1

    good = tmp_path / "tiny.yaml"
    good.write_text(yaml.safe_dump(TINY_PROFILE))
    assert main(["materialize", "--profile", str(good), "--model", "vit-h-14"]) == 2
    err = capsys.readouterr().err
    assert "not in profile 'tiny': vit-h-14" in err and len(err.strip().splitlines()) == 1
    assert not (data_root / "dagster_home").exists(), "nothing is started for a bad command line"

    with pytest.raises(ValueError, match="image_sise"):
        main(["--debug", "materialize", "--profile", str(bad)])
    with pytest.raises(ValueError, match="image_sise"):
        main(["materialize", "--profile", str(bad), "--debug"])


def test_a_failing_step_is_reported_in_one_line(data_root, tmp_path, capsys):
    """A dataset whose source files are missing (offline, nothing downloaded): one line naming the
    step and the problem."""
    import yaml

    from tests.conftest import TINY_PROFILE

    profile = {**{k: v for k, v in TINY_PROFILE.items() if k != "transforms"}, "languages": ["en"],
               "datasets": {"shapes": TINY_PROFILE["datasets"]["shapes"],
                            "wiki": {"kind": "wikicaps", "file": "wikicaps.tsv", "languages": ["en"]}},
               "models": {"tiny.random": TINY_PROFILE["models"]["tiny.random"]}}
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(profile))
    assert main(["materialize", "--profile", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conescope: error: datasets__wiki: "), err
    assert "wikicaps.tsv" in err[0] and "--debug" in err[0]


def test_a_language_subset_plans_no_run_that_reads_every_language(tiny_profile):
    from pipelines.refresh import MODEL_LANG_JOB, REPORTS_JOB, SUMMARY_JOB, full_plan

    subset = full_plan(tiny_profile, "t", ["tiny.random"], ["en"])
    assert [p.job for p in subset if p.job in (SUMMARY_JOB, REPORTS_JOB)] == []
    assert [p.partition_key for p in subset if p.job == MODEL_LANG_JOB] == ["en|tiny.random"]
    full = full_plan(tiny_profile, "t", ["tiny.random"])
    assert [p.partition_key for p in full if p.job == SUMMARY_JOB] == ["tiny.random"]


def _readme_command(prefix: str) -> list[str]:
    import re
    import shlex

    from tests.doc_pages import doc_text

    line = next(m for m in re.findall(r"\.venv/bin/([^`\n]+)", doc_text()) if m.startswith(prefix))
    return shlex.split(line)


@pytest.mark.heavy
def test_readme_subset_example_completes_on_the_demo_profile(data_root, monkeypatch, capsys):
    monkeypatch.delenv("CONESCOPE_PROFILE", raising=False)
    argv = _readme_command("conescope materialize --model")
    assert argv == ["conescope", "materialize", "--model", "vit-b-32.random", "--lang", "en"]
    assert main(argv[1:]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "note: model_summary_job and reports_job read every language" in out and "FAILED" not in out


@pytest.mark.heavy
def test_readme_warehouse_bench_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    argv = _readme_command("python bench/warehouse.py")
    assert argv == ["python", "bench/warehouse.py"]
    repo = Path(__file__).resolve().parent.parent
    small = ["--partitions", "6", "--rows", "5", "--writers", "1", "2"]
    done = subprocess.run([sys.executable, argv[1], *small], cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split() for line in done.stdout.splitlines()[2:]]
    assert {(row[0], row[1]) for row in lines if len(row) == 9} >= {("duckdb", "1"), ("ducklake-sqlite", "2")}
    assert all(row[4] == "30" and row[6] == "0" for row in lines if len(row) == 9), done.stdout  # stored, failed
