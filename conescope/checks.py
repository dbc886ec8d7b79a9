"""Quality checks of stored outputs, as pure functions over arrays and rows (no Dagster, no storage).

Each function returns a :class:`Finding`: whether the output passes, how serious a failure is, a
sentence that names what is wrong, and the offending items (sample ids, metric rows, URLs), so a
failing check in the UI says which rows to look at. ``assets/checks.py`` reads the stored files and
warehouse rows and turns findings into Dagster asset check results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np

from conescope.metric_families import family as declared_family

MAX_LISTED = 20  # offending items listed in a finding; the count says how many there are in all


@dataclass
class Finding:
    passed: bool
    description: str
    offending: list[str] = field(default_factory=list)
    count: int = 0  # offending items in all (``offending`` lists at most MAX_LISTED)
    warn: bool = False  # a failure that is a warning, not an error
    metadata: dict = field(default_factory=dict)


def finding_of(offending: list[str], ok: str, bad: str, warn: bool = False, **metadata) -> Finding:
    if not offending:
        return Finding(True, ok, metadata=metadata)
    shown = offending[:MAX_LISTED]
    more = f" (and {len(offending) - len(shown)} more)" if len(offending) > len(shown) else ""
    return Finding(False, f"{bad}: {', '.join(shown)}{more}", shown, len(offending), warn, metadata)


# --- embeddings ----------------------------------------------------------------------------------

def embedding_row_count(embedded: Sequence[str], expected: Sequence[str], rejected: Iterable[str]) -> Finding:
    """Every expected item (manifest samples, or the manifest's texts in the language) is embedded
    exactly once or recorded as rejected; nothing else is embedded."""
    rejected = set(rejected)
    embedded_set, expected_set = set(embedded), set(expected)
    seen: set[str] = set()
    duplicates = sorted({e for e in embedded if e in seen or seen.add(e)})
    missing = [e for e in expected if e not in embedded_set and e not in rejected]
    unknown = sorted(embedded_set - expected_set)
    both = sorted(embedded_set & rejected)
    offending = [f"{e} (missing)" for e in missing] + [f"{e} (duplicate)" for e in duplicates] + \
                [f"{e} (not in the manifest)" for e in unknown] + [f"{e} (embedded and rejected)" for e in both]
    want = len(expected_set - rejected)
    return finding_of(offending, f"{len(embedded)} rows = {len(expected_set)} in the manifest - "
                                 f"{len(rejected)} rejected",
                    f"{len(embedded)} rows where the manifest minus rejects has {want}",
                    rows=len(embedded), manifest=len(expected_set), rejected=len(rejected))


def embedding_finite(ids: Sequence[str], emb: np.ndarray,
                     files: Callable[[list[int]], list[str]] | None = None) -> Finding:
    """No NaN or inf in any row; ``files`` maps row numbers to the file holding each, so that the
    finding names the files to look at (metadata ``files``)."""
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    where = sorted(set(files([int(i) for i in bad]))) if files is not None and len(bad) else []
    in_files = f" in {', '.join(where)}" if where else ""
    return finding_of([str(ids[i]) for i in bad], f"all {len(ids)} rows finite",
                      f"{len(bad)} rows with NaN or inf{in_files}", **({"files": where} if where else {}))


def parts_intact(damaged: Sequence[tuple[str, str]], parts: int) -> Finding:
    """Every stored part of the partition is whole: ``damaged`` lists (file, why) of each that is not
    (missing, truncated, another row count than its writer wrote, not written by it)."""
    return finding_of([f"{name}: {why}" for name, why in damaged], f"{parts} parts intact",
                      f"{len(damaged)} damaged parts")


def embedding_nonzero(ids: Sequence[str], emb: np.ndarray) -> Finding:
    """A zero row has no direction: cosine and every normalized metric are undefined for it."""
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(np.abs(emb) > 0).any(axis=1) & np.isfinite(emb).all(axis=1))
    return finding_of([str(ids[i]) for i in bad], f"no zero row among {len(ids)}", f"{len(bad)} all-zero rows")


def embedding_dimension(dims: dict[str, int], expected: int | None, source: str) -> Finding:
    """``dims``: the dimension of each stored file or partition of the model; all must equal the
    model's (``expected``, from ``source``; when unknown, the files must at least agree)."""
    want = expected if expected is not None else (max(set(dims.values()), key=list(dims.values()).count)
                                                   if dims else None)
    offending = [f"{name} (d = {d})" for name, d in sorted(dims.items()) if d != want]
    return finding_of(offending, f"d = {want} ({source})", f"dimension differs from the model's {want} ({source})",
                    dimension=want if want is not None else -1)


# --- metric rows ---------------------------------------------------------------------------------

def describe_row(r: dict) -> str:
    parts = [r.get("dataset"), r.get("lang") or "-", r.get("modality"), r.get("transform"), r.get("fit_set"),
             r.get("eval_set"), r.get("metric")]
    layer = f" layer {r['layer']}" if r.get("layer") is not None else ""
    return "/".join(str(p) for p in parts) + layer


def expected_metrics(family: str, rows: list[dict], datasets: Iterable[str] = ()) -> Finding:
    """Every group of rows holds every metric the contract (``conescope.metric_families``) requires for
    its family and modality, no metric outside the contract, and each of ``datasets`` (those measured
    for sure) has rows."""
    declared = declared_family(family)
    groups: dict[tuple, set[str]] = {}
    offending = []
    for r in rows:
        key = (r["dataset"], r["modality"], r["transform"], r["fit_set"], r["eval_set"], r["lang"])
        groups.setdefault(key, set()).add(r["metric"])
    for (ds, modality, transform, fit_set, eval_set, lang), metrics in sorted(groups.items(), key=str):
        contract = declared.metrics_of(modality, lang)
        if contract is None:
            offending.append(f"{ds}/{modality}: modality not in the contract of {family}")
            continue
        required = contract.required_of(raw=transform == "none")
        where = f"{ds}/{lang or '-'}/{modality}/{transform}/{fit_set}/{eval_set}"
        offending += [f"{where}: {m} missing" for m in sorted(required - metrics)]
        offending += [f"{where}: {m} not in the contract" for m in sorted(metrics - contract.allowed)]
    present = {r["dataset"] for r in rows}
    offending += [f"{ds}: no rows" for ds in sorted(set(datasets) - present)]
    return finding_of(offending, f"{len(rows)} rows in {len(groups)} complete groups", "missing or unknown metrics",
                    rows=len(rows), groups=len(groups))


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def finite_values(rows: list[dict]) -> Finding:
    """value finite; ci_low and ci_high both null or both finite."""
    bad = [describe_row(r) for r in rows
           if not _finite(r["value"]) or (r["ci_low"] is None) != (r["ci_high"] is None)
           or (r["ci_low"] is not None and not (_finite(r["ci_low"]) and _finite(r["ci_high"])))]
    return finding_of(bad, f"all {len(rows)} values finite", "rows with a NaN, inf or half-null CI")


def value_in_ci(rows: list[dict], tol: float = 1e-9) -> Finding:
    """ci_low <= value <= ci_high wherever a CI is stored. Every stored interval (Clopper-Pearson,
    jackknife-t, bootstrap-t: ``conescope.metrics.bootstrap``) contains its estimate (the bootstrap-t
    unless the studentized replicates all fall on one side of 0), so a value outside its interval
    points at a CI computed on other rows (or another statistic) than the value."""
    bad = [f"{describe_row(r)} ({r['value']:.6g} not in [{r['ci_low']:.6g}, {r['ci_high']:.6g}])" for r in rows
           if r["ci_low"] is not None and r["ci_high"] is not None and _finite(r["value"])
           and not (r["ci_low"] - tol <= r["value"] <= r["ci_high"] + tol)]
    with_ci = sum(r["ci_low"] is not None for r in rows)
    return finding_of(bad, f"{with_ci} values inside their CI", "values outside their CI", rows_with_ci=with_ci)


def n_matches_rows(family: str, rows: list[dict], counts: dict[tuple[str, str, str | None], int]) -> Finding:
    """``n`` is the number of rows a metric was measured on. ``counts[(dataset, modality, lang)]``:
    stored embedding rows (modality image: lang None). Raw rows over all rows (eval set ``all``)
    must equal it exactly (image, text, image + text for joint; every language for the language
    separability; the paired rows for a compared language); subsets (a test split, pairs, a
    transform's eval set, the labelled rows of a silhouette, the scored sentence or word pairs of a
    ``paired`` metric) must be between 1 and what the rows allow."""
    declared = declared_family(family)
    bad = []
    for r in rows:
        ds, modality, lang, n = r["dataset"], r["modality"], r["lang"], r["n"]
        img = counts.get((ds, "image", None), 0)
        txt = counts.get((ds, "text", lang), 0)
        exact, bound = None, None
        contract = declared.metrics_of(modality, lang)
        if contract is not None and r["metric"] in contract.paired:
            bound = txt * txt  # pairs of stored texts (or a subset of them: a lexicon's scored words)
        elif declared.over_languages is not None:
            langs = {k[2]: v for k, v in counts.items() if k[0] == ds and k[1] == "text"}
            if lang is None:
                exact = sum(langs.values())
            else:
                bound = langs.get(lang, 0)  # pairs of this language with the reference
        elif r["transform"] == "none" and r["eval_set"] == "all" and modality in ("image", "text", "joint") \
                and not declared.partial:
            exact = {"image": img, "text": txt, "joint": img + txt}[modality]
        else:
            bound = max(img * txt, img + txt)  # pairs of an image and a text: at most image x text
        if n is None or n < 1 or (exact is not None and n != exact) or (exact is None and n > bound):
            want = f"= {exact}" if exact is not None else f"in [1, {bound}]"
            bad.append(f"{describe_row(r)} (n = {n}, expected {want})")
    return finding_of(bad, f"n matches the stored rows for all {len(rows)} rows", "n differs from the rows measured")


# --- experiments (conescope.metric_families.EXPERIMENTS) -----------------------------------------

def training_runs(steps: list[dict], summary: list[dict], expected: Iterable[tuple[str, str]],
                  seeds: Sequence[int], recorded: Sequence[int]) -> Finding:
    """Every (dataset, lang) of ``expected`` has, for every seed, a row at every recorded step with finite
    IsoScore, silhouette, accuracy and loss, and both correlations per seed and over every seed; nothing
    else is stored."""
    want = {(ds, lang, seed, step) for ds, lang in expected for seed in seeds for step in recorded}
    have = {(r["dataset"], r["lang"], r["seed"], r["step"]): r for r in steps}
    offending = [f"{ds}/{lang} seed {seed} step {step} (missing)" for ds, lang, seed, step in sorted(want - set(have))]
    offending += [f"{k[0]}/{k[1]} seed {k[2]} step {k[3]} (not expected)" for k in sorted(set(have) - want, key=str)]
    offending += [f"{k[0]}/{k[1]} seed {k[2]} step {k[3]} (non-finite {m})" for k, r in sorted(have.items(), key=str)
                  for m in ("isoscore", "silhouette", "train_accuracy", "loss") if not _finite(r[m])]
    stats_want = {(ds, lang, seed, st) for ds, lang in expected for seed in [*seeds, None]
                  for st in ("pearson", "spearman")}
    stats_have = {(r["dataset"], r["lang"], r["seed"], r["statistic"]) for r in summary}
    offending += [f"{ds}/{lang} seed {'all' if seed is None else seed} {st} (missing correlation)"
                  for ds, lang, seed, st in sorted(stats_want - stats_have, key=str)]
    return finding_of(offending, f"{len(have)} recorded steps and {len(stats_have)} correlations, none missing",
                      "incomplete training runs", steps=len(have), correlations=len(stats_have))


def transform_points(points: list[dict], summary: list[dict]) -> Finding:
    """Every point has finite IsoScore and silhouette, its two changes both set or both null, and the
    summary has both correlations for each modality it names."""
    offending = [f"{p['model']}/{p['lang']}/{p['dataset']}/{p['modality']}/{p['transform']} (non-finite)"
                 for p in points if not (_finite(p["isoscore"]) and _finite(p["silhouette"]))]
    offending += [f"{p['model']}/{p['lang']}/{p['dataset']}/{p['modality']}/{p['transform']} (one change null)"
                  for p in points if (p["d_isoscore"] is None) != (p["d_silhouette"] is None)]
    pairs = {(r["modality"], r["statistic"]) for r in summary}
    offending += [f"{m} {st} (missing correlation)" for m in sorted({m for m, _ in pairs})
                  for st in ("pearson", "spearman") if (m, st) not in pairs]
    return finding_of(offending, f"{len(points)} points, {len(summary)} correlations", "incomplete transform points",
                      points=len(points), correlations=len(summary))


def correlation_intervals(rows: list[dict]) -> Finding:
    """A correlation lies in [-1, 1] and inside its interval where one is stored (both ends or neither);
    a NaN r (a constant series) has no interval."""
    bad = []
    for r in rows:
        value, lo, hi = r["value"], r["ci_low"], r["ci_high"]
        where = "/".join(str(r.get(k)) for k in ("dataset", "lang", "seed", "modality", "statistic") if k in r)
        if (lo is None) != (hi is None):
            bad.append(f"{where} (half-null interval)")
        elif value is None or math.isnan(value):
            if lo is not None:
                bad.append(f"{where} (an interval around an undefined r)")
        elif not -1 - 1e-9 <= value <= 1 + 1e-9:
            bad.append(f"{where} (r = {value:.6g} outside [-1, 1])")
        elif lo is not None and not lo - 1e-9 <= value <= hi + 1e-9:
            bad.append(f"{where} ({value:.6g} not in [{lo:.6g}, {hi:.6g}])")
    return finding_of(bad, f"{len(rows)} correlations in [-1, 1] and inside their intervals",
                      "correlations outside [-1, 1] or their interval")


# --- datasets ------------------------------------------------------------------------------------

def reject_fraction(samples: int, rejects: list[tuple[str, str]], max_fraction: float,
                    warn_fraction: float) -> Finding:
    """Share of rejected samples among all read (samples kept + rejected): an error above
    ``max_fraction`` (the profile's ``max_reject_fraction``), a warning above ``warn_fraction``."""
    total = samples + len(rejects)
    frac = len(rejects) / total if total else 0.0
    listed = [f"{sid} ({reason})" for sid, reason in rejects]
    meta = {"rejected": len(rejects), "samples": samples, "reject_fraction": round(frac, 6),
            "max_reject_fraction": max_fraction, "warn_reject_fraction": warn_fraction}
    if total == 0:
        return Finding(False, "the manifest holds no sample and nothing was rejected", [], 0, False, meta)
    if frac > max_fraction:
        return finding_of(listed, "", f"{frac:.2%} of samples rejected, above max_reject_fraction "
                                    f"{max_fraction:.2%}", **meta)
    if frac > warn_fraction:
        return finding_of(listed, "", f"{frac:.2%} of samples rejected, above the warning level {warn_fraction:.2%}",
                        warn=True, **meta)
    return Finding(True, f"{len(rejects)} of {total} samples rejected ({frac:.2%})", metadata=meta)


# --- reports -------------------------------------------------------------------------------------

# Attributes that name a namespace or an RDF resource: identifiers a browser never fetches.
_IDENTIFIER_ATTRS = re.compile(r"^(xmlns(:.*)?|rdf:resource|rdf:about)$")
_URL = re.compile(r"""(?:https?:)?//[^\s"'()<>]+""")
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"]?)((?:https?:)?//[^\s"')]+)""", re.I)


class _UrlScanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        for name, value in attrs:
            if value is None or _IDENTIFIER_ATTRS.match(name):
                continue
            if name == "style":
                self.urls += _CSS_URL.findall(value)
            elif re.match(r"^\s*(?:https?:)?//", value):
                self.urls.append(f"<{tag} {name}> {value.strip()[:120]}")

    def handle_data(self, data: str) -> None:
        if self._tag == "style":
            self.urls += [f"<style> {u}" for u in _CSS_URL.findall(data)]
        elif self._tag == "script":
            self.urls += [f"<script> {u}" for u in _URL.findall(data) if not u.startswith("//")]


def external_urls(html: str) -> list[str]:
    """URLs a page would fetch or link outside itself: http(s) or protocol-relative values of any
    attribute (src, href, srcset, poster, xlink:href, ...), CSS ``url()`` / ``@import``, URLs in
    scripts. XML namespace and RDF identifiers (inline SVG from matplotlib) are not fetched."""
    scanner = _UrlScanner()
    scanner.feed(html)
    scanner.close()
    return scanner.urls


def report_file(size: int | None, urls: list[str], min_bytes: int, max_bytes: int) -> Finding:
    if size is None:
        return Finding(False, "the report file does not exist", ["index.html"], 1)
    meta = {"size_kib": round(size / 1024, 1)}
    if not min_bytes <= size <= max_bytes:
        return Finding(False, f"size {size} bytes outside [{min_bytes}, {max_bytes}]", ["index.html"], 1,
                       metadata=meta)
    return finding_of(urls, f"self-contained, {size / 1024:.0f} KiB", "external URLs", **meta)
