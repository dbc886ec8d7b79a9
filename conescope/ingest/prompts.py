"""Class names and prompt templates for zero-shot classification, per language.

Tyshchuk et al. (section 5.3) classify CIFAR-100 with the prompt "low-resolution photo of a {}"; that
template is the default for English. Class names come raw (``aquarium_fish``, as stored in the
dataset) or cleaned (``aquarium fish``: underscores to spaces); the choice is recorded in the
dataset's provenance. Other languages need translated class names (a JSON file ``{lang: [names]}``
in label order) and a template for that language.
"""

from __future__ import annotations

import json
from pathlib import Path

from conescope.ingest.common import IngestError, ManifestBuilder, open_utf8

PAPER_TEMPLATE = "low-resolution photo of a {}"
CLASS_NAME_STYLES = ("raw", "clean")


def clean_class_name(name: str) -> str:
    return name.replace("_", " ").strip()


def styled_names(names: list[str], style: str) -> list[str]:
    if style not in CLASS_NAME_STYLES:
        raise ValueError(f"class-name style {style!r} is not one of {', '.join(CLASS_NAME_STYLES)}")
    return list(names) if style == "raw" else [clean_class_name(n) for n in names]


def load_translated_names(path: Path, n_classes: int) -> dict[str, list[str]]:
    """``{lang: [name per label]}`` from a JSON file; every list must have one name per class."""
    try:
        with open_utf8(path) as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"class-name file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise IngestError(f"{path}: expected a mapping of language -> list of class names")
    for lang, names in doc.items():
        if not isinstance(names, list) or len(names) != n_classes or not all(isinstance(x, str) for x in names):
            raise IngestError(f"{path}: {lang}: expected a list of {n_classes} class names")
    return doc


def add_class_prompts(b: ManifestBuilder, name: str, names_by_lang: dict[str, list[str]],
                      templates: dict[str, str]) -> None:
    """One prompt per class and language: ``templates[lang].format(class name)``."""
    for lang, names in names_by_lang.items():
        if lang not in templates:
            raise ValueError(f"dataset {name!r}: class names in {lang!r} but no prompt template for it "
                             f"(templates given: {', '.join(sorted(templates))})")
        template = templates[lang]
        if template.count("{}") != 1:
            raise ValueError(f"dataset {name!r}: template {template!r} must contain exactly one '{{}}'")
        for label, class_name in enumerate(names):
            b.add_text(f"{name}-class{label}-{lang}", None, label, lang, template.format(class_name))
