"""Profile entries of real-source datasets: the keys of each kind, validated with errors naming the
file and the key, and the languages and modalities each dataset declares.

Paths are relative to the dataset's raw folder ``<data root>/raw/<dataset>/`` unless absolute. Keys
every kind takes: ``n`` (keep at most this many samples; all when absent), ``seed`` (the 80/20 split),
``max_reject_fraction`` (default 0.05), ``download`` (a list of files to fetch when absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conescope.download import HttpSource, HubSource, Source

if TYPE_CHECKING:
    from conescope.profile import _Reader

SOURCE_KINDS = ("coco", "coco_karpathy", "cifar100", "wikicaps", "xm3600", "multi30k", "sts", "manifest", "sweep")
COMMON_KEYS = {"kind", "n", "seed", "max_reject_fraction", "download"}
XM3600_LANGUAGES = ("ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu",
                    "id", "it", "ja", "ko", "mi", "nl", "no", "pl", "pt", "quz", "ro", "ru", "sv", "sw", "te", "th",
                    "tr", "uk", "vi", "zh")
MULTI30K_LANGUAGES = ("en", "de", "fr", "cs")

# kind -> {key: default}; a default of ... marks a required key.
KIND_KEYS: dict[str, dict[str, Any]] = {
    "coco": {"annotations": "annotations/captions_val2014.json", "images": "val2014", "first_caption": True},
    "coco_karpathy": {"split_json": "dataset_coco.json", "images": ".", "first_caption": True, "splits": None},
    "cifar100": {"format": "python", "archive": "cifar-100-python.tar.gz", "files": None,
                 "splits": ["train", "test"], "label": "fine", "class_names": "clean", "templates": None,
                 "translations": None},
    "wikicaps": {"file": ..., "images": None, "languages": ["en", "fr", "de", "ru"]},
    "xm3600": {"captions": "captions.jsonl", "images": "images", "languages": list(XM3600_LANGUAGES),
               "first_caption": True},
    "multi30k": {"root": "data/task1", "images": "flickr30k-images", "splits": ["train", "val", "test_2016_flickr"],
                 "languages": list(MULTI30K_LANGUAGES)},
    "sts": {"file": "stsbenchmark.tsv.gz", "split": None, "lang": "en"},
    "manifest": {"file": ..., "labels": None, "languages": ["en"], "text_only": False},
    "sweep": {"image": ..., "kinds": ["rotate", "blur", "shift", "noise"], "steps": 8, "maxima": None,
              "caption": None, "lang": "en"},
}


def _str_list(r: _Reader, value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise r.fail(path, f"expected a non-empty list, got {value!r}")
    return [r.string(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _download(r: _Reader, raw: Any, path: str) -> tuple[Source, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise r.fail(path, "expected a list of {url, file, sha256} or {hub, file, revision} entries")
    out: list[Source] = []
    for i, entry in enumerate(raw):
        p = f"{path}[{i}]"
        if isinstance(entry, dict) and "hub" in entry:
            m = r.mapping(entry, p, {"hub", "file", "revision", "repo_type"}, {"hub", "file"})
            out.append(HubSource(r.string(m["hub"], f"{p}.hub"), r.string(m["file"], f"{p}.file"),
                                 None if m.get("revision") is None else r.string(m["revision"], f"{p}.revision"),
                                 r.string(m.get("repo_type", "dataset"), f"{p}.repo_type", ("dataset", "model"))))
            continue
        m = r.mapping(entry, p, {"url", "file", "sha256", "unpack", "provides", "unpack_to"}, {"url", "file"})
        url = r.string(m["url"], f"{p}.url")
        if not url.startswith(("http://", "https://")):
            raise r.fail(f"{p}.url", f"expected an http(s) URL, got {url!r}")
        sha = m.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                                or any(c not in "0123456789abcdef" for c in sha)):
            raise r.fail(f"{p}.sha256", "expected 64 lowercase hex digits")
        out.append(HttpSource(url, r.string(m["file"], f"{p}.file"), sha,
                              r.boolean(m.get("unpack", False), f"{p}.unpack"),
                              None if m.get("provides") is None else r.string(m["provides"], f"{p}.provides"),
                              None if m.get("unpack_to") is None else r.string(m["unpack_to"], f"{p}.unpack_to")))
    return tuple(out)


def parse_source_dataset(r: _Reader, name: str, m: dict, lang_pattern) -> dict:
    """The fields of a DatasetSpec for a real-source kind (``m`` is the raw mapping, kind checked)."""
    path = f"datasets.{name}"
    kind = m["kind"]
    keys = KIND_KEYS[kind]
    r.mapping(m, path, COMMON_KEYS | set(keys), {k for k, v in keys.items() if v is ...})
    opts: dict[str, Any] = {}
    for key, default in keys.items():
        value = m.get(key, None if default is ... else default)
        p = f"{path}.{key}"
        if value is None:
            opts[key] = None
        elif key in ("first_caption", "text_only"):
            opts[key] = r.boolean(value, p)
        elif key == "steps":
            opts[key] = r.integer(value, p, minimum=2)
        elif key in ("splits", "kinds", "labels"):
            opts[key] = _str_list(r, value, p)
        elif key == "languages":
            opts[key] = [r.string(v, f"{p}[{i}]", pattern=lang_pattern) for i, v in enumerate(_str_list(r, value, p))]
        elif key == "lang":
            opts[key] = r.string(value, p, pattern=lang_pattern)
        elif key == "templates":
            t = r.mapping(value, p, set(value) if isinstance(value, dict) else set())
            opts[key] = {r.string(k, p, pattern=lang_pattern): r.string(v, f"{p}.{k}") for k, v in t.items()}
            for lang, template in opts[key].items():
                if template.count("{}") != 1:
                    raise r.fail(f"{p}.{lang}", f"template {template!r} must contain exactly one '{{}}'")
        elif key == "maxima":
            mx = r.mapping(value, p, {"rotate", "blur", "shift", "noise"})
            opts[key] = {k: float(v) for k, v in mx.items() if not isinstance(v, bool) and isinstance(v, int | float)}
            if len(opts[key]) != len(mx):
                raise r.fail(p, "expected numbers")
        elif key == "files":
            f = r.mapping(value, p, set(value) if isinstance(value, dict) else set())
            opts[key] = {str(s): _str_list(r, v, f"{p}.{s}") for s, v in f.items()}
        else:
            opts[key] = r.string(value, p)
    _check_kind(r, path, kind, opts)
    fraction = m.get("max_reject_fraction", 0.05)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
        raise r.fail(f"{path}.max_reject_fraction", f"expected a number in [0, 1], got {fraction!r}")
    n = m.get("n")
    return {
        "n": None if n is None else r.integer(n, f"{path}.n", minimum=2),
        "seed": r.integer(m.get("seed", 0), f"{path}.seed", minimum=0),
        "languages": _languages(kind, opts),
        "has_images": _has_images(kind, opts),
        "options": opts,
        "download": _download(r, m.get("download"), f"{path}.download"),
        "max_reject_fraction": float(fraction),
    }


def _check_kind(r: _Reader, path: str, kind: str, opts: dict) -> None:
    if kind == "cifar100":
        if opts["format"] not in ("python", "parquet"):
            raise r.fail(f"{path}.format", f"{opts['format']!r} is not one of python, parquet")
        if opts["format"] == "parquet" and not opts["files"]:
            raise r.fail(f"{path}.files", "format parquet needs files: {split: [paths]}")
        if opts["label"] not in ("fine", "coarse"):
            raise r.fail(f"{path}.label", f"{opts['label']!r} is not one of fine, coarse")
        if opts["class_names"] not in ("raw", "clean"):
            raise r.fail(f"{path}.class_names", f"{opts['class_names']!r} is not one of raw, clean")
        langs = set(opts["templates"] or {"en": ""})
        if opts["translations"] is None and langs - {"en"}:
            raise r.fail(f"{path}.templates", f"templates for {', '.join(sorted(langs - {'en'}))} need "
                                              f"translated class names (key translations)")
    if kind == "sweep":
        from conescope.ingest.sweeps import SWEEP_KINDS

        for i, k in enumerate(opts["kinds"]):
            if k not in SWEEP_KINDS:
                raise r.fail(f"{path}.kinds[{i}]", f"{k!r} is not one of {', '.join(SWEEP_KINDS)}")
    if kind == "xm3600":
        unknown = [lang for lang in opts["languages"] if lang not in XM3600_LANGUAGES]
        if unknown:
            raise r.fail(f"{path}.languages", f"not in Crossmodal-3600: {', '.join(unknown)}")
    if kind == "multi30k":
        unknown = [lang for lang in opts["languages"] if lang not in MULTI30K_LANGUAGES]
        if unknown:
            raise r.fail(f"{path}.languages", f"not in Multi30k: {', '.join(unknown)}")


def _languages(kind: str, opts: dict) -> tuple[str, ...]:
    """The languages a dataset's texts are in (declared: checked against the data when ingested)."""
    if kind in ("coco", "coco_karpathy"):
        return ("en",)
    if kind == "cifar100":
        return tuple(opts["templates"] or {"en": None})
    if kind in ("sts",):
        return (opts["lang"],)
    if kind == "sweep":
        return (opts["lang"],) if opts["caption"] else ()
    return tuple(opts["languages"])


def _has_images(kind: str, opts: dict) -> bool:
    if kind == "sts":
        return False
    if kind == "wikicaps":
        return opts["images"] is not None
    if kind == "manifest":
        return not opts["text_only"]
    return True
