"""Theory helpers: hand-computed eta constants for n = 20, admissible q, and
Monte-Carlo resilience probes reproducing Theorems 1, 2, 4 and 5."""
import math

import numpy as np
import pytest

from byzsgd import attacks, theory

N = 20


# ------------------------------------------------------------ constants
def test_eta0_hand_computed():
    # eta0^2 = 2 (n - q + (q(n-q-2) + q^2(n-q-1)) / (n-2q-2))
    assert math.isclose(theory.eta0(N, 0) ** 2, 2 * 20)
    assert math.isclose(theory.eta0(N, 1) ** 2, 2 * (19 + (17 + 18) / 16))   # 42.375
    assert math.isclose(theory.eta0(N, 2) ** 2, 2 * (18 + (32 + 68) / 14))   # 352/7
    assert math.isclose(theory.eta0(N, 8) ** 2, 2 * (12 + (80 + 704) / 2))   # 808
    assert math.isclose(theory.eta0(N, 1), 6.509608283, rel_tol=1e-9)


def test_median_etas_hand_computed():
    assert math.isclose(theory.eta1(N, 1), 38 / 18 * math.sqrt(19))
    assert math.isclose(theory.eta1(N, 2), 36 / 16 * math.sqrt(18))
    assert math.isclose(theory.eta1(N, 9), 22 / 2 * math.sqrt(11))
    assert math.isclose(theory.eta2(N, 1), math.sqrt(19))
    assert math.isclose(theory.eta2(N, 6), math.sqrt(14))
    assert math.isclose(theory.eta3(N, 1), math.sqrt(190))
    assert math.isclose(theory.eta3(N, 2), math.sqrt(180))
    # GeoMed's constant exceeds MarMed's: (2n-2q)/(n-2q) >= 2
    assert all(theory.eta1(N, q) > theory.eta2(N, q) for q in range(10))


def test_admissible_q():
    assert theory.krum_admissible(20, 8) and not theory.krum_admissible(20, 9)
    assert theory.median_admissible(20, 9) and not theory.median_admissible(20, 10)
    assert theory.median_admissible(21, 10) and not theory.median_admissible(21, 11)
    assert theory.max_q_krum(20) == 8 and theory.max_q_median(20) == 9
    assert theory.max_q_median(21) == 10 and theory.max_q_krum(3) == 0


