"""Every command the README and the pages under docs/ show in a fenced shell block is run by a test.

The commands are found in the files (tests/doc_pages.py), so a new one cannot be missed: a
``conescope sql`` query runs here, against the tiny profile's materialized data root; any other
command must be in ``REGISTRY`` with the tests that run it, each of which must exist and contain the
command's distinctive parts. A command that is neither fails with the file and line where it is shown.
Commands written inline in prose are not collected: they are not meant to be run as shown."""

from __future__ import annotations

import ast
import re

import pytest

from tests.doc_pages import REPO, SHELL_LANGS, Command, doc_files, fenced_blocks, shell_commands

# Subcommands of ``conescope`` cheap enough to run here on the tiny data root.
EXECUTED = {"sql"}

# command (as ``Command.key`` normalizes it) -> the runs that cover it: (target, distinctive parts), a
# target being ``path::function`` (or ``path::Class``) of a test, or ``path`` of a script (.ci/run).
REGISTRY: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "python3.11 -m venv .venv '&&' .venv/bin/pip install -e '.[dev]' '&&' .venv/bin/conescope materialize": [
        (".ci/run", ("python3.11 -m venv .venv", ".venv/bin/pip install --quiet -e '.[dev]'")),
        # the whole demo profile, every run of the plan conescope materialize walks
        ("tests/test_demo_science.py::test_readme_science_queries_on_the_demo",
         ('load_profile("demo")', "execute_plan(", "full_plan(")),
    ],
    ".venv/bin/pytest": [(".ci/run", (".venv/bin/pytest",))],
    ".venv/bin/conescope materialize --model vit-b-32.random --lang en": [
        ("tests/test_cli.py::test_readme_subset_example_completes_on_the_demo_profile",
         ('"materialize", "--model", "vit-b-32.random", "--lang", "en"',)),
    ],
    # configs/text.yaml is wolfe.yaml's datasets and minilm with mickus.yaml's experiment (checked by the
    # first test): the second runs wolfe.yaml's datasets and minilm partition (the output embedding; the
    # layer states and the second word vector in tests/test_words.py), the third mickus.yaml's whole plan
    ".venv/bin/conescope materialize --profile text": [
        ("tests/test_profile.py::test_the_text_profile_is_the_two_experiments_in_one_run",
         ('load_profile(name) for name in ("text", "wolfe", "mickus", "demo")',)),
        ("tests/test_words_minilm.py::materialized", ("words_profile()", "DATASETS_JOB", "MODEL_LANG_JOB")),
        ("tests/test_isotropy_clusters.py::test_the_mickus_profile_materializes_offline",
         ('load_profile("mickus")', "execute_plan(", "full_plan(")),
    ],
    ".venv/bin/conescope materialize --profile mickus": [
        ("tests/test_isotropy_clusters.py::test_the_mickus_profile_materializes_offline",
         ('load_profile("mickus")', "execute_plan(", "full_plan(")),
    ],
    ".venv/bin/conescope materialize --profile liang": [
        ("tests/test_temperature_profile.py::test_the_liang_profile_shows_the_gap_depends_on_the_temperature",
         ('load_profile("liang")', "execute_plan(", "full_plan(")),
    ],
    ".venv/bin/conescope dev": [
        ("tests/devserver.py::DevServer", ('"pipelines.cli", "dev"',)),
        ("tests/test_dev.py::test_dev_stops_with_every_child", ("DevServer(",)),
    ],
    ".venv/bin/dagster dev": [
        ("tests/devserver.py::DevServer", ('"-m", "dagster", "dev"',)),
        ("tests/test_plain_dagster_dev.py::"
         "test_plain_dagster_dev_from_the_root_is_conescope_s_instance_on_the_default_data_root",
         ("plain_in=checkout", 'shutil.copy(REPO / "dagster.yaml"')),
    ],
    ".venv/bin/python bench/staleness.py --home data": [
        ("tests/test_bench_commands.py::test_bench_staleness_measures_the_three_refreshes",
         ('"bench/staleness.py", "--home"',)),
    ],
    ".venv/bin/python bench/verify.py --synthetic verify-demo": [
        ("tests/test_bench_commands.py::test_bench_verify_times_the_refresh_verification",
         ('"bench/verify.py", "--synthetic"',)),
    ],
    ".venv/bin/python bench/verify.py --home data": [
        ("tests/test_bench_commands.py::test_bench_verify_times_the_refresh_verification",
         ('"bench/verify.py", "--home"',)),
    ],
    ".venv/bin/python bench/embed.py": [
        ("tests/test_bench_commands.py::test_bench_embed_compares_the_engine_with_the_loop", ('"bench/embed.py"',)),
    ],
    # the GPU form: the same script, its options exercised at a small scale on the CPU
    ".venv/bin/python bench/embed.py --n 8192 --batch-size 256 --workers 16 --device cuda": [
        ("tests/test_bench_commands.py::test_bench_embed_compares_the_engine_with_the_loop",
         ('"bench/embed.py"', '"--n"', '"--batch-size"', '"--workers"', '"--device"')),
    ],
    ".venv/bin/python -m bench.daemon_refresh": [
        ("tests/test_bench_commands.py::test_bench_daemon_refresh_times_the_cli_and_the_automation_route",
         ('"bench.daemon_refresh"',)),
        ("tests/test_materialize_all.py::test_materialize_all_completes_with_no_failed_run_or_step",
         ("launch_materialize_all",)),
    ],
    ".venv/bin/python -m bench.daemon_refresh --profile demo --routes cli,automation": [
        ("tests/test_bench_commands.py::test_bench_daemon_refresh_times_the_cli_and_the_automation_route",
         ('"bench.daemon_refresh"', '"--profile"', '"--routes", "cli,automation"')),
    ],
    ".venv/bin/python -m bench.reports --pairs 40000": [
        ("tests/test_bench_commands.py::test_bench_reports_times_a_generated_partition",
         ('"bench.reports", "--pairs"',)),
    ],
    ".venv/bin/python bench/warehouse.py": [
        ("tests/test_cli.py::test_readme_warehouse_bench_runs", ('"python", "bench/warehouse.py"',)),
    ],
    ".venv/bin/python bench/metrics.py": [
        ("tests/test_bench_commands.py::test_bench_metrics_times_every_family", ('"bench/metrics.py"',)),
    ],
    # the same script at COCO val2014 size, with one BLAS thread or the default threads
    ".venv/bin/python bench/metrics.py --n 40504 --d 512 --repeats 1 --skip-baselines": [
        ("tests/test_bench_commands.py::test_bench_metrics_times_every_family",
         ('"bench/metrics.py"', '"--n"', '"--d"', '"--repeats"', '"--skip-baselines"')),
    ],
    "OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/metrics.py --n 40504 --d 512 --repeats 1 --skip-baselines": [
        ("tests/test_bench_commands.py::test_bench_metrics_times_every_family",
         ('"bench/metrics.py"', '"--n"', '"--d"', '"--repeats"', '"--skip-baselines"')),
    ],
    ".venv/bin/python bench/transforms.py": [
        ("tests/test_bench_commands.py::test_bench_transforms_times_every_transform", ('"bench/transforms.py"',)),
    ],
    ".venv/bin/python bench/ingest.py": [
        ("tests/test_bench_commands.py::test_bench_ingest_times_every_source", ('"bench/ingest.py"',)),
    ],
}


