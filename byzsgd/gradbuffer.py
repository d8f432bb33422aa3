"""The (n, d) float32 matrix of worker gradients, shared with MXNet.

Row w holds worker w's gradient over ALL trainable parameters concatenated
(in the trainer's parameter order), so vector rules (Krum, GeoMed, Medoid)
see whole gradients. The numpy matrix and an MXNet NDArray share one block
of memory (``mx.nd.from_numpy(..., zero_copy=True)`` on a view, which leaves
the numpy matrix itself writable), and ``views[w][i]`` is an NDArray view of
parameter i's slice of row w, shaped like the parameter. Binding those views
as gradient buffers (``autograd.mark_variables``) makes ``backward()`` write
a worker's gradient straight into its row; ``copy_row`` is the fallback that
copies from any NDArray (other devices, graphs hybridized with
static_alloc=True and static_shape=True, which ignore re-bound buffers).

Synchronisation: MXNet runs operators asynchronously. Read or write the
numpy matrix only after ``mx.nd.waitall()`` (or with no operator pending on
the views). MXNet glue only; the maths lives in aggregators/attacks.

:class:`WorkerGrads` fills the matrix, one row per worker, either from
simulated workers on one context (``enter(w)`` / ``exit(...)`` around each
worker's backward, then ``collect()``) or from one context per worker
(``collect()`` copies each context's gradients into its row).
"""
import mxnet as mx
import numpy as np
from mxnet import autograd

__all__ = ["GradMatrix", "WorkerGrads", "SENTINEL"]

#: A quiet NaN with an unusual payload: arithmetic never produces it, so a
#: cell still holding it after backward() was not written by backward().
SENTINEL = np.array([0x7FC0BEEF], np.uint32).view(np.float32)
_SENTINEL_BITS = SENTINEL.view(np.uint32)[0]


class GradMatrix:
    """(n, d) float32 gradient matrix with per-worker, per-parameter views.

    Parameters
    ----------
    n : int
        Number of workers (rows).
    shapes : list of tuple
        Shapes of the trainable parameters, in order.
    """

    def __init__(self, n, shapes):
        if n < 1:
            raise ValueError(f"GradMatrix needs n >= 1 rows, got n={n}")
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.n, self.d = n, int(self.offsets[-1])
        if self.d == 0:
            raise ValueError("GradMatrix needs at least one parameter with d > 0")
        self.array = np.zeros((n, self.d), np.float32)
        # from_numpy marks its argument read-only; give it a view so that
        # self.array stays writable. The NDArray keeps the view (and so the
        # memory) alive.
        self._nd = mx.nd.from_numpy(self.array.view(), zero_copy=True)
        self.views = [self._row_views(self._nd[w]) for w in range(n)]
        # the aggregate goes out through one more shared buffer (see scatter)
        self._agg = np.zeros(self.d, np.float32)
        self._agg_views = self._row_views(mx.nd.from_numpy(self._agg.view(), zero_copy=True))
        # first cell of each non-empty parameter slice: where sentinels go
        self._first = np.array([o for o, s in zip(self.offsets[:-1], self.sizes) if s],
                               np.int64)
        self._first_param = [i for i, s in enumerate(self.sizes) if s]

    def _row_views(self, row):
        return [row[int(o):int(o) + s].reshape(shape)
                for o, s, shape in zip(self.offsets[:-1], self.sizes, self.shapes)]

    def slice(self, i):
        """Column slice of parameter i."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def matches(self, shapes):
        """True if ``shapes`` is the layout this matrix was built for."""
        return [tuple(s) for s in shapes] == self.shapes

    # -- sentinels: detect gradients that did not land where they should ---
    def mark_row(self, w):
        """Put the sentinel in the first cell of each parameter slice of row w."""
        self.array[w, self._first] = SENTINEL[0]

    def unwritten(self, w=None):
        """Parameter indices (or rows, if w is None) whose sentinel survived."""
        bits = self.array.view(np.uint32)
        if w is not None:
            hit = bits[w, self._first] == _SENTINEL_BITS
            return [self._first_param[k] for k in np.flatnonzero(hit)]
        return np.flatnonzero((bits[:, self._first] == _SENTINEL_BITS).any(axis=1)).tolist()

    @staticmethod
    def mark_array(arr):
        """Put the sentinel in the first cell of NDArray ``arr`` (synchronous)."""
        if arr.size:
            arr.reshape((-1,))[0:1] = SENTINEL

    @staticmethod
    def was_written(arr):
        """False if the first cell of NDArray ``arr`` still holds the sentinel."""
        if not arr.size:
            return True
        return arr.reshape((-1,))[0:1].asnumpy().view(np.uint32)[0] != _SENTINEL_BITS

    # -- moving gradients in and out ---------------------------------------
    def copy_row(self, w, grads, params=None):
        """Enqueue copies of NDArrays ``grads`` (one per parameter, any
        device) into row w; only parameters in ``params`` if given."""
        views = self.views[w]
        for i in range(len(views)) if params is None else params:
            grads[i].copyto(views[i])

    def zero(self, w, i):
        """Zero parameter i's slice of row w (its gradient was not computed)."""
        self.array[w, self.slice(i)] = 0.0

    def scatter(self, vec, targets):
        """Copy the (d,) vector ``vec`` into every list of NDArrays in
        ``targets`` (one list per context, one NDArray per parameter).

        ``vec`` is written once into a buffer shared with MXNet, which then
        copies it asynchronously: a synchronous ``arr[:] = numpy`` per
        parameter cost ~3 ms a round on the MLP. The buffer is written again
        only after the next collect(), which waits for MXNet to finish.
        """
        self._agg[:] = vec
        for arrays in targets:
            for view, arr in zip(self._agg_views, arrays):
                view.copyto(arr)


