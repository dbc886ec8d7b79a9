"""What each asset keeps under the data root, verified before the refresh decides what to run.

Dagster's data versions say whether an asset is fresh, not whether the files it wrote are still
whole: ``conescope materialize`` (pipelines/refresh.py) asks :func:`verify_stored` for the assets of
each planned run, and runs a damaged one whatever Dagster calls it. The embedding step then keeps
the intact parts and embeds the damaged ones again (assets/embeddings.py); the datasets run rewrites
every manifest. The warehouse's DuckLake data files are checked too (:func:`verify_lake`), but are
not rewritten: which partitions a data file holds rows of is the catalog's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from pipelines.partitions import model_and_lang
from pipelines.resources import ConescopeHome
from storage.checkpoints import verify_checkpoint
from storage.integrity import Damage, verify_files, verify_parts


@dataclass(frozen=True)
class Stored:
    """The damaged files of one asset partition and what running it does about them."""

    damages: list[Damage]
    remedy: str


def _embedding_dirs(home: ConescopeHome, name: str, partition: str | None) -> tuple[list[Path], str] | None:
    if partition is None:
        return None
    paths = home.paths
    if name.endswith("_image"):
        ds = name.removesuffix("_image")
        return [paths.image_embeddings(ds, partition)], f"re-embedding {ds} image for {partition}"
    if name.endswith("_text") and "|" in partition:
        ds, (model, lang) = name.removesuffix("_text"), model_and_lang(partition)
        return ([paths.text_embeddings(ds, model, lang), paths.text_layers(ds, model, lang)],
                f"re-embedding {ds} text ({lang}) for {model}")
    return None


def verify_stored(home: ConescopeHome, key: dg.AssetKey, partition: str | None) -> Stored | None:
    """The damaged files that asset partition ``key`` [``partition``] relies on, or None when it
    keeps none that are checked (or none is damaged). Embedding parts: footers, row counts, values of
    the parts changed since written (storage/integrity.py); dataset manifests: footers; a trained model's
    checkpoint: its provenance and the hash of its tensors (storage/checkpoints.py)."""
    head, name = key.path[0], key.path[-1]
    if head == "embeddings":
        found = _embedding_dirs(home, name, partition)
        if found is None:
            return None
        directories, remedy = found
        damages = [d for directory in directories for d in verify_parts(directory)]
    elif head == "datasets" and len(key.path) == 2:
        directory = home.paths.dataset_dir(name)
        damages = verify_files(sorted(directory.glob("*.parquet")) if directory.is_dir() else [])
        remedy = f"the datasets run writes {name} again"
    elif head == "training" and partition is not None:
        damage = verify_checkpoint(home.paths, partition)
        damages, remedy = ([damage] if damage else []), f"training {partition} again"
    else:
        return None
    return Stored(damages, remedy) if damages else None


def verify_lake(home: ConescopeHome) -> list[Damage]:
    """The DuckLake data files (``warehouse.data_path``) without a readable Parquet footer; none for
    the DuckDB file backend (DuckDB checksums its own blocks)."""
    if home.warehouse_kind != "ducklake":
        return []
    lake = (home.paths.root / home.warehouse_data_path).resolve()
    return verify_files(sorted(lake.rglob("*.parquet")) if lake.is_dir() else [])
