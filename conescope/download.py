"""Fetching source files into the data root: plain HTTP(S) with sha256 verification and resumption, or
the Hugging Face hub client (its cache, a pinned revision, offline mode).

Everything lands under ``<data root>/raw/<dataset>/``. Offline (``CONESCOPE_OFFLINE=1`` or
``HF_HUB_OFFLINE=1``), nothing is fetched: a missing file raises :class:`DownloadUnavailable` at once,
with a message naming the dataset, what to fetch and where to put it.

HTTP downloads write ``<file>.part`` and resume it with a ``Range`` request after an interruption (a
server that ignores the range gets a fresh download); the finished file is hashed and renamed into
place only when its sha256 matches, so a reader never sees a truncated or wrong file.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conescope.provenance import sha256_file

CHUNK = 1 << 20


class DownloadUnavailable(OSError):
    """A needed file is absent and cannot be fetched (offline, or the server refused)."""


class ChecksumMismatch(RuntimeError):
    """A downloaded file's sha256 differs from the one the profile pins."""


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("CONESCOPE_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class HttpSource:
    url: str
    filename: str  # relative to the dataset's raw folder
    sha256: str | None = None
    unpack: bool = False  # a zip/tar to unpack into the raw folder once verified
    provides: str | None = None  # what unpacking yields (e.g. val2014/): present means no download needed
    unpack_to: str | None = None  # subfolder of the raw folder to unpack into (default: the raw folder)


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    filename: str  # path inside the repository; also its path under the raw folder
    revision: str | None = None  # a commit hash pins the exact files; a branch or tag follows it
    repo_type: str = "dataset"


Source = HttpSource | HubSource


def describe(source: Source) -> str:
    if isinstance(source, HttpSource):
        return f"{source.url}" + (f" (sha256 {source.sha256})" if source.sha256 else "")
    rev = f"@{source.revision}" if source.revision else ""
    return f"{source.filename} from the Hugging Face {source.repo_type} {source.repo_id}{rev}"


def fetch_http(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``sha256``, rename into place."""
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is already complete
            response = None
        else:
            raise DownloadUnavailable(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadUnavailable(f"{url}: {exc}") from exc
    if response is not None:
        with response:
            resumed = have and response.status == 206
            with open(part, "ab" if resumed else "wb") as fh:
                try:
                    while block := response.read(CHUNK):
                        fh.write(block)
                except OSError as exc:  # the part stays for the next attempt to resume
                    raise DownloadUnavailable(f"{url}: interrupted after {fh.tell()} bytes ({exc}); "
                                              f"run again to resume") from exc
            expected = response.headers.get("Content-Length")
            if expected is not None and not resumed and part.stat().st_size != int(expected):
                raise DownloadUnavailable(f"{url}: got {part.stat().st_size} of {expected} bytes; run again to resume")
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise ChecksumMismatch(f"{url}: sha256 {got} does not match the expected {sha256}; the download "
                                   f"was discarded (a changed file upstream needs a new sha256 in the profile)")
    os.replace(part, dest)
    return dest


def fetch_hub(source: HubSource, raw_dir: Path, endpoint: str | None = None) -> Path:
    """One file of a hub repository through ``huggingface_hub`` (its cache under the data root's
    ``raw/hf-cache``), linked or copied to ``raw_dir/<filename>``. Offline, only the cache is read."""
    from huggingface_hub import hf_hub_download

    dest = raw_dir / source.filename
    if dest.is_file():
        return dest
    try:
        cached = hf_hub_download(source.repo_id, source.filename, repo_type=source.repo_type,
                                 revision=source.revision, cache_dir=raw_dir.parent / "hf-cache",
                                 local_files_only=offline(), endpoint=endpoint)
    except Exception as exc:  # the hub client raises one class per failure (offline, 404, network)
        raise DownloadUnavailable(f"{describe(source)}: {type(exc).__name__}: {exc}") from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, dest)
    return dest


def ensure_sources(dataset: str, sources: list[Source], raw_dir: Path, endpoint: str | None = None) -> list[Path]:
    """Make every source present under ``raw_dir``; offline, fail at once listing what is missing."""
    missing = [s for s in sources if not _present(s, raw_dir)]
    if missing and offline():
        raise DownloadUnavailable(
            f"dataset {dataset!r} needs files that are not in the data root and downloads are off "
            f"(CONESCOPE_OFFLINE / HF_HUB_OFFLINE). {_what_and_where(missing, raw_dir)}")
    out = []
    for source in sources:
        try:
            if _present(source, raw_dir):
                out.append(raw_dir / source.filename)
                continue
            if isinstance(source, HttpSource):
                path = fetch_http(source.url, raw_dir / source.filename, source.sha256)
                if source.unpack:
                    _unpack(path, raw_dir / (source.unpack_to or ""))
            else:
                path = fetch_hub(source, raw_dir, endpoint)
        except DownloadUnavailable as exc:
            raise DownloadUnavailable(f"dataset {dataset!r}: download failed ({exc}). "
                                      f"{_what_and_where([source], raw_dir)}") from exc
        out.append(path)
    return out


def _what_and_where(missing: list[Source], raw_dir: Path) -> str:
    lines = "\n".join(f"  - {describe(s)} -> {raw_dir / s.filename}"
                      + (f" (or its unpacked {raw_dir / s.provides})" if getattr(s, "provides", None) else "")
                      for s in missing)
    return f"Fetch on a machine with network access and put here:\n{lines}"


def _marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.unpacked")


def _present(source: Source, raw_dir: Path) -> bool:
    if isinstance(source, HttpSource) and source.provides and (raw_dir / source.provides).exists():
        return True
    path = raw_dir / source.filename
    if not path.is_file():
        return False
    return not (isinstance(source, HttpSource) and source.unpack and not _marker(path).exists())


def _unpack(archive: Path, target: Path) -> None:
    if _marker(archive).exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    try:
        shutil.unpack_archive(archive, target)
    except (shutil.ReadError, ValueError) as exc:
        raise DownloadUnavailable(f"{archive}: cannot unpack: {exc}") from exc
    _marker(archive).touch()
