"""Coordinate-wise kernels: median, trimmed mean, mean around a centre,
and sums of rows.

All kernels take an ``(n, d)`` float array (optionally only the rows listed
in ``rows``) and return ``(d,)`` values of its dtype. They never mutate the
input.

Non-finite values are ordinary Byzantine values: NaN is treated as +inf
before selection (it then is just one more arbitrarily large value, so a
median or trimmed mean over fewer than the tolerated number of such cells
stays inside the honest range); -inf and +inf are kept as they are.

Three paths give the same results. For float32 and 2 <= n <= 24,
``networks`` generates one numba kernel per n, statistic and b, m that keeps a
column's values in registers and applies the sorting network (Batcher's
merge exchange) as straight-line code, vectorised across columns. Other n
take the general numba kernel: it copies a block of columns of all rows
into a buffer (long runs per row, which keeps hardware prefetching
effective) and sorts it in slices of 256 columns, small enough to stay in
L1, each comparator an elementwise min/max of two buffer rows; blocks run
in parallel. The numpy path sorts with np.sort. All sum selected sorted
values in ascending order in float64, then divide and round once, so they
agree to the last bit, up to the sign of a zero median: the comparators
turn (+0, -0) into (-0, -0), np.sort need not. The numpy path runs for
input other than float32 (unless ``backend="numba"``), when numba is
missing, when BYZSGD_NO_NUMBA=1, or with ``backend="numpy"``.
"""
import functools
import os

import numpy as np

from .checks import integer

try:
    import numba
except ImportError:  # pragma: no cover - numba is an install requirement
    numba = None
if numba is not None:
    from . import networks  # outside the try: its own import errors must show

__all__ = ["median", "trimmed_mean", "mean_around", "row_sum_mean",
           "sorting_network", "use_numba", "fast_path", "readonly", "block_cols",
           "chunks", "workers", "NUMBA_AVAILABLE"]

NUMBA_AVAILABLE = numba is not None
SUB = 256  # columns per sorting-network pass: (20, SUB) float32 fits L1
BUFFER_BYTES = 1 << 19  # per load block: long runs per row keep prefetching
STREAM_COLS = 8192  # columns per block of the kernels that only sum rows
MAX_CHUNKS = 64  # fixed work split, so results do not depend on threads

# what the kernel computes per column
MEDIAN, TRMEAN, AROUND_MEDIAN, AROUND_TRMEAN = 0, 1, 2, 3


def use_numba(backend=None):
    """Whether a call with ``backend`` (None, "numba" or "numpy") runs numba."""
    if backend is None:
        return NUMBA_AVAILABLE and os.environ.get("BYZSGD_NO_NUMBA", "0") in ("", "0")
    if backend not in ("numba", "numpy"):
        raise ValueError(f"backend must be None, 'numba' or 'numpy', got {backend!r}")
    if backend == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend='numba' but numba is not installed")
    return backend == "numba"


def fast_path(x, backend=None):
    """Whether to run the numba kernel on array ``x``. By default only for
    float32 (MXNet's gradient dtype): other dtypes take the numpy path, which
    spares compiling every kernel twice; ``backend="numba"`` forces it
    (float32 and float64 only). Arrays that are not float are refused: the
    rules convert integers to float64 first, these kernels do not."""
    if x.dtype.kind != "f":
        raise ValueError(f"the coordinate and distance kernels take float arrays, got "
                         f"{x.dtype} (convert with .astype(np.float64))")
    if backend == "numba" and x.dtype not in (np.float32, np.float64):
        raise ValueError(f"backend='numba' takes float32 or float64, got {x.dtype}; "
                         "leave backend=None (numpy path) or convert")
    if backend is None:
        return use_numba() and x.dtype == np.float32
    return use_numba(backend)


