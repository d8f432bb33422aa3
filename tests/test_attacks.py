"""Attacks: properties every registered attack must have (parametrised over
attacks.names(), so users' attacks get them too), exact values and bit
patterns of the paper's attacks, corruption counts per failure model, and
parameter errors."""
import statistics
import warnings

import numpy as np
import pytest

from byzsgd import attacks, failures

N, D = 20, 1200
# Parameters for the generic tests; an attack not listed runs with defaults.
PARAMS = {
    "gambler": {"prob": 0.01},            # default 0.0005 may hit nothing at D=1200
    "theorem1": {"g": 1.0},
}


def grads(seed=0, n=N, d=D, dtype=np.float32):
    return np.random.default_rng(seed).normal(0.5, 1.0, (n, d)).astype(dtype)


def run(name, x, seed=0, /, **params):
    atk = attacks.get(name, **params)
    return atk(x, np.random.default_rng(seed)), atk.info


# ------------------------------------------------- every registered attack
@pytest.mark.parametrize("name", attacks.names())
def test_new_array_and_input_untouched(name):
    g = grads()
    before = g.copy()
    out, _ = run(name, g, **PARAMS.get(name, {}))
    assert np.array_equal(g, before, equal_nan=True)
    assert out.shape == g.shape and out.dtype == g.dtype
    assert not np.shares_memory(out, g)


@pytest.mark.parametrize("name", attacks.names())
def test_same_generator_state_same_output(name):
    g = grads()
    r1 = np.random.default_rng(123)
    r1.normal(size=7)                       # some state other than fresh
    r2 = np.random.default_rng()
    r2.bit_generator.state = r1.bit_generator.state
    atk = attacks.get(name, **PARAMS.get(name, {}))
    a, b = atk(g, r1), atk(g, r2)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("name", attacks.names())
def test_nonfinite_input_is_not_an_error(name):
    g = grads()
    g[0, :5] = np.nan
    g[1, 5:9] = np.inf
    g[2, 9] = -np.inf
    g[3, 5] = -np.inf          # +inf and -inf in one column: sums are NaN, silently
    before = g.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = run(name, g, **PARAMS.get(name, {}))
    assert out.shape == g.shape
    assert np.array_equal(g, before, equal_nan=True)


@pytest.mark.parametrize("name", attacks.names())
def test_float64_kept_or_refused_clearly(name):
    g = grads(dtype=np.float64)
    try:
        out, _ = run(name, g, **PARAMS.get(name, {}))
    except ValueError as err:
        assert "float" in str(err)
    else:
        assert out.dtype == np.float64


# ------------------------------------------------------------- bit flips
MASK_PAPER = 0xE0200000      # 1-based bits 22, 30, 31, 32 = 0-based 21, 29, 30, 31
MASK_CODE = 0xE0400000       # authors' code: 0-based bits 22, 29, 30, 31


def test_flip_masks_hand_computed():
    assert attacks.flip_mask((22, 30, 31, 32)) == MASK_PAPER
    assert attacks.flip_mask((21, 29, 30, 31), "zero") == MASK_PAPER
    assert attacks.flip_mask((22, 29, 30, 31), "zero") == MASK_CODE
    assert attacks.flip_mask((23, 30, 31, 32)) == MASK_CODE
    assert attacks.flip_mask(32) == 0x80000000 and attacks.flip_mask(1) == 1


@pytest.mark.parametrize("params, mask, dims", [
    ({}, MASK_PAPER, 1000),
    ({"bits": (22, 29, 30, 31), "numbering": "zero", "dims": 500}, MASK_CODE, 500),
    ({"bits": (23, 30, 31, 32), "dims": 500}, MASK_CODE, 500),
])
def test_bitflip_exact_bit_patterns(params, mask, dims):
    g = grads()
    out, info = run("bitflip", g, **params)
    x = out.view(np.uint32) ^ g.view(np.uint32)
    changed = x != 0
    assert np.all(x[changed] == mask)
    assert np.all(changed[:, :dims].sum(axis=0) == 1)       # one worker per coordinate
    assert not changed[:, dims:].any()
    assert info["cells"] == dims
    assert len(set(np.nonzero(changed)[0].tolist())) > 10   # workers vary by coordinate


