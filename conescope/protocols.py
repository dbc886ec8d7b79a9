"""Evaluation protocols of Tyshchuk et al. 2023 (Section 5): which rows a transform is fitted on and
which rows it is evaluated on.

- in-domain: fit on the ``train`` split of a dataset (the manifest's seeded 80/20 split), evaluate
  on its ``test`` split (fit set ``<ds>:train``, eval set ``<ds>:test``);
- cross-dataset: fit on the train split of one dataset, evaluate on the test split of another
  (COCO -> CIFAR-100 in the paper; shapes -> digits in the demo);
- class-disjoint: a seeded half of the classes is "known"; fit on the train rows of known classes
  (``<ds>:train:known``), evaluate on the test rows of known and of new classes separately
  (``<ds>:test:known``, ``<ds>:test:new``);
- all rows (``transforms.protocols.all_rows``, docs/fidelity.md): fit on every row of a dataset and
  measure those same rows (``<ds>:all`` -> ``<ds>:all``), as Tyshchuk et al.'s code did for Table 5 (each
  modality centred on the mean of all its rows, then I1). Descriptive, not held out: the one protocol whose
  fit rows are its eval rows, named so in ``protocol``, ``fit_set`` and ``eval_set``. The cross-dataset
  fit can take every row of the fit dataset too (``cross_dataset_fit_rows: all``, fit set ``<ds>:all``):
  the authors fitted Procrustes, LSTSQ, whitening and PCA-425 on all 40,504 COCO pairs before applying
  them to CIFAR-100.

Fit pairs are (image, its first caption) for a captioned dataset (Tyshchuk et al. use the first COCO
caption) and (image, the first prompt of its class) for a classification set. An eval set holds the
eval images, their captions, and the prompts of every class (zero-shot classifies among all of them).

Fitting never sees evaluation rows, by construction: :func:`fit_arrays` copies out exactly the fit
rows and the transform's ``fit`` receives only those arrays; :func:`plan` checks that no fit row is
an eval row of the same dataset (prompts excepted: they are the classifier, shared by every image,
and in the class-disjoint protocol only the known classes' prompts are fitted on).

This module plans (which rows, which variants); ``conescope.protocol_eval`` fits and measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from conescope.metrics.isotropy import l2_normalize
from conescope.profile import TransformSettings
from conescope.sets import ImageSet, TextSet, first_caption_pairs, prompt_pairs
from conescope.splits import authors_known_classes, authors_split
from conescope.transforms import KINDS, Transform

IN_DOMAIN, CROSS_DATASET, CLASS_DISJOINT, ALL_ROWS = "in_domain", "cross_dataset", "class_disjoint", "all_rows"


@dataclass(frozen=True)
class FitSet:
    name: str
    dataset: str
    image_rows: np.ndarray  # rows of the dataset's ImageSet
    text_rows: np.ndarray  # the TextSet row paired with each image row
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSet:
    protocol: str
    fit_set: str
    name: str
    dataset: str
    image_rows: np.ndarray
    text_rows: np.ndarray
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    fit_sets: dict[str, FitSet]
    evals: list[EvalSet]
    skipped: list[str] = field(default_factory=list)  # eval sets too small to measure, with the reason
    probe_transforms: tuple[str, ...] = ()  # transforms after which the linear probe is measured


def protocol_datasets(settings: TransformSettings) -> set[str]:
    """Every dataset some protocol of the profile fits on or evaluates on."""
    return {*settings.in_domain, *settings.class_disjoint, *settings.all_rows,
            *(ds for pair in settings.cross_dataset for ds in pair)}


MIN_ROWS = 2  # images of an eval set (and pairs of a fit set) below which nothing is measured


def fit_pairs(image: ImageSet, text: TextSet, image_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image rows, text rows) of the fit pairs among the images selected by ``image_mask``."""
    img_rows, txt_rows = first_caption_pairs(image, text)
    keep = image_mask[img_rows]
    if keep.any():
        return img_rows[keep], txt_rows[keep]
    return prompt_pairs(image, text, np.flatnonzero(image_mask))


