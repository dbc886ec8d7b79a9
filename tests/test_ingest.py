"""Readers of real sources: small files in every supported format, built here, ingested to the manifest."""

import gzip
import io
import json
import pickle
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conescope.datasets import SAMPLES_SCHEMA, TEXTS_SCHEMA
from conescope.ingest.cifar import CIFAR100_COARSE, CIFAR100_FINE, read_cifar_archive, read_cifar_parquet
from conescope.ingest.coco import read_coco, read_karpathy
from conescope.ingest.common import IngestError, TooManyRejects
from conescope.ingest.generic import read_generic
from conescope.ingest.parallel import read_multi30k, read_wikicaps_tsv, read_xm3600
from conescope.ingest.prompts import PAPER_TEMPLATE
from conescope.ingest.sts import read_sts_tsv
from conescope.ingest.sweeps import read_sweep


def _jpeg(path, colour=(200, 30, 30), size=(24, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")
    return path


def _png_bytes(colour=(10, 200, 10)):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def _texts(result, lang=None):
    t = result.manifest.texts.to_pylist()
    return [r for r in t if lang is None or r["lang"] == lang]


# --- COCO ----------------------------------------------------------------------------------------

@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "val2014"
    for i in (1, 2, 3, 4, 5):
        _jpeg(images / f"COCO_val2014_{i:012d}.jpg", colour=(40 * i, 0, 0))
    (images / f"COCO_val2014_{6:012d}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # corrupt
    doc = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in range(1, 8)],  # 7: missing
           "annotations": [{"image_id": i, "id": 100 * i + j, "caption": f"image {i} caption {j}"}
                           for i in range(1, 8) for j in range(3)]}
    doc["annotations"].append({"image_id": 5, "id": 999, "caption": "  "})
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(doc))
    return path, images


def test_coco_first_caption_and_rejects(coco):
    path, images = coco
    first = read_coco("coco", path, images, first_caption=True, seed=0)
    m = first.manifest
    assert m.samples.schema == SAMPLES_SCHEMA and m.texts.schema == TEXTS_SCHEMA
    assert m.samples.column("sample_id").to_pylist() == [f"coco-{i}" for i in range(1, 6)]
    assert [t["text"] for t in _texts(first)] == [f"image {i} caption 0" for i in range(1, 6)]
    assert all(p.endswith(".jpg") for p in m.samples.column("image_path").to_pylist())
    assert m.samples.column("image").null_count == 5
    reasons = {r.sample_id: r.reason for r in first.rejects}
    assert set(reasons) == {"coco-6", "coco-7"}
    assert "decoded" in reasons["coco-6"] and "missing" in reasons["coco-7"]
    assert first.seen == 7 and first.languages == ("en",) and first.has_images
    every = read_coco("coco", path, images, first_caption=False)
    assert len(_texts(every)) == 15  # the blank caption of image 5 is dropped
    with pytest.raises(TooManyRejects, match="2 of 7"):
        first.check_rejects("coco", 0.2)
    first.check_rejects("coco", 0.3)


def test_coco_split_is_seeded_80_20(coco):
    path, images = coco
    a = read_coco("coco", path, images, seed=0).manifest.samples.column("split").to_pylist()
    assert a == read_coco("coco", path, images, seed=0).manifest.samples.column("split").to_pylist()
    assert set(a) <= {"train", "test"}


def test_coco_malformed_json_names_file_and_line(tmp_path):
    bad = tmp_path / "captions.json"
    bad.write_text('{"images": [\n{"id": 1,}\n]}')
    (tmp_path / "img").mkdir()
    with pytest.raises(IngestError, match=r"captions.json: line 2"):
        read_coco("coco", bad, tmp_path / "img")
    bad.write_text(json.dumps({"images": [{"id": "x", "file_name": "a.jpg"}], "annotations": []}))
    with pytest.raises(IngestError, match=r"images\[0\].*'id'"):
        read_coco("coco", bad, tmp_path / "img")