def test_bitflip_readings_agree_and_one_value_by_hand():
    g = grads()
    a, _ = run("bitflip", g, bits=(22, 29, 30, 31), numbering="zero", dims=500)
    b, _ = run("bitflip", g, bits=(23, 30, 31, 32), dims=500)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    one = np.ones((1, 1), np.float32)                        # 0x3F800000
    out, _ = run("bitflip", one, dims=1)
    assert out.view(np.uint32)[0, 0] == 0x3F800000 ^ MASK_PAPER == 0xDFA00000
    assert out[0, 0] == np.float32(-1.25 * 2.0 ** 64)


def test_bitflip_per_dim_and_refuses_float64():
    g = grads()
    out, _ = run("bitflip", g, dims=None, per_dim=3)
    assert np.all((out.view(np.uint32) != g.view(np.uint32)).sum(axis=0) == 3)
    with pytest.raises(ValueError, match="float32"):
        run("bitflip", g.astype(np.float64))


# ----------------------------------------------------- failure-model use
@pytest.mark.parametrize("name", ["gaussian", "omniscient", "signflip", "alie", "ipm",
                                  "nonfinite"])
def test_models_corrupt_the_right_cells(name):
    g = grads()
    out, info = run(name, g, q=6)                                   # classic, random rows
    changed = ~np.isclose(out, g, equal_nan=False) | np.isnan(out)
    assert np.array_equal(changed.all(axis=1), changed.any(axis=1))
    assert changed.all(axis=1).sum() == 6 and info["cells"] == 6 * D
    out, _ = run(name, g, q=4, model="generalized")
    changed = ~np.isclose(out, g) | np.isnan(out)
    assert np.all(changed.sum(axis=0) == 4)
    out, _ = run(name, g, q=6, model=("classic", {"fixed": True}))
    changed = ~np.isclose(out, g) | np.isnan(out)
    assert changed[:6].all() and not changed[6:].any()
    out, _ = run(name, g, q=2, model=("sharded", {"servers": 10, "fixed": (3,)}))
    changed = ~np.isclose(out, g) | np.isnan(out)
    assert np.all(changed[:, 360:480].sum(axis=0) == 2)
    assert changed.sum() == 2 * 120


def test_callable_model():
    g = grads()
    model = lambda n, d, q, rng: failures.Rows([n - 1], n, d)    # noqa: E731
    out, _ = run("nonfinite", g, model=model)
    assert np.isnan(out[-1]).all() and np.array_equal(out[:-1], g[:-1])


@pytest.mark.parametrize("model, error, want", [
    (lambda n, d, q, rng: np.zeros((n, d), bool), TypeError, "returned ndarray, expected"),
    (lambda n, d, q, rng: failures.Rows([0, 1, 2], n, d), ValueError,
     "3 cells in a coordinate, more than q=1"),
    (lambda n, d, q, rng: failures.Rows([n], n, d), ValueError, "distinct, in 0..19"),
    (lambda n, d, q, rng: failures.Rows([0, 0], n, d), ValueError, "distinct, in 0..19"),
    (lambda n, d, q, rng: failures.Rows([0], n + 1, d), ValueError, "an \\(21, 1200\\) matrix"),
])
def test_a_users_failure_model_is_checked(model, error, want):
    """Not a raw numpy error, nor more corrupted cells than q, in silence."""
    with pytest.raises(error, match="nonfinite: .*" + want):
        run("nonfinite", grads(), q=1, model=model)


# ---------------------------------------------------------- exact values
def test_omniscient_exact_classic_and_generalized():
    g = np.arange(1.0, 13.0, dtype=np.float32).reshape(4, 3)
    out, _ = run("omniscient", g, q=1, scale=2.0, model=("classic", {"fixed": (2,)}))
    assert np.array_equal(out[2], -2.0 * (g.sum(axis=0) - g[2]))
    assert np.array_equal(np.delete(out, 2, axis=0), np.delete(g, 2, axis=0))
    out, _ = run("omniscient", g, q=2, scale=1.0, model="generalized")
    bad = out != g
    assert np.all(bad.sum(axis=0) == 2)
    honest = np.where(bad, 0.0, g).sum(axis=0)
    assert np.array_equal(out[bad], np.broadcast_to(-honest, g.shape)[bad])


