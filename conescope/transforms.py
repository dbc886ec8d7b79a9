"""Fitted transforms of embeddings (Tyshchuk et al. 2023, Section 4; Liang et al. 2022, Section 4.2).

Every transform is fitted on paired rows, ``fit(image, text)`` with ``image[i]`` the image that
``text[i]`` describes (for a classification set: the image and a prompt of its class), and then
applied with ``transform(x, modality)``. The protocols (``conescope.protocols``) hand in
L2-normalized rows, as the papers do; the metrics renormalize what comes out.

``to_dict()`` gives a flat dict of numpy arrays and scalars (str, int, float, bool) that
``transform_from_dict`` turns back into an equal transform, bit for bit; ``storage.transform_store``
writes that dict as an ``.npz`` file. Each fitted transform carries its provenance (fit set, number
of fit rows, SHA-256 of the fit arrays, code version, time) in ``provenance``.

Heavy products run through BLAS (``syrk`` for symmetric Gram matrices, half the work of a general
product) in the precision of the rows for covariances and the Procrustes cross product (float32
embeddings: about 1e-6 relative; float64 rows: about 1e-12), and always in float64 for the normal
equations of least squares, whose error grows with the square of the condition number; the small
d x d decompositions run in float64 (``bench/transforms.py`` times them at 40,000 x 512).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

import numpy as np
import scipy.linalg
from scipy.linalg import blas, lapack

from conescope.provenance import array_digest, git_commit

MODALITIES = ("image", "text")
# Least squares through the normal equations squares the condition number of the design matrix;
# below this reciprocal condition number of the Gram matrix the SVD solver takes over.
_MIN_RCOND = 1e-10


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _gram(a: np.ndarray) -> np.ndarray:
    """A^T A through ``syrk`` (half the work of a general product) in A's precision (float32 or
    float64), returned as a full symmetric float64 matrix."""
    syrk = blas.ssyrk if a.dtype == np.float32 else blas.dsyrk
    a = a if a.dtype in (np.float32, np.float64) else _f64(a)
    c = syrk(1.0, np.asfortranarray(a.T), trans=0).astype(np.float64)
    return np.triu(c) + np.triu(c, 1).T


def _work_dtype(x: np.ndarray) -> np.dtype:
    """Maps are applied in the input's float precision (float32 embeddings stay float32: the product
    is exact to float32 and twice as fast); anything else is computed in float64."""
    return x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def data_sha256(*arrays: np.ndarray) -> str:
    """Content hash of the fit arrays (shape, dtype and bytes), recorded as provenance."""
    return array_digest(*arrays).hexdigest()


def _check_pairs(image: np.ndarray, text: np.ndarray, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    image, text = np.asarray(image), np.asarray(text)
    if image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1]:
        raise ValueError(f"fit expects two (n, d) arrays of the same width, got {image.shape} and {text.shape}")
    if paired and image.shape[0] != text.shape[0]:
        raise ValueError(f"fit expects paired rows (image[i] with text[i]), got {image.shape[0]} image "
                         f"and {text.shape[0]} text rows")
    if len(image) == 0 or len(text) == 0:
        raise ValueError("fit needs at least one image and one text row")
    for name, a in (("image", image), ("text", text)):
        if not np.isfinite(a).all():
            raise ValueError(f"fit: the {name} rows hold non-finite values")
    return image, text


def _scalar(v):
    """A scalar read back from an npz file (0-d array) as the Python value it was written as."""
    a = np.asarray(v)
    return a.item() if a.ndim == 0 else v


class Transform:
    """Base class: ``kind`` names the transform family, ``name`` the fitted variant (the warehouse's
    ``transform`` column), ``paired`` whether ``fit`` needs row-aligned image/text pairs."""

    kind: ClassVar[str] = ""
    paired: ClassVar[bool] = False
    _arrays: ClassVar[tuple[str, ...]] = ()
    _scalars: ClassVar[tuple[str, ...]] = ()
    _optional: ClassVar[tuple[str, ...]] = ()  # scalars a stored file may lack (added later; default applies)
    scoring: ClassVar[str | None] = None  # a logit geometry the variant is scored with, overriding the profile's
    # fitted on the evaluated rows themselves at evaluation time (``for_eval``), not on the fit set
    transductive: ClassVar[bool] = False
    # fitted on each distinct text row of the fit set once, not on the text of every pair
    distinct_texts: ClassVar[bool] = False

    def __init__(self) -> None:
        self.provenance: dict = {}

    @property
    def name(self) -> str:
        return self.kind

    @property
    def fitted(self) -> bool:
        return all(getattr(self, a, None) is not None for a in self._arrays)

    def fit(self, image: np.ndarray, text: np.ndarray, fit_set: str = "unnamed") -> Transform:
        image, text = _check_pairs(image, text, self.paired)
        self._fit(image, text)
        self.provenance = {"kind": self.kind, "name": self.name, "params": self.params(), "fit_set": fit_set,
                           "n_image": int(len(image)), "n_text": int(len(text)),
                           "dim": int(image.shape[1]), "data_sha256": data_sha256(image, text),
                           "git_commit": git_commit(), "fitted_at": datetime.now(UTC).isoformat()}
        return self

    def _fit(self, image: np.ndarray, text: np.ndarray) -> None:
        raise NotImplementedError

    def for_eval(self, image: np.ndarray, text: np.ndarray) -> Transform:
        """The transform applied to an eval set whose (L2-normalized) rows are ``image`` and ``text``:
        itself, except for a transductive variant, which is refitted on those rows."""
        return self

    def transform(self, x: np.ndarray, modality: str) -> np.ndarray:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if not self.fitted:
            raise RuntimeError(f"{self.name}: transform called before fit")
        return self._apply(np.asarray(x), modality)

    def _apply(self, x: np.ndarray, modality: str) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        """The scalar settings of the variant (k, lambda, ...)."""
        return {s: getattr(self, s) for s in self._scalars}

    def to_dict(self) -> dict:
        if not self.fitted:
            raise RuntimeError(f"{self.name}: cannot serialize a transform that is not fitted")
        out: dict = {"kind": self.kind, "provenance": json.dumps(self.provenance, sort_keys=True)}
        out.update(self.params())
        out.update({a: getattr(self, a) for a in self._arrays})
        return out

    @classmethod
    def _from_dict(cls, d: dict) -> Transform:
        # scalars added later (fit_on, variant) are optional: a file written before them takes the default
        t = cls(**{s: _scalar(d[s]) for s in cls._scalars if s in d})
        for a in cls._arrays:
            setattr(t, a, np.asarray(d[a]))
        t.provenance = json.loads(d.get("provenance", "{}"))
        return t


class Identity(Transform):
    """x -> x: the baseline row of every protocol (raw embeddings, evaluated on the protocol's split)."""

    kind = "identity"
    _arrays = ()

    def _fit(self, image, text) -> None:
        pass

    def _apply(self, x, modality):
        return x


class Centering(Transform):
    """x -> x - mu, mu = mean of the joint fit set (image and text rows stacked), Tyshchuk et al. 2023,
    Section 4.1 ("centering"): removes the common direction of the cone; for CLIP it lifts I1 to
    about 1 and raises the CLIP loss (Table 2)."""

    kind = "centering"
    _arrays = ("mean",)

    def __init__(self) -> None:
        super().__init__()
        self.mean: np.ndarray | None = None

    def _fit(self, image, text) -> None:
        self.mean = (_f64(image).sum(axis=0) + _f64(text).sum(axis=0)) / (len(image) + len(text))

    def _apply(self, x, modality):
        return x - self.mean.astype(_work_dtype(x))


class PerModalityCentering(Transform):
    """image x -> x - mu_image, text y -> y - mu_text: each modality centred on its own fit-set mean.
    Tyshchuk et al. 2023 report "I1 after centering 0.99-1.00" (Table 5) for this form (each modality's
    isotropy measured after removing that modality's mean); the joint ``centering`` keeps the gap
    between the two means and gives a different I1. Unpaired: the two means are fitted separately."""

    kind = "centering_per_modality"
    _arrays = ("image_mean", "text_mean")

    def __init__(self) -> None:
        super().__init__()
        self.image_mean: np.ndarray | None = None
        self.text_mean: np.ndarray | None = None

    def _fit(self, image, text) -> None:
        self.image_mean, self.text_mean = _f64(image).mean(axis=0), _f64(text).mean(axis=0)

    def _apply(self, x, modality):
        mean = self.image_mean if modality == "image" else self.text_mean
        return x - mean.astype(_work_dtype(x))


def _joint_moments(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean (float64), covariance (divided by n) of the stacked rows, and the relative size below which
    its eigenvalues are rounding noise. The rows are centred before
    the product, so there is no cancellation, and the product runs in the rows' precision: float32
    embeddings give the covariance to about 1e-6 of its scale at twice the speed of float64."""
    n = len(image) + len(text)
    mean = (_f64(image).sum(axis=0) + _f64(text).sum(axis=0)) / n
    dt = np.float32 if image.dtype == text.dtype == np.float32 else np.float64
    m = mean.astype(dt)
    cov = (_gram(np.asarray(image, dtype=dt) - m) + _gram(np.asarray(text, dtype=dt) - m)) / n
    return mean, cov, cov.shape[0] * float(np.finfo(dt).eps)


def _top_eigen(cov: np.ndarray, k: int, what: str, tol: float) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The k leading eigenpairs of a covariance (descending, only those k computed) and, when the k-th
    eigenvalue is numerically zero, the covariance's rank (else None)."""
    d = cov.shape[0]
    if not 1 <= k <= d:
        raise ValueError(f"{what}: k={k} must lie in [1, {d}] (the embedding width)")
    vals, vecs = scipy.linalg.eigh(cov, subset_by_index=[d - k, d - 1], driver="evr")
    vals, vecs = vals[::-1], vecs[:, ::-1]
    rank = None
    if vals[-1] <= tol * max(vals[0], 0.0):
        all_vals = scipy.linalg.eigvalsh(cov)
        rank = int(np.sum(all_vals > tol * max(all_vals[-1], 0.0)))
    # Eigenvectors are defined up to sign: fix it (largest-magnitude coordinate positive) so that a
    # refit on the same data gives the same stored transform.
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(k)])
    return vals, vecs * np.where(signs == 0, 1.0, signs), rank


