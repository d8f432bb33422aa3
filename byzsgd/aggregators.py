"""Aggregation rules: ``rule(grads)`` maps an (n, d) array of worker
gradients to one (d,) vector of the same float dtype.

Rules are small pure functions registered by name::

    rule = aggregators.get("krum", q=4)
    g = rule(grads)            # (d,)
    rule.info                  # diagnostics of the last call, if any

Byzantine values are normal input: NaN and +-inf never raise. Coordinate-wise
rules treat NaN as +inf; vector rules never pick or weight a row holding a
non-finite value while some finite row scores better (Krum's and Medoid's
scores count infinite terms first; see _lex_argsort for exact ties). Only an invalid
configuration raises (ValueError naming n and q or b).

The coordinate-wise work is in :mod:`byzsgd.coordinate`, distances and Gram
matrices in :mod:`byzsgd.distances`: numba kernels for float32 input, with a
pure-numpy path (BYZSGD_NO_NUMBA=1) giving the same results up to rounding
(the coordinate-wise rules bit for bit). Rows tied in exact arithmetic (e.g.
Medoid's candidates when all rows lie on one line) may be told apart
differently by the two paths' rounding.

References: Xie, Koyejo, Gupta 2018, "Generalized Byzantine-tolerant SGD"
(Definitions 3, 6-9); Blanchard et al. 2017 (Krum, Multi-Krum); Yin et al.
2018 (trimmed mean); Xie et al. 2018 (Phocas); El Mhamdi et al. 2018
(Bulyan); Karimireddy et al. 2021 (centered clipping).
"""
import functools

import numpy as np

from . import coordinate, distances
from .checks import integer, is_real
from .registry import Registry, probe

__all__ = ["REGISTRY", "register", "names", "get", "resolve", "validate",
           "krum_scores", "mean", "marmed", "meamed", "trmean", "phocas", "krum",
           "multikrum", "medoid", "bulyan", "geomed", "cclip"]

REGISTRY = Registry("aggregation rule", data_args=1)
register = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get
resolve = REGISTRY.resolve


def validate(rule, n):
    """Raise ValueError (naming n, q) if ``rule`` cannot aggregate n rows,
    or if it writes to its input or does not return a (d,) float array.

    ``rule`` is anything :func:`resolve` accepts. Returns the bound rule.
    """
    bound = resolve(rule)
    probe("aggregator", bound, (n, 1), (1,))
    return bound


# ---------------------------------------------------------------- helpers

def _check(grads):
    """The (n, d) float view of ``grads`` (ints become float64)."""
    grads = np.asarray(grads)
    if grads.ndim != 2 or grads.shape[0] < 1:
        raise ValueError(f"grads must be an (n, d) array with n >= 1, got shape {grads.shape}")
    if grads.dtype.kind != "f":
        grads = grads.astype(np.float64)
    return grads


def _int(rule, name, value):
    """``value`` as an int; a clear error for 2.5, "3" or True (q, b and m
    count rows: a fractional one would silently trim asymmetrically)."""
    try:
        return integer(name, value)
    except ValueError:
        raise ValueError(f"{rule} needs an integer {name}, got {name}={value!r}") from None


def _need(ok, rule, cond, n, **params):
    if not ok:
        args = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ValueError(f"{rule} needs {cond}, got n={n}, {args}")


def _row_cmp(a, b):
    """Compare two rows by their values, first coordinate first (NaN last)."""
    for start in range(0, a.size, 4096):  # rows nearly always differ early
        x, y = a[start:start + 4096], b[start:start + 4096]
        diff = np.flatnonzero((x != y) & ~(np.isnan(x) & np.isnan(y)))
        if diff.size:
            u, v = x[diff[0]], y[diff[0]]
            return -1 if (np.isnan(v) or u < v) else 1
    return 0


