"""Resilience constants of the paper and a Monte-Carlo resilience probe.

A rule is (alpha, q)-Byzantine resilient (Definitions 2 and 5) when
<E[Aggr], g> >= (1 - sin alpha) ||g||^2 > 0 and E||Aggr||^r is bounded. The
theorems give sin alpha = eta(n, q) sqrt(d) sigma / ||g|| (``sin_alpha``),
valid when that is < 1 and q is admissible. ``resilience_probe`` estimates
<E[Aggr], g> / ||g||^2 and E||Aggr||^2 empirically for any rule and attack.
Pure numpy; no mxnet.
"""
import inspect
import math
from dataclasses import dataclass

import numpy as np

from . import aggregators, attacks
from .checks import integer

__all__ = ["eta0", "eta1", "eta2", "eta3", "sin_alpha", "krum_admissible",
           "median_admissible", "max_q_krum", "max_q_median", "Probe",
           "resilience_probe"]


def _nq(n, q):
    n, q = integer("n", n), integer("q", q)
    if n < 1 or q < 0:
        raise ValueError(f"need n >= 1 and q >= 0, got n={n}, q={q}")
    return n, q


def krum_admissible(n, q):
    """Krum's condition 2q + 2 < n (Lemma 1; Blanchard et al. 2017)."""
    n, q = _nq(n, q)
    return 2 * q + 2 < n


def median_admissible(n, q):
    """The median rules' condition q <= ceil(n/2) - 1 (Theorems 3, 4, 5:
    GeoMed, MarMed, MeaMed); for MarMed/MeaMed q counts per coordinate."""
    n, q = _nq(n, q)
    return q <= math.ceil(n / 2) - 1


def max_q_krum(n):
    """Largest q with 2q + 2 < n (n = 20: 8, as in Section 5.4); needs n >= 3."""
    n = integer("n", n)
    if n < 3:
        raise ValueError(f"Krum admits no q for n={n}: 2q + 2 < n needs n >= 3")
    return (n - 3) // 2


def max_q_median(n):
    """Largest q with q <= ceil(n/2) - 1 (n = 20: 9); needs n >= 1."""
    n = integer("n", n)
    if n < 1:
        raise ValueError(f"the median rules need n >= 1 workers, got n={n}")
    return math.ceil(n / 2) - 1


def _require(ok, what, cond, n, q):
    if not ok:
        raise ValueError(f"{what} needs {cond}, got n={n}, q={q}")


def eta0(n, q):
    """Krum's constant (Lemma 1, Blanchard et al. 2017):
    eta0^2 = 2 (n - q + (q (n - q - 2) + q^2 (n - q - 1)) / (n - 2q - 2)).
    Needs 2q + 2 < n."""
    n, q = _nq(n, q)
    _require(krum_admissible(n, q), "eta0 (Lemma 1)", "2q + 2 < n", n, q)
    return math.sqrt(2 * (n - q + (q * (n - q - 2) + q * q * (n - q - 1)) / (n - 2 * q - 2)))


def eta1(n, q):
    """GeoMed's constant (Theorem 3): eta1 = (2n - 2q) / (n - 2q) sqrt(n - q).
    Needs q <= ceil(n/2) - 1."""
    n, q = _nq(n, q)
    _require(median_admissible(n, q), "eta1 (Theorem 3)", "q <= ceil(n/2) - 1", n, q)
    return (2 * n - 2 * q) / (n - 2 * q) * math.sqrt(n - q)


def eta2(n, q):
    """MarMed's constant (Theorem 4): eta2 = sqrt(n - q), q per coordinate.
    Needs q <= ceil(n/2) - 1."""
    n, q = _nq(n, q)
    _require(median_admissible(n, q), "eta2 (Theorem 4)", "q <= ceil(n/2) - 1", n, q)
    return math.sqrt(n - q)


