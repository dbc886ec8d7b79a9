"""One registry entry per dataset source kind: the record a reader module registers is the kind's YAML
schema, languages, image flag and reader; a new module is found without editing any list."""

import copy
import subprocess
import sys
import textwrap

import pytest

from conescope.dataset_specs import SourceDataset
from conescope.ingest import source_kinds
from conescope.profile import ProfileError, parse_profile
from conescope.profile_schema import kind_of
from tests.conftest import TINY_PROFILE

KINDS = {"coco": "coco", "coco_karpathy": "coco", "cifar100": "cifar", "wikicaps": "parallel", "xm3600": "parallel",
         "multi30k": "parallel", "sts": "sts", "manifest": "generic", "sweep": "sweeps", "word_pairs": "words",
         "valence_lexicon": "words", "polarity": "polarity"}


def test_each_reader_module_registers_its_kinds():
    kinds = source_kinds()
    assert {k: cls.__module__ for k, cls in kinds.items()} == {k: f"conescope.ingest.{m}" for k, m in KINDS.items()}
    for kind, cls in kinds.items():
        assert issubclass(cls, SourceDataset) and kind_of(cls) == kind
        assert cls.read is not SourceDataset.read, f"{kind} defines no reader"


def test_unknown_kind_names_every_registered_kind():
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"]["x"] = {"kind": "imagenet"}
    with pytest.raises(ProfileError) as info:
        parse_profile(raw, "p.yaml")
    message = str(info.value)
    assert message.startswith("p.yaml: datasets.x.kind: 'imagenet' is not one of shapes, digits, ")
    assert all(kind in message for kind in KINDS)


@pytest.mark.parametrize("entry, languages, has_images", [
    ({"kind": "wikicaps", "file": "w.tsv"}, ("en", "fr", "de", "ru"), False),
    ({"kind": "wikicaps", "file": "w.tsv", "images": "img", "languages": ["fr"]}, ("fr",), True),
    ({"kind": "sts", "lang": "de"}, ("de",), False),
    ({"kind": "sweep", "image": "a.png"}, (), True),
    ({"kind": "sweep", "image": "a.png", "caption": "a dog", "lang": "fr"}, ("fr",), True),
    ({"kind": "cifar100", "templates": {"en": "a {}", "de": "ein {}"}, "translations": "t.json"}, ("en", "de"), True),
    ({"kind": "manifest", "file": "m.csv", "text_only": True}, ("en",), False),
    ({"kind": "word_pairs", "file": "rg65.csv"}, ("en",), False),
    ({"kind": "valence_lexicon", "lang": "fr"}, ("fr",), False),
    ({"kind": "polarity"}, ("en",), False),
])
def test_each_kind_declares_its_languages_and_images(entry, languages, has_images):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"]["real"] = entry
    spec = parse_profile(raw, "p.yaml").datasets["real"]
    assert (spec.languages, spec.has_images, spec.is_source) == (languages, has_images, True)


def test_a_new_kind_is_one_module(tmp_path):
    """A reader module dropped into the ingest package (here: a folder added to its path) is a profile
    kind at once, with its keys validated and its reader called through conescope.ingest."""
    (tmp_path / "toy.py").write_text(textwrap.dedent('''
        from typing import ClassVar, Literal

        from conescope.dataset_specs import SourceDataset, register_source
        from conescope.ingest.common import ManifestBuilder
        from conescope.profile_schema import Text


        @register_source
        class ToySource(SourceDataset):
            kind: Literal["toy"]
            word: Text
            languages: ClassVar[tuple[str, ...]] = ("en",)
            has_images: ClassVar[bool] = False

            def read(self, raw_dir, languages):
                b = ManifestBuilder(self.name)
                b.add_text(f"{self.name}-0", None, None, "en", self.word)
                return b.result()
    '''))
    script = textwrap.dedent(f'''
        import copy, sys
        import conescope.ingest
        conescope.ingest.__path__.append({str(tmp_path)!r})
        from conescope.ingest import ingest
        from conescope.profile import ProfileError, parse_profile
        from tests.conftest import TINY_PROFILE

        raw = copy.deepcopy(TINY_PROFILE)
        raw["datasets"]["t"] = {{"kind": "toy", "word": "hello"}}
        spec = parse_profile(raw, "p.yaml").datasets["t"]
        print(ingest(spec, None, ("en",)).manifest.texts.column("text").to_pylist())
        raw["datasets"]["t"] = {{"kind": "toy", "wrod": "hello"}}
        try:
            parse_profile(raw, "p.yaml")
        except ProfileError as exc:
            print(exc)
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "['hello']",
        "p.yaml: datasets.t.wrod: unknown key (allowed: download, kind, max_reject_fraction, n, seed, word)"]


@pytest.mark.parametrize("name", ["demo", "paper", "xm3600"])
def test_profile_records_are_hashable(name):
    # frozen records key caches (a loaded model per ModelSpec); mapping-valued keys stay out of the hash
    from conescope.profile import load_profile

    p = load_profile(name)
    assert len({*p.datasets.values(), *p.models.values(), p.metrics, p.transforms, p.embedding}) == \
        len(p.datasets) + len(p.models) + 3
