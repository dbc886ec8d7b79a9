"""Generated datasets: seeded, parallel across languages, grammatical, and in the manifest schema."""

import io

import numpy as np
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
    per_lang = {lang: a.texts.filter(a.texts.column("lang").to_numpy(zero_copy_only=False) == lang)
                for lang in LANGS}
    for table in per_lang.values():
        assert table.column("sample_id").to_pylist() == a.samples.column("sample_id").to_pylist()
    splits = a.samples.column("split").to_pylist()
    assert splits.count("test") == 4 and splits.count("train") == 16


def test_shape_images_decode_and_show_the_colour():
    m = build_shapes("shapes", 6, seed=0, image_size=48, languages=("en",))
    for png, caption in zip(m.samples.column("image").to_pylist(), m.texts.column("text").to_pylist(), strict=True):
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