def _lex_argsort(inf_count, finite_sum, row):
    """Order rows by (number of infinite terms, sum of the finite ones).

    This is the limit order of sums in which some terms grow without bound,
    so a row at +inf distance from many others is never preferred over one
    at finite distance. Exact ties (common in Bulyan's late Krum rounds,
    where two mutual nearest neighbours score the same) go to the row whose
    values come first in lexicographic order, so that the choice does not
    depend on the order of the workers. ``row(i)`` gives row i.

    That tie-break does not look at finiteness. When every candidate's
    terms are all infinite (a lone finite row among non-finite ones, or
    gradients so large that their float32 distances overflow), it can pick
    a row holding NaN or inf. Finite rows first would be closer to exact
    arithmetic, but 35 committed runs (Krum and Medoid under the gambler
    attack) met such ties, and 24 of them would crash 1-2 rounds later or
    not at all, though none recovers above chance
    (experiments/checks/mixed_ties.txt); the order is kept as logged.
    """
    order = np.lexsort((np.arange(len(finite_sum)), finite_sum, inf_count))
    c, f = inf_count[order], finite_sum[order]
    if not ((c[1:] == c[:-1]) & (f[1:] == f[:-1])).any():
        return order  # no exact ties: the usual case
    key = list(zip(c, f))
    out, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or key[end] != key[start]:
            group = list(order[start:end])
            if len(group) > 1:
                group.sort(key=functools.cmp_to_key(lambda i, j: _row_cmp(row(i), row(j))))
            out.extend(group)
            start = end
    return np.array(out, dtype=np.intp)


def _split_inf(terms):
    inf = np.isinf(terms)
    return inf.sum(axis=-1), np.where(inf, 0.0, terms).sum(axis=-1)


