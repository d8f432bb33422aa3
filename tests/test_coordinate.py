"""Compiled (numba) and pure-numpy kernels: the sorting networks sort, and
both paths give the same results (bit-identical for the coordinate-wise
kernels, equal to rounding for distances and Gram matrices)."""
import numpy as np
import pytest

from byzsgd import aggregators, coordinate, distances

needs_numba = pytest.mark.skipif(not coordinate.NUMBA_AVAILABLE, reason="numba not installed")


@pytest.fixture(params=["small", "default"])
def blocks(request, monkeypatch):
    """Kernels with one-slice load blocks (many blocks, a partial last one)
    and with the default block sizes."""
    if request.param == "small":
        monkeypatch.setattr(coordinate, "BUFFER_BYTES", 1)
        monkeypatch.setattr(coordinate, "STREAM_COLS", coordinate.SUB)
    return request.param


@pytest.mark.parametrize("n", range(1, 21))
def test_sorting_network_sorts_every_0_1_input(n):
    # 0-1 principle: a comparator network sorting all 2^n 0-1 inputs sorts
    # everything. (Checked exhaustively up to n = 14, by sampling above.)
    ni, nj = coordinate.sorting_network(n)
    rng = np.random.default_rng(n)
    if n <= 14:
        v = (np.arange(2 ** n)[None, :] >> np.arange(n)[:, None]) & 1
    else:
        v = rng.integers(0, 2, size=(n, 20000))
    v = v.astype(np.int8)
    for i, j in zip(ni, nj):
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    assert (np.diff(v, axis=0) >= 0).all()


