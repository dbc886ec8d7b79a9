"""Word-level benchmarks (Wolfe & Caliskan 2022, section 3.2): scored word pairs and a valence lexicon.

Both are text only, one text per distinct word (``sample_id`` and ``label`` null), and each word is fed
to the tower alone; which state of a word the layer rows use is the model kind's (its ``word_vector``
key, docs/fidelity.md). The kinds' ``text_unit`` is ``word``, so the text embedding step takes that
word vector for their layer states.

- ``word_pairs``: a word-pair similarity file: RG65, WordSim-353, SimLex-999 as ``w1;w2;score`` without a
  header (``format: semicolon``, the copies Wolfe & Caliskan's code reads), SimVerb-3500 as
  ``w1<TAB>w2<TAB>POS<TAB>score<TAB>relation`` (``format: simverb``). The pairs go to the extra manifest
  table ``word_pairs`` (``pair_id``, ``text_id_a``, ``text_id_b``, ``score``) that ``word_spearman`` reads.
- ``valence_lexicon``: a CSV with a header, one word per row and its human pleasantness (Bellezza, Greenwald
  & Banaji 1986: ``word``, ``combined_pleasantness``), plus the pleasant and unpleasant attribute words of
  the SC-WEAT (default: the 25 + 25 of Caliskan et al. 2017 that Wolfe & Caliskan's ``valnorms.py``
  lists). Extra manifest table ``lexicon`` (``text_id``, ``role``: lexicon / pleasant / unpleasant,
  ``score``: null for the attribute words), read by ``valnorm``. A word that is both a lexicon word and
  an attribute word (all 25 pleasant and 23 of the unpleasant ones in Bellezza's list) is one text with
  two rows there; their code embeds it twice, with the same result.

A row whose score is not a number or whose word is empty is rejected (``datasets.rejects``); a row with
too few fields is an error naming the file and line.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pyarrow as pa
from pydantic import AfterValidator

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import IngestError, IngestResult, ManifestBuilder, need_file
from conescope.profile_schema import Lang, Text, problem, record

WORD_PAIRS_SCHEMA = pa.schema([("pair_id", pa.string()), ("text_id_a", pa.string()), ("text_id_b", pa.string()),
                               ("score", pa.float64())])
LEXICON_SCHEMA = pa.schema([("text_id", pa.string()), ("role", pa.string()), ("score", pa.float64())])
ROLES = ("lexicon", "pleasant", "unpleasant")

# Caliskan, Bryson & Narayanan 2017 (after Greenwald et al. 1998), as listed in Wolfe & Caliskan's valnorms.py.
PLEASANT = ("caress", "freedom", "health", "love", "peace", "cheer", "friend", "heaven", "loyal", "pleasure",
            "diamond", "gentle", "honest", "lucky", "rainbow", "diploma", "gift", "honor", "miracle", "sunrise",
            "family", "happy", "laughter", "paradise", "vacation")
UNPLEASANT = ("abuse", "crash", "filth", "murder", "sickness", "accident", "death", "grief", "poison", "stink",
              "assault", "disaster", "hatred", "pollute", "tragedy", "divorce", "jail", "poverty", "ugly", "cancer",
              "kill", "rotten", "vomit", "agony", "prison")

# format -> (delimiter, first word's field, second word's field, score's field, fields a row needs)
PAIR_FORMATS = {"semicolon": (";", 0, 1, 2, 3), "simverb": ("\t", 0, 1, 3, 4)}


class _Words:
    """One text per distinct word, in order of first appearance."""

    def __init__(self, name: str, builder: ManifestBuilder, lang: str):
        self.name, self.builder, self.lang = name, builder, lang
        self.ids: dict[str, str] = {}

    def id_of(self, word: str) -> str:
        if word not in self.ids:
            self.ids[word] = f"{self.name}-w{len(self.ids)}"
            self.builder.add_text(self.ids[word], None, None, self.lang, word)
        return self.ids[word]


def _score(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def read_word_pairs(name: str, path: Path, fmt: str = "semicolon", lang: str = "en",
                    limit: int | None = None) -> IngestResult:
    """Scored word pairs (``PAIR_FORMATS``), one text per distinct word, the pairs in table ``word_pairs``."""
    need_file(path, name, "word-pair file")
    delimiter, first, second, score_at, fields = PAIR_FORMATS[fmt]
    b = ManifestBuilder(name)
    words = _Words(name, b, lang)
    pairs: dict[str, list] = {k: [] for k in WORD_PAIRS_SCHEMA.names}
    with open(path, encoding="utf-8", newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < fields:
                raise IngestError(f"{path}: line {line_no}: {len(row)} fields, a {fmt} row has {fields}")
            if limit is not None and len(pairs["pair_id"]) >= limit:
                break
            pid = f"{name}-{line_no}"
            b.seen += 1
            score = _score(row[score_at].strip())
            a, c = row[first].strip(), row[second].strip()
            if score is None:
                b.reject(pid, f"line {line_no}: score {row[score_at]!r} is not a number")
                continue
            if not a or not c:
                b.reject(pid, f"line {line_no}: empty word")
                continue
            for key, value in (("pair_id", pid), ("text_id_a", words.id_of(a)), ("text_id_b", words.id_of(c)),
                               ("score", score)):
                pairs[key].append(value)
    result = b.result({"format": f"word-pairs-{fmt}", "lang": lang})
    result.tables["word_pairs"] = pa.table(pairs, schema=WORD_PAIRS_SCHEMA)
    return result


def read_valence_lexicon(name: str, path: Path, word_column: str = "word",
                         score_column: str = "combined_pleasantness", pleasant: tuple[str, ...] = PLEASANT,
                         unpleasant: tuple[str, ...] = UNPLEASANT, lang: str = "en",
                         limit: int | None = None) -> IngestResult:
    """Lexicon words with their human valence and the attribute words, one text per distinct word, the
    roles in table ``lexicon``."""
    need_file(path, name, "valence lexicon CSV")
    b = ManifestBuilder(name)
    words = _Words(name, b, lang)
    rows: dict[str, list] = {k: [] for k in LEXICON_SCHEMA.names}
    kept = 0

    def add(word: str, role: str, score: float | None) -> None:
        for key, value in (("text_id", words.id_of(word)), ("role", role), ("score", score)):
            rows[key].append(value)

    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, None) or []]
        missing = {word_column, score_column} - set(header)
        if missing:
            raise IngestError(f"{path}: line 1: header lacks {', '.join(sorted(missing))} (got {', '.join(header)})")
        w_at, s_at = header.index(word_column), header.index(score_column)
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(header):
                raise IngestError(f"{path}: line {line_no}: {len(row)} fields, header has {len(header)}")
            if limit is not None and kept >= limit:
                break
            b.seen += 1
            word, score = row[w_at].strip(), _score(row[s_at].strip())
            if score is None:
                b.reject(f"{name}-{line_no}", f"line {line_no}: {score_column} {row[s_at]!r} is not a number")
                continue
            if not word:
                b.reject(f"{name}-{line_no}", f"line {line_no}: empty word")
                continue
            add(word, "lexicon", score)
            kept += 1
    # sorted and without repeats, as valnorms.py builds them (their order changes no mean or deviation)
    for role, attribute in (("pleasant", pleasant), ("unpleasant", unpleasant)):
        for word in sorted(set(attribute)):
            add(word, role, None)
    result = b.result({"format": "valence-lexicon", "lang": lang, "score_column": score_column})
    result.tables["lexicon"] = pa.table(rows, schema=LEXICON_SCHEMA)
    return result


def _attribute_words(words: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(words)) < 2 or any(not w.strip() for w in words):
        raise problem("expected at least two distinct non-empty words")
    return words


AttributeWords = Annotated[tuple[Text, ...], AfterValidator(_attribute_words)]


@record
class WordSource(SourceDataset):
    """What the word datasets share: words in one language (each embedded alone), no images."""

    lang: Lang = "en"
    has_images: ClassVar[bool] = False
    text_unit: ClassVar[str] = "word"

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.lang,)


@register_source
class WordPairsSource(WordSource):
    """Profile entry ``kind: word_pairs``: scored word pairs in one language, text only."""

    kind: Literal["word_pairs"]
    file: Text
    format: Literal["semicolon", "simverb"] = "semicolon"

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_word_pairs(self.name, self.at(raw_dir, self.file), self.format, self.lang, self.n)


@register_source
class ValenceLexiconSource(WordSource):
    """Profile entry ``kind: valence_lexicon``: words with human valence norms and the SC-WEAT's attribute
    words, text only."""

    kind: Literal["valence_lexicon"]
    file: Text = "Bellezza_Lexicon.csv"
    word_column: Text = "word"
    score_column: Text = "combined_pleasantness"
    pleasant: AttributeWords = PLEASANT
    unpleasant: AttributeWords = UNPLEASANT

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_valence_lexicon(self.name, self.at(raw_dir, self.file), self.word_column, self.score_column,
                                    self.pleasant, self.unpleasant, self.lang, self.n)