def test_karpathy_splits(tmp_path):
    root = tmp_path / "coco"
    entries = []
    for i, split in enumerate(["train", "restval", "val", "test", "test"]):
        folder = "train2014" if split == "train" else "val2014"
        _jpeg(root / folder / f"img{i}.jpg")
        entries.append({"filepath": folder, "filename": f"img{i}.jpg", "cocoid": i, "split": split,
                        "sentences": [{"raw": f"a {i}", "sentid": 10 * i}, {"raw": f"b {i}", "sentid": 10 * i + 1}]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    r = read_karpathy("coco", path, root, first_caption=False)
    assert r.manifest.samples.column("split").to_pylist() == ["train", "train", "val", "test", "test"]
    assert len(_texts(r)) == 10
    test_only = read_karpathy("coco", path, root, splits=("test",))
    assert test_only.manifest.samples.column("sample_id").to_pylist() == ["coco-3", "coco-4"]
    assert [t["text"] for t in _texts(test_only)] == ["a 3", "a 4"]


# --- CIFAR-100 -----------------------------------------------------------------------------------

def _cifar_archive(path, n_train=6, n_test=4, bad_label_at=None):
    rng = np.random.default_rng(0)

    def member(tar, name, obj):
        data = pickle.dumps(obj)
        info = tarfile.TarInfo(f"cifar-100-python/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        member(tar, "meta", {b"fine_label_names": [n.encode() for n in CIFAR100_FINE],
                             b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE]})
        for split, n in (("train", n_train), ("test", n_test)):
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            fine = [int(x) for x in rng.integers(0, 100, size=n)]
            if bad_label_at is not None and split == "train":
                fine[bad_label_at] = 100
            member(tar, split, {b"data": data, b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                                b"filenames": [f"x{i}.png".encode() for i in range(n)]})
            batches[split] = (data, fine)
    return batches