def _program(command: Command) -> list[str]:
    """The argv without leading ``VAR=value`` assignments and with ``.venv/bin/`` dropped."""
    argv = command.argv
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        argv = argv[1:]
    return [argv[0].removeprefix(".venv/bin/"), *argv[1:]] if argv else []


def _executed(command: Command) -> bool:
    argv = _program(command)
    return len(argv) > 1 and argv[0] == "conescope" and argv[1] in EXECUTED


def _source(target: str) -> str:
    path, _, name = target.partition("::")
    file = REPO / path
    assert file.is_file(), f"{target}: no file {path}"
    text = file.read_text(encoding="utf-8")
    if not name:
        return text
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_source_segment(text, node)
    raise AssertionError(f"{target}: no function or class {name} in {path}")


def test_the_documentation_shows_commands():
    commands = shell_commands()
    assert len(commands) >= 15
    assert sum(_executed(c) for c in commands) >= 4
    assert commands[0].key.startswith("python3.11 -m venv .venv") and commands[1].key == ".venv/bin/pytest", \
        "the README's first two commands: install and materialize, then the tests"


def test_every_command_is_run_by_a_test():
    unrun = [f"{c.where}: {c.text.splitlines()[0]}" for c in shell_commands()
             if not _executed(c) and c.key not in REGISTRY]
    assert unrun == [], ("commands shown in a bash block that no test runs: execute them in "
                         "tests/test_doc_commands.py or register them in its REGISTRY with the test that runs them:\n"
                         + "\n".join(unrun))


def test_every_registered_command_is_shown_and_its_tests_run_it():
    shown = {c.key for c in shell_commands()}
    stale = sorted(set(REGISTRY) - shown)
    assert stale == [], f"registered commands the documentation no longer shows: {stale}"
    missing = []
    for key, runs in REGISTRY.items():
        assert runs, key
        for target, parts in runs:
            source = _source(target)
            missing += [f"{key}: {target} does not contain {part!r}" for part in parts if part not in source]
    assert missing == []


def test_no_command_hides_in_another_block():
    """A command shown in a block that is not a shell block would escape the checks above."""
    hidden = []
    for path in doc_files():
        for block in fenced_blocks(path):
            if block.lang in SHELL_LANGS:
                continue
            hidden += [f"{block.where}: {line.strip()}" for line in block.lines
                       if re.match(r"\s*(\$ |\.venv/bin/|conescope |python3? |pip )", line)]
    assert hidden == []


@pytest.mark.parametrize("command", [c for c in shell_commands() if _executed(c)], ids=lambda c: c.where)
def test_executed_command_runs_on_a_materialized_root(command, materialized, monkeypatch, capsys):
    from pipelines.cli import main

    _, root, _, _ = materialized
    profile = root.root.parent / "tiny.yaml"  # where the materialized fixture wrote its profile
    assert profile.is_file()
    monkeypatch.setenv("CONESCOPE_HOME", str(root.root))
    monkeypatch.setenv("CONESCOPE_PROFILE", str(profile))
    argv = _program(command)[1:]
    assert main(argv) == 0, f"{command.where}: {capsys.readouterr().err}"
    assert capsys.readouterr().out.strip(), f"{command.where}: printed nothing"
    if argv[0] == "sql" and "--format" not in argv:  # the same query as CSV: at least one row
        assert main([*argv, "--format", "csv"]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) > 1, f"{command.where}: no row"
