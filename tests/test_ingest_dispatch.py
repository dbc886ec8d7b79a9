"""Profile entries of every source kind reach their reader with the right settings (paths relative to
raw/<ds>/, limits, languages restricted to the profile's)."""

import copy
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from conescope.ingest import ingest
from conescope.profile import parse_profile
from tests.conftest import TINY_PROFILE
from tests.test_ingest import _jpeg, _png_bytes


def _spec(name, entry, languages=("en", "fr")):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["languages"] = list(languages)
    raw["datasets"][name] = entry
    profile = parse_profile(raw, "x.yaml")
    return profile.datasets[name], profile.dataset_languages(name)


def test_karpathy_through_the_profile(tmp_path):
    raw = tmp_path / "karpathy"
    entries = []
    for i, split in enumerate(["train", "test", "test"]):
        _jpeg(raw / "val2014" / f"{i}.jpg")
        entries.append({"filepath": "val2014", "filename": f"{i}.jpg", "cocoid": i, "split": split,
                        "sentences": [{"raw": f"c{i}a"}, {"raw": f"c{i}b"}]})
    (raw / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    spec, langs = _spec("karpathy", {"kind": "coco_karpathy", "splits": ["test"], "first_caption": False})
    r = ingest(spec, raw, langs)
    assert r.manifest.samples.column("sample_id").to_pylist() == ["karpathy-1", "karpathy-2"]
    assert r.manifest.texts.num_rows == 4


def test_cifar_parquet_through_the_profile(tmp_path):
    raw = tmp_path / "c"
    raw.mkdir()
    table = pa.Table.from_pylist([{"img": {"bytes": _png_bytes(), "path": None}, "fine_label": i % 100,
                                   "coarse_label": 0} for i in range(6)])
    pq.write_table(table, raw / "train.parquet")
    pq.write_table(table.slice(0, 2), raw / "test.parquet")
    spec, langs = _spec("c", {"kind": "cifar100", "format": "parquet", "n": 3, "class_names": "raw",
                              "files": {"train": ["train.parquet"], "test": ["test.parquet"]}})
    r = ingest(spec, raw, langs)
    assert r.manifest.samples.column("split").to_pylist() == ["train"] * 3 + ["test"] * 2
    assert r.manifest.texts.column("text").to_pylist()[1] == "low-resolution photo of a aquarium_fish"
    assert langs == ("en",) and r.info["class_names"] == "raw"


def test_xm3600_languages_follow_the_profile(tmp_path):
    raw = tmp_path / "xm"
    lines = []
    for key in ("k1", "k2"):
        _jpeg(raw / "images" / f"{key}.jpg")
        lines.append(json.dumps({"image/key": key, **{lang: {"caption": [f"{key} {lang}"]}
                                                       for lang in ("en", "fr", "sw", "ja")}}))
    (raw / "captions.jsonl").write_text("\n".join(lines))
    spec, langs = _spec("xm", {"kind": "xm3600", "languages": ["en", "sw", "ja"]}, languages=("en", "fr", "sw"))
    assert langs == ("en", "sw")
    r = ingest(spec, raw, langs)
    assert sorted(set(r.manifest.texts.column("lang").to_pylist())) == ["en", "sw"]


def test_multi30k_sts_and_sweep_through_the_profile(tmp_path):
    m = tmp_path / "m30k"
    (m / "data" / "task1" / "image_splits").mkdir(parents=True)
    (m / "data" / "task1" / "raw").mkdir()
    (m / "data" / "task1" / "image_splits" / "val.txt").write_text("a.jpg\nb.jpg\n")
    for lang in ("en", "fr", "de"):
        with gzip.open(m / "data" / "task1" / "raw" / f"val.{lang}.gz", "wt") as fh:
            fh.write(f"{lang} one\n{lang} two\n")
    _jpeg(m / "flickr30k-images" / "a.jpg")
    _jpeg(m / "flickr30k-images" / "b.jpg")
    spec, langs = _spec("m30k", {"kind": "multi30k", "splits": ["val"]})
    r = ingest(spec, m, langs)
    assert langs == ("en", "fr") and r.manifest.texts.num_rows == 4
    assert set(r.manifest.samples.column("split").to_pylist()) == {"val"}

    s = tmp_path / "sts"
    s.mkdir()
    (s / "sts.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\t2.0\n")
    spec, langs = _spec("sts", {"kind": "sts", "file": "sts.tsv", "split": "test"})
    r = ingest(spec, s, langs)
    assert r.tables["pairs"].column("split").to_pylist() == ["test", "test"] and not spec.has_images

    w = tmp_path / "sweep"
    w.mkdir()
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(w / "src.png")
    spec, langs = _spec("sweep", {"kind": "sweep", "image": "src.png", "kinds": ["blur", "noise"], "steps": 3,
                                  "maxima": {"noise": 10}, "caption": "a grey square"})
    r = ingest(spec, w, langs)
    assert r.manifest.samples.column("label_name").to_pylist() == [
        "blur=0", "blur=4", "blur=8", "noise=0", "noise=5", "noise=10"]
    assert r.manifest.texts.num_rows == 6 and spec.languages == ("en",)
