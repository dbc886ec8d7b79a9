"""Linear probe: multinomial logistic regression on frozen embeddings (Radford et al. 2021, section 3.2,
who use scikit-learn's L-BFGS logistic regression; Tyshchuk et al. 2023, section 4.3 on CIFAR-100).

The solver is full-batch L-BFGS in torch with a hand-written gradient: two (n x d) by (d x K) matrix
products per evaluation, on every core or a GPU, in float32 with float64 statistics, preconditioned by
the feature correlation so that it needs a few times fewer iterations. Where bfloat16 matrix products
are fast (CPUs with AVX512-BF16 or AMX, CUDA devices with bf16), the iterations run on a bfloat16 copy
of the features first and float32 takes over for the last ones (see :func:`fit_linear_probe`). It
minimizes exactly scikit-learn's objective, so the two are interchangeable
(tests/test_metrics_quality.py compares predictions and coefficients; bench/metrics_quality.py
compares speed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from conescope.models import native_bf16

# float32 halves the time of the two matrix products that dominate an evaluation. The per-sample losses
# are summed in float64, which lets L-BFGS resolve the optimum to ~2e-4 relative in the coefficients
# (1e-3 with a float32 sum; float64 throughout reaches 3e-5 at twice the cost): far below any change
# of predicted labels.
_DTYPE = torch.float32
_HISTORY = 20  # L-BFGS memory; 5, 10 (scipy's default) and 50 needed as many iterations here
_GRAM_ROWS = 16_384  # rows sampled to estimate the preconditioner (it only has to be roughly right)
# The bfloat16 phase stops at this gradient at the finest: below it the rounding of the bfloat16 products
# is of the order of the gradient itself and the line search stalls; float32 finishes from there.
_BF16_TOL_FLOOR = 1e-4


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: standardization (train mean / std) followed by softmax(coef @ z + intercept).

    ``coef`` (n_classes, d) and ``intercept`` act on standardized features z = (x - mean) / std;
    ``classes`` maps the output columns back to the original labels.
    """

    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    precision: str = "float32"  # "mixed": the first n_iter_bf16 iterations ran on bfloat16 features
    n_iter_bf16: int = 0

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Logits (n, n_classes) in float64."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return z @ self.coef.T + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The original label of the highest-scoring class for each row."""
        return self.classes[np.argmax(self.decision_function(x), axis=1)]

    def hits(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample correctness; a label never seen in training can never be predicted, so it is a miss
        (and is kept in the denominator: dropping it would flatter the probe)."""
        return self.predict(x) == np.asarray(y)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of rows whose predicted label equals y."""
        return float(self.hits(x, y).mean())


def _centered(x: np.ndarray, device: str) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """(x - mean) in float32, the mean (accumulated in float64) and the std (population, like
    StandardScaler; a constant feature keeps std 1, so its standardized value is 0).

    Centering comes first because embeddings sit in a cone: their common offset is large next to their
    spread, and forming x @ w before subtracting the mean would cancel digits in float32.
    """
    x = np.asarray(x)
    mean = x.mean(axis=0, dtype=np.float64)
    centered = torch.as_tensor(x, dtype=_DTYPE, device=device) - torch.as_tensor(mean, dtype=_DTYPE, device=device)
    std = ((centered * centered).sum(dim=0) / x.shape[0]).double().sqrt()
    std[std == 0] = 1.0
    return centered, mean, std


def _preconditioner(centered: torch.Tensor, std: torch.Tensor, l2: float, seed: int) -> torch.Tensor:
    """R = L^-1 with L L^T = C = Z^T Z / n + max(l2, 1e-6) I, the standardized features' correlation plus
    the ridge, in float64 (Z^T Z from at most ``_GRAM_ROWS`` rows drawn with ``seed``).

    C approximates the data part of the Hessian per class. Optimizing over V with W = V R (a change of
    variables: same objective, same minimizer) works on features whitened by R, where that part is
    close to the identity: L-BFGS then needs 3-4x fewer iterations than on the standardized but
    correlated features of an embedding cone. The floor on the ridge only keeps C invertible.
    """
    n = centered.shape[0]
    if n > _GRAM_ROWS:
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:_GRAM_ROWS].to(centered.device)
        centered = centered[rows]
    corr = (centered.T @ centered).double() / centered.shape[0] / (std[:, None] * std[None, :])
    corr.diagonal().add_(max(l2, 1e-6))
    eye = torch.eye(corr.shape[0], dtype=corr.dtype, device=corr.device)
    return torch.linalg.solve_triangular(torch.linalg.cholesky(corr), eye, upper=False)


