"""The generic manifest follows one set of rules in every format: the same rows written as CSV, JSON
Lines and Parquet give the same manifest and the same rejects, and errors name the file and the line
(or row)."""

import csv
import json

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
    ("jsonl", '{"text": "ok"}\n{"text": \n', r"m.jsonl: line 2: not valid JSON"),
    ("jsonl", '{"text": "ok"}\n{"lang": "fr"}\n', r"m.jsonl: line 2: neither 'image' nor 'text'"),
    ("parquet", "not parquet", r"m.parquet: not a readable Parquet file"),
])
def test_unreadable_rows_name_the_file_and_line(tmp_path, fmt, content, message):
    path = tmp_path / f"m.{fmt}"
    path.write_text(content)
    with pytest.raises(IngestError, match=message):
        read_generic("g", path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_limit_keeps_the_first_samples_with_all_their_rows(images, fmt):
    rows = [{"sample_id": str(i // 2), "image": "a.jpg", "text": f"caption {i}"} for i in range(8)]
    r = read_generic("g", _write(images / f"m.{fmt}", fmt, rows), limit=3)
    assert r.manifest.samples.column("sample_id").to_pylist() == ["g-0", "g-1", "g-2"]
    assert r.manifest.texts.num_rows == 6