class Whitening(Transform):
    """x -> (x - mu) U_k diag(lambda_k)^(-1/2): whitening-k of Su et al. 2021 as used by Tyshchuk et
    al. 2023, Section 4.1, with mu and the covariance C = U diag(lambda) U^T of the joint fit set and
    U_k its k leading eigenvectors. The fit set's joint covariance becomes the k x k identity.

    ``fit_on="image"`` (or ``"text"``) fits mu and C on that modality's rows alone and applies the map to
    both: Tyshchuk et al.'s "whitening on CIFAR-train images" (Table 3), warehouse name
    ``whitening_<k>_image``. The default ``"joint"`` stacks both modalities."""

    kind = "whitening"
    _arrays = ("mean", "components", "scale")
    _scalars = ("k", "fit_on")
    _optional = ("fit_on",)

    def __init__(self, k: int, fit_on: str = "joint") -> None:
        super().__init__()
        if fit_on not in ("joint", *MODALITIES):
            raise ValueError(f"whitening: fit_on must be joint, image or text, got {fit_on!r}")
        self.k = int(k)
        self.fit_on = str(fit_on)
        self.mean = self.components = self.scale = None

    @property
    def name(self) -> str:
        return f"whitening_{self.k}" + ("" if self.fit_on == "joint" else f"_{self.fit_on}")

    def _fit(self, image, text) -> None:
        if self.fit_on != "joint":
            rows = image if self.fit_on == "image" else text
            half = len(rows) // 2  # _joint_moments stacks two parts; the split leaves the moments unchanged
            image, text = rows[:half], rows[half:]
        self.mean, cov, tol = _joint_moments(image, text)
        vals, vecs, rank = _top_eigen(cov, self.k, self.name, tol)
        if rank is not None:
            raise ValueError(f"{self.name}: the fit set has only {rank} directions of non-zero variance "
                             f"({len(image) + len(text)} rows, width {cov.shape[0]}); choose k <= {rank}")
        self.components, self.scale = vecs, 1.0 / np.sqrt(vals)

    def _apply(self, x, modality):
        dt = _work_dtype(x)
        return ((x - self.mean.astype(dt)) @ (self.components * self.scale).astype(dt)).astype(dt, copy=False)