def block_cols(n, itemsize):
    """Columns per load block for an (n, cols) buffer of this itemsize."""
    return max(SUB, min(16384, BUFFER_BYTES // (n * itemsize) // SUB * SUB))


def workers(nchunks):
    """Threads for a kernel launch: numba's thread count, or OMP_NUM_THREADS
    when NUMBA_NUM_THREADS is not set (the experiment runner pins OMP_NUM_THREADS
    per job); at most one per chunk. Results do not depend on it."""
    n = numba.config.NUMBA_NUM_THREADS
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if "NUMBA_NUM_THREADS" not in os.environ and omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    n = max(1, min(n, nchunks))
    numba.set_num_threads(n)
    return n


def chunks(d, bl):
    """Number of column chunks the parallel kernels split d columns into."""
    return max(1, min(MAX_CHUNKS, -(-d // bl)))


@functools.lru_cache(maxsize=None)
def sorting_network(n, outputs=None):
    """Comparators (i, j), i < j, of Batcher's merge-exchange sort of n
    values (Knuth, TAOCP 5.2.2, Algorithm M), as two int64 arrays.

    With ``outputs`` (a tuple of ranks), comparators that cannot affect those
    ranks are dropped (81 of 97 remain for the median of 20).
    """
    net = []
    t = max(n - 1, 0).bit_length()
    p = 1 << (t - 1) if n > 1 else 0
    while p > 0:
        q, r, d = 1 << (t - 1), 0, p
        while True:
            net.extend((i, i + d) for i in range(n - d) if i & p == r)
            if q == p:
                break
            d, q, r = q - p, q // 2, p
        p //= 2
    if outputs is not None:
        live, kept = set(outputs), []
        for i, j in reversed(net):
            if i in live or j in live:
                kept.append((i, j))
                live |= {i, j}
        net = kept[::-1]
    net = np.array(net, dtype=np.int64).reshape(-1, 2)
    return np.ascontiguousarray(net[:, 0]), np.ascontiguousarray(net[:, 1])


def statistic_network(n, mode):
    """The network the kernels run for statistic ``mode`` on n rows: pruned
    to the two middle ranks for MEDIAN, the full sort otherwise."""
    return sorting_network(n, ((n - 1) // 2, n // 2) if mode == MEDIAN else None)


def readonly(grads):
    """A C-contiguous read-only view of ``grads`` for the kernels: every
    caller passes the same array type (the trainer's gradients are read-only
    views), so each kernel is compiled once, and never writes its input."""
    v = np.ascontiguousarray(grads).view()
    v.flags.writeable = False
    return v


def _rows(grads, rows):
    if grads.ndim != 2 or grads.shape[0] < 1:
        raise ValueError(f"grads must be an (n, d) array with n >= 1, got shape {grads.shape}")
    n = grads.shape[0]
    if rows is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(rows)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise ValueError(f"rows must be a non-empty 1-d sequence of row indices, got {rows!r}")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"rows={idx.tolist()} must be in 0..{n - 1} (n={n})")
    return idx.astype(np.int64)


def _counts(mode, n, b, m):
    """Check b (values trimmed at each end) and m (values averaged) for the
    statistic ``mode`` of n values: the kernels do not check bounds."""
    b, m = integer("b", b), integer("m", m)
    if mode in (TRMEAN, AROUND_TRMEAN) and not 0 <= 2 * b < n:
        raise ValueError(f"trimming b={b} values at each end needs 0 <= 2b < n, got n={n}")
    if mode in (AROUND_MEDIAN, AROUND_TRMEAN) and not 1 <= m <= n:
        raise ValueError(f"averaging m={m} values needs 1 <= m <= n, got n={n}")
    return b, m


# ------------------------------------------------------------ numpy path

def _np_sorted(grads, rows):
    s = grads[rows]  # a copy
    np.copyto(s, np.inf, where=np.isnan(s))
    s.sort(axis=0)
    return s


def _np_median(s):
    n = s.shape[0]
    with np.errstate(invalid="ignore"):  # -inf + inf only if >= n/2 cells are non-finite
        return 0.5 * (s[(n - 1) // 2].astype(np.float64) + s[n // 2].astype(np.float64))


def _np_window_sum(s, lo, m):
    """Per column, float64 sum of s[lo:lo+m] in ascending order."""
    acc = np.zeros(s.shape[1], np.float64)
    with np.errstate(invalid="ignore"):
        for r in range(s.shape[0]):
            take = (lo <= r) & (r < lo + m)
            acc[take] += s[r, take]
    return acc


def _np_window_start(s, c, m):
    """Start of the m sorted values nearest c: the window [lo, lo+m) slides
    up while the value leaving it is strictly farther from c than the one
    entering; in a tie it stays, i.e. the lower value is kept."""
    lo = np.zeros(s.shape[1], np.intp)
    with np.errstate(invalid="ignore"):
        for r in range(s.shape[0] - m):
            lo += (c - s[r]) > (s[r + m] - c)
    return lo


def _numpy(grads, rows, mode, b, m):
    s = _np_sorted(grads, rows)
    n, d = s.shape
    trimmed = _np_window_sum(s, np.full(d, b, np.intp), n - 2 * b) / (n - 2 * b) \
        if mode in (TRMEAN, AROUND_TRMEAN) else None
    if mode == MEDIAN:
        out = _np_median(s)
    elif mode == TRMEAN:
        out = trimmed
    else:
        c = _np_median(s) if mode == AROUND_MEDIAN else trimmed
        out = _np_window_sum(s, _np_window_start(s, c, m), m) / m
    return out.astype(grads.dtype)


# ------------------------------------------------------------ numba path

if NUMBA_AVAILABLE:
    @numba.njit(cache=True)
    def load_block(x, rows, s, w, buf):
        """buf[r, :w] = x[rows[r], s:s+w] with NaN replaced by +inf."""
        for r in range(rows.shape[0]):
            src = x[rows[r], s:s + w]
            dst = buf[r]
            for k in range(w):
                v = src[k]
                dst[k] = v if v == v else np.inf

    @numba.njit(cache=True)
    def sort_block(buf, a, e, ni, nj, tmp):
        """Apply the comparators (ni[t], nj[t]) to columns a..e-1 of buf;
        tmp: scratch of >= e - a values."""
        for t in range(ni.shape[0]):
            ra = buf[ni[t], a:e]
            rb = buf[nj[t], a:e]
            # The minima go through tmp: written in place, LLVM turns
            # `ra[k] = p if p < q else q` into a masked store of q (vmaskmovps),
            # microcoded on AMD Zen: 3x slower than this extra pass.
            for k in range(e - a):
                p = ra[k]
                q = rb[k]
                tmp[k] = p if p < q else q
                rb[k] = p if p > q else q
            for k in range(e - a):
                ra[k] = tmp[k]

    @numba.njit(cache=True)
    def median_block(buf, a, e, c):
        """c[a:e] = median of each sorted column a..e-1 (float64)."""
        n = buf.shape[0]
        lo, hi, cs = buf[(n - 1) // 2, a:e], buf[n // 2, a:e], c[a:e]
        for k in range(e - a):  # slices from 0: loops the compiler vectorises
            cs[k] = 0.5 * (np.float64(lo[k]) + np.float64(hi[k]))

    @numba.njit(cache=True)
    def _window_sum(buf, a, e, lo, m, acc):
        """acc[k] = float64 sum of sorted rows lo[k] .. lo[k]+m-1 of column
        k, ascending, for k in a..e-1."""
        ls, accs = lo[a:e], acc[a:e]
        accs[:] = 0.0
        for r in range(buf.shape[0]):
            br = buf[r, a:e]
            for k in range(e - a):
                accs[k] += br[k] if (ls[k] <= r and r < ls[k] + m) else 0.0

    @numba.njit(cache=True)
    def _rows_sum(buf, a, e, r0, r1, acc):
        """acc[a:e] = float64 sum of sorted rows r0 .. r1-1, ascending."""
        accs = acc[a:e]
        accs[:] = 0.0
        for r in range(r0, r1):
            br = buf[r, a:e]
            for k in range(e - a):
                accs[k] += br[k]

    @numba.njit(cache=True)
    def _block(buf, a, e, mode, b, m, c, lo, acc):
        """Per sorted column a..e-1 of buf: the statistic ``mode``, into c."""
        n = buf.shape[0]
        cs, ls, accs = c[a:e], lo[a:e], acc[a:e]
        if mode == MEDIAN or mode == AROUND_MEDIAN:
            median_block(buf, a, e, c)
        else:
            _rows_sum(buf, a, e, b, n - b, acc)
            for k in range(e - a):
                cs[k] = accs[k] / (n - 2 * b)
        if mode == AROUND_MEDIAN or mode == AROUND_TRMEAN:
            ls[:] = 0
            for r in range(n - m):
                low, high = buf[r, a:e], buf[r + m, a:e]
                for k in range(e - a):
                    ls[k] += 1 if (cs[k] - low[k]) > (high[k] - cs[k]) else 0
            _window_sum(buf, a, e, lo, m, acc)
            for k in range(e - a):
                cs[k] = accs[k] / m

    @numba.njit(cache=True, parallel=True)
    def _kernel(x, rows, ni, nj, mode, b, m, out, bl, nchunks, workers):
        d = x.shape[1]
        nblocks = (d + bl - 1) // bl
        for worker in numba.prange(workers):  # scratch once per thread
            buf = np.empty((rows.shape[0], bl), x.dtype)
            tmp = np.empty(SUB, x.dtype)
            c = np.empty(bl, np.float64)
            acc = np.empty(bl, np.float64)
            lo = np.empty(bl, np.int64)
            for chunk in range(worker, nchunks, workers):
                for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
                    s = blk * bl
                    w = min(bl, d - s)
                    load_block(x, rows, s, w, buf)
                    for a in range(0, w, SUB):  # network passes on L1-sized slices
                        e = min(a + SUB, w)
                        sort_block(buf, a, e, ni, nj, tmp)
                        _block(buf, a, e, mode, b, m, c, lo, acc)
                    for k in range(w):
                        out[s + k] = c[k]

    @numba.njit(cache=True, parallel=True)
    def _row_sum_kernel(x, rows, out, bl, nchunks, workers):
        d = x.shape[1]
        nblocks = (d + bl - 1) // bl
        n = rows.shape[0]
        for worker in numba.prange(workers):
            acc = np.empty(bl, np.float64)
            for blk in range(worker * nblocks // workers, (worker + 1) * nblocks // workers):
                s = blk * bl
                w = min(bl, d - s)
                acc[:w] = 0.0
                r = 0
                while r + 4 <= n:  # four rows per sweep: fewer passes over acc
                    x0, x1 = x[rows[r], s:s + w], x[rows[r + 1], s:s + w]
                    x2, x3 = x[rows[r + 2], s:s + w], x[rows[r + 3], s:s + w]
                    for k in range(w):
                        acc[k] = (((acc[k] + x0[k]) + x1[k]) + x2[k]) + x3[k]
                    r += 4
                for r in range(r, n):
                    x0 = x[rows[r], s:s + w]
                    for k in range(w):
                        acc[k] += x0[k]
                for k in range(w):
                    out[s + k] = acc[k] / n


def _unrolled(n, dtype, mode, b, m):
    """Whether ``networks`` has a kernel for this call. Parameters outside
    their range take the buffer kernel, which keeps its behaviour for them."""
    if not networks.supported(n, dtype):
        return False
    whole = (int, np.integer)
    ok_b = mode not in (TRMEAN, AROUND_TRMEAN) or (isinstance(b, whole) and 0 <= 2 * b < n)
    ok_m = mode not in (AROUND_MEDIAN, AROUND_TRMEAN) or (isinstance(m, whole) and 0 < m <= n)
    return ok_b and ok_m


def _run(grads, rows, mode, b=0, m=0, backend=None):
    grads = np.asarray(grads)
    rows = _rows(grads, rows)
    b, m = _counts(mode, len(rows), b, m)
    if not fast_path(grads, backend) or len(rows) < 2:
        return _numpy(grads, rows, mode, b, m)
    n = len(rows)
    x = readonly(grads)
    out = np.empty(x.shape[1], x.dtype)
    if _unrolled(n, x.dtype, mode, b, m):
        b = int(b) if mode in (TRMEAN, AROUND_TRMEAN) else 0  # unused ones: fewer kernels
        m = int(m) if mode in (AROUND_MEDIAN, AROUND_TRMEAN) else 0
        nchunks = chunks(x.shape[1], STREAM_COLS)
        networks.kernel(n, mode, b, m)(x, rows, out, STREAM_COLS, nchunks, workers(nchunks))
        return out
    ni, nj = statistic_network(n, mode)
    bl = block_cols(n, x.itemsize)
    nchunks = chunks(x.shape[1], bl)
    _kernel(x, rows, ni, nj, mode, b, m, out, bl, nchunks, workers(nchunks))
    return out


def median(grads, rows=None, backend=None):
    """Coordinate-wise median; for even n the mean of the two middle values."""
    return _run(grads, rows, MEDIAN, backend=backend)


def trimmed_mean(grads, b, rows=None, backend=None):
    """Coordinate-wise mean after dropping the b smallest and b largest values."""
    return _run(grads, rows, TRMEAN, b=b, backend=backend)


def mean_around(grads, m, centre="median", b=0, rows=None, backend=None):
    """Coordinate-wise mean of the m values nearest a centre: the median
    ("median": MeaMed, Bulyan) or the b-trimmed mean ("trmean": Phocas).
    Ties in distance keep the lower value."""
    modes = {"median": AROUND_MEDIAN, "trmean": AROUND_TRMEAN}
    if centre not in modes:
        raise ValueError(f"centre must be 'median' or 'trmean', got {centre!r}")
    mode = modes[centre]
    return _run(grads, rows, mode, b=b, m=m, backend=backend)


def row_sum_mean(grads, rows=None, backend=None):
    """Mean of the rows (all, or those listed), summed in float64 in row
    order, rounded once to the input dtype (NaN and inf propagate)."""
    grads = np.asarray(grads)
    rows = _rows(grads, rows)
    if not fast_path(grads, backend):
        with np.errstate(invalid="ignore", over="ignore"):
            sub = grads if len(rows) == grads.shape[0] and (rows == np.arange(len(rows))).all() \
                else grads[rows]
            return sub.mean(axis=0, dtype=np.float64).astype(grads.dtype)
    x = readonly(grads)
    out = np.empty(x.shape[1], x.dtype)
    bl = STREAM_COLS
    nchunks = chunks(x.shape[1], bl)
    _row_sum_kernel(x, rows, out, bl, nchunks, workers(nchunks))
    return out
