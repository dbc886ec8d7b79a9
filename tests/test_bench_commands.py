"""The benchmark commands of docs/benchmarks.md run and print their RESULT lines (at a small scale: the
figures themselves are measured by hand, never asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _results(cmd: list[str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    return dict(line.split()[1:3] for line in out.stdout.splitlines() if line.startswith("RESULT "))


@pytest.mark.heavy
def test_bench_embed_compares_the_engine_with_the_loop():
    # the options of the GPU command in docs/benchmarks.md, at a small scale on the CPU
    results = _results(["bench/embed.py", "--arch", "conescope-tiny", "--n", "12", "--batch-size", "4",
                        "--workers", "1", "--device", "cpu", "--size", "64x48", "--rounds", "1"])
    for side in ("loop_fp32", "engine_fp32", "engine_auto"):
        assert float(results[f"{side}.images_per_s"]) > 0 and float(results[f"{side}.texts_per_s"]) > 0
    for name in ("ratio.images.engine_auto_over_loop_fp32", "ratio.texts.engine_fp32_over_loop_fp32",
                 "loop_fp32.peak_rss_mb", "engine_auto.peak_rss_mb"):
        assert float(results[name]) > 0
    assert results["precision.engine_auto"] in ("bf16", "fp32")


@pytest.mark.heavy
def test_bench_reports_times_a_generated_partition():
    results = _results(["-m", "bench.reports", "--pairs", "300"])
    assert float(results["render_cold_s"]) > 0 and float(results["render_warm_s"]) > 0
    assert 0 < int(results["thumbnails_decoded"]) <= 300 and float(results["peak_rss_mb"]) > 0


@pytest.mark.heavy
def test_bench_daemon_refresh_times_the_cli_and_the_automation_route(tmp_path):
    import yaml

    from tests.conftest import TINY_PROFILE

    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    results = _results(["-m", "bench.daemon_refresh", "--profile", str(profile), "--routes", "cli,automation",
                        "--settle", "5"])
    for route in ("cli", "automation"):
        assert float(results[f"{route}.wall_s"]) > 0 and int(results[f"{route}.runs"]) >= 10
        assert results[f"{route}.failed_steps"] == "0"
    assert results["automation.all_materialized"] == "True" and results["automation.late_runs"] == "0"
    assert float(results["ratio.automation_over_cli"]) > 0


@pytest.mark.heavy
def test_bench_staleness_measures_the_three_refreshes(tmp_path):
    import os

    import yaml

    from tests.conftest import TINY_PROFILE

    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    home = tmp_path / "data"
    env = {**os.environ, "CONESCOPE_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "materialize", "--profile", str(profile)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    results = _results(["bench/staleness.py", "--home", str(home), "--profile", str(profile)])
    assert results["nothing_embedded_rows"] == "0" and results["nothing_runs_with_work"] == "1"
    assert results["module_embedded_rows"] == "0"
    assert int(results["dataset_embedded_rows"]) > 0
    assert all(float(results[f"{case}_s"]) > 0 for case in ("nothing", "module", "dataset"))


def _stdout(cmd: list[str]) -> str:
    out = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.heavy
def test_bench_metrics_times_every_family():
    out = _stdout(["bench/metrics.py", "--n", "400", "--d", "16", "--repeats", "1", "--skip-baselines"])
    assert "whole suite except the linear probe" in out
    for family in ("isotropy", "modality_gap", "clip_loss", "retrieval"):
        assert any(line.startswith(family) for line in out.splitlines()), out


@pytest.mark.heavy
def test_bench_transforms_times_every_transform():
    out = _stdout(["bench/transforms.py", "--n", "400", "--d", "16", "--k", "4", "--repeats", "1"])
    names = {line.split()[0] for line in out.splitlines()[2:] if line.strip()}
    assert {"identity", "centering", "procrustes", "lstsq"} <= names, out
    assert "x  scipy.linalg.orthogonal_procrustes" in out  # the library route timed beside it


@pytest.mark.heavy
def test_bench_ingest_times_every_source():
    out = _stdout(["bench/ingest.py", "--coco", "8", "--cifar", "20", "--manifest", "10", "--texts", "20",
                   "--repeats", "1"])
    assert "COCO captions + image checks" in out and "CIFAR-100 archive to PNG" in out
    assert out.count("\nmanifest ") >= 3, out


def test_bench_verify_times_the_refresh_verification(tmp_path):
    import yaml

    from tests.conftest import TINY_PROFILE

    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**TINY_PROFILE, "embedding": {**TINY_PROFILE["embedding"], "part_rows": 5,
                                                                     "text_layers": True}}))
    home = tmp_path / "data"
    made = _results(["bench/verify.py", "--synthetic", str(home), "--profile", str(profile), "--layers", "2",
                     "--repeat", "1"])
    # 2 models x (2 image partitions + 2 datasets x 2 languages x (texts + layer states)), shapes' 12 rows
    # in parts of 5
    # runs: the datasets, 2 image runs, 2 models x 2 languages x (texts, pairs, report), 2 summaries, the reports
    assert int(made["parts"]) > 20 and made["manifest_tables"] == "4" and made["planned_runs"] == "18"
    again = _results(["bench/verify.py", "--home", str(home), "--profile", str(profile), "--repeat", "1"])
    assert again["parts"] == made["parts"]
    assert float(again["refresh_verify_ms"]) > 0 and float(again["full_scan_mib_per_s"]) > 0
