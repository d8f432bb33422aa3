"""byzsgd's parameter-server entry point: ``python -m byzsgd.psserver``.

Runs an MXNet ps-lite server (``DMLC_ROLE=server``) or the scheduler
(``DMLC_ROLE=scheduler``) of a cluster started by :mod:`byzsgd.launch`.
Stock MXNet starts its serving loop inside ``import mxnet`` and unpickles
whatever a worker sends as the optimizer (``kvstore_server.py``,
command 0): any worker could make a server run code. Here mxnet is imported
while the role is hidden, so that loop never starts, and byzsgd's own loop
(``MXKVStoreRunServer``) gets a controller that only accepts a byzsgd JSON
configuration (:func:`byzsgd.psconfig.parse`); everything else is refused
and logged, and the server keeps serving.

With the configuration (``mode="aggregate"``), the server's updater (called
by ps-lite once per push in ``dist_async``) buffers the n rows of each of
its blocks, one key per worker (so rows are in worker order and a second
push from one key in a round is seen; each push ends with its round number,
so a push that another worker pre-empted is seen too), then applies the optional
server-side attack (a faulty server), the aggregation rule and the
optimizer step to the stored weights. ``mode="store"`` keeps each worker's
last row instead, for workers that gather the matrix and aggregate
themselves (measured in :mod:`byzsgd.bench_distributed`).

Fail fast: a duplicate push, a push on an unknown key or of the wrong size,
or a block waiting longer than the timeout for some worker's push ends the
server with status 3 and a message naming the worker(s); the launcher then
stops the whole cluster.

Reference: Xie, Koyejo, Gupta 2018, Sections 3 and 6 (sharded servers).
"""
import ctypes
import os
import sys
import threading
import time
import traceback

import numpy as np

from . import psconfig

__all__ = ["main", "Server"]

EXIT_FAULT = 3


def _import_mxnet_quietly(role):
    """Import mxnet without its import-time server loop (which would accept
    pickles): the C side reads DMLC_ROLE when asked, so hide it meanwhile."""
    os.environ.pop("DMLC_ROLE", None)
    try:
        import mxnet as mx
        import mxnet.kvstore  # noqa: F401  - submodules explicitly: on a server
        import mxnet.ndarray  # noqa: F401  - mx.nd may be half-imported
        import mxnet.optimizer  # noqa: F401
    finally:
        os.environ["DMLC_ROLE"] = role
    return mx


class _Block:
    def __init__(self, index, size, keys, n):
        self.index, self.size, self.keys = index, size, keys
        self.rows = np.zeros((n, size), np.float32)
        self.filled = np.zeros(n, bool)
        self.weight = None        # the stored NDArray of keys[0], which workers pull
        self.started = None       # monotonic time of the round's first push
        self.round = 0            # rounds aggregated