class WorkerGrads:
    """Collects n workers' gradients of ``params`` into a GradMatrix.

    Simulated workers (one context): the first worker block ever runs on the
    stock ``param.grad()`` buffers and is copied into its row, so a
    ``static_alloc`` graph -- which keeps the gradient buffers bound at its
    first training pass and ignores later ``mark_variables`` -- captures the
    stock buffers. The next block re-binds the gradients to its row (zero
    copy) and waits to check, with sentinels, where backward() wrote: into
    the row (zero copy from then on, re-checked lazily each round) or into
    the stock buffers (a static graph: copy them, copy path from then on).
    Gradients that land anywhere else raise RuntimeError, never go unseen.

    Parameters
    ----------
    params : list of Parameter
        Trainable parameters (grad_req='write', dense float32), in order.
    contexts : list of Context
        Their contexts; with several, context w is worker w.
    n : int
        Number of workers.
    zero_copy : bool
        Allow the zero-copy path (needs a single cpu(0) context).
    """

    def __init__(self, params, contexts, n, zero_copy=True):
        self.params, self.contexts, self.n = params, contexts, n
        self.matrix = None          # built once the parameters are initialised
        self.state = "untested" if zero_copy and contexts == [mx.cpu(0)] else "off"
        self.rounds = 0             # rounds collected by this object
        self._first_block = True
        self._reqs = ["write"] * len(params)   # checked in ready()
        self.reset()

    def reset(self):
        """Start a new round: no worker reported, no parameter used."""
        self.reported = np.zeros(self.n, bool)
        self.used = np.zeros(len(self.params), bool)
        self._pending = None   # a FusedWorkers whose gradients are not in the matrix yet

    def datas(self, k=0):
        ctx = self.contexts[k]
        return [p.data(ctx) for p in self.params]

    def stock(self, k=0):
        ctx = self.contexts[k]
        return [p.grad(ctx) for p in self.params]

    def ready(self, require=False):
        """Build the matrix once all parameters are initialised."""
        if self.matrix is not None:
            return True
        if any(p._data is None for p in self.params):
            if require:
                names = [p.name for p in self.params if p._data is None]
                raise RuntimeError(f"parameters {names} are not initialised: run a "
                                   "forward pass (net.initialize(); net(x)) first")
            return False
        for p in self.params:
            if p.grad_req != "write" or p._stype != "default" or p._grad_stype != "default" \
                    or np.dtype(p.dtype) != np.float32:
                raise ValueError(
                    f"parameter {p.name}: ByzantineTrainer needs dense float32 parameters "
                    f"with grad_req='write', got grad_req={p.grad_req!r}, dtype="
                    f"{np.dtype(p.dtype).name}, stype={p._stype!r}/{p._grad_stype!r}")
        self.matrix = GradMatrix(self.n, [p.shape for p in self.params])
        return True

    # -- simulated workers --------------------------------------------------
    def enter(self, w):
        """Prepare worker w's backward; returns a token for exit()/abort()."""
        datas = self.datas() if self.ready() else None   # None before deferred init
        if self._first_block or datas is None or self.state == "off":
            if self.rounds == 0 and datas is not None:
                for g in self.stock():
                    GradMatrix.mark_array(g)
            return "copy", datas
        self.matrix.mark_row(w)
        if self.state == "untested":
            for g in self.stock():
                GradMatrix.mark_array(g)
        autograd.mark_variables(datas, self.matrix.views[w], self._reqs)
        return "zero-copy", datas

    def abort(self, token):
        """Undo enter() after an exception in the worker's block."""
        path, datas = token
        if path == "zero-copy":
            autograd.mark_variables(datas, self.stock(), self._reqs)

    def exit(self, w, token):
        """Put worker w's gradient (computed since enter()) into row w."""
        path, datas = token
        check = self.rounds == 0 and datas is not None
        datas = datas or self.datas()
        fresh = [bool(x._fresh_grad) for x in datas]
        if path == "zero-copy":
            autograd.mark_variables(datas, self.stock(), self._reqs)  # clears fresh flags
        else:
            for x in datas:
                x._fresh_grad = False
        if not any(fresh):
            raise RuntimeError(f"worker {w} computed no gradient: call loss.backward() "
                               f"inside `with trainer.worker({w}):`")
        used = [i for i, f in enumerate(fresh) if f]
        self.ready(require=True)
        m, stock = self.matrix, self.stock()
        if path == "zero-copy" and self.state == "untested":
            mx.nd.waitall()
            missing = [i for i in m.unwritten(w) if i in used]
            if missing and all(GradMatrix.was_written(stock[i]) for i in missing):
                m.copy_row(w, stock, missing)  # a static graph wrote the stock buffers
                self.state = "off"
            elif missing:
                raise RuntimeError(self._lost(f"parameters {self._names(missing)} of "
                                              f"worker {w}"))
            else:
                self.state = "ok"
        elif path == "copy":
            if check:   # first round: make sure backward wrote the stock buffers
                mx.nd.waitall()
                lost = [i for i in used if not GradMatrix.was_written(stock[i])]
                if lost:
                    raise RuntimeError(self._lost(f"parameters {self._names(lost)} of "
                                                  f"worker {w}"))
            m.copy_row(w, stock, used)
        for i, f in enumerate(fresh):
            if not f:
                m.zero(w, i)   # this worker's loss does not depend on parameter i
        self.used[used] = True
        self.reported[w] = True
        self._first_block = False

    def fill(self, fused):
        """All n workers reported through ``fused`` (a FusedWorkers whose
        backward() is pending): its buffers go into the matrix at collect()."""
        self.ready(require=True)
        self._pending = fused
        self.reported[:] = True
        self.used[fused.used] = True

    # -- the round ---------------------------------------------------------
    def collect(self, scale=1.0):
        """Finish the round's matrix (waits for MXNet), every row multiplied
        by ``scale`` (float32); returns it."""
        if len(self.contexts) > 1:
            self._gather()
        elif self.n == 1 and not self.reported[0] and any(x._fresh_grad for x in self.datas()):
            self.exit(0, ("copy", None))   # one worker: a plain backward() is worker 0
        missing = np.flatnonzero(~self.reported).tolist()
        if missing:
            raise RuntimeError(
                f"step(): worker(s) {missing} of n={self.n} did not report; run `with "
                "trainer.worker(w): ... loss.backward()` for every w in range(n) first")
        mx.nd.waitall()
        if self._pending is not None:
            self._pending.write(self.matrix, scale)   # scaled on its small factors
        else:
            if self.state == "ok":
                bad = self.matrix.unwritten()
                if bad:
                    raise RuntimeError(self._lost(f"worker(s) {bad}"))
            if scale != 1.0:
                with np.errstate(all="ignore"):   # a diverged net's inf/NaN are outcomes
                    self.matrix.array *= np.float32(scale)
        self.rounds += 1
        return self.matrix.array

    def _gather(self):
        """One context per worker: copy each context's gradients into its row."""
        self.ready(require=True)
        for w in range(self.n):
            fresh = np.array([bool(x._fresh_grad) for x in self.datas(w)])
            self.used |= fresh
            self.matrix.copy_row(w, self.stock(w), np.flatnonzero(fresh).tolist())
            for i in np.flatnonzero(~fresh):
                self.matrix.zero(w, i)   # no copy is pending on this slice
            self.reported[w] = True

    def scatter(self, vec):
        """Write the (d,) aggregate into every context's param.grad(); mark
        the parameters some worker used as freshly computed."""
        self.matrix.scatter(vec, [self.stock(k) for k in range(len(self.contexts))])
        for k in range(len(self.contexts)):
            for x, used in zip(self.datas(k), self.used):
                x._fresh_grad = bool(used)

    def _names(self, idx):
        return [self.params[i].name for i in idx]

    @staticmethod
    def _lost(what):
        return (f"the gradients of {what} did not land in the gradient matrix: a block "
                "hybridized with static_alloc=True (and static_shape=True) keeps the "
                "gradient buffers bound at its first training pass (here not this "
                "trainer's). Call net.hybridize(...) again (which rebuilds its graph) and "
                "create a new trainer, or hybridize without static_alloc. Or an operator "
                "skipped it: MXNet 1.9's oneDNN FullyConnected writes no bias gradient "
                "when the layer's weight has grad_req='null' (train or freeze both, or "
                "set MXNET_MKLDNN_ENABLED=0)")