def test_omniscient_overflows_only_where_the_true_value_does():
    g = np.array([[1.0, 0.0, -1e-10, 2.0]] * 3, dtype=np.float32)
    out, _ = run("omniscient", g, q=1, scale=1e38, model=("classic", {"fixed": True}))
    # honest sums 2, 0, ~-2e-10, 4 -> -2e38 (fits), 0, ~2e28, -4e38 (overflows)
    assert out[0, 0] == np.float32(-2e38) and out[0, 1] == 0.0
    assert out[0, 2] == np.float32(-1e38 * 2 * np.float64(np.float32(-1e-10)))
    assert out[0, 3] == -np.inf
    assert np.isfinite(out[1:]).all()


def test_gaussian_statistics():
    g = grads(d=5000)
    out, _ = run("gaussian", g, q=6, sigma=200.0, model=("classic", {"fixed": True}))
    bad = out[:6].astype(np.float64)
    assert abs(bad.mean()) < 5 * 200 / np.sqrt(bad.size)
    assert abs(bad.std() / 200 - 1) < 0.02
    assert np.array_equal(out[6:], g[6:])


def test_signflip_ipm_nonfinite_values():
    g = grads()
    fixed = ("classic", {"fixed": True})
    out, _ = run("signflip", g, q=3, scale=2.0, model=fixed)
    assert np.array_equal(out[:3], -2.0 * g[:3])
    out, _ = run("ipm", g, q=3, eps=0.5, model=fixed)
    expected = (-0.5 * g[3:].astype(np.float64).mean(axis=0)).astype(np.float32)
    assert np.allclose(out[:3], expected, rtol=1e-6, atol=0)
    for value, check in [("nan", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf)]:
        out, _ = run("nonfinite", g, q=3, value=value, model=fixed)
        assert check(out[:3]).all() and np.isfinite(out[3:]).all()
    out, _ = run("nonfinite", g, q=3, value=3e38, model=fixed)
    assert np.all(out[:3] == np.float32(3e38))


def test_alie_default_z_and_values():
    s = int(np.floor(N / 2 + 1)) - 6                    # 5 supporters
    z = statistics.NormalDist().inv_cdf((N - s) / N)    # Phi^-1(0.75)
    assert abs(z - 0.6744897501960817) < 1e-12
    g = grads()
    out, _ = run("alie", g, q=6, model=("classic", {"fixed": True}))
    honest = g[6:].astype(np.float64)
    expected = (honest.mean(axis=0) - z * honest.std(axis=0, ddof=1)).astype(np.float32)
    assert np.allclose(out[:6], expected, rtol=1e-6, atol=1e-6)
    out, _ = run("alie", g, q=6, z=2.0, model="generalized")
    bad = out != g
    assert np.all(bad.sum(axis=0) == 6)
    col = np.where(~bad[:, 0])[0]
    x = g[col, 0].astype(np.float64)
    assert np.isclose(out[bad[:, 0], 0][0], x.mean() - 2.0 * x.std(ddof=1), rtol=1e-6)


def test_theorem_constructions():
    g = grads()
    target = np.linspace(-1, 1, D)
    out, _ = run("theorem1", g, g=target)
    assert np.allclose(out.astype(np.float64).mean(axis=0), -target / N, atol=1e-5)
    assert np.all((out != g).sum(axis=0) == 1)             # one value per coordinate
    out, _ = run("theorem2", g, factor=-1e10)
    changed = out != g
    assert np.array_equal(np.nonzero(changed), (np.arange(N), np.arange(N)))
    assert np.array_equal(np.diag(out), (np.diag(g).astype(np.float64) * -1e10).astype(np.float32))