class PCA(Transform):
    """x -> (x - mu) U_k: projection on the k leading principal components of the joint fit set
    (Tyshchuk et al. 2023, Section 4.1, "PCA-k"); equal to scikit-learn's ``PCA(k)`` up to the sign
    of each component.

    ``variant="truncated_svd"`` is the paper's PCA-425 row as its code computes it: scikit-learn's
    ``TruncatedSVD(k)`` of the stacked fit rows, *without* centring (mu = 0, U_k the k leading right
    singular vectors, the eigenvectors of X^T X), scored by the dot product of the projections rather
    than their cosine (``scoring = "dot"``); warehouse name ``pca_<k>_tsvd``. Its fit rows are the images
    stacked with each distinct text row of the fit set once (``distinct_texts``): on a classification set
    the authors stacked the train images with the 100 prompts once, not with each image's prompt (which
    repeats every prompt hundreds of times and gives another subspace); on COCO every first caption is
    its own row, so that fit on COCO's rows is their TruncatedSVD of all images and captions."""

    kind = "pca"
    _arrays = ("mean", "components", "explained_variance")
    _scalars = ("k", "variant")
    _optional = ("variant",)
    VARIANTS: ClassVar[tuple[str, ...]] = ("centered", "truncated_svd")

    def __init__(self, k: int, variant: str = "centered") -> None:
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"pca: variant must be one of {self.VARIANTS}, got {variant!r}")
        self.k = int(k)
        self.variant = str(variant)
        self.mean = self.components = self.explained_variance = None

    @property
    def name(self) -> str:
        return f"pca_{self.k}" + ("_tsvd" if self.variant == "truncated_svd" else "")

    @property
    def scoring(self) -> str | None:  # type: ignore[override]
        return "dot" if self.variant == "truncated_svd" else None

    @property
    def distinct_texts(self) -> bool:  # type: ignore[override]
        return self.variant == "truncated_svd"

    def _fit(self, image, text) -> None:
        if self.variant == "truncated_svd":
            gram = _gram(np.asarray(image)) + _gram(np.asarray(text))  # X^T X of the stacked, uncentred rows
            d = gram.shape[0]
            self.mean = np.zeros(d)
            vals, self.components, _ = _top_eigen(gram, self.k, self.name, d * float(np.finfo(np.float64).eps))
            self.explained_variance = np.maximum(vals, 0.0)  # squared singular values
            return
        self.mean, cov, tol = _joint_moments(image, text)
        n = len(image) + len(text)
        vals, self.components, _ = _top_eigen(cov, self.k, self.name, tol)
        self.explained_variance = np.maximum(vals, 0.0) * n / max(n - 1, 1)  # sklearn's unbiased variance

    def _apply(self, x, modality):
        dt = _work_dtype(x)
        return ((x - self.mean.astype(dt)) @ self.components.astype(dt)).astype(dt, copy=False)


