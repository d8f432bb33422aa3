"""``python -m byzsgd.bench distributed``: per-round latency of byzsgd's
server-side robust aggregation against stock ``dist_sync`` summation, on
local ps-lite clusters of the same shape (loopback).

Each measurement is one cluster (1 scheduler, S servers, n workers) whose
workers run ``python -m byzsgd.bench_distributed MODE ...`` and time
``--rounds`` rounds of one d-vector each (no gradients are computed; the
rows are :func:`byzsgd.bench.gradient_like`), after 3 warm-up rounds:

* ``dist_sync``: stock MXNet, the vector in S keys (one per server), push
  and pull (the servers sum; the pull waits for all n pushes);
* ``byz:RULE``: :class:`byzsgd.distributed.PSClient` rounds -- push to the
  worker's own keys, wait, barrier, pull the weights the servers computed
  with RULE and an SGD step. Coordinate-wise rules are sharded over the S
  servers; vector rules (krum) run on one server;
* ``gather:RULE``: the alternative for vector rules: servers only store
  each worker's row (``mode="store"``, sharded), every worker pulls the
  whole (n, d) matrix and aggregates it itself (n times the traffic and the
  computation, no single aggregating server).

Rank 0 reports the median and minimum round time; ratios are to dist_sync
in the same n.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import subcommand

__all__ = ["setup", "worker"]

MODES = ("dist_sync", "byz:mean", "byz:marmed", "byz:krum", "gather:krum")
WARMUP = 3


@subcommand("distributed", help="per-round latency of byzsgd servers vs dist_sync")
def setup(parser):
    """Options of the ``distributed`` benchmark; returns its runner."""
    parser.add_argument("--n", type=int, nargs="+", default=[4, 20], help="workers")
    parser.add_argument("--servers", type=int, default=2, help="servers")
    parser.add_argument("--d", type=int, default=118282, help="vector size (MLP: 118282)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per cluster")
    parser.add_argument("--modes", nargs="+", default=list(MODES), help=", ".join(MODES))
    return _run


def _krum_q(n):
    """q for Krum with n workers: (n - 3) // 2 below 20 (n = 4 allows only q = 0,
    as n > 2q + 2), the benchmark's usual q = 4 at n = 20."""
    return max(0, (n - 3) // 2) if n < 20 else 4


def _measure(mode, n, servers, d, rounds):
    from . import launch
    with tempfile.TemporaryDirectory(prefix="byzsgd-bench-") as tmp:
        out = Path(tmp) / "times.json"
        cmd = [sys.executable, "-m", "byzsgd.bench_distributed", mode, str(d), str(rounds),
               str(out)]
        status = launch.launch(cmd, n, servers, timeout=600, round_timeout=120,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if status != 0 or not out.exists():
            return None
        return np.asarray(json.loads(out.read_text()))


def _run(args):
    from .bench import machine
    lines = [machine(), "",
             f"per-round latency on loopback clusters (1 scheduler, {args.servers} servers, n "
             f"workers, all on this machine), d={args.d} float32, {args.rounds} timed rounds "
             f"after {WARMUP} warm-up; krum q=(n-3)//2 for n<20, 4 for n=20; ratio = "
             "median / median of dist_sync"]
    for n in args.n:
        lines.append(f"\nn = {n}")
        lines.append(f"{'mode':<14}{'median ms':>10}{'min ms':>9}{'ratio':>8}")
        base = None
        for mode in args.modes:
            t0 = time.perf_counter()
            times = _measure(mode, n, args.servers, args.d, args.rounds)
            if times is None:
                lines.append(f"{mode:<14}  failed")
                continue
            med = float(np.median(times)) * 1e3
            base = med if mode == "dist_sync" else base
            ratio = f"{med / base:8.2f}" if base else f"{'':>8}"
            lines.append(f"{mode:<14}{med:>10.2f}{float(times.min()) * 1e3:>9.2f}{ratio}"
                         f"   (cluster {time.perf_counter() - t0:.0f} s)")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


# ------------------------------------------------------------ one worker

def worker(mode, d, rounds, out):
    """A cluster worker timing ``rounds`` rounds of ``mode``; rank 0 writes
    the round times (seconds, JSON list) to ``out``."""
    from . import psconfig
    from .bench import gradient_like
    from .distributed import PSClient
    kind, _, rule = mode.partition(":")
    n = int(os.environ["DMLC_NUM_WORKER"])
    servers = int(os.environ["DMLC_NUM_SERVER"])
    if kind == "dist_sync":
        import mxnet as mx
        os.environ["MXNET_KVSTORE_BIGARRAY_BOUND"] = str(psconfig.BIGARRAY_BOUND)
        kv = mx.kv.create("dist_sync")
        rank = kv.rank
        spans = psconfig.blocks(d, servers, "sharded")
        keys = [row[0] for row in psconfig.key_table([s for *_, s in spans], 1, servers)]
        kv.init(keys, [mx.nd.zeros(b - a) for a, b, _ in spans])
        row = gradient_like(n, d, seed=1)[rank]
        bufs = [mx.nd.zeros(b - a) for a, b, _ in spans]

        def one_round():
            kv.push(keys, [mx.nd.array(row[a:b]) for a, b, _ in spans])
            kv.pull(keys, out=bufs)
            mx.nd.waitall()
            np.concatenate([buf.asnumpy() for buf in bufs])
    else:
        from . import aggregators
        client = PSClient()
        rank = client.rank
        params = {"q": _krum_q(n)} if rule == "krum" else {}
        rule_fn = aggregators.get(rule, **params)
        if kind == "gather":    # servers store rows, sharded: the rule runs on the workers
            rule, params = "mean", {}
        cfg = psconfig.make(rule, params, "sgd", {"learning_rate": 0.1, "rescale_grad": 1.0},
                            n, servers, d, timeout=120.0,
                            mode="store" if kind == "gather" else "aggregate")
        weights = client.setup(cfg, np.zeros(d, np.float32))
        row = gradient_like(n, d, seed=1)[rank]

        def one_round():
            if kind == "gather":
                weights[:] -= np.float32(0.1) * rule_fn(client.gather(row))
            else:
                client.round(row, weights)
    times = []
    for r in range(WARMUP + rounds):
        t = time.perf_counter()
        one_round()
        if r >= WARMUP:
            times.append(time.perf_counter() - t)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
