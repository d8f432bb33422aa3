"""ByzantineTrainer: a drop-in ``gluon.Trainer`` with robust aggregation.

Stock Gluon sums the contexts' gradients through a KVStore. ByzantineTrainer
instead gathers the n workers' gradients into one (n, d) float32 numpy
matrix over ALL parameters (:class:`byzsgd.gradbuffer.GradMatrix`), lets the
attack corrupt it (values in transit), reduces it with the aggregation rule,
writes the (d,) result into every ``param.grad()`` and lets the stock
optimizer apply it once. No KVStore is created.

Two ways to feed it:

* simulated workers on one context (the paper's experiments)::

      for w in range(n):
          with trainer.worker(w):        # this backward fills row w
              with autograd.record():
                  loss = loss_fn(net(x[w]), y[w])
              loss.backward()
      trainer.step(batch_size)           # per-worker batch size

* one context per worker: ``ctx=[mx.cpu(0), mx.cpu(1), ...]`` (or GPUs),
  one plain ``backward()`` per context, then ``step(batch_size)``.

Columns follow the trainer's parameter order (sorted by name when given a
ParameterDict, as in gluon.Trainer), trainable parameters only.

``batch_size`` is the PER-WORKER batch size: row w is worker w's gradient
times ``rescale_grad / batch_size`` (the gradient of its mean loss), so the
attack and the rule see gradients that do not depend on the batch size, and
with the ``mean`` rule n workers of b samples step exactly like stock Gluon
on one batch of n*b samples with ``step(n*b)``.

Reference: Xie, Koyejo, Gupta 2018, "Generalized Byzantine-tolerant SGD".
"""
import contextlib
import os
import pickle
import tempfile

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import aggregators, attacks, registry
from . import fused as fused_mod
from .gradbuffer import WorkerGrads

__all__ = ["ByzantineTrainer"]

_STATES_FORMAT = "byzsgd.ByzantineTrainer/1"
_LOCAL_KVSTORES = (None, "device", "local")


