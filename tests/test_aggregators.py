"""Hand-computed golden cases, preconditions, registry errors, non-finite
semantics and the 1e20 (omniscient attack) distance case."""
import numpy as np
import pytest

from byzsgd import aggregators, distances


def agg(name, x, **params):
    return aggregators.get(name, **params)(np.asarray(x, np.float64))


# ------------------------------------------------------------ golden cases

def test_mean_golden():
    np.testing.assert_array_equal(agg("mean", [[1, 2], [3, 4], [5, 9]]), [3, 5])


def test_marmed_golden_odd_and_even():
    np.testing.assert_array_equal(agg("marmed", [[1, 10], [2, 30], [9, 20]]), [2, 20])
    # even n: sorted columns (1, 2, 4, 10) and (1, 2, 3, 4) -> middle means
    np.testing.assert_array_equal(agg("marmed", [[1, 4], [2, 3], [10, 1], [4, 2]]), [3, 2.5])


def test_meamed_golden():
    # column 0: median 1.5, the 3 nearest are 0, 1, 2 -> 1
    # column 1: (0, 1, 3, 4), median 2; 1 and 3 at distance 1, then 0 and 4
    # tie at distance 2: the lower value (0) is kept -> (0 + 1 + 3) / 3
    out = agg("meamed", [[0, 0], [1, 1], [2, 3], [10, 4]], q=1)
    np.testing.assert_allclose(out, [1, 4 / 3], rtol=1e-15)


def test_trmean_golden():
    out = agg("trmean", [[1, -50], [2, 0], [3, 1], [100, 2]], b=1)
    np.testing.assert_array_equal(out, [2.5, 0.5])


def test_phocas_golden():
    # trimmed mean of (0, 1, 2, 3, 100) with b=1 is 2; the 4 values nearest
    # 2 are 2, 1, 3, 0 -> 1.5
    out = agg("phocas", [[0], [1], [2], [3], [100]], b=1)
    np.testing.assert_array_equal(out, [1.5])


ROWS_1D = [[0, 0], [1, 0], [2, 0], [10, 0], [11, 0]]


def test_krum_golden():
    # n - q - 2 = 2 neighbours; scores: 1+4, 1+1, 1+4, 1+64, 1+81 -> row 1
    rule = aggregators.get("krum", q=1)
    np.testing.assert_array_equal(rule(np.array(ROWS_1D, float)), [1, 0])
    assert rule.info["selected"] == 1


def test_multikrum_golden():
    np.testing.assert_array_equal(agg("multikrum", ROWS_1D, q=1, m=3), [1, 0])
    # default m = n - q = 4 takes the 4 lowest scores: rows 0, 1, 2, 3
    np.testing.assert_array_equal(agg("multikrum", ROWS_1D, q=1), [13 / 4, 0])


def test_medoid_golden():
    # sums of distances: 24, 21, 20, 28, 30 -> row 2
    np.testing.assert_array_equal(agg("medoid", ROWS_1D), [2, 0])


def test_geomed_golden_fermat_point():
    # Fermat point of (0,0), (1,0), (0,1) is (t, t) with 6t^2 - 6t + 1 = 0;
    # the start (the coordinate-wise median) is the data point (0, 0), so
    # this also exercises the zero-distance guard.
    rule = aggregators.get("geomed", tol=1e-10)
    out = rule(np.array([[0, 0], [1, 0], [0, 1]], float))
    t = (3 - np.sqrt(3)) / 6
    np.testing.assert_allclose(out, [t, t], rtol=1e-8)
    assert rule.info["converged"] and rule.info["residual"] <= 1e-10


def test_geomed_stays_on_a_heavy_data_point():
    # three rows at the origin outweigh the two others: the optimum is there
    out = agg("geomed", [[0, 0], [0, 0], [0, 0], [5, 1], [1, 7]])
    np.testing.assert_array_equal(out, [0, 0])


def test_bulyan_golden():
    # iterated Krum (q=1) on 0, 1, 2, 3, 4, 100, 101 picks 2, 1 (tie with 3
    # broken by value), 3, 100 (k=1: 100 and 101 are mutual neighbours),
    # 0; the 3 of (0, 1, 2, 3, 100) nearest their median 2 average to 2.
    rule = aggregators.get("bulyan", q=1)
    out = rule(np.array([[0], [1], [2], [3], [4], [100], [101]], float))
    np.testing.assert_array_equal(out, [2])
    assert rule.info["selected"] == [0, 1, 2, 3, 5]


