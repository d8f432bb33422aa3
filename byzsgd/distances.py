"""Pairwise distances and centred Gram matrices of the rows of an
``(n, d)`` array, plus the affine combination that maps Gram-space
coefficients back to a vector.

Squared distances are sums of squared row differences, never
``|a|^2 + |b|^2 - 2ab`` on raw rows: that shortcut cancels catastrophically
when rows are close and overflows when a few rows are scaled by 1e20
(Flower's Multi-Krum then returns NaN). The compiled kernel works on slices
of 512 columns in the input's precision and adds the slice sums in float64:
for float32 input the relative error of a distance is below ~3e-6 (16-lane
sums of 32 terms; typically 1e-7), squared differences beyond the float32
range (rows scaled by 1e20) give +inf, and the honest distances are
untouched by them. float64 input is summed in float64 (the numpy fallback
always is). Distances from a row holding NaN or +-inf are +inf (0 to
itself).

Gram matrices (GeoMed, centred clipping) are taken in float64 after
centring on the coordinate-wise median (rounded to the input's dtype), which
keeps ``G_ii + G_jj - 2 G_ij`` accurate for the honest rows.

numba kernels work on blocks of columns in parallel and sum the per-block
results in a fixed order (results do not depend on the thread count); the
numpy path (input other than float32, BYZSGD_NO_NUMBA=1 or
``backend="numpy"``) agrees with them to rounding.
"""
import numpy as np

from . import coordinate
from .coordinate import NUMBA_AVAILABLE, SUB, _rows, block_cols, chunks, fast_path

SLICE = 512  # columns per slice of the distance kernel (float32: 32 terms per lane)
NP_BLOCK = 4096  # columns per step of the numpy fallback

if NUMBA_AVAILABLE:
    import numba

__all__ = ["sq_distances", "centred_gram", "affine_rows"]


def _finish(D):
    """Symmetrise; pairs with a non-finite row or an overflow become +inf."""
    D = D + D.T
    D[~np.isfinite(D)] = np.inf
    np.fill_diagonal(D, 0.0)
    return D


# ------------------------------------------------------------ numpy path

def _np_sq_distances(grads):
    """As the kernel: in float64, but a float32 input's sum over one of the
    kernel's slices (SLICE columns) beyond the float32 range is +inf, as it
    is in the kernel, so that Medoid's and Krum's scores count it as an
    infinite term, not as a 1e40 that swamps the honest ones."""
    n, d = grads.shape
    D = np.zeros((n, n), np.float64)
    limit = np.finfo(grads.dtype).max if grads.dtype == np.float32 else np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, d, NP_BLOCK):   # NP_BLOCK: a multiple of SLICE
            x = grads[:, start:start + NP_BLOCK].astype(np.float64)
            pad = -x.shape[1] % SLICE
            if pad:
                x = np.pad(x, ((0, 0), (0, pad)))
            for i in range(n - 1):
                diff = x[i + 1:] - x[i]
                sq = (diff * diff).reshape(n - 1 - i, -1, SLICE).sum(axis=2)
                sq[sq > limit] = np.inf
                D[i, i + 1:] += sq.sum(axis=1)
    return D


def _np_centred_gram(grads, rows):
    c = coordinate.median(grads, rows=rows, backend="numpy")
    n, d = len(rows), grads.shape[1]
    G = np.zeros((n, n), np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, d, NP_BLOCK):
            y = grads[rows, start:start + NP_BLOCK].astype(np.float64) - c[start:start + NP_BLOCK]
            G += y @ y.T
    return c, G


# ------------------------------------------------------------ numba path