class Server:
    """The controller and updater of one byzsgd server (see module docstring).

    Parameters
    ----------
    mx : module
        mxnet, imported by :func:`_import_mxnet_quietly`.
    kv : KVStore
        The server's ``dist`` KVStore.
    sealed : str or None
        A configuration fixed at launch: worker messages must then equal it.
    """

    def __init__(self, mx, kv, sealed=None):
        self.mx, self.kv = mx, kv
        self.rank = None
        self.num_servers = int(os.environ.get("DMLC_NUM_SERVER", "1"))
        self.num_workers = int(os.environ["DMLC_NUM_WORKER"]) \
            if "DMLC_NUM_WORKER" in os.environ else None
        self.sealed = psconfig.parse(sealed, self.num_servers, self.num_workers) \
            if sealed else None
        self.cfg = None
        self.refused = 0
        self.lock = threading.Lock()
        self._updater_installed = False

    # ------------------------------------------------------------- messages
    def controller(self, cmd_id, body, _):
        """Command 0 from a worker: a configuration, never unpickled."""
        try:
            if self.rank is None:
                self.rank = self.kv.rank
            if not self._updater_installed:
                # the updater exists only once the serving loop runs (here);
                # without a configuration it refuses every push
                self.kv._set_updater(self.update)
                self._updater_installed = True
            self._configure(cmd_id, body or b"")
        except BaseException:  # noqa: BLE001 - a ctypes callback must not raise
            self.die("internal error in the controller:\n" + traceback.format_exc())

    def _configure(self, cmd_id, body):
        try:
            cfg = psconfig.parse(body, self.num_servers, self.num_workers)
            self._check_optimizer(cfg)
        except psconfig.ConfigError as err:
            self.refused += 1
            self.log(f"refused command {cmd_id} ({len(body)} bytes): {err}")
            return
        if self.sealed is not None and cfg != self.sealed:
            self.refused += 1
            self.log("refused a configuration that differs from the one fixed at launch")
            return
        if self.cfg is not None:
            if cfg != self.cfg:
                self.refused += 1
                self.log("refused a second, different configuration (the first one stays)")
            return
        self._install(cfg)

    def _check_optimizer(self, cfg):
        mx = self.mx
        names = sorted(mx.optimizer.Optimizer.opt_registry)
        if cfg["optimizer"].lower() not in names:
            raise psconfig.ConfigError(f"unknown optimizer {cfg['optimizer']!r}; valid "
                                       f"names: {', '.join(names)}")
        try:  # one step on a dummy weight: bad values are refused now
            opt = mx.optimizer.create(cfg["optimizer"], **cfg["optimizer_params"])
            mx.optimizer.get_updater(opt)(0, mx.nd.ones((2,)), mx.nd.ones((2,)))
            mx.nd.waitall()
        except Exception as err:  # noqa: BLE001 - mxnet raises many kinds here
            raise psconfig.ConfigError(
                f"optimizer {cfg['optimizer']!r} with {cfg['optimizer_params']}: "
                f"{type(err).__name__}: {err}") from None

    def _install(self, cfg):
        from . import aggregators, attacks
        mx = self.mx
        n = cfg["num_workers"]
        spans = psconfig.blocks(cfg["d"], self.num_servers, cfg["placement"])
        table = psconfig.key_table([s for _, _, s in spans], n, self.num_servers)
        self.blocks, self.where = {}, {}
        for b, ((start, stop, server), keys) in enumerate(zip(spans, table)):
            if server == self.rank:
                self.blocks[b] = _Block(b, stop - start, keys, n)
                self.where.update({k: (b, w) for w, k in enumerate(keys)})
        self.rule = aggregators.get(cfg["rule"], **cfg["rule_params"])
        opt = mx.optimizer.create(cfg["optimizer"], **cfg["optimizer_params"])
        self.step = mx.optimizer.get_updater(opt)
        self.attack, atk = None, cfg["server_attack"]
        if atk is not None and self.rank in atk["servers"]:
            self.attack = attacks.get(atk["attack"], **atk["params"])
            self.attack_rng = np.random.default_rng([atk["seed"], self.rank])
        self.cfg = cfg
        threading.Thread(target=self._watch, daemon=True).start()
        self.log(f"configured: {cfg['mode']} {self.rule!r}, {len(self.blocks)} block(s) of "
                 f"{[blk.size for blk in self.blocks.values()]} values, n={n}"
                 + (f", FAULTY: {self.attack!r}" if self.attack else ""))

    # ---------------------------------------------------------------- pushes
    def update(self, key, recv, stored):
        """ps-lite's updater: one worker's push ``recv`` on ``key``."""
        try:
            with self.lock:
                self._push(key, recv, stored)
        except BaseException:  # noqa: BLE001 - a ctypes callback must not raise
            self.die("internal error in the updater:\n" + traceback.format_exc())

    def _push(self, key, recv, stored):
        if self.cfg is None:
            self.die(f"push on key {key} before any accepted configuration")
        if key not in self.where:
            self.die(f"push on key {key}, not one of this server's keys "
                     f"{sorted(self.where)}: a worker with another layout or a Byzantine one")
        b, w = self.where[key]
        blk = self.blocks[b]
        if recv.size != blk.size + 1:
            self.die(f"worker {w} pushed {recv.size} values on block {b}, expected "
                     f"{blk.size + 1} (the block and its round tag)")
        if self.cfg["mode"] == "store":
            recv.copyto(stored)
            stored.wait_to_read()    # the receive buffer is freed when we return
            return
        if w == 0:
            blk.weight = stored
        if blk.filled[w]:
            self.die(f"key {key} (block {b}, worker {w}) was pushed twice in round "
                     f"{blk.round + 1}: worker {w} pushed twice, or another worker pushed "
                     f"as worker {w}; ps-lite cannot tell which push is genuine")
        values = recv.asnumpy().reshape(-1)           # synchronous copy
        # the tag catches a push that took an honest worker's place in a round:
        # the honest push, tagged with its own round, then arrives too late
        if values[-1] != blk.round + 1:
            self.die(f"key {key} (block {b}, worker {w}): a push tagged round "
                     f"{values[-1]:g} while the block collects round {blk.round + 1}: another "
                     f"worker pushed as worker {w} earlier, or worker {w} is Byzantine")
        blk.rows[w] = values[:-1]
        blk.filled[w] = True
        if blk.started is None:
            blk.started = time.monotonic()
        if blk.filled.all():
            self._aggregate(blk)

    def _aggregate(self, blk):
        grads = blk.rows
        with np.errstate(all="ignore"):   # overflow/NaN are outcomes, not errors
            if self.attack is not None:
                grads = np.ascontiguousarray(self.attack(grads, self.attack_rng), np.float32)
            agg = np.ascontiguousarray(self.rule(grads), np.float32)
        # the stored array is the weights plus the round tag, which workers check
        self.step(blk.index, self.mx.nd.array(agg, dtype=np.float32), blk.weight[:blk.size])
        blk.filled[:] = False
        blk.started = None
        blk.round += 1
        blk.weight[blk.size:] = float(blk.round)
        blk.weight.wait_to_read()

    def _watch(self):
        """Fail fast when a block waits longer than the timeout for a push."""
        timeout = float(self.cfg["timeout"])
        while True:
            time.sleep(min(0.5, timeout / 4))
            with self.lock:
                for blk in self.blocks.values():
                    if blk.started is not None and time.monotonic() - blk.started > timeout:
                        missing = np.flatnonzero(~blk.filled).tolist()
                        self.die(f"round {blk.round + 1} stalled: no push from worker(s) "
                                 f"{missing} on block {blk.index} within {timeout:g} s "
                                 "(dead, stalled or Byzantine)")

    # ---------------------------------------------------------------- output
    def log(self, msg):
        who = "scheduler" if os.environ.get("DMLC_ROLE") == "scheduler" else \
            f"server {self.rank if self.rank is not None else '?'}"
        print(f"byzsgd {who}: {msg}", file=sys.stderr, flush=True)

    def die(self, msg):
        self.log(msg + "; exiting")
        os._exit(EXIT_FAULT)

    def summary(self):
        rounds = sorted({blk.round for blk in getattr(self, "blocks", {}).values()})
        return f"stopped after {rounds or [0]} round(s); {self.refused} message(s) refused"


def main():
    """Serve until the workers stop the cluster (see module docstring)."""
    role = os.environ.get("DMLC_ROLE")
    if role not in ("server", "scheduler"):
        print(f"byzsgd.psserver: DMLC_ROLE={role!r} must be 'server' or 'scheduler' "
              "(start clusters with `byzsgd launch`)", file=sys.stderr)
        return 2
    os.environ["MXNET_KVSTORE_BIGARRAY_BOUND"] = str(psconfig.BIGARRAY_BOUND)
    mx = _import_mxnet_quietly(role)
    from mxnet.base import _LIB, check_call
    kv = mx.kv.create("dist")
    try:
        server = Server(mx, kv, os.environ.get("BYZSGD_SERVER_CONFIG"))
    except psconfig.ConfigError as err:
        print(f"byzsgd {role}: BYZSGD_SERVER_CONFIG refused: {err}", file=sys.stderr)
        return 2
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    controller = proto(server.controller)   # referenced until the loop ends
    check_call(_LIB.MXKVStoreRunServer(kv.handle, controller, None))
    if role == "server":
        server.log(server.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
