"""Generated (unrolled) sorting-network kernels: bit for bit what the
buffer kernel computes, compiled once per machine into the cache folder."""
import os

import numpy as np
import pytest

from byzsgd import coordinate

pytestmark = pytest.mark.skipif(not coordinate.NUMBA_AVAILABLE, reason="numba not installed")
if coordinate.NUMBA_AVAILABLE:
    from byzsgd import networks

from test_coordinate import KERNELS, messy

STATISTICS = [k for k in KERNELS if k[0] != "row_mean"]  # the sorting ones


def signed_zeros(n, d):
    """messy() plus columns of +0.0 and -0.0 only: min/max must pick the
    same zero as the buffer kernel, which np.sort need not."""
    x = messy(n, d, np.float32, seed=n)
    zeros = np.random.default_rng(n).random((n, 40)) < 0.5
    x[:, :40] = np.where(zeros, np.float32(0.0), np.float32(-0.0))
    return x


# the extremes of b and m too: no trimming, the most trimming, m = 1, m = n
EXTREMES = [
    ("trmean b=0", lambda x, n, **kw: coordinate.trimmed_mean(x, 0, **kw)),
    ("trmean b max", lambda x, n, **kw: coordinate.trimmed_mean(x, (n - 1) // 2, **kw)),
    ("meamed m=1", lambda x, n, **kw: coordinate.mean_around(x, 1, **kw)),
    ("meamed m=n", lambda x, n, **kw: coordinate.mean_around(x, n, **kw)),
]


def unrolled_calls(monkeypatch):
    """A list that records the (n, mode, b, m) of every unrolled kernel used."""
    calls, real = [], networks.kernel
    monkeypatch.setattr(networks, "kernel", lambda *a: calls.append(a[:4]) or real(*a))
    return calls


# Every statistic and extreme at n = 2, 7 and the paper's 20; at the largest
# unrolled n (24 = networks.MAX_N) only the paper's two, because each kernel
# compiles once per machine for ~7 s there and CI starts with a cold cache.
BIT_CASES = [(n, stat) for n in (2, 7, 20) for stat in STATISTICS + EXTREMES] + \
    [(24, stat) for stat in STATISTICS if stat[0] in ("median", "meamed")]


@pytest.mark.parametrize("n, stat", BIT_CASES, ids=[f"{s[0]}-{n}" for n, s in BIT_CASES])
def test_unrolled_kernel_equals_buffer_kernel_bit_for_bit(stat, n, monkeypatch):
    x = signed_zeros(n, 3 * coordinate.SUB + 5)
    rows = list(range(n))[::-1]  # rows are looked up, not assumed in order
    calls = unrolled_calls(monkeypatch)
    unrolled = stat[1](x, n, rows=rows)
    assert len(calls) == 1 and calls[0][0] == n  # the unrolled kernel ran
    monkeypatch.setattr(networks, "MAX_N", 0)  # every n takes the buffer kernel
    buffered = stat[1](x, n, rows=rows)
    assert len(calls) == 1
    assert unrolled.dtype == np.float32
    np.testing.assert_array_equal(unrolled.view(np.uint32), buffered.view(np.uint32))


@pytest.mark.parametrize("call", [
    lambda x: coordinate.trimmed_mean(x, 3),                # 2b = n
    lambda x: coordinate.mean_around(x, 0),                 # m = 0
    lambda x: coordinate.mean_around(x, 7),                 # m > n
    lambda x: coordinate.mean_around(x, 4, centre="trmean", b=3),
], ids=["2b=n", "m=0", "m>n", "phocas 2b=n"])
def test_parameters_out_of_range_take_the_buffer_kernel(call, monkeypatch):
    x = messy(6, 300, np.float32)
    calls = unrolled_calls(monkeypatch)
    with np.errstate(all="ignore"):
        try:
            call(x)
        except Exception:  # whatever the buffer kernel does with them
            pass
    assert calls == []


def test_statistic_codes_are_coordinates():
    assert (networks.MEDIAN, networks.TRMEAN, networks.AROUND_MEDIAN, networks.AROUND_TRMEAN) == \
        (coordinate.MEDIAN, coordinate.TRMEAN, coordinate.AROUND_MEDIAN, coordinate.AROUND_TRMEAN)


def test_supported_sizes_and_dtypes():
    assert max(n for n, _ in BIT_CASES) == networks.MAX_N  # the bit test reaches the limit
    assert networks.supported(20, np.float32)
    assert not networks.supported(20, np.float64)  # float64 takes the numpy path
    assert not networks.supported(1, np.float32)
    assert not networks.supported(networks.MAX_N + 1, np.float32)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache folder, and no kernel memoised in this process."""
    monkeypatch.setenv("BYZSGD_CACHE", str(tmp_path))
    networks.kernel.cache_clear()
    yield tmp_path / "kernels"
    networks.kernel.cache_clear()


def test_kernel_module_written_once_under_the_cache_folder(fresh_cache):
    x = messy(5, 300, np.float32)
    first = coordinate.median(x)
    (path,) = fresh_cache.glob("*.py")
    assert path.name.startswith("byzsgd_kernel_n5_s0_")
    assert "n=5, mode=0" in path.read_text()
    if "NUMBA_CACHE_DIR" not in os.environ:  # numba's cache beside it
        assert list((fresh_cache / "__pycache__").glob(path.stem + "*.nbi"))
    stamp = path.stat().st_mtime_ns
    networks.kernel.cache_clear()
    np.testing.assert_array_equal(coordinate.median(x), first)
    assert list(fresh_cache.glob("*.py")) == [path]
    assert path.stat().st_mtime_ns == stamp  # not rewritten: numba's cache stays valid


def test_unwritable_cache_compiles_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BYZSGD_CACHE", str(blocker))
    networks.kernel.cache_clear()
    try:
        x = messy(4, 300, np.float32)
        with pytest.warns(RuntimeWarning, match="compiling it in memory"):
            got = coordinate.median(x)
        np.testing.assert_array_equal(got, coordinate.median(x, backend="numpy"))
    finally:
        networks.kernel.cache_clear()


def test_source_is_deterministic_and_names_its_parameters():
    ni, nj = coordinate.sorting_network(6)
    a = networks.source(6, networks.AROUND_MEDIAN, 0, 4, ni, nj)
    assert a == networks.source(6, networks.AROUND_MEDIAN, 0, 4, ni, nj)
    assert "n=6, mode=2, b=0, m=4" in a
    compile(a, "generated", "exec")


def test_damaged_kernel_module_is_rewritten(fresh_cache):
    x = messy(6, 300, np.float32)
    expected = coordinate.median(x)
    (path,) = fresh_cache.glob("*.py")
    path.write_text(path.read_text()[:200])  # e.g. a full disk cut it short
    networks.kernel.cache_clear()
    np.testing.assert_array_equal(coordinate.median(x), expected)
    assert path.read_text().endswith("columns(x, rows, out, s, min(bl, d - s))\n")
