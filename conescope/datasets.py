"""Offline datasets of the demo profile, built into the normalized manifest (docs/storage.md).

A manifest is two tables:

- samples: ``sample_id``, ``split`` (train | test, seeded 80/20), ``image`` (encoded bytes), ``image_path``
  (an image file, for sources ingested by reference; null when the bytes are stored), ``label``,
  ``label_name`` (English class name);
- texts: ``text_id``, ``sample_id`` (the image a caption describes, or null for class prompts),
  ``label`` (the class a prompt names, or null), ``lang``, ``text``.

``shapes`` renders one coloured shape per image at a seeded position and describes it in every
language (parallel captions); its label is the shape (4 classes, too few for top-5 accuracy: no class
prompts) or, with ``classes: colour_shape``, the colour and the shape (20 classes), each with one prompt
per language, the caption without the position ("a red circle", "un cercle rouge"), for zero-shot
classification. ``digits`` is scikit-learn's bundled digits
(1,797 8x8 images) with one prompt per class and language, the setting of zero-shot classification.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

SUPPORTED_LANGUAGES = ("en", "fr", "de", "ru")
TEST_FRACTION = 0.2

SAMPLES_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("split", pa.string()),
    ("image", pa.binary()),
    ("image_path", pa.string()),
    ("label", pa.int32()),
    ("label_name", pa.string()),
])
TEXTS_SCHEMA = pa.schema([
    ("text_id", pa.string()),
    ("sample_id", pa.string()),
    ("label", pa.int32()),
    ("lang", pa.string()),
    ("text", pa.string()),
])


@dataclass(frozen=True)
class Manifest:
    samples: pa.Table
    texts: pa.Table


# --- shapes --------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30), "purple": (140, 60, 180)}
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "centre")
SHAPE_CLASSES = ("shape", "colour_shape")

# Grammatical gender decides the adjective ending in fr/de/ru, so each noun carries its gender.
_SHAPE_WORDS = {
    "fr": {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
           "star": ("étoile", "f")},
    "de": {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
           "star": ("Stern", "m")},
    "ru": {"circle": ("круг", "m"), "square": ("квадрат", "m"), "triangle": ("треугольник", "m"),
           "star": ("звезда", "f")},
}
_COLOUR_WORDS = {
    "fr": {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
           "yellow": ("jaune", "jaune"), "purple": ("violet", "violette")},
    "de": {"red": ("roter", "rotes"), "green": ("grüner", "grünes"), "blue": ("blauer", "blaues"),
           "yellow": ("gelber", "gelbes"), "purple": ("violetter", "violettes")},
    "ru": {"red": ("красный", "красная"), "green": ("зелёный", "зелёная"), "blue": ("синий", "синяя"),
           "yellow": ("жёлтый", "жёлтая"), "purple": ("фиолетовый", "фиолетовая")},
}
_POSITION_WORDS = {
    "en": {"top left": "in the top left corner", "top right": "in the top right corner",
           "bottom left": "in the bottom left corner", "bottom right": "in the bottom right corner",
           "centre": "in the centre"},
    "fr": {"top left": "en haut à gauche", "top right": "en haut à droite",
           "bottom left": "en bas à gauche", "bottom right": "en bas à droite", "centre": "au centre"},
    "de": {"top left": "oben links", "top right": "oben rechts", "bottom left": "unten links",
           "bottom right": "unten rechts", "centre": "in der Mitte"},
    "ru": {"top left": "в левом верхнем углу", "top right": "в правом верхнем углу",
           "bottom left": "в левом нижнем углу", "bottom right": "в правом нижнем углу",
           "centre": "в центре"},
}


def shape_caption(shape: str, colour: str, position: str | None, lang: str) -> str:
    """The caption of one rendered shape in one language, with correct adjective agreement; without a
    position, the class prompt of a colour and shape."""
    where = "" if position is None else " " + _POSITION_WORDS[lang][position]
    if lang == "en":
        return f"a {colour} {shape}{where}"
    noun, gender = _SHAPE_WORDS[lang][shape]
    masc, other = _COLOUR_WORDS[lang][colour]
    if lang == "fr":
        article = "une" if gender == "f" else "un"
        return f"{article} {noun} {other if gender == 'f' else masc}{where}"
    if lang == "de":
        return f"ein {other if gender == 'n' else masc} {noun}{where}"
    return f"{other if gender == 'f' else masc} {noun}{where}"


def shape_classes(classes: str) -> list[tuple[str, str | None]]:
    """(shape, colour or None) of each class label, in label order."""
    if classes == "shape":
        return [(shape, None) for shape in SHAPES]
    if classes == "colour_shape":
        return [(shape, colour) for colour in COLOURS for shape in SHAPES]
    raise ValueError(f"unknown shapes classes {classes!r} (expected one of {', '.join(SHAPE_CLASSES)})")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _draw_shape(shape: str, rgb: tuple[int, int, int], position: str, size: int,
                rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    radius = size * rng.uniform(0.14, 0.22)
    centres = {"top left": (0.27, 0.27), "top right": (0.73, 0.27), "bottom left": (0.27, 0.73),
               "bottom right": (0.73, 0.73), "centre": (0.5, 0.5)}
    jitter = rng.uniform(-0.05, 0.05, size=2)
    cx, cy = ((np.array(centres[position]) + jitter) * size).tolist()
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=rgb)
    elif shape == "square":
        draw.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=rgb)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=rgb)
    else:
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        draw.polygon(list(zip(cx + radii * np.cos(angles), cy - radii * np.sin(angles), strict=True)),
                     fill=rgb)
    return img


def _splits(n: int, rng: np.random.Generator) -> list[str]:
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: int(round(n * TEST_FRACTION))]] = True
    return ["test" if t else "train" for t in test]


def build_shapes(name: str, n: int, seed: int, image_size: int, languages: tuple[str, ...],
                 classes: str = "shape") -> Manifest:
    """Render ``n`` images of one shape each, with a caption per language; label = the index of the
    shape or of the (shape, colour) pair in :func:`shape_classes`, and with ``colour_shape`` a prompt per
    class and language."""
    _check_languages(name, languages)
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    samples: dict[str, list] = {k: [] for k in SAMPLES_SCHEMA.names}
    texts: dict[str, list] = {k: [] for k in TEXTS_SCHEMA.names}
    splits = _splits(n, rng)
    class_list = shape_classes(classes)
    for i in range(n):
        shape_index = int(rng.integers(len(SHAPES)))
        shape, colour = SHAPES[shape_index], colours[int(rng.integers(len(colours)))]
        position = POSITIONS[int(rng.integers(len(POSITIONS)))]
        label = class_list.index((shape, colour if classes == "colour_shape" else None))
        label_name = shape if classes == "shape" else f"{colour} {shape}"
        sample_id = f"{name}-{i:06d}"
        img = _draw_shape(shape, COLOURS[colour], position, image_size, rng)
        for key, value in (("sample_id", sample_id), ("split", splits[i]), ("image", _png(img)),
                           ("image_path", None), ("label", label), ("label_name", label_name)):
            samples[key].append(value)
        for lang in languages:
            for key, value in (("text_id", f"{sample_id}-{lang}"), ("sample_id", sample_id),
                               ("label", None), ("lang", lang),
                               ("text", shape_caption(shape, colour, position, lang))):
                texts[key].append(value)
    for lang in languages if classes == "colour_shape" else ():
        for label, (shape, colour) in enumerate(class_list):
            for key, value in (("text_id", f"{name}-class{label}-{lang}"), ("sample_id", None),
                               ("label", label), ("lang", lang), ("text", shape_caption(shape, colour, None, lang))):
                texts[key].append(value)
    return Manifest(pa.table(samples, schema=SAMPLES_SCHEMA), pa.table(texts, schema=TEXTS_SCHEMA))


# --- digits --------------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "de": ("Null", "Eins", "Zwei", "Drei", "Vier", "Fünf", "Sechs", "Sieben", "Acht", "Neun"),
    "ru": ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"),
}
DIGIT_TEMPLATES = {
    "en": "a photo of the digit {}",
    "fr": "une photo du chiffre {}",
    "de": "ein Foto der Ziffer {}",
    "ru": "фотография цифры {}",
}


def build_digits(name: str, n: int, seed: int, languages: tuple[str, ...]) -> Manifest:
    """A seeded subset of scikit-learn's digits (upscaled to 32x32 grey PNGs) and class prompts."""
    from sklearn.datasets import load_digits

    _check_languages(name, languages)
    digits = load_digits()
    if n > len(digits.target):
        raise ValueError(f"dataset {name!r}: digits has {len(digits.target)} samples, asked for {n}")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(digits.target))[:n])
    splits = _splits(n, rng)
    samples: dict[str, list] = {k: [] for k in SAMPLES_SCHEMA.names}
    for j, idx in enumerate(chosen):
        pixels = (digits.images[idx] * (255.0 / 16.0)).round().astype(np.uint8)
        img = Image.fromarray(255 - pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST)
        label = int(digits.target[idx])
        for key, value in (("sample_id", f"{name}-{int(idx):06d}"), ("split", splits[j]),
                           ("image", _png(img)), ("image_path", None), ("label", label),
                           ("label_name", _NUMBER_WORDS["en"][label])):
            samples[key].append(value)
    texts: dict[str, list] = {k: [] for k in TEXTS_SCHEMA.names}
    for lang in languages:
        for label, word in enumerate(_NUMBER_WORDS[lang]):
            for key, value in (("text_id", f"{name}-class{label}-{lang}"), ("sample_id", None),
                               ("label", label), ("lang", lang), ("text", DIGIT_TEMPLATES[lang].format(word))):
                texts[key].append(value)
    return Manifest(pa.table(samples, schema=SAMPLES_SCHEMA), pa.table(texts, schema=TEXTS_SCHEMA))


def _check_languages(name: str, languages: tuple[str, ...]) -> None:
    missing = [lang for lang in languages if lang not in SUPPORTED_LANGUAGES]
    if missing:
        raise ValueError(f"dataset {name!r}: no captions for language(s) {', '.join(missing)} "
                         f"(generated datasets speak {', '.join(SUPPORTED_LANGUAGES)})")


def build_dataset(kind: str, name: str, n: int, seed: int, image_size: int,
                  languages: tuple[str, ...], classes: str = "shape") -> Manifest:
    if kind == "shapes":
        return build_shapes(name, n, seed, image_size, languages, classes)
    if kind == "digits":
        return build_digits(name, n, seed, languages)
    raise ValueError(f"dataset {name!r}: unknown kind {kind!r}")
