"""Failure models: WHICH cells of the (n, d) gradient matrix are Byzantine.

A failure model is a small function ``model(n, d, q, rng, **params) -> Cells``
registered by name; attacks decide WHAT the chosen cells become. Models:

* ``classic``     -- q whole rows (Definition 1, Figure 1a).
* ``generalized`` -- for each coordinate, q of its n cells, chosen
  independently of the other coordinates (Definition 4, Figure 1b).
* ``sharded``     -- the d coordinates split into ``servers`` contiguous
  shards (like ``np.array_split``); on the ``faulty`` servers' coordinates,
  q cells per coordinate (all n when q == n) (Section 5.5).

``Cells`` avoid dense (n, d) boolean masks, which at d = 2.43M and n = 20 cost
49 MB per round: ``Rows`` stores row indices, ``PerColumn`` a small-integer
(q, m) array of rows for m columns, ``Sparse`` explicit (row, col) pairs.
All three share one interface (``shape``, ``count``, ``take``, ``put``,
``expand``, ``column_counts``, ``locate``, ``mask``); values exchanged with
``take``/``put`` are laid out in ``shape`` (the cells' canonical layout).
Pure numpy; no mxnet.
"""
import numpy as np

from .checks import integer
from .registry import Registry

__all__ = ["REGISTRY", "register", "names", "get", "resolve", "Cells", "Rows",
           "PerColumn", "Sparse", "classic", "generalized", "sharded", "thin",
           "shard_bounds", "check_q"]

#: model(n, d, q, rng, **params) -> Cells
REGISTRY = Registry("failure model", data_args=4)
register = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get
resolve = REGISTRY.resolve


# --------------------------------------------------------------------------
# Cell sets
# --------------------------------------------------------------------------
class Cells:
    """A set of cells of an (n, d) matrix; subclasses fix the layout."""

    n = d = 0
    shape = (0,)

    @property
    def count(self):
        """Number of cells in the set."""
        return int(np.prod(self.shape))

    def most_per_column(self):
        """The largest number of cells in one column (at most q: Definition 4)."""
        return int(self.column_counts().max(initial=0))

    def mask(self):
        """Dense (n, d) boolean mask (for tests and small problems only)."""
        m = np.zeros((self.n, self.d), dtype=bool)
        self.put(m, True)
        return m

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, d={self.d}, count={self.count})"