@pytest.mark.parametrize("call, words", [
    (lambda: theory.krum_admissible(7.9, 2), ["n=7.9"]),
    (lambda: theory.median_admissible(20, True), ["q=True"]),
    (lambda: theory.max_q_krum(2), ["n=2", "n >= 3"]),
    (lambda: theory.max_q_median(0), ["n=0"]),
])
def test_theory_helpers_refuse_bad_counts(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("fn, q", [(theory.eta0, 9), (theory.eta1, 10),
                                   (theory.eta2, 10), (theory.eta3, 11)])
def test_eta_refuses_inadmissible_q(fn, q):
    with pytest.raises(ValueError) as err:
        fn(N, q)
    assert f"n={N}" in str(err.value) and f"q={q}" in str(err.value)


def test_sin_alpha():
    assert math.isclose(theory.sin_alpha(theory.eta2(20, 4), 100, 0.05, 2.0),
                        4 * 10 * 0.05 / 2.0)
    with pytest.raises(ValueError, match="g_norm=0"):
        theory.sin_alpha(1.0, 10, 0.1, 0.0)


# ----------------------------------------------------------------- probes
def probe(rule, attack, q=1, sigma=0.1, d=40, trials=60, seed=0, **kw):
    return theory.resilience_probe(rule, attack, n=N, q=q, d=d, sigma=sigma,
                                   g=1.0, trials=trials, rng=seed, **kw)


def test_probe_without_attack_is_unbiased():
    p = probe("mean", None, sigma=1.0, trials=200)
    assert abs(p.inner - 1) < 4 * p.inner_se and p.inner_se > 0
    # E||mean||^2 = ||g||^2 + d sigma^2 / n = 40 + 2
    assert abs(p.sq_norm - 42) < 4 * p.sq_norm_se


def test_probe_is_reproducible_and_accepts_callables():
    a = probe("marmed", ("gaussian", {"model": "generalized"}), seed=3)
    atk = attacks.get("gaussian", q=1, model="generalized")
    b = probe(lambda x: np.median(x, axis=0), lambda x, r: atk(x, r), seed=3)
    assert a.trials == b.trials
    assert a.inner == pytest.approx(b.inner, rel=1e-6)
    assert a.sq_norm == pytest.approx(b.sq_norm, rel=1e-6)
    assert a == probe("marmed", ("gaussian", {"model": "generalized"}), seed=3)
    assert a != probe("marmed", ("gaussian", {"model": "generalized"}), seed=4)


def test_theorem1_mean_is_not_resilient():
    """Appendix 8.1, eq. 3: one value per coordinate -> E[Mean] = -g/n."""
    p = probe("mean", ("theorem1", {"g": 1.0}))
    assert p.inner < 0
    assert abs(p.inner + 1 / N) < 1e-5                     # exactly -1/n up to rounding
    p = probe("mean", "theorem1")                          # g estimated by the attacker
    assert p.inner + 4 * p.inner_se < 0


@pytest.mark.parametrize("rule", ["krum", "medoid"])
def test_theorem2_selection_rules_are_not_resilient(rule):
    """Appendix 8.1: the i-th coordinate of row i times a huge negative value;
    a rule returning one of its inputs returns a corrupted row."""
    clean = probe(rule, None)
    assert abs(clean.inner - 1) < 0.1                      # fine without attack
    p = probe(rule, ("theorem2", {"factor": -1e10}))
    assert p.inner < -1e6                                  # ~ -1e10 / d


@pytest.mark.parametrize("attack", [
    "theorem1", "theorem2",
    ("omniscient", {"model": "generalized"}),
    ("gaussian", {"model": "generalized", "sigma": 1e6}),
    ("bitflip", {"dims": None}),
    ("nonfinite", {"model": "generalized", "value": "inf"}),
])
@pytest.mark.parametrize("rule, q, eta", [("marmed", 9, theory.eta2),
                                          ("meamed", 6, theory.eta3)])
def test_median_rules_stay_dimensionally_resilient(attack, rule, q, eta):
    """Theorems 4 and 5: q < n/2 arbitrary values per coordinate (generalized
    model) keep <E[Aggr], g> >= (1 - sin alpha) ||g||^2 > 0."""
    if isinstance(attack, tuple) and attack[0] == "bitflip":
        attack = ("bitflip", dict(attack[1], per_dim=q))
    sigma, d = 0.02, 40
    p = probe(rule, attack, q=q, sigma=sigma, d=d)
    bound = 1 - theory.sin_alpha(eta(N, q), d, sigma, math.sqrt(d))
    assert 0 < bound < 1
    assert p.inner - 3 * p.inner_se > bound
    assert abs(p.inner - 1) < 0.05                         # close to 1 for small sigma
    assert p.sq_norm < 1.1 * d                             # bounded: near ||g||^2 = d


def test_median_bias_shrinks_with_sigma():
    big = probe("marmed", ("omniscient", {"model": "generalized"}), q=6, sigma=0.1)
    small = probe("marmed", ("omniscient", {"model": "generalized"}), q=6, sigma=0.01)
    assert 0 < 1 - big.inner and 0 < 1 - small.inner < (1 - big.inner) / 5


def test_probe_q_fills_named_rule_and_attack():
    p = probe(("meamed", {}), ("gaussian", {"model": "generalized"}), q=9)
    assert p.inner > 0.9
    with pytest.raises(ValueError, match="q=10"):
        probe("meamed", None, q=10)


def test_probe_parameter_errors():
    with pytest.raises(ValueError, match="d=3"):
        theory.resilience_probe("mean", None, n=5, q=0, d=3, g=np.ones(4))
    with pytest.raises(ValueError, match="sigma=-1"):
        theory.resilience_probe("mean", None, n=5, q=0, d=3, sigma=-1)