def eval_rows(image: ImageSet, text: TextSet, image_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The selected images, their captions and every class prompt."""
    image_rows = np.flatnonzero(image_mask)
    chosen = set(image.sample_ids[image_rows].tolist())
    captions = [r for r in text.caption_rows if text.sample_ids[r] in chosen]
    text_rows = np.union1d(np.asarray(captions, dtype=np.int64), text.prompt_rows.astype(np.int64))
    return image_rows, text_rows


def known_classes(image: ImageSet, seed: int) -> np.ndarray:
    """A seeded half (rounded down, at least one) of the dataset's labels: the known classes."""
    classes = np.unique(image.labels[image.labels >= 0])
    if len(classes) < 2:
        raise ValueError(f"{image.dataset}: the class-disjoint protocol needs at least two labelled classes, "
                         f"found {len(classes)}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(classes, size=max(1, len(classes) // 2), replace=False))


def plan(settings: TransformSettings, sets: dict[str, tuple[ImageSet, TextSet]]) -> Plan:
    """Fit sets and eval sets of every protocol of the profile, for one model x lang partition. A
    protocol whose dataset is absent from ``sets`` is skipped, with the reason in ``Plan.skipped``."""
    fits: dict[str, FitSet] = {}
    evals: list[EvalSet] = []
    skipped: list[str] = []

    def split(ds: str, name: str) -> np.ndarray:
        if name == "all":
            return np.ones(len(sets[ds][0].splits), dtype=bool)
        if ds in settings.authors_split:  # docs/fidelity.md: the rows the paper's code drew
            mask = np.zeros(len(sets[ds][0].splits), dtype=bool)
            mask[authors_split(len(mask), settings.split_seed)[0 if name == "train" else 1]] = True
            return mask
        return sets[ds][0].splits == name

    def train_fit(ds: str, rows: str = "train") -> str:
        name = f"{ds}:{rows}"
        if name not in fits:
            img, txt = sets[ds]
            fits[name] = FitSet(name, ds, *fit_pairs(img, txt, split(ds, rows)))
        return name

    def add_eval(protocol: str, fit: str, name: str, ds: str, mask: np.ndarray, **params) -> None:
        img, txt = sets[ds]
        if len(fits[fit].image_rows) < MIN_ROWS or mask.sum() < MIN_ROWS:
            skipped.append(f"{protocol} {fit} -> {name}: {len(fits[fit].image_rows)} fit pairs and "
                           f"{int(mask.sum())} eval images (at least {MIN_ROWS} each needed)")
            return
        image_rows, text_rows = eval_rows(img, txt, mask)
        if ds in settings.authors_split and protocol != ALL_ROWS:  # in permutation order, as the authors' code
            # batches its test set (all rows: in the dataset's order, as their code measured them)
            rank = np.empty(len(mask), dtype=np.int64)
            rank[np.concatenate(authors_split(len(mask), settings.split_seed))] = np.arange(len(mask))
            image_rows = image_rows[np.argsort(rank[image_rows], kind="stable")]
        evals.append(EvalSet(protocol, fit, name, ds, image_rows, text_rows, params))

    def present(protocol: str, *datasets: str) -> bool:
        missing = [ds for ds in datasets if ds not in sets]
        if missing:
            skipped.append(f"{protocol} on {' -> '.join(datasets)}: no image and text embeddings of "
                           f"{', '.join(missing)} in this partition (text-only model, or no texts in its language)")
        return not missing

    for ds in settings.in_domain:
        if present(IN_DOMAIN, ds):
            add_eval(IN_DOMAIN, train_fit(ds), f"{ds}:test", ds, split(ds, "test"))
    for fit_ds, eval_ds in settings.cross_dataset:
        if present(CROSS_DATASET, fit_ds, eval_ds):
            add_eval(CROSS_DATASET, train_fit(fit_ds, settings.cross_dataset_fit_rows), f"{eval_ds}:test", eval_ds,
                     split(eval_ds, "test"))
    for ds in settings.class_disjoint:
        if not present(CLASS_DISJOINT, ds):
            continue
        img, txt = sets[ds]
        known = (authors_known_classes(np.unique(img.labels[img.labels >= 0]), settings.class_disjoint_seed)
                 if settings.class_disjoint_method == "authors" else known_classes(img, settings.class_disjoint_seed))
        is_known = np.isin(img.labels, known)
        params = {"known_classes": known.tolist(), "seed": settings.class_disjoint_seed,
                  "known_method": settings.class_disjoint_method}
        name = f"{ds}:train:known"
        img_rows, txt_rows = fit_pairs(img, txt, split(ds, "train") & is_known)
        fits[name] = FitSet(name, ds, img_rows, txt_rows, params)
        labelled = img.labels >= 0
        add_eval(CLASS_DISJOINT, name, f"{ds}:test:known", ds, split(ds, "test") & is_known, **params)
        add_eval(CLASS_DISJOINT, name, f"{ds}:test:new", ds, split(ds, "test") & labelled & ~is_known, **params)
    for ds in settings.all_rows:
        if present(ALL_ROWS, ds):
            add_eval(ALL_ROWS, train_fit(ds, "all"), f"{ds}:all", ds, split(ds, "all"), rows="all")
    used = {ev.fit_set for ev in evals}
    evals = [replace(ev, params={**ev.params, "split": "authors", "split_seed": settings.split_seed})
             if ev.dataset in settings.authors_split and ev.protocol != ALL_ROWS else ev for ev in evals]
    result = Plan({name: f for name, f in fits.items() if name in used}, evals, skipped,
                  probe_transforms=settings.linear_probe)
    check_disjoint(result, sets)
    return result


def check_disjoint(planned: Plan, sets: dict[str, tuple[ImageSet, TextSet]]) -> None:
    """Raise if a fit set shares an image or a caption with an eval set of the same dataset, or if a
    class-disjoint fit set holds a prompt of a new class. The all-rows protocol measures its own fit rows by
    definition (descriptive, named so in its rows) and is the one exception."""
    for ev in planned.evals:
        fit = planned.fit_sets[ev.fit_set]
        if fit.dataset != ev.dataset or ev.protocol == ALL_ROWS:
            continue
        txt = sets[ev.dataset][1]
        shared_images = np.intersect1d(fit.image_rows, ev.image_rows)
        captions = np.intersect1d(fit.text_rows, txt.caption_rows)
        shared_captions = np.intersect1d(captions, ev.text_rows)
        if len(shared_images) or len(shared_captions):
            raise AssertionError(f"{fit.name} -> {ev.name}: {len(shared_images)} image and {len(shared_captions)} "
                                 f"caption rows are both fitted on and evaluated")
        if ev.protocol == CLASS_DISJOINT:
            fitted_classes = set(txt.labels[np.intersect1d(fit.text_rows, txt.prompt_rows)].tolist())
            if fitted_classes - set(ev.params["known_classes"]):
                raise AssertionError(f"{fit.name}: prompts of new classes are in the fit set")


def fit_arrays(fit: FitSet, sets: dict[str, tuple[ImageSet, TextSet]],
               distinct_texts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The L2-normalized (image, text) rows of a fit set, copied out: all that ``fit`` ever sees.
    ``distinct_texts``: each text row once, in the text set's order, instead of the text of every pair (a
    classification fit set pairs every image with its class prompt, repeating each prompt)."""
    img, txt = sets[fit.dataset]
    text_rows = np.unique(fit.text_rows) if distinct_texts else fit.text_rows
    return l2_normalize(img.emb[fit.image_rows]), l2_normalize(txt.emb[text_rows])


def variants(settings: TransformSettings, kind: str) -> list[Transform]:
    """The unfitted variants of one kind: one per k for whitening/PCA, per lambda (and
    renormalization) for the gap shift."""
    cls = KINDS[kind]
    if kind == "whitening":
        return [cls(k, fit_on) for fit_on in settings.whitening_fit_on for k in settings.ks(kind)]
    if kind == "pca":
        return [cls(k, variant) for variant in settings.pca_variants for k in settings.ks(kind)]
    if kind == "gap_shift":
        return [cls(lam, renorm, gap_of) for gap_of in settings.gap_shift_gap_of
                for renorm in settings.gap_shift_renormalize for lam in settings.gap_shift_lambdas]
    if kind == "lstsq":
        return [cls(variant=variant) for variant in settings.lstsq_variants]
    return [cls()]


def fit_sets_for(kind: str, planned: Plan) -> list[FitSet]:
    """The gap shift is swept in-domain only (Liang et al. 2022); the other kinds on every fit set."""
    wanted = {ev.fit_set for ev in planned.evals if kind != "gap_shift" or ev.protocol == IN_DOMAIN}
    return [f for name, f in planned.fit_sets.items() if name in wanted]


def evals_for(kind: str, fit_set: str, planned: Plan) -> list[EvalSet]:
    return [ev for ev in planned.evals
            if ev.fit_set == fit_set and (kind != "gap_shift" or ev.protocol == IN_DOMAIN)]
