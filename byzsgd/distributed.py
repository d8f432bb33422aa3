"""Worker side of distributed mode: ByzantineTrainer on MXNet ps-lite servers.

Inside a cluster started by ``byzsgd launch`` (see :mod:`byzsgd.launch`),
``ByzantineTrainer(..., kvstore="dist_byz")`` returns a
:class:`DistributedTrainer`: the same user code, with the rule and the
optimizer step run on byzsgd servers (:mod:`byzsgd.psserver`)::

    for w in trainer.local_workers:       # [rank]; all n for a Byzantine worker
        with trainer.worker(w), autograd.record():
            loss = loss_fn(net(x[w]), y[w])
        loss.backward()
    trainer.step(batch_size)              # push, wait, barrier, pull weights

A round: each worker normalises its gradient row (as the simulation does),
pushes it, block by block, to its own keys of a ``dist_async`` KVStore,
waits, meets the others at a barrier and pulls the new weights, which the
servers computed as ``x - lr * Aggr(rows)`` (stock MXNet optimizer). The
first round sends the servers a JSON configuration (never a pickle).

Byzantine workers: a rank in ``byzantine`` with an ``attack`` is
omniscient, as the paper's attacks assume: it computes every worker's
gradient (the batches follow from the seeds), applies the core library's
attack to the (n, d) matrix with the trainer's seeded rng, exactly as the
single-process simulation does, and pushes its own row of the result. With
every rank the attack may pick in ``byzantine`` (the default: all ranks),
a distributed run equals the simulation bit for bit.

Timeouts: joining the cluster, every round and the shutdown are watched;
past twice ``timeout`` seconds (BYZSGD_TIMEOUT, set by the launcher; servers
give up on a round after once the timeout, naming the missing workers) the
worker prints what it was waiting for and exits with status 4, never hangs.
"""
import atexit
import gc
import os
import sys
import threading
import time

import numpy as np

from . import aggregators, psconfig, registry
from .trainer import ByzantineTrainer, _float32

__all__ = ["PSClient", "DistributedTrainer", "in_cluster", "EXIT_STALL"]

EXIT_STALL = 4


def in_cluster():
    """True in a worker process of a ps-lite cluster (DMLC_ROLE=worker)."""
    return os.environ.get("DMLC_ROLE") == "worker"


class _Watchdog:
    """Ends the process (status 4) when an armed phase outlasts the timeout."""

    def __init__(self, timeout, who):
        self.timeout, self.who = timeout, who
        self.what, self.deadline = None, None
        threading.Thread(target=self._run, daemon=True).start()

    def arm(self, what, factor=1):
        self.what, self.budget = what, factor * self.timeout
        self.deadline = time.monotonic() + self.budget

    def disarm(self):
        self.deadline = None

    def _run(self):
        while True:
            time.sleep(min(0.25, self.timeout / 4))
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                print(f"byzsgd {self.who}: {self.what} stalled past its "
                      f"{self.budget:g} s budget: a server, the scheduler or another worker is "
                      "dead or stalled; exiting", file=sys.stderr, flush=True)
                os._exit(EXIT_STALL)