def krum_scores(D, k):
    """Krum scores from squared distances D: per row, the k smallest
    distances to other rows, as (count of +inf terms, sum of finite ones)."""
    n = D.shape[0]
    others = D[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return _split_inf(np.sort(others, axis=1)[:, :k])


# ------------------------------------------------------------------ rules

@register("mean")
def mean(grads):
    """Arithmetic mean of the rows (not robust: one bad row moves it anywhere)."""
    return coordinate.row_sum_mean(_check(grads))


@register("marmed")
def marmed(grads):
    """Marginal median (Definition 7): coordinate-wise median; for even n the
    mean of the two middle values. Finite and within the honest range of a
    coordinate while fewer than ceil(n/2) of its values are non-finite."""
    grads = _check(grads)
    return coordinate.median(grads)


@register("meamed")
def meamed(grads, q):
    """Mean around median (Definition 8): per coordinate, the mean of the
    n - q values nearest the median (the median included). Ties in distance
    keep the lower value. Needs 0 <= q <= ceil(n/2) - 1."""
    q = _int("meamed", "q", q)
    grads = _check(grads)
    n = grads.shape[0]
    _need(0 <= q <= (n + 1) // 2 - 1, "meamed", "0 <= q <= ceil(n/2) - 1", n, q=q)
    return coordinate.mean_around(grads, n - q, centre="median")


@register("trmean")
def trmean(grads, b):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the b smallest
    and b largest values of each coordinate, average the rest. Needs n > 2b."""
    b = _int("trmean", "b", b)
    grads = _check(grads)
    n = grads.shape[0]
    _need(0 <= b and n > 2 * b, "trmean", "0 <= b and n > 2b", n, b=b)
    return coordinate.trimmed_mean(grads, b)


@register("phocas")
def phocas(grads, b):
    """Phocas (Xie et al. 2018): per coordinate, the mean of the n - b values
    nearest the b-trimmed mean. Ties keep the lower value. Needs n > 2b."""
    b = _int("phocas", "b", b)
    grads = _check(grads)
    n = grads.shape[0]
    _need(0 <= b and n > 2 * b, "phocas", "0 <= b and n > 2b", n, b=b)
    return coordinate.mean_around(grads, n - b, centre="trmean", b=b)


@register("krum")
def krum(grads, q):
    """Krum (Definition 3; Blanchard et al. 2017): the row with the smallest
    sum of squared distances to its n - q - 2 nearest neighbours.
    Needs n > 2q + 2."""
    q = _int("krum", "q", q)
    grads = _check(grads)
    n = grads.shape[0]
    _need(q >= 0 and n > 2 * q + 2, "krum", "q >= 0 and n > 2q + 2", n, q=q)
    counts, sums = krum_scores(distances.sq_distances(grads), n - q - 2)
    k = int(_lex_argsort(counts, sums, grads.__getitem__)[0])
    return grads[k].copy(), {"selected": k}


@register("multikrum")
def multikrum(grads, q, m=None):
    """Multi-Krum (Blanchard et al. 2017): mean of the m rows with the lowest
    Krum scores (default m = n - q).

    Variant: scores computed once on all n rows, as Blanchard et al. define
    it, not m rounds of Krum on a shrinking set (which Bulyan uses).
    Needs n > 2q + 2 and 1 <= m <= n.
    """
    q = _int("multikrum", "q", q)
    grads = _check(grads)
    n = grads.shape[0]
    m = n - q if m is None else _int("multikrum", "m", m)
    _need(q >= 0 and n > 2 * q + 2 and 1 <= m <= n, "multikrum",
          "q >= 0, n > 2q + 2 and 1 <= m <= n", n, q=q, m=m)
    counts, sums = krum_scores(distances.sq_distances(grads), n - q - 2)
    chosen = _lex_argsort(counts, sums, grads.__getitem__)[:m]
    chosen = np.sort(chosen)
    return coordinate.row_sum_mean(grads, rows=chosen), {"selected": chosen.tolist()}


@register("medoid")
def medoid(grads):
    """Medoid (Definition 9): the row minimising the sum of Euclidean
    distances to all rows."""
    grads = _check(grads)
    counts, sums = _split_inf(np.sqrt(distances.sq_distances(grads)))
    k = int(_lex_argsort(counts, sums, grads.__getitem__)[0])
    return grads[k].copy(), {"selected": k}


@register("bulyan")
def bulyan(grads, q):
    """Bulyan (El Mhamdi et al. 2018): select theta = n - 2q rows by iterated
    Krum (Krum on the remaining rows, remove the winner, repeat), then per
    coordinate average the beta = theta - 2q selected values nearest their
    median. Needs n >= 4q + 3."""
    q = _int("bulyan", "q", q)
    grads = _check(grads)
    n = grads.shape[0]
    _need(q >= 0 and n >= 4 * q + 3, "bulyan", "q >= 0 and n >= 4q + 3", n, q=q)
    chosen = _iterated_krum(grads, distances.sq_distances(grads), q, n - 2 * q)
    agg = coordinate.mean_around(grads, n - 4 * q, centre="median", rows=chosen)
    return agg, {"selected": chosen}


def _iterated_krum(grads, D, q, count):
    """Indices (sorted) of ``count`` rows picked one by one by Krum on the
    rows not yet picked, with max(1, r - q - 2) neighbours among r rows."""
    remaining, chosen = list(range(len(D))), []
    for _ in range(count):
        counts, sums = krum_scores(D[np.ix_(remaining, remaining)],
                                   max(1, len(remaining) - q - 2))
        best = _lex_argsort(counts, sums, lambda i: grads[remaining[i]])[0]
        chosen.append(remaining.pop(int(best)))
    return sorted(chosen)


def _weiszfeld(G, tol, max_iter):
    """Weiszfeld iteration for the geometric median of centred rows y_i,
    carried out on coefficients: v = sum_i alpha_i y_i, so that each
    iteration costs O(n^2) with the Gram matrix G of the y_i.

    Starts at v = 0 (the centre). Where v coincides with rows, uses the
    Vardi-Zhang step (stay if the pull of the other rows is at most their
    multiplicity), so a zero distance never divides. Stops when the
    optimality residual |sum of unit vectors from v to the y_i| / n (minus
    the allowance of coinciding rows) is at most ``tol``: a scale-free
    tolerance, unaffected by far-away rows.
    """
    n = G.shape[0]
    diag = np.diag(G).copy()
    alpha = np.zeros(n)
    it = 0
    while True:
        dist, coinc = _gram_dist(G, diag, alpha)
        w = np.where(coinc, 0.0, 1.0 / np.where(coinc, 1.0, dist))
        eta = int(coinc.sum())
        pull = _pull(G, w, alpha)
        residual = max(0.0, pull - eta) / n
        converged = eta == n or residual <= tol
        if converged or it >= max_iter:
            break
        it += 1
        new = w / w.sum()
        if eta:  # Vardi-Zhang: move only by the pull beyond the coinciding rows
            new = (1.0 - eta / pull) * new + (eta / pull) * alpha
        alpha = new
    return alpha, {"iterations": it, "objective": float(dist.sum()),
                   "residual": float(residual), "converged": bool(converged)}


def _gram_dist(G, diag, alpha):
    """Distances from v = sum alpha_i y_i to each y_i, and which coincide."""
    Ga = G @ alpha
    aGa = alpha @ Ga
    d2 = diag - 2.0 * Ga + aGa
    # |y_i|^2 + |v|^2 - 2 y_i.v cancels to ~1e-16 of its terms: below 1e-13
    # of them the points are treated as one.
    coinc = d2 <= 1e-13 * (diag + aGa)
    return np.sqrt(np.maximum(d2, 0.0)), coinc


def _pull(G, w, alpha):
    """|sum_i w_i (y_i - v)|: the Weiszfeld residual force."""
    u = w - w.sum() * alpha
    return float(np.sqrt(max(u @ G @ u, 0.0)))


def _nothing_finite(grads):
    """The output of a whole-vector rule when every row holds a non-finite
    value: NaN, so that training diverges as the rule would, rather than
    quietly borrowing another rule's (e.g. the coordinate-wise median's)
    dimensional robustness."""
    return np.full(grads.shape[1], np.nan, dtype=grads.dtype)


def _centred(grads):
    """Rows to use (those holding only finite values), their coordinate-wise
    median c and the float64 Gram matrix of those rows minus c; None when
    no row is finite (or none can be squared in float64)."""
    c, G = distances.centred_gram(grads)
    if np.isfinite(np.diag(G)).all():
        return np.arange(len(G)), c, G
    # a non-finite value (or one too large to square) somewhere: redo the
    # pass on the finite rows only, so that they alone set the centre
    rows = np.flatnonzero(np.isfinite(grads).all(axis=1))
    if len(rows) == 0:
        return None
    c, G = distances.centred_gram(grads, rows=rows)
    keep = np.isfinite(np.diag(G))  # float64 rows too large to square: left out
    if not keep.any():
        return None
    return rows[keep], c, G[np.ix_(keep, keep)]


@register("geomed")
def geomed(grads, tol=1e-6, max_iter=1000):
    """Geometric median (Definition 6): argmin_v sum_i |v - x_i|.

    Weiszfeld iteration (with the Vardi-Zhang guard at zero distances) on the
    rows centred on their coordinate-wise median, warm-started there; stops
    when |sum of unit vectors from the estimate to the rows| / n <= ``tol``
    (the optimality condition, a relative tolerance), or after ``max_iter``
    iterations. Rows holding non-finite values are left out (all of them
    non-finite: the result is NaN). info:
    iterations, objective (sum of distances), residual (|sum of unit vectors
    to the rows| / n, zero at the optimum), converged, finite_rows.
    """
    max_iter = _int("geomed", "max_iter", max_iter)
    grads = _check(grads)
    _need(is_real(tol) and tol > 0 and max_iter >= 1, "geomed", "tol > 0 and max_iter >= 1",
          grads.shape[0], tol=tol, max_iter=max_iter)
    centred = _centred(grads)
    if centred is None:  # no finite row: nothing this rule can trust
        return _nothing_finite(grads), {"iterations": 0, "finite_rows": 0, "converged": False}
    rows, c, G = centred
    alpha, info = _weiszfeld(G, tol, max_iter)
    info["finite_rows"] = len(rows)
    return distances.affine_rows(grads, alpha, c, rows=rows), info


@register("cclip")
def cclip(grads, tau, iters=3):
    """Centered clipping (Karimireddy et al. 2021):
    v <- v + (1/n) sum_i (x_i - v) min(1, tau / |x_i - v|), ``iters`` times.

    The paper starts from the previous round's momentum; a stateless rule
    has none, so v starts at the coordinate-wise median, which is already
    robust (fewer than n/2 bad values per coordinate), so that clipping only
    has to refine it. Rows holding non-finite values are left out (all of
    them non-finite: the result is NaN).
    """
    iters = _int("cclip", "iters", iters)
    grads = _check(grads)
    n = grads.shape[0]
    _need(is_real(tau) and tau > 0 and iters >= 0, "cclip", "tau > 0 and iters >= 0", n,
          tau=tau, iters=iters)
    centred = _centred(grads)
    if centred is None:  # no finite row: nothing this rule can trust
        return _nothing_finite(grads), {"finite_rows": 0}
    rows, c, G = centred
    diag, m = np.diag(G).copy(), len(rows)
    alpha = np.zeros(m)
    for _ in range(iters):
        dist, coinc = _gram_dist(G, diag, alpha)
        with np.errstate(divide="ignore"):
            f = np.where(coinc, 1.0, np.minimum(1.0, tau / dist))
        alpha = alpha * (1.0 - f.sum() / m) + f / m
    return distances.affine_rows(grads, alpha, c, rows=rows), {"finite_rows": m}
