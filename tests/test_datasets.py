"""Generated datasets: seeded, parallel across languages, grammatical, and in the manifest schema."""

import io

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from conescope.datasets import (
    SAMPLES_SCHEMA,
    TEXTS_SCHEMA,
    build_digits,
    build_shapes,
    shape_caption,
)

LANGS = ("en", "fr", "de", "ru")


def test_shapes_are_seeded_and_parallel():
    a = build_shapes("shapes", 20, seed=3, image_size=32, languages=LANGS)
    b = build_shapes("shapes", 20, seed=3, image_size=32, languages=LANGS)
    c = build_shapes("shapes", 20, seed=4, image_size=32, languages=LANGS)
    assert a.samples.equals(b.samples) and a.texts.equals(b.texts)
    assert not a.samples.equals(c.samples)
    assert a.samples.schema == SAMPLES_SCHEMA and a.texts.schema == TEXTS_SCHEMA
    captions = a.texts.filter(pc.is_valid(a.texts.column("sample_id")))
    per_lang = {lang: captions.filter(captions.column("lang").to_numpy(zero_copy_only=False) == lang)
                for lang in LANGS}
    for table in per_lang.values():
        assert table.column("sample_id").to_pylist() == a.samples.column("sample_id").to_pylist()
    splits = a.samples.column("split").to_pylist()
    assert splits.count("test") == 4 and splits.count("train") == 16


def test_shape_images_decode_and_show_the_colour():
    m = build_shapes("shapes", 6, seed=0, image_size=48, languages=("en",))
    captions = m.texts.filter(pc.is_valid(m.texts.column("sample_id"))).column("text").to_pylist()
    for png, caption in zip(m.samples.column("image").to_pylist(), captions, strict=True):
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert img.shape == (48, 48, 3)
        assert img.std() > 10, f"nothing drawn for {caption!r}"


@pytest.mark.parametrize("lang, expected", [
    ("en", "a green star in the centre"),
    ("fr", "une étoile verte au centre"),
    ("de", "ein grüner Stern in der Mitte"),
    ("ru", "зелёная звезда в центре"),
])
def test_caption_agreement_feminine_and_masculine(lang, expected):
    assert shape_caption("star", "green", "centre", lang) == expected


@pytest.mark.parametrize("classes, n_classes", [("shape", 4), ("colour_shape", 20)])
def test_shape_labels_and_class_prompts(classes, n_classes):
    """Each label names what the caption says (the shape, or colour and shape); with colour_shape each
    class has one prompt per language, the caption without the position; four shapes have none."""
    m = build_shapes("shapes", 200, seed=1, image_size=32, languages=LANGS, classes=classes)
    samples, texts = m.samples.to_pydict(), m.texts.to_pydict()
    caption = {(sid, lang): text for sid, lang, text in zip(texts["sample_id"], texts["lang"], texts["text"],
                                                             strict=True) if sid is not None}
    prompts = {(label, lang): text for sid, label, lang, text in zip(texts["sample_id"], texts["label"], texts["lang"],
                                                                      texts["text"], strict=True) if sid is None}
    assert len(set(samples["label"])) == n_classes  # 200 draws cover every class
    assert len(caption) == 200 * len(LANGS)
    if classes == "shape":
        assert not prompts
        assert all(name in caption[(sid, "en")].split() for sid, name in zip(
            samples["sample_id"], samples["label_name"], strict=True))
        return
    assert sorted({label for label, _ in prompts}) == list(range(n_classes))
    assert len(prompts) == n_classes * len(LANGS)
    for sid, label, name in zip(samples["sample_id"], samples["label"], samples["label_name"], strict=True):
        assert caption[(sid, "en")].startswith(f"a {name} ")
        for lang in LANGS:
            assert caption[(sid, lang)].startswith(prompts[(label, lang)] + " ")


@pytest.mark.parametrize("lang, expected", [
    ("fr", "un carré bleu en bas à droite"),
    ("de", "ein blaues Quadrat unten rechts"),
    ("ru", "синий квадрат в правом нижнем углу"),
])
def test_caption_agreement_other_genders(lang, expected):
    assert shape_caption("square", "blue", "bottom right", lang) == expected


def test_digits_subset_and_prompts():
    from sklearn.datasets import load_digits

    m = build_digits("digits", 30, seed=0, languages=("en", "ru"))
    assert m.samples.num_rows == 30
    target = load_digits().target
    for sid, label in zip(m.samples.column("sample_id").to_pylist(), m.samples.column("label").to_pylist(),
                          strict=True):
        assert target[int(sid.split("-")[1])] == label
    prompts = m.texts.to_pylist()
    assert len(prompts) == 20 and all(p["sample_id"] is None for p in prompts)
    assert {p["text"] for p in prompts if p["label"] == 7} == {"a photo of the digit seven", "фотография цифры семь"}


def test_unsupported_language_names_the_dataset():
    with pytest.raises(ValueError, match="dataset 'shapes': no captions for language"):
        build_shapes("shapes", 3, 0, 32, ("en", "ja"))
