"""Byzantine attacks on the (n, d) matrix of worker gradients.

An attack is a pure function ``attack(grads, rng, **params)`` registered by
name; it returns a NEW (n, d) array (the input is never modified), or
``(new, info)`` with ``info["cells"]`` the number of cells it replaced. All
randomness comes from ``rng`` (a ``np.random.Generator``): the same generator
state gives the same output. NaN/Inf already in ``grads`` are never an error.

WHICH cells are Byzantine is a failure model (``byzsgd.failures``), passed as
the ``model`` parameter: a name ("classic", "generalized", "sharded"), a
``(name, params)`` pair such as ``("classic", {"fixed": True})`` or
``("generalized", {"dims": 1000})``, or a callable ``(n, d, q, rng) -> Cells``.
``q`` is the number of Byzantine rows (classic) or cells per coordinate.
The classic model redraws its q rows from ``rng`` on every call (Byzantine
workers may change between rounds, Section 3); ``("classic", {"fixed":
True})`` keeps rows 0..q-1 Byzantine for the whole run.

Values are computed in float64 and cast once to the gradients' dtype, so
±inf appears only where the true value overflows that dtype.
Pure numpy; no mxnet.

>>> import numpy as np
>>> atk = get("omniscient", q=2, scale=1000.0)
>>> out = atk(np.ones((5, 3), np.float32), np.random.default_rng(0))
>>> sorted(set(out.ravel().tolist())), atk.info
([-3000.0, 1.0], {'cells': 6})
"""
import statistics

import numpy as np

from . import failures
from .checks import is_real
from .registry import Registry

__all__ = ["REGISTRY", "register", "names", "get", "resolve", "gaussian",
           "omniscient", "bitflip", "gambler", "signflip", "alie", "ipm",
           "nonfinite", "theorem1", "theorem2", "flip_mask"]

#: attack(grads, rng, **params) -> new grads | (new grads, info)
REGISTRY = Registry("attack", data_args=2)
register = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get
resolve = REGISTRY.resolve


# --------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------
def _check(grads, what):
    if not isinstance(grads, np.ndarray) or grads.ndim != 2 or grads.dtype.kind != "f":
        raise ValueError(f"{what}: grads must be an (n, d) float ndarray, got "
                         f"{type(grads).__name__} {getattr(grads, 'shape', '')} "
                         f"{getattr(grads, 'dtype', '')}")
    return grads.shape


def _number(what, name, value):
    """``value`` as a float; a ValueError naming the attack and the parameter
    for a string, None or a bool (which numpy would turn into its own error
    deep inside, or silently into 0 and 1)."""
    if not is_real(value):
        raise ValueError(f"{what}: {name}={value!r} must be a number")
    return float(value)


def _generator(what, rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{what}: rng must be a numpy.random.Generator "
                        f"(np.random.default_rng(seed)), got {rng!r}")
    return rng


def _select(grads, rng, q, model, what):
    n, d = _check(grads, what)
    _generator(what, rng)
    q = failures.check_q(n, q, what)
    fn = failures.resolve(model)
    return _checked_cells(what, fn, _named(what, fn, n, d, q, rng), n, d, q)


def _checked_cells(what, fn, cells, n, d, q):
    """``cells`` if a failure model may return them: Cells of an (n, d)
    matrix, at most q in a coordinate (Definition 4's bound; a user's model
    returning more would silently corrupt more than q)."""
    if not isinstance(cells, failures.Cells):
        raise TypeError(f"{what}: failure model {fn!r} returned {type(cells).__name__}, "
                        "expected failures.Cells (Rows, PerColumn or Sparse)")
    if (cells.n, cells.d) != (n, d):
        raise ValueError(f"{what}: failure model {fn!r} returned cells of an "
                         f"({cells.n}, {cells.d}) matrix for an ({n}, {d}) one")
    most = cells.most_per_column()
    if most > q:
        raise ValueError(f"{what}: failure model {fn!r} returned {most} cells in a "
                         f"coordinate, more than q={q}")
    return cells