class PSClient:
    """One worker's connection to the byzsgd servers.

    Parameters
    ----------
    timeout : float or None
        Seconds any phase may take (default $BYZSGD_TIMEOUT, else 60).
    """

    def __init__(self, timeout=None):
        if not in_cluster():
            raise RuntimeError("kvstore='dist_byz' runs inside a cluster: start the script "
                               "with `byzsgd launch -n WORKERS -s SERVERS -- python ...` "
                               f"(DMLC_ROLE is {os.environ.get('DMLC_ROLE')!r}, not 'worker')")
        os.environ["MXNET_KVSTORE_BIGARRAY_BOUND"] = str(psconfig.BIGARRAY_BOUND)
        self.timeout = float(timeout or os.environ.get("BYZSGD_TIMEOUT", 60))
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        import mxnet as mx
        self.mx = mx
        # twice the servers' timeout: a server holding a stalled block names
        # the missing worker first; a worker only speaks when servers cannot
        self.watchdog = _Watchdog(2 * self.timeout, "worker")
        self.watchdog.arm("joining the cluster")
        self.kv = mx.kv.create("dist_async")
        self.watchdog.disarm()
        self.rank, self.num_workers = self.kv.rank, self.kv.num_workers
        self.watchdog.who = f"worker {self.rank}"
        self.num_servers = int(os.environ["DMLC_NUM_SERVER"])
        self.cfg = None
        self.rounds = 0
        atexit.register(self.close)
        hook = sys.excepthook

        def fail_fast(*exc):
            # an uncaught error: leave at once (exit 1), so that the launcher
            # stops the cluster now, not after the others' round timeouts
            hook(*exc)
            sys.stderr.flush()
            os._exit(1)

        sys.excepthook = fail_fast

    def setup(self, config, weights):
        """Send ``config`` (psconfig JSON; rank 0 only), put the initial
        ``weights`` (d,) on the servers (rank 0's values), and return the
        weights every worker starts from."""
        self.cfg = cfg = psconfig.parse(config, self.num_servers)
        n, d = cfg["num_workers"], cfg["d"]
        if n != self.num_workers or d != weights.size:
            raise ValueError(f"configuration for n={n}, d={d}; this cluster has "
                             f"{self.num_workers} workers and the weights {weights.size} values")
        self.spans = psconfig.blocks(d, self.num_servers, cfg["placement"])
        self.table = psconfig.key_table([s for _, _, s in self.spans], n, self.num_servers)
        self.watchdog.arm("configuring the servers")
        if self.rank == 0:
            self.kv._send_command_to_servers(0, config)
        self.kv._barrier()       # every server is configured before any push
        keys = [k for row in self.table for k in row]
        vals = [self._tagged(weights[a:b], 0) for a, b, _ in self.spans for _ in range(n)]
        self.kv.init(keys, vals)  # rank 0's values; a barrier inside
        out = np.empty(d, np.float32)
        self._pull(out, 0)
        self.watchdog.disarm()
        return out

    def _tagged(self, values, round_):
        """A block as sent: its values, then the round number (float32 is
        exact up to 2**24 rounds), so servers and workers see a shifted round."""
        return self.mx.nd.array(np.append(values, np.float32(round_)), dtype=np.float32)

    def _pull(self, out, round_):
        nd = self.mx.nd
        bufs = [nd.zeros(b - a + 1) for a, b, _ in self.spans]
        self.kv.pull([row[0] for row in self.table], out=bufs)
        nd.waitall()
        for (a, b, server), buf in zip(self.spans, bufs):
            values = buf.asnumpy()
            if values[-1] != round_:
                raise RuntimeError(
                    f"worker {self.rank} pulled weights of round {values[-1]:g} from server "
                    f"{server}, expected round {round_}: a push was counted in the wrong "
                    "round (a worker pushed as another)")
            out[a:b] = values[:-1]

    def round(self, row, out):
        """Push this worker's (d,) ``row``; write the new weights into ``out``."""
        nd = self.mx.nd
        self.watchdog.arm(f"round {self.rounds + 1}")
        self.kv.push([keys[self.rank] for keys in self.table],
                     [self._tagged(row[a:b], self.rounds + 1) for a, b, _ in self.spans])
        nd.waitall()             # the servers ran their updater on our push
        self.kv._barrier()       # ... and on everyone's
        self._pull(out, self.rounds + 1)
        self.watchdog.disarm()
        self.rounds += 1

    def barrier(self, what, factor=10):
        """Meet every worker, e.g. while worker 0 evaluates; watched, with
        ``factor`` times the round budget."""
        self.watchdog.arm(what, factor)
        self.kv._barrier()
        self.watchdog.disarm()

    def gather(self, row):
        """``mode="store"``: push ``row``, return the (n, d) matrix of all rows."""
        nd = self.mx.nd
        n = self.num_workers
        self.watchdog.arm(f"gather {self.rounds + 1}")
        self.kv.push([keys[self.rank] for keys in self.table],
                     [self._tagged(row[a:b], self.rounds + 1) for a, b, _ in self.spans])
        nd.waitall()
        self.kv._barrier()
        bufs = [[nd.zeros(b - a + 1) for _ in range(n)] for a, b, _ in self.spans]
        self.kv.pull([k for keys in self.table for k in keys],
                     out=[buf for blk in bufs for buf in blk])
        nd.waitall()
        self.kv._barrier()       # nobody overwrites a row before all have read it
        out = np.empty((n, self.spans[-1][1]), np.float32)
        for (a, b, _), blk in zip(self.spans, bufs):
            for w, buf in enumerate(blk):
                out[w, a:b] = buf.asnumpy()[:-1]
        self.watchdog.disarm()
        self.rounds += 1
        return out

    def close(self):
        """Leave the cluster (a barrier, then rank 0 stops the servers), watched."""
        if getattr(self, "kv", None) is None:
            return
        self.watchdog.arm("leaving the cluster")
        self.kv = None
        gc.collect()             # the KVStore's destructor runs the final barrier
        self.watchdog.disarm()


