"""Generated (unrolled) sorting-network kernels: bit for bit what the
buffer kernel computes, compiled once per machine into the cache folder."""
import numpy as np
import pytest

from byzsgd import coordinate

pytestmark = pytest.mark.skipif(not coordinate.NUMBA_AVAILABLE, reason="numba not installed")
if coordinate.NUMBA_AVAILABLE:
    from byzsgd import networks

from test_coordinate import messy

STATISTICS = [
    ("median", lambda x, n, **kw: coordinate.median(x, **kw)),
    ("trmean", lambda x, n, **kw: coordinate.trimmed_mean(x, (n - 1) // 3, **kw)),
    ("meamed", lambda x, n, **kw: coordinate.mean_around(x, n - (n - 1) // 2, **kw)),
    ("phocas", lambda x, n, **kw: coordinate.mean_around(
        x, n - (n - 1) // 3, centre="trmean", b=(n - 1) // 3, **kw)),
]


def signed_zeros(n, d):
    """messy() plus columns of +0.0 and -0.0 only: min/max must pick the
    same zero as the buffer kernel, which np.sort need not."""
    x = messy(n, d, np.float32, seed=n)
    zeros = np.random.default_rng(n).random((n, 40)) < 0.5
    x[:, :40] = np.where(zeros, np.float32(0.0), np.float32(-0.0))
    return x


@pytest.mark.parametrize("stat", STATISTICS, ids=[s[0] for s in STATISTICS])
@pytest.mark.parametrize("n", [2, 7, 20])
def test_unrolled_kernel_equals_buffer_kernel_bit_for_bit(stat, n, monkeypatch):
    x = signed_zeros(n, 3 * coordinate.SUB + 5)
    rows = list(range(n))[::-1]  # rows are looked up, not assumed in order
    unrolled = stat[1](x, n, rows=rows)
    monkeypatch.setattr(networks, "MAX_N", 0)  # every n takes the buffer kernel
    buffered = stat[1](x, n, rows=rows)
    assert unrolled.dtype == np.float32
    np.testing.assert_array_equal(unrolled.view(np.uint32), buffered.view(np.uint32))


def test_supported_sizes_and_dtypes():
    assert networks.supported(20, np.float32)
    assert not networks.supported(20, np.float64)  # float64 takes the numpy path
    assert not networks.supported(1, np.float32)
    assert not networks.supported(networks.MAX_N + 1, np.float32)


def test_kernel_module_written_once_under_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BYZSGD_CACHE", str(tmp_path))
    networks.kernel.cache_clear()
    try:
        x = messy(5, 300, np.float32)
        first = coordinate.median(x)
        written = sorted(p.name for p in (tmp_path / "kernels").glob("*.py"))
        assert len(written) == 1 and written[0].startswith("byzsgd_kernel_n5_s0_")
        assert "n=5, mode=0" in (tmp_path / "kernels" / written[0]).read_text()
        networks.kernel.cache_clear()
        np.testing.assert_array_equal(coordinate.median(x), first)
        assert sorted(p.name for p in (tmp_path / "kernels").glob("*.py")) == written
    finally:
        networks.kernel.cache_clear()


def test_unwritable_cache_compiles_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BYZSGD_CACHE", str(blocker))
    networks.kernel.cache_clear()
    try:
        x = messy(4, 300, np.float32)
        np.testing.assert_array_equal(coordinate.median(x), coordinate.median(x, backend="numpy"))
    finally:
        networks.kernel.cache_clear()


def test_source_is_deterministic_and_names_its_parameters():
    ni, nj = coordinate.sorting_network(6)
    a = networks.source(6, networks.AROUND_MEDIAN, 0, 4, ni, nj)
    assert a == networks.source(6, networks.AROUND_MEDIAN, 0, 4, ni, nj)
    assert "n=6, mode=2, b=0, m=4" in a
    compile(a, "generated", "exec")


def test_damaged_kernel_module_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("BYZSGD_CACHE", str(tmp_path))
    networks.kernel.cache_clear()
    try:
        x = messy(6, 300, np.float32)
        expected = coordinate.median(x)
        (path,) = (tmp_path / "kernels").glob("*.py")
        path.write_text(path.read_text()[:200])  # e.g. a full disk cut it short
        networks.kernel.cache_clear()
        np.testing.assert_array_equal(coordinate.median(x), expected)
        assert path.read_text().endswith("columns(x, rows, out, s, min(bl, d - s))\n")
    finally:
        networks.kernel.cache_clear()