class Rows(Cells):
    """Whole rows ``rows`` (classic model); layout (len(rows), d)."""

    def __init__(self, rows, n, d):
        self.rows = np.asarray(rows, dtype=np.intp)
        # O(q): a user's model listing a row twice would count it twice as Byzantine
        if len(np.unique(self.rows)) != len(self.rows) or \
                (len(self.rows) and not 0 <= self.rows.min() <= self.rows.max() < n):
            raise ValueError(f"rows={self.rows.tolist()} must be distinct, in 0..{n - 1}")
        self.n, self.d = n, d
        self.shape = (len(self.rows), d)

    def most_per_column(self):
        return len(self.rows)

    def take(self, a):
        return a[self.rows]

    def put(self, out, values):
        out[self.rows] = values

    def expand(self, per_column):
        return np.broadcast_to(per_column, self.shape)

    def column_counts(self):
        return np.full(self.d, len(self.rows), dtype=np.intp)

    def locate(self, flat):
        flat = np.asarray(flat, dtype=np.intp)
        return self.rows[flat // self.d], flat % self.d


class PerColumn(Cells):
    """Cells ``(rows[k, j], cols[j])``: per listed column its own rows.

    ``rows`` is (k, m) of small unsigned ints (or a broadcast view when every
    row of those columns is taken); ``cols`` (m,) distinct column indices.
    """

    def __init__(self, rows, cols, n, d):
        self.rows = rows
        self.cols = np.asarray(cols, dtype=np.intp)
        self.n, self.d = n, d
        self.shape = tuple(rows.shape)

    def take(self, a):
        return a[self.rows, self.cols]

    def put(self, out, values):
        out[self.rows, self.cols] = values

    def expand(self, per_column):
        return np.broadcast_to(per_column[self.cols], self.shape)

    def most_per_column(self):
        return self.shape[0] if self.shape[1] else 0

    def column_counts(self):
        c = np.zeros(self.d, dtype=np.intp)
        c[self.cols] = self.shape[0]
        return c

    def locate(self, flat):
        flat = np.asarray(flat, dtype=np.intp)
        r, c = np.divmod(flat, max(self.shape[1], 1))
        return self.rows[r, c].astype(np.intp), self.cols[c]


class Sparse(Cells):
    """Explicit distinct cells ``(rows[k], cols[k])``; layout (k,)."""

    def __init__(self, rows, cols, n, d):
        self.rows = np.asarray(rows, dtype=np.intp)
        self.cols = np.asarray(cols, dtype=np.intp)
        self.n, self.d = n, d
        self.shape = (len(self.rows),)

    def take(self, a):
        return a[self.rows, self.cols]

    def put(self, out, values):
        out[self.rows, self.cols] = values

    def expand(self, per_column):
        return per_column[self.cols]

    def column_counts(self):
        return np.bincount(self.cols, minlength=self.d)

    def locate(self, flat):
        flat = np.asarray(flat, dtype=np.intp)
        return self.rows[flat], self.cols[flat]


# --------------------------------------------------------------------------
# Checks and sampling helpers
# --------------------------------------------------------------------------
def check_q(n, q, what="failure model", name="q"):
    """Return q as an int after checking 0 <= q <= n (ValueError otherwise,
    naming ``what`` and the parameter ``name``)."""
    q = integer(name, q, what)
    if not 0 <= q <= n:
        raise ValueError(f"{what}: {name}={q} Byzantine cells per coordinate is "
                         f"outside 0..n={n}")
    return q


def _check_shape(n, d):
    n, d = integer("n", n), integer("d", d)
    if n < 1 or d < 0:
        raise ValueError(f"need n >= 1 workers and d >= 0 coordinates, got n={n}, d={d}")
    return n, d


def _pick(fixed, count, total, rng, what):
    """``count`` distinct indices of ``total``: drawn from rng (fixed=False),
    the first ``count`` (fixed=True), or the explicit sequence ``fixed``."""
    if fixed is False:
        return np.sort(rng.choice(total, size=count, replace=False))
    if fixed is True:
        return np.arange(count)
    idx = np.asarray(fixed, dtype=np.intp).ravel()
    if len(idx) != count or len(np.unique(idx)) != count or (
            count and (idx.min() < 0 or idx.max() >= total)):
        raise ValueError(f"fixed={fixed!r} must be {count} distinct {what} "
                         f"indices in 0..{total - 1}")
    return np.sort(idx)


def _rows_per_column(n, q, m, rng):
    """(q, m) array: per column, q distinct rows of n, uniformly at random.

    Robert Floyd's sampling algorithm run on all m columns at once: q integer
    draws of size m and O(q^2 m) comparisons, no (n, m) random keys."""
    dtype = np.min_scalar_type(max(n - 1, 0))
    rows = np.empty((q, m), dtype=dtype)
    for k, j in enumerate(range(n - q, n)):
        t = rng.integers(0, j + 1, size=m, dtype=dtype)
        taken = (rows[:k] == t).any(axis=0)
        rows[k] = np.where(taken, dtype.type(j), t)
    return rows


def _all_rows(n, m):
    return np.broadcast_to(np.arange(n, dtype=np.min_scalar_type(max(n - 1, 0)))[:, None], (n, m))


def shard_bounds(d, servers):
    """(servers + 1,) boundaries of ``np.array_split(range(d), servers)``:
    shard s holds columns ``bounds[s]:bounds[s + 1]``."""
    base, extra = divmod(d, servers)
    sizes = np.full(servers, base, dtype=np.intp)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


# --------------------------------------------------------------------------
# Failure models
# --------------------------------------------------------------------------
@register("classic")
def classic(n, d, q, rng, fixed=False):
    """Classic model (Definition 1): q whole rows (workers) are Byzantine.

    fixed : False (default) draws q distinct rows uniformly from ``rng`` every
        call, because "indices of Byzantine workers can change throughout
        different rounds" (Section 3); True uses rows 0..q-1 every round; a
        sequence of q row indices uses exactly those rows.
    """
    n, d = _check_shape(n, d)
    q = check_q(n, q, "classic")
    return Rows(_pick(fixed, q, n, rng, "row"), n, d)


@register("generalized")
def generalized(n, d, q, rng, dims=None):
    """Generalized model (Definition 4, Figure 1b): for each coordinate j,
    q of its n cells are Byzantine, drawn uniformly and independently of the
    other coordinates.

    dims : only the first ``dims`` coordinates are attacked (None: all d);
        the bit-flip experiment (Section 5.4) attacks the first 1000.
    """
    n, d = _check_shape(n, d)
    q = check_q(n, q, "generalized")
    m = d if dims is None else integer("dims", dims)
    if not 0 <= m <= d:
        raise ValueError(f"generalized: dims={m} is outside 0..d={d}")
    rows = _all_rows(n, m) if q == n else _rows_per_column(n, q, m, rng)
    return PerColumn(rows, np.arange(m), n, d)


@register("sharded")
def sharded(n, d, q, rng, servers=20, faulty=1, fixed=False):
    """Multi-server model (Section 5.5): the d coordinates are split evenly
    into ``servers`` contiguous shards (as ``np.array_split``), one per
    parameter server; on each coordinate held by a faulty server q of the n
    received values are Byzantine (per coordinate, as ``generalized``;
    q == n: all of them, the gambler's setting).

    fixed : which servers are faulty. False (default): ``faulty`` distinct
        servers drawn from ``rng`` every round; True: servers 0..faulty-1;
        a sequence of ``faulty`` server indices: exactly those. For one
        server chosen at random per run, draw it from the run's seed and pass
        it as ``fixed=(k,)``.
    """
    n, d = _check_shape(n, d)
    q = check_q(n, q, "sharded")
    servers, faulty = integer("servers", servers), integer("faulty", faulty)
    if not 1 <= servers <= max(d, 1):
        raise ValueError(f"sharded: servers={servers} must be in 1..d={d} "
                         f"(every server holds at least one coordinate)")
    if not 0 <= faulty <= servers:
        raise ValueError(f"sharded: faulty={faulty} is outside 0..servers={servers}")
    bounds = shard_bounds(d, servers)
    bad = _pick(fixed, faulty, servers, rng, "server")
    cols = np.concatenate([np.arange(bounds[s], bounds[s + 1]) for s in bad]
                          + [np.empty(0, np.intp)])
    m = len(cols)
    rows = _all_rows(n, m) if q == n else _rows_per_column(n, q, m, rng)
    cells = PerColumn(rows, cols, n, d)
    cells.servers = bad
    return cells


def thin(cells, prob, rng):
    """Keep each cell of ``cells`` independently with probability ``prob``.

    Exact in distribution but cheap: the number kept is drawn as
    Binomial(count, prob), then that many distinct cells uniformly (given the
    count, Bernoulli selections are a uniform subset). Returns ``Sparse``.
    """
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob={prob} is outside [0, 1]")
    total = cells.count
    k = int(rng.binomial(total, prob)) if total else 0
    flat = np.sort(rng.choice(total, size=k, replace=False)) if k else np.empty(0, np.intp)
    rows, cols = cells.locate(flat)
    return Sparse(rows, cols, cells.n, cells.d)