class DistributedTrainer(ByzantineTrainer):
    """ByzantineTrainer whose aggregation and optimizer step run on byzsgd
    parameter servers (see module docstring).

    Parameters
    ----------
    params, optimizer_params, aggregator, attack, seed, zero_copy
        As for ByzantineTrainer; ``optimizer`` must be a registered MXNet
        optimizer NAME (it travels as JSON), ``aggregator`` a registered rule
        (servers run only byzsgd's rules), parameters with lr_mult = wd_mult = 1.
    num_workers : int or None
        Checked against the cluster's worker count (its default).
    byzantine : iterable of int or None
        Ranks that apply ``attack`` (default: all ranks); others are honest.
    server_attack : (str, dict) or None
        Attack the faulty servers apply to the (n, shard) matrix of their
        shard, e.g. ``("gambler", {"servers": 1, "faulty": 1, "prob": 5e-4})``.
    faulty_servers : iterable of int
        Ranks of the faulty servers (default (0,) when server_attack is given).
    timeout : float or None
        Seconds a round may take (default $BYZSGD_TIMEOUT, else 60).
    """

    def __init__(self, params, optimizer, optimizer_params=None, aggregator="mean",
                 attack=None, num_workers=None, seed=None, zero_copy=True, kvstore="dist_byz",
                 compression_params=None, update_on_kvstore=None, byzantine=None,
                 server_attack=None, faulty_servers=None, timeout=None):
        if kvstore != "dist_byz" or compression_params or update_on_kvstore:
            raise ValueError(f"DistributedTrainer needs kvstore='dist_byz', no compression "
                             f"and update_on_kvstore=None; got kvstore={kvstore!r}, "
                             f"compression_params={compression_params!r}, "
                             f"update_on_kvstore={update_on_kvstore!r}")
        if not isinstance(optimizer, str):
            raise TypeError(f"distributed mode sends the optimizer to the servers as JSON: give "
                            f"its registered name (e.g. 'sgd'), not {optimizer!r}")
        self.client = PSClient(timeout)
        n = self.client.num_workers
        if num_workers is not None and num_workers != n:
            raise ValueError(f"num_workers={num_workers} but the cluster has {n} workers "
                             "(byzsgd launch -n)")
        super().__init__(params, optimizer, optimizer_params, aggregator=aggregator,
                         attack=attack, num_workers=n, seed=seed, zero_copy=zero_copy)
        if self.per_context:
            raise ValueError("distributed mode: one context per worker process")
        rule = self.aggregator
        if rule.name not in aggregators.REGISTRY or aggregators.REGISTRY.function(rule.name) \
                is not rule.fn:
            raise ValueError(f"aggregator {rule!r} is not a registered byzsgd rule: servers run "
                             f"only {', '.join(aggregators.names())} (they accept no code)")
        self.rank = self.client.rank
        self.byzantine = frozenset(range(n) if byzantine is None else
                                   (int(r) for r in byzantine))
        bad = sorted(r for r in self.byzantine if not 0 <= r < n)
        if bad:
            raise ValueError(f"byzantine ranks {bad} are not in [0, {n})")
        self._optimizer_params = {k: v for k, v in dict(optimizer_params or {}).items()
                                  if k != "rescale_grad"}
        self._server_attack = None
        if faulty_servers is not None and server_attack is None:
            raise ValueError(f"faulty_servers={faulty_servers!r} without a server_attack: "
                             "say what the faulty servers do, e.g. server_attack='gambler'")
        if server_attack is not None:
            name, sparams = (server_attack, {}) if isinstance(server_attack, str) \
                else server_attack
            self._server_attack = {"attack": name, "params": dict(sparams or {}),
                                   "servers": sorted(int(s) for s in (faulty_servers or (0,))),
                                   "seed": int(seed or 0)}
        self._weights = None

    @property
    def local_workers(self):
        """The workers this process computes: all n if it attacks, else its rank."""
        if self.attack is not None and self.rank in self.byzantine:
            return list(range(self.num_workers))
        return [self.rank]

    def worker(self, w):
        if w not in self.local_workers:
            raise ValueError(f"worker {w!r} is not computed by this process (rank "
                             f"{self.rank}); loop over trainer.local_workers = "
                             f"{self.local_workers}")
        if self._weights is None and self._grads.ready():
            self._setup()
        return super().worker(w)

    # ------------------------------------------------------------ the round
    def _config(self, d):
        for p in self._params:
            if p.lr_mult != 1.0 or p.wd_mult != 1.0:
                raise ValueError(f"parameter {p.name}: lr_mult={p.lr_mult}, "
                                 f"wd_mult={p.wd_mult}; distributed mode needs 1 and 1 "
                                 "(servers step flat blocks of all parameters)")
        return psconfig.make(
            self.aggregator.name, self.aggregator.params, self._optimizer_name(),
            {**self._optimizer_params, "rescale_grad": 1.0}, self.num_workers,
            self.client.num_servers, d, server_attack=self._server_attack,
            timeout=self.client.timeout)

    def _optimizer_name(self):
        cls = type(self._optimizer)
        names = [k for k, v in type(self._optimizer).opt_registry.items() if v is cls]
        return names[0]

    def _setup(self):
        self._grads.ready(require=True)
        m = self._grads.matrix
        ctx = self._contexts[0]
        start = np.concatenate([p.data(ctx).asnumpy().ravel() for p in self._grads.params])
        self._weights = self.client.setup(self._config(m.d), start.astype(np.float32))
        if not np.array_equal(self._weights.view(np.uint32), start.view(np.uint32)):
            if self._grads.reported.any():
                raise RuntimeError(
                    f"worker {self.rank} computed its first gradient at weights that differ "
                    "from worker 0's: initialise the parameters identically (same "
                    "mx.random.seed) and before the first trainer.worker() block")
            self._write_weights()

    def _write_weights(self):
        m = self._grads.matrix
        for k in range(len(self._contexts)):
            for i, p in enumerate(self._grads.params):
                p.data(self._contexts[k])[:] = self._weights[m.slice(i)].reshape(m.shapes[i])

    def _reduce(self, scale):
        if not self._kv_initialized:
            self._init_kvstore()
        if self._params_to_init:
            self._init_params()
        if self._weights is None:
            self._setup()
        others = [w for w in range(self.num_workers) if w not in self.local_workers]
        self._grads.reported[others] = True     # their rows come from their processes
        grads = self._grads.collect()
        r, cells = self.rank, 0
        with np.errstate(all="ignore"):
            if scale != 1.0:
                rows = self.local_workers
                grads[rows] *= np.float32(scale)
            row = grads[r]
            if self.attack is not None and r in self.byzantine:
                sent = _float32(registry.call("attack", self.attack, grads.shape, grads,
                                              self.rng))
                row = sent[r]
                cells = int(np.count_nonzero(row.view(np.uint32) != grads[r].view(np.uint32)))
        self.client.round(np.ascontiguousarray(row), self._weights)
        self._write_weights()
        self._last = dict(cells_attacked=cells, rule_info={})
        self._reduced = True

    def _apply(self, ignore_stale_grad):
        self._finish_round()      # the servers applied the optimizer step

    def allreduce_grads(self, batch_size=None):
        raise RuntimeError("allreduce_grads()/update() are not available with "
                           "kvstore='dist_byz': the servers aggregate and step; call step()")

    def update(self, batch_size, ignore_stale_grad=False):
        self.allreduce_grads()

    def get_states(self):
        raise RuntimeError("kvstore='dist_byz': optimizer states live on the servers; "
                           "saving and resuming distributed runs is not supported")

    def set_states(self, blob):
        self.get_states()