def test_cifar_archive_pixels_labels_and_prompts(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    batches = _cifar_archive(path)
    r = read_cifar_archive("cifar100", path)
    s = r.manifest.samples
    assert s.num_rows == 10 and s.column("split").to_pylist() == ["train"] * 6 + ["test"] * 4
    data, fine = batches["train"]
    first = np.asarray(Image.open(io.BytesIO(s.column("image")[0].as_py())))
    np.testing.assert_array_equal(first, data[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert s.column("label").to_pylist()[:6] == fine
    prompts = _texts(r, "en")
    assert len(prompts) == 100 and prompts[1]["label"] == 1
    assert prompts[1]["text"] == PAPER_TEMPLATE.format("aquarium fish")
    raw = read_cifar_archive("cifar100", path, class_names="raw", splits=("test",))
    assert _texts(raw)[1]["text"] == "low-resolution photo of a aquarium_fish"
    assert raw.info["class_names"] == "raw" and raw.manifest.samples.num_rows == 4


def test_cifar_archive_unknown_label_rejected_and_translations(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    _cifar_archive(path, bad_label_at=2)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"fr": [f"classe {i}" for i in range(100)]}))
    r = read_cifar_archive("cifar100", path, templates={"en": "a photo of a {}", "fr": "une photo de {}"},
                           translations=names)
    assert [x.sample_id for x in r.rejects] == ["cifar100-train-00002"]
    assert "unknown label 100" in r.rejects[0].reason
    assert r.languages == ("en", "fr")
    assert _texts(r, "fr")[7]["text"] == "une photo de classe 7"
    with pytest.raises(ValueError, match="no prompt template"):
        read_cifar_archive("cifar100", path, translations=names)


def test_cifar_archive_broken(tmp_path):
    path = tmp_path / "c.tar.gz"
    path.write_bytes(b"garbage")
    with pytest.raises(IngestError, match="c.tar.gz"):
        read_cifar_archive("cifar100", path)


def test_cifar_parquet_with_hub_metadata_and_corrupt_image(tmp_path):
    rows = [{"img": {"bytes": _png_bytes((i * 30, 0, 0)), "path": None}, "fine_label": i, "coarse_label": 0}
            for i in range(5)]
    rows[3]["img"]["bytes"] = b"not an image"
    table = pa.Table.from_pylist(rows)
    names = [f"name_{i}" for i in range(100)]
    hf = {"info": {"features": {"fine_label": {"names": names, "_type": "ClassLabel"}}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(hf)})
    pq.write_table(table, tmp_path / "train-00000.parquet")
    pq.write_table(table.slice(0, 2), tmp_path / "test-00000.parquet")
    r = read_cifar_parquet("cifar100", {"train": [tmp_path / "train-00000.parquet"],
                                        "test": [tmp_path / "test-00000.parquet"]})
    s = r.manifest.samples
    assert s.num_rows == 6 and [x.sample_id for x in r.rejects] == ["cifar100-train-00003"]
    assert s.column("label_name").to_pylist()[:2] == ["name_0", "name_1"]
    assert _texts(r)[4]["text"] == "low-resolution photo of a name 4"
    pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(IngestError, match=r"bad.parquet: missing column"):
        read_cifar_parquet("cifar100", {"train": [tmp_path / "bad.parquet"]})


# --- parallel captions ---------------------------------------------------------------------------

def test_wikicaps_tsv_text_only_and_with_images(tmp_path):
    tsv = tmp_path / "wikicaps.tsv"
    tsv.write_text("en\tfr\tde\tru\n"
                   "a dog\tun chien\tein Hund\tсобака\n"
                   "a cat\tun chat\t\tкошка\n"
                   "a \"quoted\" bird\tun oiseau\tein Vogel\tптица\n")
    r = read_wikicaps_tsv("wikicaps", tsv, languages=("en", "fr", "de"))
    assert not r.has_images and r.manifest.samples.num_rows == 3
    assert len(_texts(r, "de")) == 2 and [x.sample_id for x in r.rejects] == ["wikicaps-3-de"]
    assert _texts(r, "en")[2]["text"] == 'a "quoted" bird'
    assert _texts(r, "fr")[0]["sample_id"] == _texts(r, "en")[0]["sample_id"]
    tsv.write_text("en\tfr\na dog\tun chien\nonly one field\n")
    with pytest.raises(IngestError, match=r"wikicaps.tsv: line 3: 1 fields"):
        read_wikicaps_tsv("wikicaps", tsv)
    with pytest.raises(IngestError, match="no column for language"):
        read_wikicaps_tsv("wikicaps", tsv, languages=("ru",))
    _jpeg(tmp_path / "img" / "a.jpg")
    tsv.write_text("image\ten\tfr\na.jpg\ta dog\tun chien\nmissing.jpg\ta cat\tun chat\n")
    r = read_wikicaps_tsv("wikicaps", tsv, image_dir=tmp_path / "img")
    assert r.has_images and r.manifest.samples.num_rows == 1 and "missing" in r.rejects[0].reason


def test_xm3600_jsonl(tmp_path):
    images = tmp_path / "images"
    lines = []
    for key in ("aa01", "bb02", "cc03"):
        _jpeg(images / f"{key}.jpg")
        lines.append(json.dumps({"image/key": key, "en": {"caption": [f"{key} en 1", f"{key} en 2"]},
                                 "de": {"caption": [f"{key} de"]}, "sw": {"caption": [f"{key} sw"]}}))
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = read_xm3600("xm3600", path, images, languages=("en", "de"))
    assert r.languages == ("en", "de") and len(_texts(r)) == 6
    assert read_xm3600("xm3600", path, images, first_caption=False).languages == ("en", "de", "sw")
    path.write_text(lines[0] + "\n{broken\n")
    with pytest.raises(IngestError, match=r"captions.jsonl: line 2"):
        read_xm3600("xm3600", path, images)


def test_multi30k(tmp_path):
    root, images = tmp_path / "task1", tmp_path / "flickr30k"
    (root / "image_splits").mkdir(parents=True)
    (root / "raw").mkdir()
    for split, n in (("train", 3), ("test_2016_flickr", 2)):
        names = [f"{split}{i}.jpg" for i in range(n)]
        for name in names:
            _jpeg(images / name)
        (root / "image_splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for lang in ("en", "de"):
            with gzip.open(root / "raw" / f"{split}.{lang}.gz", "wt", encoding="utf-8") as fh:
                fh.write("\n".join(f"{lang} {split} {i}" for i in range(n)) + "\n")
    (root / "raw" / "train.fr").write_text("fr 0\nfr 1\nfr 2\n")
    r = read_multi30k("m30k", root, images, splits=("train", "test_2016_flickr"), languages=("en", "de", "fr"))
    assert r.manifest.samples.column("split").to_pylist() == ["train"] * 3 + ["test"] * 2
    assert len(_texts(r, "fr")) == 3 and len(_texts(r, "de")) == 5
    (root / "raw" / "train.fr").write_text("fr 0\n")
    with pytest.raises(IngestError, match=r"train.fr: 1 lines"):
        read_multi30k("m30k", root, images, splits=("train",), languages=("fr",))


# --- STS-B ---------------------------------------------------------------------------------------

def test_sts_pairs(tmp_path):
    path = tmp_path / "sts.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("split\tgenre\tscore\tsentence1\tsentence2\n"
                 "train\tnews\t4.5\tA man plays.\tA man is playing.\n"
                 "test\tnews\tx\tbad score\tbad\n"
                 "test\tforum\t0.0\tA cat.\t\n"
                 "test\tforum\t1.25\tA \"dog\".\tA bird.\n")
    r = read_sts_tsv("stsb", path)
    pairs = r.tables["pairs"].to_pylist()
    assert [(p["score"], p["split"]) for p in pairs] == [(4.5, "train"), (1.25, "test")]
    texts = {t["text_id"]: t["text"] for t in _texts(r)}
    assert texts[pairs[1]["text_id_a"]] == 'A "dog".' and not r.has_images
    assert len(r.rejects) == 2 and r.seen == 4


# --- generic manifest ----------------------------------------------------------------------------

def test_generic_csv_jsonl_parquet(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    _jpeg(tmp_path / "b.jpg", colour=(0, 0, 200))
    (tmp_path / "broken.jpg").write_bytes(b"broken")
    (tmp_path / "m.csv").write_text(
        "sample_id,image,text,lang,label,split\n"
        "1,a.jpg,a red box,en,red,train\n"
        "1,,une boîte rouge,fr,,\n"
        "2,b.jpg,a blue box,en,blue,test\n"
        "3,broken.jpg,broken,en,red,test\n"
        "4,a.jpg,green?,en,green,test\n")
    r = read_generic("g", tmp_path / "m.csv", labels=["red", "blue"])
    s = r.manifest.samples.to_pylist()
    assert [(x["sample_id"], x["label"], x["label_name"], x["split"]) for x in s] == [
        ("g-1", 0, "red", "train"), ("g-2", 1, "blue", "test")]
    assert sorted(t["text"] for t in _texts(r)) == ["a blue box", "a red box", "une boîte rouge"]
    assert {x.sample_id for x in r.rejects} == {"g-3", "g-4"}
    assert any("unknown label 'green'" in x.reason and "line 6" in x.reason for x in r.rejects)

    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.jpg", "text": "x", "label": 1}) + "\n"
                                      + json.dumps({"text": "only text", "lang": "de"}) + "\n")
    r = read_generic("g", tmp_path / "m.jsonl")
    assert r.manifest.samples.num_rows == 1 and _texts(r, "de")[0]["sample_id"] is None
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(IngestError, match=r"bad.jsonl: line 2"):
        read_generic("g", tmp_path / "bad.jsonl")

    pq.write_table(pa.table({"image": [_png_bytes(), b"junk"], "text": ["green", "junk"], "label": [0, 0]}),
                   tmp_path / "m.parquet")
    r = read_generic("g", tmp_path / "m.parquet")
    assert r.manifest.samples.column("image").null_count == 0 and r.manifest.samples.num_rows == 1
    assert [t["text"] for t in _texts(r)] == ["green"] and "decoded" in r.rejects[0].reason


def test_generic_urls_go_through_fetch(tmp_path):
    _jpeg(tmp_path / "cache.jpg")
    (tmp_path / "m.csv").write_text("image,text\nhttp://example.invalid/x.jpg,hello\nhttp://example.invalid/y.jpg,y\n")
    fetched = []

    def fetch(url):
        fetched.append(url)
        if url.endswith("y.jpg"):
            raise OSError("offline")
        return tmp_path / "cache.jpg"

    r = read_generic("g", tmp_path / "m.csv", fetch=fetch)
    assert len(fetched) == 2 and r.manifest.samples.num_rows == 1 and "download failed" in r.rejects[0].reason


# --- sweeps --------------------------------------------------------------------------------------

def test_sweep_steps(tmp_path):
    src = tmp_path / "src.png"
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, :4] = 255
    Image.fromarray(pixels).save(src)
    r = read_sweep("sweep", src, ("rotate", "shift", "blur", "noise"), steps=5, caption="a white bar")
    s = r.manifest.samples.to_pylist()
    assert len(s) == 20 and [x["label"] for x in s[:5]] == [0, 1, 2, 3, 4]
    decoded = [np.asarray(Image.open(io.BytesIO(x["image"]))) for x in s]
    np.testing.assert_array_equal(decoded[0], pixels)  # step 0 is the original
    np.testing.assert_array_equal(decoded[5 + 4], np.roll(pixels, 8, axis=1))  # shift 0.5 of the width
    noise = [np.abs(d.astype(int) - pixels).mean() for d in decoded[15:20]]
    assert noise[0] == 0 and all(a < b for a, b in zip(noise[1:], noise[2:], strict=False))
    assert s[9]["label_name"] == "shift=0.5" and len(_texts(r)) == 20


def test_cifar_name_lists_match_the_archive_order():
    # the official meta file lists names alphabetically; the hub dataset keeps that label order
    assert len(set(CIFAR100_FINE)) == 100 and list(CIFAR100_FINE) == sorted(CIFAR100_FINE)
    assert len(set(CIFAR100_COARSE)) == 20 and list(CIFAR100_COARSE) == sorted(CIFAR100_COARSE)


def test_truncated_jpeg_is_caught_at_ingest(tmp_path):
    from conescope.ingest.common import check_image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    assert check_image(data) is None
    assert "truncated" in check_image(data[: len(data) // 2])
    assert "missing" in check_image(tmp_path / "absent.jpg")