class ByzantineTrainer(gluon.Trainer):
    """gluon.Trainer whose gradient reduction is an attack + a robust rule.

    Parameters
    ----------
    params : ParameterDict or list of Parameter
        As for gluon.Trainer (float32, dense, ``grad_req='write'``).
    optimizer, optimizer_params
        As for gluon.Trainer (e.g. ``"sgd", {"learning_rate": 0.1}``).
    aggregator : str, (str, dict), Bound or callable
        Aggregation rule ``(n, d) -> (d,)``: a name of
        :func:`byzsgd.aggregators.names`, a ``(name, params)`` pair or any
        callable. Checked on an (n, 1) probe at construction.
    attack : str, (str, dict), Bound, callable or None
        Attack ``(grads, rng) -> new (n, d) grads`` applied to the matrix each
        round (:func:`byzsgd.attacks.names`); None for no attack.
    num_workers : int or None
        n. Defaults to the number of contexts (1 on a single context).
        With several contexts it must equal their number.
    seed : int or None
        Seed of ``self.rng``, the np.random.Generator given to the attack.
    zero_copy : bool
        Let backward() write straight into the matrix when possible
        (simulated workers on cpu(0)); False forces the copy path.
    kvstore, compression_params, update_on_kvstore
        Accepted for drop-in compatibility: kvstore may only be None,
        'device' or 'local' (whose sum this trainer replaces), or
        'dist_byz': distributed mode on byzsgd parameter servers
        (:class:`byzsgd.distributed.DistributedTrainer`, inside `byzsgd launch`).
    """

    def __new__(cls, *args, kvstore=None, **kwargs):
        # kvstore='dist_byz': the same trainer on byzsgd parameter servers
        if kvstore == "dist_byz" and cls is ByzantineTrainer:
            from .distributed import DistributedTrainer
            cls = DistributedTrainer
        return super().__new__(cls)

    def __init__(self, params, optimizer, optimizer_params=None, aggregator="mean",
                 attack=None, num_workers=None, seed=None, zero_copy=True,
                 kvstore=None, compression_params=None, update_on_kvstore=None):
        if not (kvstore in _LOCAL_KVSTORES) or compression_params or update_on_kvstore:
            raise ValueError(
                "ByzantineTrainer aggregates gradients itself and uses no KVStore: "
                f"got kvstore={kvstore!r}, compression_params={compression_params!r}, "
                f"update_on_kvstore={update_on_kvstore!r}; use kvstore=None (or "
                "'device'/'local'), no compression, update_on_kvstore=None; on a "
                "parameter-server cluster (byzsgd launch), kvstore='dist_byz'")
        super().__init__(params, optimizer, optimizer_params, kvstore=None)
        n_ctx = len(self._contexts)
        if num_workers is None:
            num_workers = n_ctx
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)):
            raise TypeError(f"num_workers must be an int, got {num_workers!r}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got num_workers={num_workers}")
        if n_ctx > 1 and num_workers != n_ctx:
            raise ValueError(
                f"num_workers={num_workers} with {n_ctx} contexts: with several contexts "
                f"each context is one worker (num_workers={n_ctx}); simulated workers "
                "need a single context")
        self.num_workers = n = int(num_workers)
        self.per_context = n_ctx > 1
        if aggregator is None:
            raise ValueError("aggregator is required: a name of "
                             f"{', '.join(aggregators.names())}, a (name, params) pair "
                             "or a callable (n, d) -> (d,)")
        self.aggregator = _probe_rule(aggregators.resolve(aggregator), n)
        # attacks are checked at the first step(): their preconditions can
        # depend on d (bitflip's dims, gambler's servers), unknown before
        # the parameters are initialised
        self.attack = attacks.resolve(attack)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.round = 0              # completed rounds (steps)
        self.diverged_at = None     # first round after which parameters were non-finite
        self.diagnostics = {}
        self._fused = {}            # net -> FusedWorkers or None (loop)
        self._grads = WorkerGrads([p for p in self._params if p.grad_req != "null"],
                                  self._contexts, n, zero_copy=bool(zero_copy))
        self._new_round()

    @property
    def local_workers(self):
        """The workers whose gradients this process computes: all n here
        (distributed mode: this worker's rank, see byzsgd.distributed)."""
        return list(range(self.num_workers))

    @property
    def gradient_path(self):
        """How worker gradients reach the matrix: 'batched' (backward_all()'s
        one pass, byzsgd.fused), 'zero-copy' (backward writes into the rows),
        'copy' (from param.grad(): several contexts, a device other than
        cpu(0), static_alloc+static_shape graphs, zero_copy=False) or
        'pending' (not decided before the second worker block)."""
        if any(f is not None for f in self._fused.values()):
            return "batched"
        return {"ok": "zero-copy", "untested": "pending", "off": "copy"}[self._grads.state]

    # ------------------------------------------------------------ workers
    @contextlib.contextmanager
    def worker(self, w):
        """Context in which one backward() computes worker w's gradient.

        Each of the n workers reports exactly once per round, then step().
        The gradient goes to row w of the matrix (``param.grad()`` is not a
        worker's gradient; after step() it holds the applied aggregate).
        """
        if self.per_context:
            raise RuntimeError(
                f"trainer.worker() is for simulated workers on one context; this trainer "
                f"has {len(self._contexts)} contexts, one worker each: call backward() "
                "on every context, then step()")
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) \
                or not 0 <= w < self.num_workers:
            raise ValueError(f"worker index must be an int in [0, {self.num_workers}), "
                             f"got w={w!r}")
        if self._grads.reported[w]:
            raise RuntimeError(f"worker {w} already reported in round {self.round + 1}; "
                               "call step() before its next backward()")
        token = self._grads.enter(w)
        try:
            yield w
        except BaseException:
            self._grads.abort(token)
            raise
        self._grads.exit(w, token)

    def backward_all(self, net, loss_fn, data, label, batched=None):
        """Every worker's forward and backward in one call, then step().

        Worker w's batch is ``data[w*b:(w+1)*b]`` (labels alike). The n passes
        run as one batched pass (:mod:`byzsgd.fused`: the same gradients up
        to rounding) when the net allows it, else as a loop of :meth:`worker`
        blocks; in distributed mode only :attr:`local_workers` are computed
        (and batched only if that is all n).

        Parameters
        ----------
        net, loss_fn : Block
            The network (its parameters are this trainer's) and a loss that
            returns one value per sample.
        data, label : NDArray
            The n workers' batches one after the other.
        batched : bool or None
            None: batch when possible; False: always loop; True: batch or raise.

        Returns
        -------
        NDArray
            The per-sample losses of the workers computed: (n*b,), or the
            local workers' in distributed mode.
        """
        n = self.num_workers
        if data.shape[0] % n or label.shape[0] != data.shape[0]:
            raise ValueError(f"backward_all: {data.shape[0]} samples and {label.shape[0]} "
                             f"labels must split into n={n} equal worker batches")
        local = self.local_workers   # distributed mode: this process's workers
        fused = self._fused_for(net, batched) if len(local) == n else None
        if fused is None:
            b = data.shape[0] // n
            losses = []
            for w in local:
                with self.worker(w):
                    with autograd.record():
                        loss = loss_fn(net(data[w * b:(w + 1) * b]), label[w * b:(w + 1) * b])
                    loss.backward()
                losses.append(loss)
            return mx.nd.concat(*losses, dim=0)
        if self._grads.reported.any():
            raise RuntimeError("backward_all() after worker() blocks in the same round; "
                               "call step() first")
        loss = fused.backward(loss_fn, data, label)
        self._grads.fill(fused)
        return loss

    def _fused_for(self, net, batched):
        """The FusedWorkers of ``net`` (cached), or None to loop."""
        if batched is False:
            return None
        key = net   # the block itself: an id could be reused by a later net
        if key not in self._fused:
            why = None
            if self.per_context:
                why = "this trainer has one context per worker"
            elif not self._grads.ready():
                why = "the parameters are not initialised yet"
            elif fused_mod.plan(net) is None:
                why = f"{type(net).__name__} is not built from supported layers"
            if why is not None:
                if batched:
                    raise ValueError(f"backward_all(batched=True): {why} "
                                     "(see byzsgd.fused)")
                return None   # not cached: deferred initialisation may end
            try:
                self._fused[key] = fused_mod.FusedWorkers(net, self._grads.params,
                                                          self.num_workers)
            except ValueError:
                if batched:
                    raise
                self._fused[key] = None
        return self._fused[key]

    # --------------------------------------------------------------- step
    def step(self, batch_size, ignore_stale_grad=False):
        """Attack, aggregate and apply one round of the n workers' gradients.

        Parameters
        ----------
        batch_size : int or float
            PER-WORKER batch size: rows are scaled by rescale_grad/batch_size
            before the attack (1 if the loss is already a mean).
        ignore_stale_grad : bool
            As for gluon.Trainer.
        """
        if not batch_size > 0:
            raise ValueError(f"batch_size must be > 0, got batch_size={batch_size!r}")
        self._reduce(self._scale / batch_size)
        self._optimizer.rescale_grad = 1.0      # rows are already normalised
        self._apply(ignore_stale_grad)

    def allreduce_grads(self, batch_size=None):
        """Attack and aggregate without updating (gluon's allreduce_grads()),
        leaving the aggregate in ``param.grad()``, e.g. for clipping before
        update().

        Parameters
        ----------
        batch_size : int, float or None
            PER-WORKER batch size. Given, rows are normalised as in step() and
            update() does not rescale again. None (gluon's call): the attack
            and the rule see raw (batch-summed) rows and update() rescales;
            refused with an attack, whose strength would then depend on the
            batch size (sigma=200 acting as 200/b).
        """
        if batch_size is None:
            if self.attack is not None:
                raise ValueError(
                    f"allreduce_grads() without batch_size would let the attack "
                    f"{self.attack!r} act on batch-summed gradients, unlike step(); "
                    "call allreduce_grads(batch_size) with the per-worker batch size")
            self._reduce(1.0)
        else:
            if not batch_size > 0:
                raise ValueError(f"batch_size must be > 0, got batch_size={batch_size!r}")
            self._reduce(self._scale / batch_size)
        self._rescale_pending = batch_size is None

    def _allreduce_grads(self):
        self.allreduce_grads()

    def update(self, batch_size, ignore_stale_grad=False):
        """Apply the aggregate of allreduce_grads() (gluon.Trainer.update)."""
        if not self._reduced:
            raise RuntimeError("update() needs allreduce_grads() first in this round")
        self._check_and_rescale_grad(self._scale / batch_size if self._rescale_pending
                                     else 1.0)
        self._apply(ignore_stale_grad)

    def _apply(self, ignore_stale_grad):
        try:
            self._update(ignore_stale_grad)
        except BaseException:
            self._new_round()
            raise
        self._finish_round()

    def _reduce(self, scale):
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        grads = self._grads.collect(scale)
        with np.errstate(all="ignore"):   # overflow/NaN are outcomes, not errors
            sent, cells = grads, 0
            if self.attack is not None:
                sent = _float32(registry.call("attack", self.attack, grads.shape, grads,
                                              self.rng))
                cells = (self.attack.info or {}).get("cells")
                if cells is None:  # a user attack that does not say: compare bit patterns
                    cells = np.count_nonzero(sent.view(np.uint32) != grads.view(np.uint32))
                cells = int(cells)
            agg = _float32(registry.call("aggregator", self.aggregator, grads.shape[1:], sent))
            norm = float(np.sqrt(np.dot(agg, agg)))
            if not np.isfinite(norm) and np.isfinite(agg).all():
                norm = float(np.linalg.norm(agg.astype(np.float64)))
        self._grads.scatter(agg)
        self._last = dict(agg_norm=norm, cells_attacked=cells,
                          rule_info=dict(self.aggregator.info or {}))
        self._reduced = True

    def _finish_round(self):
        self.round += 1
        finite, all_nan = self._params_state()
        if not finite and self.diverged_at is None:
            self.diverged_at = self.round
        self.diagnostics = dict(round=self.round, finite=finite, all_nan=all_nan, **self._last)
        self._new_round()

    def _new_round(self):
        self._grads.reset()
        self._reduced = False
        self._last = {}

    def _params_state(self):
        """(every parameter finite, every parameter NaN), from one copy of each."""
        ctx = self._contexts[0]
        arrays = [p.data(ctx).asnumpy() for p in self._params if p._data is not None]
        finite = all(np.isfinite(a).all() for a in arrays)
        return finite, not finite and all(np.isnan(a).all() for a in arrays)

    # ------------------------------------------------------------ states
    def get_states(self):
        """Optimizer states plus rng state, round and diverged_at, as bytes."""
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        return pickle.dumps(dict(
            format=_STATES_FORMAT, updater=self._updaters[0].get_states(dump_optimizer=True),
            rng=self.rng.bit_generator.state, round=self.round,
            diverged_at=self.diverged_at, num_workers=self.num_workers))

    def set_states(self, blob):
        """Restore what get_states() returned (or a stock gluon states blob)."""
        states = pickle.loads(blob)
        if isinstance(states, dict) and states.get("format") == _STATES_FORMAT:
            if states["num_workers"] != self.num_workers:
                raise ValueError(f"states saved with num_workers={states['num_workers']}, "
                                 f"this trainer has num_workers={self.num_workers}")
            updater_blob = states["updater"]
            self.rng = _generator(states["rng"])
            self.round, self.diverged_at = states["round"], states["diverged_at"]
        else:
            updater_blob = blob
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        for updater in self._updaters:
            updater.set_states(updater_blob)
            updater.optimizer = self._updaters[0].optimizer
        self._optimizer = self._updaters[0].optimizer
        self._optimizer.param_dict = {i: p for i, p in enumerate(self._params)}
        self.diagnostics = {}
        self._new_round()

    def save_states(self, fname):
        """Write get_states() to ``fname`` atomically (temp file + rename).

        The file holds byzsgd's own format (optimizer states plus the attack's
        rng and the round): load it with a ByzantineTrainer. A stock
        gluon.Trainer would read it without error but lose the optimizer
        states (momentum restarts from zero)."""
        blob = self.get_states()
        folder = os.path.dirname(os.path.abspath(fname))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".states-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, fname)
        except BaseException:
            os.unlink(tmp)
            raise

    def load_states(self, fname):
        """Restore states written by save_states() (or gluon.Trainer's)."""
        with open(fname, "rb") as f:
            self.set_states(f.read())


def _probe_rule(rule, n):
    registry.probe("aggregator", rule, (n, 1), (1,))
    rule.info = {}
    return rule


def _float32(out):
    """A plugin's checked result as the C-contiguous float32 the buffers take."""
    if out.dtype != np.float32 or not out.flags.c_contiguous:
        out = np.ascontiguousarray(out, dtype=np.float32)
    return out


def _generator(state):
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)