def _named(what, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its ValueErrors prefixed by the attack's
    name (a failure model's own message names only the model)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _put(out, cells, values):
    """Write ``values`` into ``cells`` of ``out``, casting (overflow -> ±inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        cells.put(out, values)
    return out, {"cells": cells.count}


def _cast(values, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float64).astype(dtype)


def _scaled(values, factor):
    """``values * factor`` computed in float64, rounded once to values.dtype."""
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(values, factor, out=values, dtype=np.float64, casting="unsafe")
    return values


def _honest_sum(out, cells):
    """Per-column sum (float64) and count of the cells NOT in ``cells``.

    Zeroes ``cells`` in ``out`` (a copy the caller overwrites afterwards), so
    no (n, d) float64 temporary is needed."""
    cells.put(out, 0)
    with np.errstate(invalid="ignore", over="ignore"):  # honest +inf and -inf: NaN
        total = out.sum(axis=0, dtype=np.float64)
    return total, out.shape[0] - cells.column_counts()


def _honest_mean_std(out, cells):
    """Per-column mean and sample std (ddof=1) of the honest cells.

    The corrupted cells are set to the rounded mean c, so they add exactly
    zero to sum((x - c)^2); the shift from c to the exact mean is corrected."""
    total, count = _honest_sum(out, cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        centre = _cast(mean, out.dtype)
        cells.put(out, cells.expand(centre))
        sq = np.zeros(out.shape[1])
        for row in out:                      # row loop: temporaries of size d only
            dev = np.subtract(row, centre, dtype=np.float64)
            sq += dev * dev
        shift = mean - centre
        var = (sq - count * shift * shift) / (count - 1)
    return mean, np.sqrt(np.maximum(var, 0.0))


# --------------------------------------------------------------------------
# The paper's attacks (Section 5)
# --------------------------------------------------------------------------
@register("gaussian")
def gaussian(grads, rng, q=6, sigma=200.0, model="classic"):
    """Gaussian attack (Section 5.2, Figure 3): the Byzantine cells become
    i.i.d. N(0, sigma^2), drawn directly in the gradients' dtype.

    q : Byzantine rows (classic) or cells per coordinate; sigma >= 0: std;
    model : failure model (see module docstring). Paper: q=6 of n=20, sigma=200.
    """
    if not _number("gaussian", "sigma", sigma) >= 0:
        raise ValueError(f"gaussian: sigma={sigma} must be >= 0")
    cells = _select(grads, rng, q, model, "gaussian")
    dtype = np.dtype(grads.dtype if grads.dtype in (np.float32, np.float64) else np.float64)
    values = rng.standard_normal(cells.shape, dtype=dtype) * dtype.type(sigma)
    return _put(grads.copy(), cells, values)


@register("omniscient")
def omniscient(grads, rng, q=6, scale=1e20, model="classic"):
    """Omniscient attack (Section 5.3, Figure 4): every Byzantine cell becomes
    -scale x (sum of the correct cells of its coordinate).

    Classic model: q rows replaced by -scale x the sum of the n - q correct
    rows; generalized: per coordinate, the sum of that coordinate's n - q
    correct cells. Computed in float64 and cast: ±inf only where the value
    overflows the dtype. Paper: q=6 of n=20, scale=1e20.
    """
    scale = _number("omniscient", "scale", scale)
    cells = _select(grads, rng, q, model, "omniscient")
    out = grads.copy()
    total, _ = _honest_sum(out, cells)
    return _put(out, cells, cells.expand(_cast(-scale * total, out.dtype)))


def flip_mask(bits, numbering="one"):
    """uint32 XOR mask of ``bits``; numbering "one": bits 1..32 counted from
    the least significant (32 = sign), "zero": bits 0..31 (31 = sign)."""
    lo = {"one": 1, "zero": 0}.get(numbering)
    if lo is None:
        raise ValueError(f"numbering={numbering!r} must be 'one' or 'zero'")
    bits = [int(b) for b in np.atleast_1d(bits)]
    bad = [b for b in bits if not lo <= b <= lo + 31]
    if bad or len(set(bits)) != len(bits):
        raise ValueError(f"bits={tuple(bits)} must be distinct integers in "
                         f"{lo}..{lo + 31} (numbering={numbering!r})")
    return np.uint32(sum(1 << (b - lo) for b in bits))


@register("bitflip")
def bitflip(grads, rng, bits=(22, 30, 31, 32), dims=1000, per_dim=1, numbering="one"):
    """Bit-flip attack (Section 5.4, Figure 5): for each of the first ``dims``
    coordinates, ``per_dim`` of its n float32 values (workers drawn at random
    per coordinate: generalized model) get ``bits`` flipped.

    Bit numbering: numbering="one" (default, the paper's wording) counts 1..32
    from the least significant bit, 32 = sign; numbering="zero" counts 0..31.
    The paper's "22th, 30th, 31th and 32th bits" = bits=(22, 30, 31, 32) =
    bits=(21, 29, 30, 31), numbering="zero" (XOR mask 0xE0200000). The
    authors' code flips 0-indexed bits 22, 29, 30, 31 of the first 500
    coordinates = bits=(22, 29, 30, 31), numbering="zero", dims=500 =
    bits=(23, 30, 31, 32), dims=500 (mask 0xE0400000).
    Flips act on a ``view(np.uint32)`` of float32 copies; other dtypes are
    refused (convert with ``grads.astype(np.float32)`` first). dims=None: all.
    """
    mask = flip_mask(bits, numbering)
    _check(grads, "bitflip")
    _generator("bitflip", rng)
    if grads.dtype != np.float32:
        raise ValueError(f"bitflip flips float32 bit patterns; got {grads.dtype} "
                         f"gradients (convert with grads.astype(np.float32))")
    n, d = grads.shape
    cells = _named("bitflip", failures.generalized, n, d,
                   failures.check_q(n, per_dim, "bitflip", name="per_dim"), rng, dims=dims)
    values = cells.take(grads).view(np.uint32) ^ mask
    return _put(grads.copy(), cells, values.view(np.float32))


@register("gambler")
def gambler(grads, rng, servers=20, faulty=1, prob=0.0005, factor=-1e20, fixed=False):
    """Gambler attack (Section 5.5, Figures 6-7): the d coordinates are split
    evenly over ``servers`` parameter servers (``np.array_split``); each of the
    n values received by a faulty server is multiplied by ``factor``
    independently with probability ``prob``.

    fixed : which servers are faulty (failures.sharded): False (default) draws
        them from ``rng`` every round; True: servers 0..faulty-1; a sequence:
        those servers (for one random server per run, draw k from the run
        seed and pass fixed=(k,)).
    Hits are drawn as Binomial(count, prob) then distinct positions, which is
    exact in distribution. Paper: 20 servers, 1 faulty, prob=0.0005, -1e20.
    """
    n, d = _check(grads, "gambler")
    _generator("gambler", rng)
    prob, factor = _number("gambler", "prob", prob), _number("gambler", "factor", factor)
    shard = _named("gambler", failures.sharded, n, d, n, rng, servers=servers, faulty=faulty,
                   fixed=fixed)
    cells = failures.thin(shard, prob, rng)
    out, info = _put(grads.copy(), cells, _scaled(cells.take(grads), factor))
    info["servers"] = [int(s) for s in shard.servers]
    return out, info


# --------------------------------------------------------------------------
# Beyond the paper
# --------------------------------------------------------------------------
@register("signflip")
def signflip(grads, rng, q=6, scale=1.0, model="classic"):
    """Sign flip: each Byzantine cell x becomes -scale * x (its own value)."""
    scale = _number("signflip", "scale", scale)
    cells = _select(grads, rng, q, model, "signflip")
    return _put(grads.copy(), cells, _scaled(cells.take(grads), -scale))


@register("alie")
def alie(grads, rng, q=6, z=None, model="classic"):
    """"A little is enough" (Baruch et al., 2019): Byzantine cells become
    mean_j - z * std_j of the honest cells of coordinate j (sample std).

    z=None uses their formula: s = floor(n/2 + 1) - q supporters needed,
    z = Phi^-1((n - s) / n) (n=20, q=6: s=5, z=0.674). Needs q <= n - 2.
    """
    n, _ = _check(grads, "alie")
    q = failures.check_q(n, q, "alie")
    if q > n - 2:
        raise ValueError(f"alie: q={q} leaves fewer than 2 honest values of "
                         f"n={n} for a standard deviation (need q <= n - 2)")
    if z is None:
        s = int(np.floor(n / 2 + 1)) - q
        if not 0 < (n - s) / n < 1:
            raise ValueError(f"alie: z from n={n}, q={q} is undefined "
                             f"(s = floor(n/2+1) - q = {s} must be in 1..{n - 1}); "
                             f"give z explicitly")
        z = statistics.NormalDist().inv_cdf((n - s) / n)
    z = _number("alie", "z", z)
    cells = _select(grads, rng, q, model, "alie")
    out = grads.copy()
    mean, std = _honest_mean_std(out, cells)
    return _put(out, cells, cells.expand(_cast(mean - z * std, out.dtype)))


@register("ipm")
def ipm(grads, rng, q=6, eps=0.1, model="classic"):
    """Inner-product manipulation (Xie, Koyejo, Gupta 2019, "Fall of empires"):
    Byzantine cells become -eps x the mean of the honest cells of their
    coordinate (classic: -eps x the mean of the n - q correct rows)."""
    eps = _number("ipm", "eps", eps)
    cells = _select(grads, rng, q, model, "ipm")
    if q == grads.shape[0] and q:
        raise ValueError(f"ipm: q={q} = n leaves no honest values to average")
    out = grads.copy()
    total, count = _honest_sum(out, cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = _cast(-eps * total / count, out.dtype)
    return _put(out, cells, cells.expand(values))


_NONFINITE = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "+inf": np.inf}


@register("nonfinite")
def nonfinite(grads, rng, q=6, value="nan", model="classic"):
    """Non-finite injection: Byzantine cells become NaN, +Inf or -Inf.

    value : "nan", "inf", "-inf" or any float (e.g. 3e38 to test near-overflow).
    """
    if isinstance(value, str):
        if value.lower() not in _NONFINITE:
            raise ValueError(f"nonfinite: value={value!r} must be a float or one "
                             f"of {', '.join(sorted(_NONFINITE))}")
        value = _NONFINITE[value.lower()]
    value = _number("nonfinite", "value", value)
    cells = _select(grads, rng, q, model, "nonfinite")
    return _put(grads.copy(), cells, _cast(value, grads.dtype))


# --------------------------------------------------------------------------
# The counter-examples of appendix 8.1
# --------------------------------------------------------------------------
@register("theorem1")
def theorem1(grads, rng, q=1, g=None, model="generalized"):
    """Theorem 1's counter-example to averaging (appendix 8.1, eq. 3): in each
    coordinate j the Byzantine cells together sum to -g_j - (sum of the
    correct cells), so the coordinate's total is -g_j and Mean = -g/n.

    g : the true gradient ((d,) or scalar); None estimates it by the honest
        mean per coordinate (still E[Mean] = -g/n). The paper's case is q=1
        (one value per coordinate); with q > 1 the share is split equally.
    """
    cells = _select(grads, rng, q, model, "theorem1")
    n, d = grads.shape
    if g is not None and (isinstance(g, bool) or np.asarray(g).dtype.kind not in "iuf"
                          or np.shape(g) not in ((), (d,))):
        raise ValueError(f"theorem1: g must be a number or a (d,) vector of numbers, d={d}; "
                         f"got {g!r:.80}")
    out = grads.copy()
    total, honest = _honest_sum(out, cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = total / honest if g is None else np.broadcast_to(
            np.asarray(g, dtype=np.float64), (d,))
        values = _cast((-target - total) / (n - honest), out.dtype)
    return _put(out, cells, cells.expand(values))


@register("theorem2")
def theorem2(grads, rng, factor=-1e10):
    """Theorem 2's counter-example to rules that output one of their inputs
    (appendix 8.1): the i-th coordinate of the i-th vector is multiplied by
    the huge negative ``factor`` (i < min(n, d)); each coordinate has at most
    one Byzantine value but every row (when d >= n) is corrupted, so Krum or
    Medoid return a vector with <Aggr, g> hugely negative. Deterministic.
    """
    n, d = _check(grads, "theorem2")
    _generator("theorem2", rng)   # unused, but every attack takes the same arguments
    factor = _number("theorem2", "factor", factor)
    k = np.arange(min(n, d))
    cells = failures.Sparse(k, k, n, d)
    return _put(grads.copy(), cells, _scaled(cells.take(grads), factor))