if NUMBA_AVAILABLE:
    @numba.njit(cache=True)
    def _put(P, i, j, v, gram):
        """P[i, j] += v if (i, j) is a wanted pair of a tile: inside P and
        i < j (i <= j with ``gram``)."""
        n = P.shape[0]
        if i < n and j < n and (j > i or (gram and j == i)):
            P[i, j] += v

    @numba.njit(cache=True, fastmath={"reassoc", "contract"})
    def _pair_sums(buf, a, e, P, gram, zero, i, j0, back):
        """For columns a..e-1 of buf and rows i, i + 1 against rows j >= j0:
        P[r, j] += sum_k (buf[r,k] - buf[j,k])^2 for r < j, or with ``gram``
        the inner products for r <= j, computed in the type of ``zero``
        (buf's dtype), added to float64 P.

        Works on tiles of 2 x 4 row pairs, eight independent sums sharing six
        loads per column; pairs of a tile outside the wanted triangle are
        computed and dropped; with ``back`` the tiles run from the last j
        down. (reassoc only lets the sums over k be vectorised; no value is
        assumed finite.)"""
        n = buf.shape[0]
        u0, u1 = buf[i, a:e], buf[min(i + 1, n - 1), a:e]
        last = j0 + (n - 1 - j0) // 4 * 4
        for t4 in range(j0, n, 4):
            j = last - (t4 - j0) if back else t4
            v0, v1 = buf[j, a:e], buf[min(j + 1, n - 1), a:e]
            v2, v3 = buf[min(j + 2, n - 1), a:e], buf[min(j + 3, n - 1), a:e]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            if gram:
                for k in range(e - a):
                    x0, x1 = u0[k], u1[k]
                    y0, y1, y2, y3 = v0[k], v1[k], v2[k], v3[k]
                    s00 += x0 * y0
                    s01 += x0 * y1
                    s02 += x0 * y2
                    s03 += x0 * y3
                    s10 += x1 * y0
                    s11 += x1 * y1
                    s12 += x1 * y2
                    s13 += x1 * y3
            else:
                for k in range(e - a):
                    x0, x1 = u0[k], u1[k]
                    y0, y1, y2, y3 = v0[k], v1[k], v2[k], v3[k]
                    t = x0 - y0
                    s00 += t * t
                    t = x0 - y1
                    s01 += t * t
                    t = x0 - y2
                    s02 += t * t
                    t = x0 - y3
                    s03 += t * t
                    t = x1 - y0
                    s10 += t * t
                    t = x1 - y1
                    s11 += t * t
                    t = x1 - y2
                    s12 += t * t
                    t = x1 - y3
                    s13 += t * t
            # no scratch array for the eight sums: an allocation per call
            # cost as much as a tenth of the kernel
            _put(P, i, j, s00, gram)
            _put(P, i, j + 1, s01, gram)
            _put(P, i, j + 2, s02, gram)
            _put(P, i, j + 3, s03, gram)
            _put(P, i + 1, j, s10, gram)
            _put(P, i + 1, j + 1, s11, gram)
            _put(P, i + 1, j + 2, s12, gram)
            _put(P, i + 1, j + 3, s13, gram)

    @numba.njit(cache=True, fastmath={"reassoc", "contract"})
    def _within4(buf, a, e, P, gram, zero, i):
        """The pairs among rows i..i+3 over columns a..e-1 (six, or ten with
        the diagonal for ``gram``), each summed as in _pair_sums, whose tiles
        would compute 16 sums here to keep them."""
        u0, u1, u2, u3 = buf[i, a:e], buf[i + 1, a:e], buf[i + 2, a:e], buf[i + 3, a:e]
        s00 = s01 = s02 = s03 = s11 = s12 = s13 = s22 = s23 = s33 = zero
        if gram:
            for k in range(e - a):
                x0, x1, x2, x3 = u0[k], u1[k], u2[k], u3[k]
                s00 += x0 * x0
                s01 += x0 * x1
                s02 += x0 * x2
                s03 += x0 * x3
                s11 += x1 * x1
                s12 += x1 * x2
                s13 += x1 * x3
                s22 += x2 * x2
                s23 += x2 * x3
                s33 += x3 * x3
            P[i, i] += s00
            P[i + 1, i + 1] += s11
            P[i + 2, i + 2] += s22
            P[i + 3, i + 3] += s33
        else:
            for k in range(e - a):
                x0, x1, x2, x3 = u0[k], u1[k], u2[k], u3[k]
                t = x0 - x1
                s01 += t * t
                t = x0 - x2
                s02 += t * t
                t = x0 - x3
                s03 += t * t
                t = x1 - x2
                s12 += t * t
                t = x1 - x3
                s13 += t * t
                t = x2 - x3
                s23 += t * t
        P[i, i + 1] += s01
        P[i, i + 2] += s02
        P[i, i + 3] += s03
        P[i + 1, i + 2] += s12
        P[i + 1, i + 3] += s13
        P[i + 2, i + 3] += s23

    @numba.njit(cache=True)
    def _triangle_pairs(buf, a, e, P, gram, zero, i):
        """The pairs of rows i..n-1 among themselves over columns a..e-1, by
        tiles along the triangle (some sums computed and dropped): the whole
        schedule before _slice_pairs, now its last n % 4 rows."""
        for h in range(i, buf.shape[0], 2):
            _pair_sums(buf, a, e, P, gram, zero, h, h, False)

    @numba.njit(cache=True)
    def _slice_pairs(buf, a, e, P, gram, zero):
        """Every pair of _pair_sums over columns a..e-1, in fewer sums: rows
        in groups of four, the pairs within a group by _within4, those
        between groups by whole 2 x 4 tiles, the last n % 4 rows by
        _triangle_pairs. For n = 20 that is 190 sums (210 for ``gram``)
        against 240 when all tiles run along the triangle; each pair's sum
        is the same, bit for bit (tests/test_coordinate.py). The second strip
        of a group runs backwards, starting on the rows the first ended on,
        which are still in cache (3-4% faster, measured)."""
        n = buf.shape[0]
        i = 0
        while i + 4 <= n:
            _within4(buf, a, e, P, gram, zero, i)
            _pair_sums(buf, a, e, P, gram, zero, i, i + 4, False)
            _pair_sums(buf, a, e, P, gram, zero, i + 2, i + 4, True)
            i += 4
        _triangle_pairs(buf, a, e, P, gram, zero, i)

    @numba.njit(cache=True, parallel=True)
    def _sq_kernel(x, P, bl, nchunks, zero):
        d = x.shape[1]
        nblocks = (d + bl - 1) // bl
        for chunk in numba.prange(nchunks):
            for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
                s = blk * bl
                e = min(s + bl, d)
                for a in range(s, e, SLICE):  # slices of all rows stay in L1/L2
                    _slice_pairs(x, a, min(a + SLICE, e), P[chunk], False, zero)

    @numba.njit(cache=True, parallel=True)
    def _gram_kernel(x, rows, c, P, bl, nchunks, workers):
        n = rows.shape[0]
        d = x.shape[1]
        nblocks = (d + bl - 1) // bl
        for worker in numba.prange(workers):  # scratch once per thread
            ybuf = np.empty((n, SUB), np.float64)
            for chunk in range(worker, nchunks, workers):  # P[chunk]: fixed blocks
                for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
                    s = blk * bl
                    w = min(bl, d - s)
                    for a in range(0, w, SUB):
                        e = min(a + SUB, w)
                        cs = c[s + a:s + e]
                        for r in range(n):
                            src = x[rows[r], s + a:s + e]
                            dst = ybuf[r]
                            for k in range(e - a):
                                dst[k] = np.float64(src[k]) - np.float64(cs[k])
                        _slice_pairs(ybuf, 0, e - a, P[chunk], True, 0.0)

    @numba.njit(cache=True, parallel=True)
    def _affine_kernel(x, rows, alpha, c, out, bl, workers):
        n = rows.shape[0]
        d = x.shape[1]
        nblocks = (d + bl - 1) // bl
        for worker in numba.prange(workers):
            acc = np.empty(bl, np.float64)
            cb = np.empty(bl, np.float64)
            for blk in range(worker * nblocks // workers, (worker + 1) * nblocks // workers):
                s = blk * bl
                w = min(bl, d - s)
                acc[:w] = 0.0
                for k in range(w):
                    cb[k] = c[s + k]
                r = 0
                while r + 4 <= n:  # four rows per sweep, summed in row order
                    a0, a1, a2, a3 = alpha[r], alpha[r + 1], alpha[r + 2], alpha[r + 3]
                    x0, x1 = x[rows[r], s:s + w], x[rows[r + 1], s:s + w]
                    x2, x3 = x[rows[r + 2], s:s + w], x[rows[r + 3], s:s + w]
                    for k in range(w):
                        ck = cb[k]
                        acc[k] = (((acc[k] + a0 * (np.float64(x0[k]) - ck))
                                   + a1 * (np.float64(x1[k]) - ck))
                                  + a2 * (np.float64(x2[k]) - ck)) + a3 * (np.float64(x3[k]) - ck)
                    r += 4
                for r in range(r, n):
                    a0 = alpha[r]
                    x0 = x[rows[r], s:s + w]
                    for k in range(w):
                        acc[k] += a0 * (np.float64(x0[k]) - cb[k])
                for k in range(w):
                    out[s + k] = cb[k] + acc[k]


# ------------------------------------------------------------ public API

def sq_distances(grads, backend=None):
    """(n, n) float64 matrix of squared Euclidean distances between rows."""
    grads = np.asarray(grads)
    if not fast_path(grads, backend):
        return _finish(_np_sq_distances(grads))
    x = coordinate.readonly(grads)
    bl = coordinate.STREAM_COLS
    nchunks = chunks(x.shape[1], bl)
    P = np.zeros((nchunks,) + (x.shape[0],) * 2, np.float64)
    coordinate.workers(nchunks)
    _sq_kernel(x, P, bl, nchunks, x.dtype.type(0))
    with np.errstate(invalid="ignore", over="ignore"):
        return _finish(_ordered_sum(P))


def _ordered_sum(P):
    acc = P[0].copy()
    for p in P[1:]:
        acc += p
    return acc


def centred_gram(grads, rows=None, backend=None):
    """Centre c (coordinate-wise median of the rows, in grads' dtype) and the
    (n, n) float64 Gram matrix of the rows minus c."""
    grads = np.asarray(grads)
    rows = _rows(grads, rows)
    if not fast_path(grads, backend) or len(rows) < 2:
        return _np_centred_gram(grads, rows)
    x = coordinate.readonly(grads)
    n = len(rows)
    # the median kernel first (unrolled networks are several times faster
    # than sorting inside this pass), then the products on the columns again
    c = coordinate.median(x, rows=rows, backend=backend)
    bl = block_cols(n, x.itemsize)  # as before the split: blocks fix the order of P's sums
    nchunks = chunks(x.shape[1], bl)
    P = np.zeros((nchunks, n, n), np.float64)
    _gram_kernel(x, rows, c, P, bl, nchunks, coordinate.workers(nchunks))
    with np.errstate(invalid="ignore", over="ignore"):
        G = _ordered_sum(P)
    G = np.triu(G) + np.triu(G, 1).T
    return c, G


def affine_rows(grads, alpha, c, rows=None, backend=None):
    """c + sum_r alpha[r] (grads[rows[r]] - c), in float64, in grads' dtype."""
    grads = np.asarray(grads)
    rows = _rows(grads, rows)
    alpha = np.asarray(alpha, np.float64)
    if not fast_path(grads, backend):
        acc = np.zeros(grads.shape[1], np.float64)
        cf = c.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            for r, a in zip(rows, alpha):
                if a != 0.0:
                    acc += a * (grads[r].astype(np.float64) - cf)
            return (cf + acc).astype(grads.dtype)
    x = coordinate.readonly(grads)
    out = np.empty(x.shape[1], x.dtype)
    keep = alpha != 0.0  # rows without weight are not read
    bl = coordinate.STREAM_COLS
    _affine_kernel(x, rows[keep], alpha[keep], np.ascontiguousarray(c, dtype=x.dtype), out,
                   bl, coordinate.workers(chunks(x.shape[1], bl)))
    return out
