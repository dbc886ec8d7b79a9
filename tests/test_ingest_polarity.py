"""The sentence polarity source kind (``kind: polarity``): decoding, rejects, labels, splits, profile keys."""

from __future__ import annotations

import collections

import pytest

from conescope.download import HttpSource
from conescope.ingest import ingest
from conescope.ingest.polarity import BUNDLED, CORNELL_URL, decode_line, read_polarity
from conescope.profile_schema import ProfileError
from tests.test_ingest_dispatch import _spec


def test_lines_are_decoded_as_utf8_then_windows_1252_and_the_rest_rejected(tmp_path):
    # Cornell's files hold Windows-1252 bytes (0xe9: e acute, 0x92: right quote); 0x81 is undefined there
    (tmp_path / "rt-polarity.neg").write_bytes(b"dull .\nclich\xe9 and tired\n\nbad \x81 byte\nit\x92s flat\n")
    (tmp_path / "rt-polarity.pos").write_bytes("fine .\nun film s\u00e9duisant\n".encode())
    r = read_polarity("pol", tmp_path, seed=3)
    texts = r.manifest.texts.column("text").to_pylist()
    assert texts == ["dull .", "clich\u00e9 and tired", "it\u2019s flat", "fine .", "un film s\u00e9duisant"]
    assert [(x.sample_id, x.reason) for x in r.rejects] == [
        ("pol-neg-3", "rt-polarity.neg: line 3: blank sentence"),
        ("pol-neg-4", "rt-polarity.neg: line 4: neither UTF-8 nor Windows-1252")]
    assert r.seen == 7
    samples = r.manifest.samples
    assert samples.column("label").to_pylist() == [0, 0, 0, 1, 1]
    assert samples.column("label_name").to_pylist() == ["negative"] * 3 + ["positive"] * 2
    assert samples.column("image").null_count == 5 and not r.has_images
    assert r.manifest.texts.column("sample_id").to_pylist() == samples.column("sample_id").to_pylist()
    assert decode_line(b"\xc3\xa9") == "\u00e9" and decode_line(b"\x9d") is None


def test_bundled_copy_is_the_full_balanced_set_with_the_seeded_split():
    r = read_polarity("polarity", BUNDLED, seed=0)
    labels = r.manifest.samples.column("label").to_pylist()
    assert collections.Counter(labels) == {0: 5331, 1: 5331} and not r.rejects
    splits = collections.Counter(r.manifest.samples.column("split").to_pylist())
    assert splits == {"train": 8530, "test": 2132}  # round(0.2 * 10,662) test rows
    assert (BUNDLED / "PROVENANCE.md").is_file()
    limited = read_polarity("polarity", BUNDLED, limit=7)
    assert collections.Counter(limited.manifest.samples.column("label").to_pylist()) == {0: 3, 1: 4}


def test_profile_entry_bundled_and_cornell(tmp_path):
    spec, langs = _spec("polarity", {"kind": "polarity", "n": 40})
    assert langs == ("en",) and not spec.has_images and spec.download == ()
    r = ingest(spec, tmp_path, langs)  # the bundled copy: the raw folder is not read
    assert r.manifest.samples.num_rows == 40

    spec, _ = _spec("polarity", {"kind": "polarity", "files": "cornell"})
    (source,) = spec.download
    assert isinstance(source, HttpSource) and source.url == CORNELL_URL and source.unpack
    assert source.provides == "rt-polaritydata/rt-polarity.neg"
    with pytest.raises(FileNotFoundError, match="rt-polaritydata/rt-polarity.neg"):
        ingest(spec, tmp_path, langs)
    with pytest.raises(ProfileError, match="files"):
        _spec("polarity", {"kind": "polarity", "files": "somewhere"})