def _objective(xc: torch.Tensor, y: torch.Tensor, v: torch.Tensor, intercept: torch.Tensor, l2: float,
               to_raw: torch.Tensor, gram: torch.Tensor) -> float:
    """f(V, b) = mean_i [logsumexp(l_i) - l_{i, y_i}] + l2 / 2 ||V R||^2 with logits l_i = W z_i + b,
    W = V R, z_i = D^-1 xc_i; returned as a float64 sum of float32 terms.

    The logits are formed as xc @ (V Q)^T with Q = R D^-1 (``to_raw``), so neither z nor the whitened
    features are ever materialized. Sets .grad to the analytic gradient: with P = (softmax - one-hot) / n,
    dV = (P^T xc) Q^T + l2 V R R^T (``gram`` = R R^T), db = sum_i P_i; cheaper than autograd.

    The two n-sized products run in the dtype of ``xc`` (float32, or a bfloat16 copy), everything else
    in float32.
    """
    y_col = y[:, None]
    low = xc.dtype
    logits = torch.addmm(intercept.to(low), xc, (v @ to_raw).T.to(low)).float()
    true = logits.gather(1, y_col)
    top = logits.amax(dim=1, keepdim=True)
    # one exp pass serves both the loss and the softmax; everything is done in place on the logits
    total = logits.sub_(top).exp_().sum(dim=1, keepdim=True)
    v_gram = v @ gram
    loss = (top - true + total.log()).double().mean() + 0.5 * l2 * (v_gram * v).double().sum()
    n = xc.shape[0]
    prob = logits.div_(total * n)  # softmax / n
    prob.scatter_add_(1, y_col, torch.full_like(true, -1.0 / n))
    v.grad = torch.addmm(v_gram, (prob.to(low).T @ xc).float(), to_raw.T, beta=l2)
    intercept.grad = prob.sum(dim=0)
    return float(loss)


PRECISIONS = ("auto", "float32", "mixed")