# ---------------------------------------------------------------- gambler
def test_gambler_rate_within_binomial_bounds_and_only_faulty_shard():
    d, prob = 200000, 0.002
    g = grads(d=d)
    width = d // 20
    cells = 20 * width
    mean, sd = cells * prob, np.sqrt(cells * prob * (1 - prob))
    servers = set()
    for seed in range(3):
        out, info = run("gambler", g, seed, prob=prob, factor=-1e20)
        changed = out != g
        (s,) = info["servers"]
        servers.add(s)
        assert not changed[:, :s * width].any() and not changed[:, (s + 1) * width:].any()
        assert abs(changed.sum() - mean) < 5 * sd and info["cells"] == changed.sum()
        assert np.array_equal(out[changed], (g[changed].astype(np.float64) * -1e20).astype(np.float32))
    assert len(servers) > 1                                  # fixed=False: redrawn each round
    out, info = run("gambler", g, prob=prob, fixed=True)
    assert info["servers"] == [0] and not (out != g)[:, width:].any()


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("name, params, words", [
    ("gaussian", {"q": 21}, ["q=21", "n=20"]),
    ("omniscient", {"q": -1}, ["q=-1", "n=20"]),
    ("gaussian", {"sigma": -1.0}, ["sigma=-1.0"]),
    ("bitflip", {"bits": (0, 31)}, ["bits=(0, 31)", "1..32"]),
    ("bitflip", {"bits": (33,)}, ["bits=(33,)", "1..32"]),
    ("bitflip", {"bits": (32,), "numbering": "zero"}, ["bits=(32,)", "0..31"]),
    ("bitflip", {"bits": (5, 5)}, ["distinct"]),
    ("bitflip", {"numbering": "two"}, ["numbering='two'"]),
    ("bitflip", {"dims": 5000}, ["bitflip:", "dims=5000", "d=1200"]),
    ("bitflip", {"per_dim": 21}, ["bitflip:", "per_dim=21", "n=20"]),
    ("gaussian", {"q": 3.0}, ["gaussian:", "q=3.0"]),
    ("gaussian", {"q": True}, ["gaussian:", "q=True"]),
    ("gambler", {"prob": 1.5}, ["prob=1.5", "[0, 1]"]),
    ("gambler", {"servers": 1201}, ["gambler:", "servers=1201", "d=1200"]),
    ("gambler", {"servers": 4, "faulty": 5}, ["faulty=5", "servers=4"]),
    ("alie", {"q": 19}, ["q=19", "n=20"]),
    ("alie", {"q": 11}, ["n=20", "q=11"]),
    ("ipm", {"q": 20}, ["q=20"]),
    ("nonfinite", {"value": "infinity"}, ["value='infinity'"]),
])
def test_parameter_errors_name_the_values(name, params, words):
    with pytest.raises(ValueError) as err:
        run(name, grads(), **params)
    for w in words:
        assert w in str(err.value)


def test_bad_grads_and_unknown_names():
    with pytest.raises(ValueError, match="grads"):
        run("gaussian", np.ones(5, np.float32))
    with pytest.raises(ValueError, match="gaussian"):
        attacks.get("no-such-attack")
    with pytest.raises(TypeError, match="sigma"):
        attacks.get("gaussian", sigmaa=1.0)
    assert attacks.resolve(None) is None
    assert attacks.resolve(("gaussian", {"q": 2})).params["q"] == 2


@pytest.mark.parametrize("name, params, want", [
    ("gaussian", {"sigma": "a"}, "gaussian: sigma='a' must be a number"),
    ("gaussian", {"sigma": None}, "gaussian: sigma=None must be a number"),
    ("omniscient", {"scale": "x"}, "omniscient: scale='x' must be a number"),
    ("signflip", {"scale": None}, "signflip: scale=None must be a number"),
    ("ipm", {"eps": True}, "ipm: eps=True must be a number"),
    ("alie", {"z": "a"}, "alie: z='a' must be a number"),
    ("gambler", {"prob": "a"}, "gambler: prob='a' must be a number"),
    ("theorem2", {"factor": "a"}, "theorem2: factor='a' must be a number"),
    ("nonfinite", {"value": None}, "nonfinite: value=None must be a number"),
    ("theorem1", {"g": np.ones(5)}, "theorem1: g must be a number or a \\(d,\\) vector.*d=1200"),
    ("theorem1", {"g": "a"}, "theorem1: g must be a number or a \\(d,\\) vector.*'a'"),
    ("theorem1", {"g": True}, "theorem1: g must be a number"),
])
def test_parameters_of_the_wrong_type_are_named(name, params, want):
    with pytest.raises(ValueError, match=want):
        run(name, grads(), **params)


@pytest.mark.parametrize("name", [a for a in attacks.names()     # a user's may not check
                                  if attacks.REGISTRY.module(a) == "byzsgd.attacks"])
@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0)])
def test_an_rng_that_is_not_a_generator_is_named(name, rng):
    with pytest.raises(TypeError, match=f"{name}: rng must be a numpy.random.Generator"):
        attacks.get(name, **PARAMS.get(name, {}))(grads(), rng)