class Procrustes(Transform):
    """Text -> image rotation: W = argmin ||T W - I||_F over orthogonal W, W = U V^T with
    T^T I = U S V^T (Schönemann 1966; Tyshchuk et al. 2023, Section 4.2). Text rows are mapped
    t -> t W, image rows are left as they are. Same solution as ``scipy.linalg.orthogonal_procrustes``."""

    kind = "procrustes"
    paired = True
    _arrays = ("rotation",)

    def __init__(self) -> None:
        super().__init__()
        self.rotation: np.ndarray | None = None

    def _fit(self, image, text) -> None:
        # T^T I in the rows' precision (as scipy computes it), the SVD of the d x d result in float64.
        dt = np.float32 if image.dtype == text.dtype == np.float32 else np.float64
        m = (np.asarray(text, dtype=dt).T @ np.asarray(image, dtype=dt)).astype(np.float64)
        u, _, vt = scipy.linalg.svd(m, lapack_driver="gesdd")
        self.rotation = u @ vt

    def _apply(self, x, modality):
        if modality == "image":
            return x
        return x @ self.rotation.astype(_work_dtype(x))


class LeastSquares(Transform):
    """Text -> image linear map: W = argmin ||T W - I||_F (Tyshchuk et al. 2023, Section 4.2, "LSTSQ"),
    the minimum-norm solution whenever T is rank-deficient (fewer rows than columns, or a classification fit
    set whose rows repeat a few distinct prompts), as ``numpy.linalg.lstsq(rcond=None)`` and
    ``torch.linalg.lstsq(driver="gelsd")`` give: singular values of T below eps64 * max(n, d) * s_max count
    as zero.

    Solved through the normal equations with a Cholesky factor, in float64: (T^T T) W = T^T I when
    n >= d, W = T^T (T T^T)^-1 I when n < d. That squares the condition number of T, so when the
    Gram matrix is singular or its reciprocal condition number (LAPACK ``pocon``) falls below 1e-10
    the SVD solver (``scipy.linalg.lstsq``, gelsd) takes over; ``solver`` records which one ran.
    Text rows are mapped t -> t W, image rows are left as they are.

    ``variant="torch_gelsy"`` is the authors' computation (docs/fidelity.md), warehouse name
    ``lstsq_gelsy``: ``torch.linalg.lstsq(T, I)`` on float32 rows on the CPU, whose default driver is
    ``gelsy`` (QR with column pivoting) with the float32 cut-off eps32 * max(n, d): on a rank-deficient fit
    set it drops more directions (CIFAR-100 prompts: rank 99 where the minimum-norm solution keeps 100;
    mapped prompts agree only to cosine 0.993). ``solver`` records the driver and the rank it kept."""

    kind = "lstsq"
    paired = True
    _arrays = ("weights",)
    _scalars = ("solver", "variant")
    _optional = ("variant",)
    VARIANTS: ClassVar[tuple[str, ...]] = ("minimum_norm", "torch_gelsy")

    def __init__(self, solver: str = "", variant: str = "minimum_norm") -> None:
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"lstsq: variant must be one of {self.VARIANTS}, got {variant!r}")
        self.solver = solver
        self.variant = str(variant)
        self.weights: np.ndarray | None = None

    @property
    def name(self) -> str:
        return "lstsq" + ("_gelsy" if self.variant == "torch_gelsy" else "")

    def _fit(self, image, text) -> None:
        if self.variant == "torch_gelsy":
            import torch

            t = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32))
            i = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            # the driver named is torch's CPU default, so the call is the authors' torch.linalg.lstsq(T, I)
            result = torch.linalg.lstsq(t, i, driver="gelsy")
            self.weights = result.solution.numpy()
            self.solver = f"torch gelsy float32, rank {int(result.rank)}"
            return
        t, i = _f64(text), _f64(image)
        n, d = t.shape
        gram = _gram(t) if n >= d else _gram(t.T)
        factor, info = lapack.dpotrf(gram, lower=0, clean=1)
        if info == 0:
            rcond, info = lapack.dpocon(factor, np.abs(gram).sum(axis=0).max())
        if info == 0 and rcond >= _MIN_RCOND:
            if n >= d:
                self.weights = scipy.linalg.cho_solve((factor, False), t.T @ i, check_finite=False)
            else:
                self.weights = t.T @ scipy.linalg.cho_solve((factor, False), i, check_finite=False)
            self.solver = "cholesky"
        else:
            # numpy's and torch's cut-off: singular values below eps * max(n, d) * s_max are zero. LAPACK's
            # default (eps * s_max) keeps the rounding-noise directions of a rank-deficient T (100 distinct
            # CIFAR prompts repeated over 50,000 rows) and divides by them: ||W|| of 1e13.
            cond = float(np.finfo(np.float64).eps) * max(n, d)
            self.weights = scipy.linalg.lstsq(t, i, cond=cond, lapack_driver="gelsd", check_finite=False)[0]
            self.solver = "svd"

    def _apply(self, x, modality):
        if modality == "image":
            return x
        return x @ self.weights.astype(_work_dtype(x))