def test_cclip_golden():
    x = [[0, 0], [1, 0], [2, 0], [2.5, 0], [50, 0]]
    # median 2; clipped differences -1, -1, 0, .5, 1 -> step -0.1
    np.testing.assert_allclose(agg("cclip", x, tau=1.0, iters=1), [1.9, 0], rtol=1e-14)
    # from 1.9: -1, -.9, .1, .6, 1 -> step -0.04
    np.testing.assert_allclose(agg("cclip", x, tau=1.0, iters=2), [1.86, 0], rtol=1e-14)


# ----------------------------------------------------- configuration errors

@pytest.mark.parametrize("name, params, n", [
    ("krum", {"q": 2}, 6), ("multikrum", {"q": 2}, 6), ("multikrum", {"q": 1, "m": 9}, 8),
    ("bulyan", {"q": 2}, 10), ("meamed", {"q": 5}, 10), ("trmean", {"b": 5}, 10),
    ("phocas", {"b": 3}, 6), ("krum", {"q": -1}, 6),
])
def test_precondition_errors_name_n_and_q(name, params, n):
    rule = aggregators.get(name, **params)
    with pytest.raises(ValueError) as e:
        rule(np.zeros((n, 3), np.float32))
    msg = str(e.value)
    assert f"n={n}" in msg
    for k, v in params.items():
        assert f"{k}={v}" in msg
    with pytest.raises(ValueError):
        aggregators.validate((name, params), n)


def test_validate_passes_and_returns_bound_rule():
    assert aggregators.validate(("krum", {"q": 2}), 7).name == "krum"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="krum.*marmed"):
        aggregators.get("kurm")


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(TypeError, match="valid parameters: q, m"):
        aggregators.get("multikrum", q=1, f=2)


def test_missing_parameter():
    with pytest.raises(TypeError, match="q"):
        aggregators.get("krum")


def test_user_rule_registers_and_resolves():
    @aggregators.register("test_first_row", override=True)
    def first_row(grads):
        return grads[0].copy()

    try:
        assert "test_first_row" in aggregators.names()
        np.testing.assert_array_equal(
            aggregators.resolve("test_first_row")(np.eye(2)), [1, 0])
    finally:
        aggregators.REGISTRY.unregister("test_first_row")


def test_registry_messages_for_malformed_plugins_and_params():
    import functools
    with pytest.raises(TypeError, match="no __name__.*register it with a name"):
        aggregators.register()(functools.partial(aggregators.trmean, b=1))
    with pytest.raises(TypeError, match="an aggregation rule must take 1 positional"):
        aggregators.register("test_no_args")(lambda: None)
    with pytest.raises(TypeError, match=r"'krum': parameters must be a dict.*got 2"):
        aggregators.resolve(("krum", 2))


@pytest.mark.parametrize("rule, n, want", [
    ("krum", 7, "q >= 0 and n > 2q \\+ 2, got n=7, q=-1"),
    ("multikrum", 7, "q >= 0, n > 2q \\+ 2 and 1 <= m <= n, got n=7, q=-1"),
    ("bulyan", 11, "q >= 0 and n >= 4q \\+ 3, got n=11, q=-1"),
])
def test_negative_q_is_named_as_the_broken_condition(rule, n, want):
    with pytest.raises(ValueError, match=want):
        aggregators.get(rule, q=-1)(np.zeros((n, 2), np.float32))


