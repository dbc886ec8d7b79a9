"""The ``conescope`` command line as a user meets it: help texts, ``conescope sql`` (read-only queries
printed as tables, errors as one line), the unknown-name errors and the per-run lines of ``materialize``."""

from pathlib import Path

import duckdb
import pytest

from pipelines.cli import main
from storage.warehouse import Warehouse, metric_rows

REPO = Path(__file__).resolve().parent.parent


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
    assert "(its models: tiny.random, tiny.random-nobias)" in err  # what the user may name instead
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
    from pipelines.jobs import MODEL_LANG_JOB, REPORTS_JOB, SUMMARY_JOB
    from pipelines.refresh import full_plan

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


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_names_the_environment_and_every_option_without_markup(capsys, monkeypatch):
    import argparse

    from pipelines.cli import ENVIRONMENT, build_parser

    monkeypatch.setenv("COLUMNS", "100")
    top = _help(capsys)
    for name in ("CONESCOPE_HOME", "CONESCOPE_PROFILE", "CONESCOPE_AUTOMATION", "CONESCOPE_EXECUTOR",
                 "CONESCOPE_OFFLINE", "CONESCOPE_REPORTS_URL"):
        assert name in top, top
    assert "(default: ./data)" in top and "(default: demo)" in top and "(default: on)" in top
    commands = {"materialize": ("CONESCOPE_HOME", "CONESCOPE_PROFILE"), "sql": ("CONESCOPE_HOME", "CONESCOPE_PROFILE"),
                "dev": ("CONESCOPE_HOME", "CONESCOPE_PROFILE", "CONESCOPE_AUTOMATION", "CONESCOPE_REPORTS_URL",
                        "--reports-port")}
    for command, names in commands.items():
        text = _help(capsys, command)
        assert all(name in text for name in names), text
        assert "``" not in text and ":class:" not in text, text
    assert "``" not in top and ":class:" not in top, top
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("conescope", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            assert action.help, f"{name} {action.dest}: no help"
    assert set(subparsers.choices) == set(commands)
    assert len(ENVIRONMENT) == 6


def test_the_help_states_the_defaults_the_code_uses(monkeypatch):
    from conescope.profile import DEFAULT_PROFILE
    from pipelines.automation import AUTOMATION_ENV, automation_enabled
    from pipelines.cli import ENVIRONMENT
    from pipelines.executors import EXECUTORS, UNSET
    from storage.paths import DEFAULT_HOME
    from storage.report_links import REPORTS_URL_ENV, reports_url

    assert ENVIRONMENT["CONESCOPE_HOME"].endswith(f"(default: ./{DEFAULT_HOME})")
    assert ENVIRONMENT["CONESCOPE_PROFILE"].endswith(f"(default: {DEFAULT_PROFILE})")
    monkeypatch.delenv(AUTOMATION_ENV, raising=False)
    assert AUTOMATION_ENV in ENVIRONMENT and automation_enabled() and ENVIRONMENT[AUTOMATION_ENV].endswith(
        "(default: on)")
    executor = ENVIRONMENT["CONESCOPE_EXECUTOR"]
    assert all(name in executor for name in EXECUTORS) and f"{UNSET} (the default)" in executor
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    assert ENVIRONMENT[REPORTS_URL_ENV].endswith(f"(default: {reports_url()})")


def test_an_unknown_model_or_language_names_the_profiles_own(tiny_profile):
    from pipelines.refresh import full_plan

    with pytest.raises(ValueError) as err:
        full_plan(tiny_profile, "t", ["nope"])
    assert str(err.value) == "not in profile 'tiny': nope (its models: tiny.random, tiny.random-nobias)"
    with pytest.raises(ValueError) as err:
        full_plan(tiny_profile, "t", ["nope"], ["de", "en"])
    assert str(err.value) == ("not in profile 'tiny': nope, de (its models: tiny.random, tiny.random-nobias; "
                              "its languages: en, fr)")
    with pytest.raises(ValueError, match=r"^not in profile 'tiny': de \(its languages: en, fr\)$"):
        full_plan(tiny_profile, "t", None, ["de"])


def test_several_statements_print_each_result_in_order(data_root, capsys):
    _warehouse(data_root)
    query = "SELECT 'first' AS a; SELECT metric, value FROM metrics.isotropy; SELECT 'third' AS c"
    assert main(["sql", query]) == 0
    out = capsys.readouterr().out
    positions = [out.find(text) for text in ("SELECT 'first' AS a", "first", "SELECT metric, value FROM",
                                             "i1", "SELECT 'third' AS c", "third")]
    assert -1 not in positions and positions == sorted(positions), out
    assert main(["sql", query, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"a"', '"first"', "", '"metric","value"', '"i1",0.25', "",
                                                    '"c"', '"third"']
    assert main(["sql", "SELECT 1 AS one"]) == 0  # one statement: its table alone, as before
    assert "SELECT" not in capsys.readouterr().out


def test_the_refusal_lists_the_statements_that_run_and_each_of_them_runs(data_root, capsys):
    from storage.warehouse import read_statement_forms

    _warehouse(data_root)
    examples = {"SELECT": "SELECT 1", "WITH": "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
                "FROM": "FROM metrics.isotropy", "VALUES": "VALUES (1)", "SHOW": "SHOW ALL TABLES",
                "DESCRIBE": "DESCRIBE metrics.isotropy", "SUMMARIZE": "SUMMARIZE metrics.isotropy",
                "EXPLAIN": "EXPLAIN SELECT 1"}
    assert sorted(read_statement_forms()) == sorted(examples)
    for form, query in examples.items():
        assert main(["sql", query]) == 0, (form, capsys.readouterr().err)
    capsys.readouterr()
    assert main(["sql", "INSERT INTO metrics.isotropy SELECT * FROM metrics.isotropy"]) == 2
    err = capsys.readouterr().err
    assert f"INSERT statement refused; the warehouse is read-only here (queries only: " \
           f"{', '.join(read_statement_forms())})" in err, err
    assert "queries only: SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN)" in err


def test_each_run_line_says_what_ran_with_real_counts():
    import dagster as dg

    from pipelines.refresh import run_summary

    every = [dg.AssetKey(["metrics", name]) for name in ("isotropy", "clusters", "layers")]
    assert run_summary(every, every) == "ran all 3 assets"
    assert run_summary(every[:1], every) == "ran metrics/isotropy; 2 fresh assets skipped"
    assert run_summary(every[:2], every) == "ran metrics/isotropy, metrics/clusters; 1 fresh asset skipped"
    assert run_summary([], every) == "nothing stale (3 assets fresh)"
    assert run_summary(every[:1], every[:1]) == "ran all 1 asset"


def test_the_shipped_tiny_profile_is_the_tests_and_a_missing_profile_is_one_line(capsys, tmp_path):
    import yaml

    from bench.daemon_refresh import main as bench_main
    from conescope.profile import load_profile
    from tests.conftest import TINY_PROFILE

    assert yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text()) == TINY_PROFILE
    assert load_profile("tiny").name == "tiny"
    assert bench_main(["--profile", str(tmp_path / "missing.yaml"), "--routes", "cli"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench.daemon_refresh: error: profile ") and "missing.yaml" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_materialize_prints_the_models_made_and_the_progress_of_embedding_steps(data_root, tmp_path, capsys,
                                                                                   monkeypatch):
    """Under the run in progress (a line names it first): each model created, in the profile's terms
    (open_clip's own warning is gone), and the embedding steps' progress, rows done and rate, here
    with the terminal's interval at 0 and the engine logging after every batch."""
    import re

    import yaml

    from assets.embeddings import cached_model
    from pipelines import terminal
    from tests.conftest import TINY_PROFILE

    monkeypatch.setattr(terminal, "PROGRESS_EVERY_S", 0.0)
    cached_model.cache_clear()  # a model an earlier test created in this process is not created again
    profile = {**{k: v for k, v in TINY_PROFILE.items() if k != "transforms"}, "languages": ["en"],
               "datasets": {"shapes": TINY_PROFILE["datasets"]["shapes"]},
               "models": {"tiny.random": TINY_PROFILE["models"]["tiny.random"]},
               "embedding": {**TINY_PROFILE["embedding"], "progress_every_s": 0.001}}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(profile))
    assert main(["materialize", "--profile", str(path)]) == 0
    captured = capsys.readouterr()
    assert "initialized randomly" not in captured.err + captured.out
    lines = captured.out.splitlines()
    start = lines.index("[2/7] image_job tiny.random ...")  # datasets, image, texts, pairs, report, summary, reports
    assert lines[start + 1] == "  tiny.random: random initialisation (seed 0), no pretrained weights"
    image = [re.fullmatch(r"  embeddings/shapes_image \[tiny\.random\]: (\d+)/12 rows, [\d.,]+ rows/s, ETA .+", line)
             for line in lines[start + 2:]]
    done = [int(m.group(1)) for m in image if m]
    assert done == [5, 10, 12], lines  # batches of 5, one line each
    assert re.match(r"\[2/7\] image_job tiny\.random ok ", lines[start + 2 + len(done)])
    text = [line for line in lines if line.startswith("  embeddings/shapes_text [en|tiny.random]: ")]
    assert text and text[-1].split(": ")[1].startswith("12/12 rows, "), lines
    assert lines.count("  tiny.random: random initialisation (seed 0), no pretrained weights") == 1  # made once


def test_progress_lines_are_one_per_interval_per_step_under_the_run_in_progress():
    import logging

    from assets.keys import MODEL_NOTE_EXTRA, PROGRESS_EXTRA
    from conescope.engine import ProgressFigures
    from pipelines.terminal import TerminalLines

    out: list[str] = []
    terminal = TerminalLines(out.append, every_s=10.0)

    def record(**extra) -> logging.LogRecord:
        return logging.makeLogRecord({"msg": "x", "levelno": logging.INFO, **extra})

    def progress(step: str, done: int, elapsed: float, resumed: int = 0) -> logging.LogRecord:
        rate = (done - resumed) / elapsed
        figures = ProgressFigures(done, 1797, resumed, rate, (1797 - done) / rate, elapsed)
        return record(**{PROGRESS_EXTRA: (step, figures)})

    terminal.run("[2/9] image_job vit-b-32.random")
    terminal.handle(record())  # a run-log line of no interest to the terminal
    terminal.handle(progress("embeddings/digits_image [vit-b-32.random]", 100, 3.0))  # the step is young
    assert out == []
    for done, elapsed in ((1024, 10.01), (1400, 15.0), (1700, 19.99), (1797, 21.0)):
        terminal.handle(progress("embeddings/digits_image [vit-b-32.random]", done, elapsed))
    terminal.handle(progress("embeddings/shapes_image [vit-b-32.random]", 600, 12.0, resumed=500))
    note = "vit-b-32.random: random initialisation (seed 0), no pretrained weights"
    terminal.handle(record(**{MODEL_NOTE_EXTRA: note}))
    assert out == ["[2/9] image_job vit-b-32.random ...",
                   "  embeddings/digits_image [vit-b-32.random]: 1,024/1,797 rows, 102 rows/s, ETA 8 s",
                   "  embeddings/digits_image [vit-b-32.random]: 1,700/1,797 rows, 85 rows/s, ETA 1 s",
                   "  embeddings/shapes_image [vit-b-32.random]: 600/1,797 rows, 8.3 rows/s, ETA 144 s, "
                   "500 from an earlier run",
                   f"  {note}"]
    terminal.run("[3/9] image_job other")
    terminal.handle(progress("embeddings/digits_image [other]", 1024, 10.5))
    assert out[-2:] == ["[3/9] image_job other ...",
                        "  embeddings/digits_image [other]: 1,024/1,797 rows, 98 rows/s, ETA 8 s"]


def test_a_run_of_materialize_can_be_reexecuted_by_the_code_location(tiny_profile, data_root):
    """The run config execute_plan gives a run names the terminal's logger, which the code location's
    definitions (no terminal) define too: the UI's re-execution of a CLI run validates."""
    import dagster as dg

    from pipelines.definitions import build_definitions
    from pipelines.jobs import DATASETS_JOB
    from pipelines.terminal import TerminalLines

    job = build_definitions(tiny_profile, str(data_root)).resolve_job_def(DATASETS_JOB)
    config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}, TerminalLines.LOGGER: {}}}
    assert dg.validate_run_config(job, config)["loggers"].keys() == {"console", TerminalLines.LOGGER}