class GapShift(Transform):
    """Shift both modalities along the modality gap (Liang et al. 2022, Section 4.2, "embedding shift"):
    with the gap vector Delta = mean(image) - mean(text) of the fit set,
    image x -> x - (lambda/2) Delta and text y -> y + (lambda/2) Delta, then (``renormalize``) each row
    back onto the unit sphere. Without renormalization the fit set's gap becomes exactly
    (1 - lambda) Delta: lambda = 0 is the identity, lambda = 1 closes the gap (the "closed" columns of
    the Amumo table, Humer et al.).

    ``gap_of="fit_set"`` (the default) is inductive: Delta comes from the fit set (the train split) and is
    applied to held-out rows. ``gap_of="eval_set"`` is Amumo's ``get_closed_modality_gap`` and Liang et
    al.'s ``move_features`` (docs/fidelity.md): Delta is the gap of the evaluated rows themselves
    (``for_eval``: the mean of the eval set's image rows minus the mean of its text rows), so lambda = 1
    closes the evaluated set's own gap; warehouse name ``gap_shift_<lambda>[_raw]_eval``, its rows'
    ``fit_set`` is the eval set."""

    kind = "gap_shift"
    _arrays = ("gap",)
    _scalars = ("lam", "renormalize", "gap_of")
    _optional = ("gap_of",)

    def __init__(self, lam: float, renormalize: bool = True, gap_of: str = "fit_set") -> None:
        super().__init__()
        if gap_of not in ("fit_set", "eval_set"):
            raise ValueError(f"gap_shift: gap_of must be fit_set or eval_set, got {gap_of!r}")
        self.lam = float(lam)
        self.renormalize = bool(renormalize)
        self.gap_of = str(gap_of)
        self.gap: np.ndarray | None = None

    @property
    def name(self) -> str:
        return (f"gap_shift_{self.lam:g}" + ("" if self.renormalize else "_raw")
                + ("_eval" if self.gap_of == "eval_set" else ""))

    @property
    def transductive(self) -> bool:  # type: ignore[override]
        return self.gap_of == "eval_set"

    def _fit(self, image, text) -> None:
        self.gap = _f64(image).mean(axis=0) - _f64(text).mean(axis=0)

    def for_eval(self, image: np.ndarray, text: np.ndarray) -> GapShift:
        if not self.transductive:
            return self
        out = GapShift(self.lam, self.renormalize, self.gap_of)
        out._fit(np.asarray(image), np.asarray(text))
        out.provenance = {**self.provenance, "gap": "of the evaluated rows"}
        return out

    def _apply(self, x, modality):
        sign = -1.0 if modality == "image" else 1.0
        y = _f64(x) + sign * (self.lam / 2) * self.gap
        if self.renormalize:
            norms = np.linalg.norm(y, axis=1, keepdims=True)
            if np.any(norms == 0):
                raise ValueError(f"{self.name}: a shifted row is zero and cannot be renormalized")
            y = y / norms
        return y.astype(_work_dtype(x), copy=False)


KINDS: dict[str, type[Transform]] = {t.kind: t for t in (Identity, Centering, PerModalityCentering, Whitening, PCA,
                                                          Procrustes, LeastSquares, GapShift)}


def transform_from_dict(d: dict) -> Transform:
    """Rebuild a fitted transform from ``Transform.to_dict()`` (or what the npz store read back)."""
    kind = d.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown transform kind {kind!r} (known: {', '.join(KINDS)})")
    cls = KINDS[kind]
    missing = [a for a in (*cls._arrays, *cls._scalars) if a not in d and a not in cls._optional]
    if missing:
        raise ValueError(f"{kind}: serialized transform lacks {', '.join(missing)}")
    return KINDS[kind]._from_dict(d)