def test_validate_refuses_a_rule_that_writes_to_its_input():
    def sorts_in_place(grads):
        grads.sort(axis=0)
        return grads[len(grads) // 2].copy()
    with pytest.raises(ValueError, match="aggregator sorts_in_place.*wrote to a read-only array"):
        aggregators.validate(sorts_in_place, 5)
    with pytest.raises(ValueError, match=r"returned shape \(5, 1\), expected \(1,\)"):
        aggregators.validate(lambda g: g, 5)


# -------------------------------------------------------- non-finite values

def gradients(n=12, d=30, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=d) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_marmed_tolerates_just_under_half_non_finite_cells(bad):
    x = gradients(n=12)
    x[:5] = bad  # 5 < ceil(12/2) = 6
    out = aggregators.get("marmed")(x)
    assert np.all(np.isfinite(out))
    assert np.all(out >= x[5:].min(0)) and np.all(out <= x[5:].max(0))


@pytest.mark.parametrize("name", ["krum", "multikrum", "bulyan"])
def test_vector_rules_never_select_non_finite_rows(name):
    x = gradients(n=11)
    x[0, 3], x[1, :] = np.nan, np.inf  # q = 2 rows with some non-finite value
    rule = aggregators.get(name, q=2)
    out = rule(x)
    assert np.all(np.isfinite(out))
    sel = rule.info["selected"]
    assert 0 not in np.atleast_1d(sel) and 1 not in np.atleast_1d(sel)


def test_medoid_never_selects_non_finite_rows():
    x = gradients(n=5)
    x[2, 0], x[4, 7] = -np.inf, np.nan
    rule = aggregators.get("medoid")
    rule(x)
    assert rule.info["selected"] in (0, 1, 3)


@pytest.mark.parametrize("name, params", [("geomed", {}), ("cclip", {"tau": 0.5})])
def test_weighted_rules_ignore_non_finite_rows(name, params):
    x = gradients(n=9)
    x[0, 4], x[5, 1] = np.nan, -np.inf
    rule = aggregators.get(name, **params)
    out = rule(x)
    assert rule.info["finite_rows"] == 7
    np.testing.assert_array_equal(out, rule(np.delete(x, [0, 5], axis=0)))


@pytest.mark.parametrize("name", aggregators.names())
def test_no_rule_raises_on_all_non_finite_input(name):
    from test_aggregator_properties import make
    x = np.full((11, 4), np.nan, np.float32)
    x[::2] = np.inf
    make(name)(x)  # any value, but no exception


# ----------------------------------------------- omniscient attack, 1e20

def omniscient(n=20, q=4, d=2000, seed=1):
    x = gradients(n=n, d=d, seed=seed)
    x[:q] = -1e20 * x[q:].sum(axis=0)
    return x


def test_distances_exact_under_1e20_rows():
    x = omniscient()
    D = distances.sq_distances(x)
    assert not np.isnan(D).any()
    h = x[4:].astype(np.longdouble)
    exact = ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(16, dtype=bool)
    rel = np.abs(D[4:, 4:][off] - exact[off]) / exact[off]
    assert rel.max() <= 1e-5
    assert np.all(D[:4, 4:] > 1e40)  # attacked rows: far (finite or +inf)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_distances_accurate_for_close_rows(dtype, rtol):
    # 1e-4 relative spread: the Gram shortcut in float32 loses everything
    base = np.random.default_rng(3).normal(size=5000)
    x = (base + 1e-4 * np.random.default_rng(4).normal(size=(6, 5000))).astype(dtype)
    D = distances.sq_distances(x)
    h = x.astype(np.longdouble)
    exact = ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(D[off], exact[off].astype(float), rtol=rtol)


@pytest.mark.parametrize("name", ["krum", "multikrum", "medoid", "geomed", "bulyan"])
def test_vector_rules_under_omniscient_attack(name):
    x = omniscient(n=20, q=4)
    rule = aggregators.get(name, **({} if name in ("medoid", "geomed") else {"q": 4}))
    out = rule(x).astype(np.float64)
    h = x[4:].astype(np.float64)
    assert np.all(np.isfinite(out))
    assert np.linalg.norm(out - h.mean(0)) <= 3 * np.linalg.norm(h - h.mean(0), axis=1).max()
    if name in ("krum", "multikrum", "medoid"):
        # (Bulyan's late Krum rounds, on fewer than 2q + 3 rows, may pick the
        # identical attacked rows; its coordinate-wise step then drops them.)
        assert min(np.atleast_1d(rule.info["selected"])) >= 4


# ------------------------------------------------------------ GeoMed

@pytest.mark.parametrize("seed, scale", [(0, 1e-4), (1, 1e-9), (2, 1e3)])
def test_geomed_optimality_condition(seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, size=(15, 40)) * scale  # heavy tails, any scale
    rule = aggregators.get("geomed", tol=1e-6)
    v = rule(x)
    u = x - v
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    assert np.linalg.norm(u.sum(0)) / len(x) <= 1e-5
    assert rule.info["converged"] and rule.info["iterations"] >= 1
    assert rule.info["residual"] <= 1e-6
    np.testing.assert_allclose(rule.info["objective"], np.linalg.norm(x - v, axis=1).sum(),
                               rtol=1e-9)
    # and it is not the mean (ByzFL's fixed-smoothing pitfall on small gradients)
    assert np.linalg.norm(v - x.mean(0)) > 1e-3 * np.linalg.norm(x - v, axis=1).mean()


@pytest.mark.parametrize("name,params", [
    ("krum", {"q": 2.5}), ("meamed", {"q": True}), ("trmean", {"b": 1.5}),
    ("phocas", {"b": "2"}), ("bulyan", {"q": 1.0}), ("multikrum", {"q": 2, "m": 3.5}),
    ("geomed", {"max_iter": 2.5}), ("cclip", {"tau": 1.0, "iters": 2.5}),
])
def test_row_counts_must_be_integers(name, params):
    """q, b, m count rows: a fractional one is refused, naming it, rather than
    trimming asymmetrically or failing deep inside a kernel."""
    key, value = list(params.items())[-1]
    with pytest.raises(ValueError, match=f"{name} needs an integer {key}, got {key}={value!r}"):
        aggregators.get(name, **params)(np.zeros((20, 3), np.float32))


@pytest.mark.parametrize("name,params", [("geomed", {}), ("cclip", {"tau": 1.0})])
def test_whole_vector_rules_give_nan_when_no_row_is_finite(name, params):
    """One NaN in every row (a generalized attack): GeoMed and CClip have no
    row to trust and say so with NaN, instead of borrowing MarMed's output."""
    g = np.random.default_rng(0).normal(size=(7, 7)).astype(np.float32)
    g[np.arange(7), np.arange(7)] = np.nan
    rule = aggregators.get(name, **params)
    out = rule(g)
    assert out.shape == (7,) and np.isnan(out).all() and rule.info["finite_rows"] == 0


@pytest.mark.parametrize("params", [{"tau": None}, {"tau": "1"}, {"tau": 0.0}])
def test_cclip_tau_must_be_a_positive_number(params):
    with pytest.raises(ValueError, match=f"cclip needs tau > 0 .*n=5, tau={params['tau']!r}"):
        aggregators.get("cclip", **params)(np.zeros((5, 3), np.float32))


@pytest.mark.parametrize("name,params", [("geomed", {}), ("cclip", {"tau": 1.0})])
def test_whole_vector_rules_give_nan_when_no_row_can_be_squared(name, params):
    """float64 rows too large to square are left out like non-finite ones;
    all of them left out: NaN, not a ZeroDivisionError."""
    rule = aggregators.get(name, **params)
    out = rule(np.array([[1e200, 0.0], [-1e200, 1.0]]))
    assert np.isnan(out).all() and rule.info["finite_rows"] == 0


@pytest.mark.parametrize("name,params", [("krum", {"q": 8}), ("multikrum", {"q": 8}),
                                         ("medoid", {}), ("bulyan", {"q": 4})])
def test_backends_select_the_same_rows_under_omniscient_attack(name, params, monkeypatch):
    """The numpy path counts a float32 distance beyond the float32 range as
    +inf, as the kernel does; summed in float64 as 1e40 it swamped the
    honest distances in Medoid's and Bulyan's scores."""
    from byzsgd import attacks
    for seed in range(4):
        x = np.random.default_rng(seed).normal(size=(20, 1000)).astype(np.float32)
        x = attacks.get("omniscient", q=6)(x, np.random.default_rng(seed))
        chosen = []
        for flag in ("0", "1"):
            monkeypatch.setenv("BYZSGD_NO_NUMBA", flag)
            rule = aggregators.get(name, **params)
            rule(x)
            chosen.append(rule.info["selected"])
        assert chosen[0] == chosen[1]


def test_bare_register_decorator_registers_under_the_function_name():
    @aggregators.register
    def test_bare_first_row(grads):
        return grads[0].copy()

    try:
        assert callable(test_bare_first_row) and "test_bare_first_row" in aggregators.names()
        np.testing.assert_array_equal(aggregators.get("test_bare_first_row")(np.eye(2)), [1, 0])
    finally:
        aggregators.REGISTRY.unregister("test_bare_first_row")
    with pytest.raises(TypeError, match="non-empty strings"):
        aggregators.register(3)