@pytest.mark.parametrize("n", [2, 5, 11, 20])
def test_pruned_median_network_gives_the_median(n):
    ni, nj = coordinate.sorting_network(n, ((n - 1) // 2, n // 2))
    assert len(ni) <= len(coordinate.sorting_network(n)[0])
    v = np.random.default_rng(0).normal(size=(n, 5000))
    for i, j in zip(ni, nj):
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    np.testing.assert_array_equal(0.5 * (v[(n - 1) // 2] + v[n // 2]),
                                  np.median(np.random.default_rng(0).normal(size=(n, 5000)), 0))


def messy(n, d, dtype, seed=0):
    """Values with ties, NaN, +-inf and huge entries, spread over columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, : d // 4] = np.round(x[:, : d // 4])  # many exact ties
    for value, p in [(np.nan, 0.04), (np.inf, 0.04), (-np.inf, 0.04), (1e20, 0.02)]:
        x[rng.random(x.shape) < p] = value
    return x.astype(dtype)


KERNELS = [
    ("median", lambda x, n, **kw: coordinate.median(x, **kw)),
    ("trmean", lambda x, n, **kw: coordinate.trimmed_mean(x, (n - 1) // 3, **kw)),
    ("meamed", lambda x, n, **kw: coordinate.mean_around(x, n - (n - 1) // 2, **kw)),
    ("phocas", lambda x, n, **kw: coordinate.mean_around(
        x, n - (n - 1) // 3, centre="trmean", b=(n - 1) // 3, **kw)),
    ("row_mean", lambda x, n, **kw: coordinate.row_sum_mean(x, **kw)),
]


# Only float32 is compiled: float64 input takes the numpy path by default
# (see test_float64_takes_the_numpy_path_unless_forced).
@needs_numba
@pytest.mark.parametrize("kernel", KERNELS, ids=[k[0] for k in KERNELS])
# n = 26 is above networks.MAX_N: the buffer kernel; the others are unrolled
@pytest.mark.parametrize("n", [3, 4, 11, 20, 26])
def test_coordinate_kernels_identical_in_numba_and_numpy(kernel, n, blocks):
    dtype = np.float32
    x = messy(n, 2 * coordinate.SUB + 37, dtype)  # a partial last block
    before = x.copy()
    a = kernel[1](x, n, backend="numba")
    b = kernel[1](x, n, backend="numpy")
    assert a.dtype == b.dtype == dtype
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, before)


@needs_numba
def test_row_subsets_identical_in_numba_and_numpy(blocks):
    x = messy(12, 300, np.float32)
    rows = [7, 0, 3, 11, 5, 9, 2]
    for kernel in KERNELS:
        a = kernel[1](x, len(rows), rows=rows, backend="numba")
        np.testing.assert_array_equal(a, kernel[1](x, len(rows), rows=rows, backend="numpy"))
        np.testing.assert_array_equal(a, kernel[1](x[rows], len(rows), backend="numpy"))


def test_median_matches_numpy_when_finite():
    x = np.random.default_rng(1).normal(size=(8, 101))
    np.testing.assert_array_equal(coordinate.median(x), np.median(x, axis=0))


@needs_numba
def test_distances_agree_in_numba_and_numpy(blocks):
    dtype = np.float32
    x = np.random.default_rng(2).normal(size=(9, 3 * coordinate.SUB + 5)).astype(dtype)
    x[2, 7], x[5, 1] = np.nan, np.inf
    x[6] *= 1e20
    a = distances.sq_distances(x, backend="numba")
    b = distances.sq_distances(x, backend="numpy")
    assert np.isinf(a[2, [0, 1, 3]]).all() and np.isinf(a[5, [0, 1, 3]]).all()
    # float32 rows are compared in float32 slices summed in float64: a
    # squared difference beyond the float32 range (row 6) becomes +inf
    big = np.isinf(b) | (b > np.finfo(dtype).max)
    assert np.isinf(a[big]).all()
    np.testing.assert_array_equal(np.isinf(a[~big]), False)
    np.testing.assert_allclose(a[~big], b[~big], rtol=1e-5)


@needs_numba
def test_centred_gram_and_affine_rows_agree_in_numba_and_numpy(blocks):
    x = np.random.default_rng(3).normal(size=(10, 2 * coordinate.SUB + 9)).astype(np.float32)
    rows = np.array([0, 2, 3, 4, 6, 7, 9])
    c1, G1 = distances.centred_gram(x, rows=rows, backend="numba")
    c2, G2 = distances.centred_gram(x, rows=rows, backend="numpy")
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(G1, G2, rtol=1e-12)
    np.testing.assert_array_equal(G1, G1.T)
    y = x[rows].astype(np.float64) - c1
    np.testing.assert_allclose(G1, y @ y.T, rtol=1e-12)
    alpha = np.random.default_rng(4).random(len(rows))
    a = distances.affine_rows(x, alpha, c1, rows=rows, backend="numba")
    b = distances.affine_rows(x, alpha, c1, rows=rows, backend="numpy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c1 + alpha @ y, rtol=1e-6)


@needs_numba
@pytest.mark.parametrize("gram", [False, True], ids=["distances", "gram"])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 13, 20, 26])
def test_grouped_pairs_are_summed_as_by_tiles_along_the_triangle(n, gram):
    # _slice_pairs skips the sums that tiles along the triangle compute and
    # drop; every pair it keeps must be bit for bit the tiles' (the schedule
    # of the committed logs): the compiler vectorises its within-group loop
    # on its own, so this is a property of the machine's code, checked here
    w = 2 * distances.SLICE + 37  # a partial vector at the end
    dtype = np.float64 if gram else np.float32
    rng = np.random.default_rng(n)
    clean = (rng.normal(size=(n, w)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))).astype(dtype)
    cases = [(clean, 0, distances.SLICE), (clean, distances.SLICE, w), (clean, 3, 32),
             (clean, 5, 6), (messy(n, w, dtype, seed=n), 7, 90)]
    for x, a, e in cases:
        zero = x.dtype.type(0)
        P, Q = np.zeros((n, n)), np.zeros((n, n))
        distances._slice_pairs(x, a, e, P, gram, zero)
        distances._triangle_pairs(x, a, e, Q, gram, zero, 0)
        np.testing.assert_array_equal(P, Q)
        assert np.isfinite(Q).any() and not np.tril(Q, -1).any()


@needs_numba
@pytest.mark.parametrize("name", aggregators.names())
def test_rules_agree_with_numba_disabled(name, monkeypatch):
    from test_aggregator_properties import honest, make
    x = honest(9, d=2 * coordinate.SUB + 3)
    x[0, :5] = [np.nan, np.inf, -np.inf, 1e20, -1e20]
    rule = make(name)
    fast = rule(x)
    monkeypatch.setenv("BYZSGD_NO_NUMBA", "1")
    assert not coordinate.use_numba()
    slow = rule(x)
    if name in ("geomed", "cclip"):  # Gram sums in another order: rounding
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    else:  # selections and coordinate-wise sums are exactly the same
        np.testing.assert_array_equal(fast, slow)


def test_float64_takes_the_numpy_path_unless_forced(monkeypatch):
    x = np.zeros((3, 4))
    assert not coordinate.fast_path(x)
    assert coordinate.fast_path(x.astype(np.float32)) == coordinate.use_numba()
    assert not coordinate.fast_path(x.astype(np.float32), backend="numpy")


def test_backend_argument_is_checked():
    with pytest.raises(ValueError, match="backend"):
        coordinate.median(np.zeros((3, 2)), backend="cuda")


@needs_numba
def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    from test_aggregator_properties import honest, make
    x = honest(10, n=20, d=3 * coordinate.SUB + 11)
    monkeypatch.setattr(coordinate, "BUFFER_BYTES", 1)  # many blocks and chunks
    monkeypatch.setattr(coordinate, "STREAM_COLS", coordinate.SUB)
    results = []
    # the thread count set directly: changing NUMBA_NUM_THREADS in the
    # environment makes numba's next compilation (a new kernel) fail
    for threads in (1, coordinate.numba.config.NUMBA_NUM_THREADS):
        monkeypatch.setattr(coordinate, "workers", lambda nchunks, t=threads: (
            coordinate.numba.set_num_threads(max(1, min(t, nchunks))) or max(1, min(t, nchunks))))
        results.append([make(name)(x) for name in aggregators.names()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, words", [
    (lambda x, be: coordinate.trimmed_mean(x, -1, backend=be), ["b=-1", "n=4"]),
    (lambda x, be: coordinate.trimmed_mean(x, 2, backend=be), ["b=2", "n=4"]),
    (lambda x, be: coordinate.trimmed_mean(x, 1.5, backend=be), ["b=1.5"]),
    (lambda x, be: coordinate.mean_around(x, 0, backend=be), ["m=0", "n=4"]),
    (lambda x, be: coordinate.mean_around(x, 5, backend=be), ["m=5", "n=4"]),
    (lambda x, be: coordinate.median(x, rows=[0, 9], backend=be), ["rows=[0, 9]", "0..3"]),
    (lambda x, be: coordinate.median(x, rows=[-1, 2], backend=be), ["rows=[-1, 2]"]),
    (lambda x, be: coordinate.median(x, rows=[], backend=be), ["rows"]),
    (lambda x, be: coordinate.row_sum_mean(x, rows=[4], backend=be), ["rows=[4]", "n=4"]),
])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_public_kernels_check_their_arguments(call, words, backend):
    """The compiled kernels do not check bounds: a bad b, m or row index is
    refused before them (it read outside the array, or differed by backend)."""
    if backend == "numba" and not coordinate.NUMBA_AVAILABLE:
        pytest.skip("numba not installed")
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with pytest.raises(ValueError) as err:
        call(x, backend)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("call, want", [
    (lambda: coordinate.trimmed_mean(np.arange(12, dtype=np.int32).reshape(4, 3), 1),
     "take float arrays, got int32"),
    (lambda: coordinate.trimmed_mean(np.arange(12, dtype=np.int32).reshape(4, 3), 1,
                                     backend="numba"), "take float arrays, got int32"),
    (lambda: coordinate.median(np.ones((4, 3), np.float16), backend="numba"),
     "backend='numba' takes float32 or float64, got float16"),
    (lambda: distances.sq_distances(np.ones((4, 3), np.int64)), "take float arrays, got int64"),
])
def test_kernels_refuse_what_they_cannot_compute(call, want):
    """Integers were truncated on the numba path and a cast error on numpy's."""
    with pytest.raises(ValueError, match=want):
        call()
