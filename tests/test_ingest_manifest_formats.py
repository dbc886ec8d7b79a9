"""The generic manifest follows one set of rules in every format: the same rows written as CSV, JSON
Lines and Parquet give the same manifest and the same rejects, and errors name the file and the line
(or row)."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conescope.ingest.common import IngestError
from conescope.ingest.generic import COLUMNS, read_generic
from tests.test_ingest import _jpeg

ROWS = [
    {"sample_id": "1", "image": "a.jpg", "text": "a red box", "lang": "en", "label": "red"},
    {"sample_id": "1", "text": "une boîte rouge", "lang": "fr"},
    {"sample_id": "2", "image": "b.jpg", "text": "", "lang": "en", "label": "blue"},  # empty caption
    {"sample_id": "3", "image": "a.jpg", "text": "   ", "label": "0"},  # blank caption, numeric label
    {"sample_id": "4", "image": "missing.jpg", "text": "gone"},
    {"sample_id": "5", "image": "a.jpg", "text": "green?", "label": "green"},
    {"text": "only text", "lang": "de"},
]
# where each format puts the sixth row (sample 5): CSV counts the header line, Parquet counts rows from 0
SIXTH = {"csv": "line 7", "jsonl": "line 6", "parquet": "row 5"}


def _write(path, fmt, rows):
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in COLUMNS])), path)
    return path


@pytest.fixture
def images(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    _jpeg(tmp_path / "b.jpg", colour=(0, 0, 200))
    return tmp_path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_format_applies_the_same_rules(images, fmt):
    r = read_generic("g", _write(images / f"m.{fmt}", fmt, ROWS), labels=["red", "blue"])
    samples = [(s["sample_id"], s["label"], s["label_name"]) for s in r.manifest.samples.to_pylist()]
    assert samples == [("g-1", 0, "red"), ("g-2", 1, "blue"), ("g-3", 0, "red")]
    texts = [(t["text_id"], t["sample_id"], t["lang"], t["text"]) for t in r.manifest.texts.to_pylist()]
    assert texts == [("g-1-t0-en", "g-1", "en", "a red box"), ("g-1-t1-fr", "g-1", "fr", "une boîte rouge"),
                     ("g-t6-de", None, "de", "only text")]
    reasons = {x.sample_id: x.reason for x in r.rejects}
    assert reasons["g-2-t2-en"] == reasons["g-3-t3-en"] == "empty en text"  # empty and blank captions
    assert "image file missing" in reasons["g-4"]
    assert reasons["g-5"] == f"m.{fmt} {SIXTH[fmt]}: unknown label 'green'"
    assert len(r.rejects) == 4 and r.seen == 5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_null_text_describes_an_image_only(images, fmt):
    # CSV cannot write a null cell; JSON Lines and Parquet can, and such a row adds no text and no reject
    r = read_generic("g", _write(images / f"m.{fmt}", fmt, [{"sample_id": "1", "image": "a.jpg"},
                                                            {"sample_id": "1", "text": "a box"}]))
    assert r.manifest.samples.num_rows == 1 and r.manifest.texts.column("text").to_pylist() == ["a box"]
    assert not r.rejects


@pytest.mark.parametrize("fmt, content, message", [
    ("csv", "image,text\na.jpg,x\nb.jpg,y,extra\n", r"m.csv: line 3: more fields than the header"),
    ("jsonl", '{"text": "ok"}\n\n[1, 2]\n', r"m.jsonl: line 3: expected a JSON object"),
    ("jsonl", '{"text": "ok"}\n{"text": \n', r"m.jsonl: line 2, column 10: not valid JSON: Expecting value$"),
    ("jsonl", '{"text": "ok"}\n{"text": "a\tb"}\n', r"m.jsonl: line 2, column 12: not valid JSON: Invalid control "
                                               r"character$"),
    ("csv", b"text\n" + b"ok\n" * 20 + b"caf\xe9 au lait\n", r"m.csv: line 22, column 4: byte 0xe9 is not UTF-8 "
                                                             r"\(invalid continuation byte\); save the file as UTF-8$"),
    ("jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"m.jsonl: line 2, column 14: byte 0xe9 is not UTF-8"),
    ("jsonl", '{"text": "ok"}\n{"lang": "fr"}\n', r"m.jsonl: line 2: neither 'image' nor 'text'"),
    ("parquet", "not parquet", r"m.parquet: not a readable Parquet file"),
])
def test_unreadable_rows_name_the_file_and_line(tmp_path, fmt, content, message):
    path = tmp_path / f"m.{fmt}"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(IngestError, match=message):
        read_generic("g", path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_limit_keeps_the_first_samples_with_all_their_rows(images, fmt):
    rows = [{"sample_id": str(i // 2), "image": "a.jpg", "text": f"caption {i}"} for i in range(8)]
    r = read_generic("g", _write(images / f"m.{fmt}", fmt, rows), limit=3)
    assert r.manifest.samples.column("sample_id").to_pylist() == ["g-0", "g-1", "g-2"]
    assert r.manifest.texts.num_rows == 6


# where each format puts the rows: CSV counts the header line, Parquet counts rows from 0
WHERE = {"csv": lambda i: f"line {i + 2}", "jsonl": lambda i: f"line {i + 1}", "parquet": lambda i: f"row {i}"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_duplicate_ids_are_rejects_with_a_reason(images, fmt):
    """A row that repeats an earlier row of its sample, or gives the sample another image, label or split,
    is a reject naming both rows; the first row stays, and the repeated caption is stored once."""
    rows = [{"sample_id": "1", "image": "a.jpg", "text": "a box", "label": "0"},
            {"sample_id": "1", "image": "a.jpg", "text": "a box", "label": "0"},  # the same row again
            {"sample_id": "1", "text": "une boîte", "lang": "fr"},  # another caption of sample 1: fine
            {"sample_id": "1", "image": "b.jpg", "text": "another image"},
            {"sample_id": "2", "image": "b.jpg", "text": "blue", "split": "test"},
            {"sample_id": "2", "text": "blue again", "split": "train"},
            {"sample_id": "2", "text": "blue", "label": "1"},  # the first label given for sample 2: fine
            {"text": "only text"}, {"text": "only text"}]  # text-only rows have no id to repeat
    r = read_generic("g", _write(images / f"m.{fmt}", fmt, rows))
    w = WHERE[fmt]
    assert [(s["sample_id"], s["label"], s["split"]) for s in r.manifest.samples.to_pylist()] == \
        [("g-1", 0, r.manifest.samples.column("split")[0].as_py()), ("g-2", 1, "test")]
    assert Path(r.manifest.samples.column("image_path")[0].as_py()).name == "a.jpg"
    assert [t["text"] for t in r.manifest.texts.to_pylist()] == ["a box", "une boîte", "blue", "blue", "only text",
                                                                  "only text"]
    assert [(x.sample_id, x.reason) for x in r.rejects] == [
        ("g-1", f"m.{fmt} {w(1)}: repeats {w(0)} (sample_id '1')"),
        ("g-1", f"m.{fmt} {w(3)}: sample_id '1' again, with another image than {w(0)} (that one is kept)"),
        ("g-2", f"m.{fmt} {w(5)}: sample_id '2' again, with another split than {w(4)} (that one is kept)")]
    assert r.seen == 2 + 3


def test_a_source_with_a_duplicate_id_keeps_the_first_and_rejects_the_others(tmp_path):
    from conescope.ingest.parallel import read_xm3600

    (tmp_path / "img").mkdir()
    for key in ("k1", "k2"):
        _jpeg(tmp_path / "img" / f"{key}.jpg")
    lines = [{"image/key": "k1", "en": {"caption": ["first"]}}, {"image/key": "k2", "en": {"caption": ["x"]}},
             {"image/key": "k1", "en": {"caption": ["second"]}}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = read_xm3600("xm", tmp_path / "captions.jsonl", tmp_path / "img")
    assert r.manifest.samples.column("sample_id").to_pylist() == ["xm-k1", "xm-k2"]
    assert r.manifest.texts.column("text").to_pylist() == ["first", "x"]
    assert [(x.sample_id, x.reason) for x in r.rejects] == [
        ("xm-k1", "captions.jsonl line 3: duplicate sample id 'xm-k1' (the first one is kept)")]


def test_duplicate_ids_reach_the_rejects_table(tmp_path):
    """The datasets asset of a manifest with a repeated row: the reject is in ``datasets.rejects``
    (stage ingest) with its reason, and the caption is stored once."""
    import copy

    import dagster as dg

    from conescope.profile import parse_profile
    from pipelines.definitions import build_definitions
    from storage.warehouse import Warehouse
    from tests.conftest import TINY_PROFILE

    root = tmp_path / "data"
    raw = root / "raw" / "dup"
    raw.mkdir(parents=True)
    _jpeg(raw / "a.jpg")
    rows = [{"sample_id": "1", "image": "a.jpg", "text": "a box"}] * 2 + [{"sample_id": "2", "image": "a.jpg",
                                                                           "text": "again"}]
    _write(raw / "m.csv", "csv", rows)
    entry = {**{k: v for k, v in copy.deepcopy(TINY_PROFILE).items() if k != "transforms"}, "languages": ["en"]}
    entry["datasets"] = {"dup": {"kind": "manifest", "file": "m.csv", "max_reject_fraction": 0.5}}
    profile = parse_profile(entry, "t.yaml")
    defs = build_definitions(profile, str(root))
    key = dg.AssetKey(["datasets", "dup"])
    done = dg.materialize([defs.resolve_assets_def(key)], instance=dg.DagsterInstance.ephemeral())
    assert done.success
    with Warehouse(root / "warehouse.duckdb").connect(read_only=True) as con:
        assert con.execute("SELECT dataset, stage, sample_id, reason FROM datasets.rejects").fetchall() == [
            ("dup", "ingest", "dup-1", "m.csv line 3: repeats line 2 (sample_id '1')")]
        assert con.execute("SELECT text FROM datasets.dup_texts ORDER BY text").fetchall() == [("a box",), ("again",)]
