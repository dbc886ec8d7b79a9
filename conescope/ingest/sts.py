"""STS-B-style sentence pairs with similarity scores (Cer et al. 2017), text only.

A TSV with a header naming at least ``sentence1``, ``sentence2`` and ``score`` (0-5), optionally
``split`` (``format: header``, the sentence-transformers ``stsbenchmark.tsv.gz`` layout; GLUE's STS-B
files have the same columns and one file per split); or the original STS Benchmark's ``sts-<split>.csv``
without a header (``format: headerless``: genre, file, year, id, score, sentence1, sentence2, and on some
rows two more source fields; the copy Wolfe & Caliskan's code reads). Every field is taken as it is
between the tabs (no quoting: 50 rows of the test file hold a ``"``).

Texts get ``sample_id`` and ``label`` null; the pairs go to an extra
manifest table ``pairs`` (``pair_id``, ``text_id_a``, ``text_id_b``, ``score``, ``split``) that the STS
Spearman metric of Wolfe & Caliskan reads. A pair with an empty sentence or an unreadable score is
rejected.
"""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import IngestError, IngestResult, ManifestBuilder, need_file
from conescope.profile_schema import Lang, Text

PAIRS_SCHEMA = pa.schema([("pair_id", pa.string()), ("text_id_a", pa.string()), ("text_id_b", pa.string()),
                          ("score", pa.float64()), ("split", pa.string())])


# the columns of the STS Benchmark's own files, which have no header (format: headerless)
HEADERLESS_COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")


def read_sts_tsv(name: str, path: Path, split: str | None = None, lang: str = "en",
                 limit: int | None = None, fmt: str = "header") -> IngestResult:
    """``split`` labels every pair when the file has no ``split`` column (default: test)."""
    need_file(path, name, "STS-B TSV")
    opener = gzip.open if path.suffix == ".gz" else open
    b = ManifestBuilder(name)
    pairs: dict[str, list] = {k: [] for k in PAIRS_SCHEMA.names}
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if fmt == "headerless":
            header, first = list(HEADERLESS_COLUMNS), 1
        else:
            header, first = next(reader, None) or [], 2
        missing = {"sentence1", "sentence2", "score"} - set(header)
        if missing:
            raise IngestError(f"{path}: line 1: header lacks {', '.join(sorted(missing))} (got {', '.join(header)})")
        col = {c: header.index(c) for c in header}
        for line_no, row in enumerate(reader, start=first):
            if not row:
                continue
            if len(row) < len(header):
                raise IngestError(f"{path}: line {line_no}: {len(row)} fields, "
                                  + (f"a row has at least {len(header)}" if fmt == "headerless"
                                     else f"header has {len(header)}"))
            if limit is not None and len(pairs["pair_id"]) >= limit:
                break
            pid = f"{name}-{line_no}"
            b.seen += 1
            try:
                score = float(row[col["score"]])
            except ValueError:
                b.reject(pid, f"line {line_no}: score {row[col['score']]!r} is not a number")
                continue
            if math.isnan(score):
                b.reject(pid, f"line {line_no}: score is NaN")
                continue
            a, c = row[col["sentence1"]], row[col["sentence2"]]
            if not a.strip() or not c.strip():
                b.reject(pid, f"line {line_no}: empty sentence")
                continue
            b.add_text(f"{pid}-a", None, None, lang, a)
            b.add_text(f"{pid}-b", None, None, lang, c)
            for key, value in (("pair_id", pid), ("text_id_a", f"{pid}-a"), ("text_id_b", f"{pid}-b"),
                               ("score", score), ("split", row[col["split"]] if "split" in col else split or "test")):
                pairs[key].append(value)
    result = b.result({"format": "sts-tsv" if fmt == "header" else "sts-tsv-headerless", "lang": lang})
    result.tables["pairs"] = pa.table(pairs, schema=PAIRS_SCHEMA)
    return result


@register_source
class StsSource(SourceDataset):
    """Profile entry ``kind: sts``: scored sentence pairs in one language, text only."""

    kind: Literal["sts"]
    file: Text = "stsbenchmark.tsv.gz"
    format: Literal["header", "headerless"] = "header"
    split: Text | None = None
    lang: Lang = "en"
    has_images: ClassVar[bool] = False

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.lang,)

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_sts_tsv(self.name, self.at(raw_dir, self.file), self.split, self.lang, self.n, self.format)