def eta3(n, q):
    """MeaMed's constant (Theorem 5): eta3 = sqrt(10 (n - q)), q per
    coordinate. Needs q <= ceil(n/2) - 1."""
    n, q = _nq(n, q)
    _require(median_admissible(n, q), "eta3 (Theorem 5)", "q <= ceil(n/2) - 1", n, q)
    return math.sqrt(10 * (n - q))


def sin_alpha(eta, d, sigma, g_norm):
    """sin alpha = eta sqrt(d) sigma / ||g|| (Lemma 1, Theorems 3-5), where
    E||G - g||^2 = d sigma^2. The theorem applies only when this is < 1."""
    if d < 1 or sigma < 0 or not g_norm > 0:
        raise ValueError(f"need d >= 1, sigma >= 0, g_norm > 0; got d={d}, "
                         f"sigma={sigma}, g_norm={g_norm}")
    return eta * math.sqrt(d) * sigma / g_norm


@dataclass(frozen=True)
class Probe:
    """Monte-Carlo estimates over ``trials`` rounds, with standard errors."""
    inner: float         # <E[Aggr], g> / ||g||^2  (1 for an unbiased rule)
    inner_se: float
    sq_norm: float       # E||Aggr||^2
    sq_norm_se: float
    trials: int


def _with_q(registry, spec, q):
    """Resolve ``spec``; a name or (name, params) whose function takes ``q``
    gets the probe's q unless params give one."""
    if isinstance(spec, str):
        spec = (spec, {})
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        name, params = spec[0], dict(spec[1] or {})
        if "q" not in params and "q" in inspect.signature(registry.function(name)).parameters:
            params["q"] = q
        spec = (name, params)
    return registry.resolve(spec)


def _mean_se(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        se = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
        return float(x.mean()), float(se)


def resilience_probe(rule, attack, n=20, q=6, d=None, sigma=1.0, g=1.0,
                     trials=200, rng=None, dtype=np.float32):
    """Estimate <E[Aggr], g> / ||g||^2 and E||Aggr||^2 by simulation.

    Each trial draws honest rows v_i ~ N(g, sigma^2 I_d) i.i.d. (so
    E||G - g||^2 = d sigma^2 as in Lemma 1 and Theorems 3-5), lets ``attack``
    corrupt them and aggregates with ``rule``.

    rule, attack : name, (name, params), Bound or callable (byzsgd.aggregators
        / byzsgd.attacks ``resolve``); a named rule or attack taking ``q`` gets
        this ``q`` unless its params set one. attack=None: no attack.
    g : (d,) true gradient or a scalar (g * ones(d)); d defaults to len(g).
    rng : np.random.Generator or seed. dtype : of the simulated gradients.
    Returns a :class:`Probe` with means and standard errors over trials.
    """
    g = np.asarray(g, dtype=np.float64)
    if g.ndim == 0:
        if d is None:
            raise ValueError("give d when g is a scalar")
        g = np.full(int(d), float(g))
    if g.ndim != 1 or (d is not None and len(g) != d):
        raise ValueError(f"g must be a scalar or a (d,) vector; got shape {g.shape}, d={d}")
    g_sq = float(g @ g)
    if not g_sq > 0 or sigma < 0 or int(trials) < 1 or int(n) < 1:
        raise ValueError(f"need ||g|| > 0, sigma >= 0, trials >= 1, n >= 1; got "
                         f"||g||^2={g_sq}, sigma={sigma}, trials={trials}, n={n}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    rule = _with_q(aggregators.REGISTRY, rule, q)
    attack = _with_q(attacks.REGISTRY, attack, q)
    inner, sq = np.empty(int(trials)), np.empty(int(trials))
    for t in range(int(trials)):
        honest = (g + sigma * rng.standard_normal((int(n), len(g)))).astype(dtype)
        received = honest if attack is None else attack(honest, rng)
        agg = np.asarray(rule(received), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            inner[t] = agg @ g / g_sq
            sq[t] = agg @ agg
    return Probe(*_mean_se(inner), *_mean_se(sq), trials=int(trials))