def fit_linear_probe(x_train: np.ndarray, y_train: np.ndarray, l2: float = 1e-4, max_iter: int = 500,
                     tol: float = 1e-4, device: str = "cpu", seed: int = 0, precision: str = "auto") -> LinearProbe:
    """Multinomial logistic regression with an L2 penalty on the weights (not the intercept):

        minimize_{W, b}  (1/n) sum_i [log sum_k exp(w_k . z_i + b_k) - (w_{y_i} . z_i + b_{y_i})] + (l2 / 2) ||W||^2

    on standardized training features z (mean / std of the training rows only), by full-batch L-BFGS
    (``torch.optim.LBFGS``, strong Wolfe line search) from zero.

    scikit-learn's ``LogisticRegression(C=C, solver="lbfgs")`` minimizes C sum_i loss_i + ||W||^2 / 2
    (intercept unpenalized), n C times the objective above when C = 1 / (l2 n): both have the same
    minimizer, and with that C sklearn's ``coef_`` / ``intercept_`` on the same standardized features
    match ``coef`` / ``intercept`` here (the intercepts of both sum to zero, as every gradient step keeps
    them).

    The optimizer runs in whitened coordinates W = V R (see :func:`_preconditioner`), a change of
    variables that leaves the objective and its minimizer unchanged but not the gradient, so ``tol``
    bounds the largest entry of the gradient in (V, b) (sklearn's ``tol`` bounds it in (W, b)); L-BFGS
    also stops when the loss stops changing or after ``max_iter`` iterations.

    The default ``tol`` is scikit-learn's default (1e-4). Measured on 50,000 x 512 with 100 classes
    (bench/metrics_quality.py), it stops closer to the minimizer than scikit-learn does at its own
    default (relative coefficient distance 0.017 against 0.050).

    ``precision``: ``"float32"`` runs every evaluation in float32. ``"mixed"`` first iterates on a
    bfloat16 copy of the centred features until the gradient meets ``tol`` (or 1e-4, the finest that
    bfloat16 resolves), then continues the same L-BFGS run (same curvature history) in float32 until
    it meets ``tol`` there, usually after one to five evaluations. The minimizer and the stopping rule
    are those of float32: bfloat16 (~3e-3 relative rounding) only makes the path to it cheaper.
    ``"auto"`` (default) is ``"mixed"`` where bfloat16 products are native
    (:func:`conescope.models.native_bf16`: 0.008 s against 0.036 s for a 50,000 x 512 by 512 x 100
    product on a 2-core AVX512-BF16 CPU), else ``"float32"``. The choice made is in ``LinearProbe.precision``.

    Labels may be any integers (or other sortable values); they are mapped to 0..K-1 in sorted order.
    ``seed`` draws the rows that estimate the preconditioner when n > 16384; it changes the path, not
    the (unique) minimizer.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    mixed = precision == "mixed" or (precision == "auto" and native_bf16(str(device)))
    classes, y = np.unique(np.asarray(y_train), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a linear probe needs at least two classes, got {len(classes)}")
    if np.shape(x_train)[0] != y.shape[0]:
        raise ValueError(f"{np.shape(x_train)[0]} rows but {y.shape[0]} labels")
    xc, mean, std = _centered(x_train, device)
    whitener = _preconditioner(xc, std, l2, seed)
    to_raw = (whitener / std[None, :]).to(_DTYPE)
    gram = (whitener @ whitener.T).to(_DTYPE)
    y_t = torch.as_tensor(y, device=device)
    v = torch.zeros(len(classes), xc.shape[1], dtype=_DTYPE, device=device)
    intercept = torch.zeros(len(classes), dtype=_DTYPE, device=device)
    optimizer = torch.optim.LBFGS([v, intercept], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-9, history_size=_HISTORY, line_search_fn="strong_wolfe")
    low_iter = 0
    if mixed:
        low = xc.to(torch.bfloat16)
        optimizer.param_groups[0]["tolerance_grad"] = max(tol, _BF16_TOL_FLOOR)
        optimizer.step(lambda: _objective(low, y_t, v, intercept, l2, to_raw, gram))
        del low
        low_iter = int(optimizer.state[v]["n_iter"])
        # torch's LBFGS counts max_iter per step() call; the float32 phase gets what is left
        left = max(1, max_iter - low_iter)
        optimizer.param_groups[0].update(max_iter=left, max_eval=left * 5 // 4, tolerance_grad=tol)
    optimizer.step(lambda: _objective(xc, y_t, v, intercept, l2, to_raw, gram))
    coef = v.double() @ whitener
    return LinearProbe(classes=classes, mean=mean, std=std.cpu().numpy(), coef=coef.cpu().numpy(),
                       intercept=intercept.double().cpu().numpy(), n_iter=int(optimizer.state[v]["n_iter"]),
                       precision="mixed" if mixed else "float32", n_iter_bf16=low_iter)


def linear_probe_hits(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                      **kw) -> np.ndarray:
    """Per-test-sample correctness of a probe fitted on the training rows (keywords of
    :func:`fit_linear_probe`), for bootstrap CIs over test samples."""
    return fit_linear_probe(x_train, y_train, **kw).hits(x_test, y_test)


def linear_probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                          **kw) -> float:
    """Test accuracy of a probe fitted on the training rows (keywords of :func:`fit_linear_probe`)."""
    return float(linear_probe_hits(x_train, y_train, x_test, y_test, **kw).mean())
