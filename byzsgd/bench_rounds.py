"""Benchmarks of whole training rounds and whole figures.

``round``: one simulated round of a figure's setting (n workers' gradients,
attack, aggregation, update: exactly the experiment runner's round) against
one forward/backward of the same n*b samples as a single batch, interleaved
in one process; ratios of the fastest repetitions, the share of the round
spent in the aggregation rule, and a profile of a round by phase.
``figure``: a whole figure's runs with ``--jobs``, wall time and per-run
numbers from the logs.
"""
import os
import tempfile
import time

import numpy as np

from .bench import machine, subcommand

__all__ = []

#: the settings the round benchmark reproduces, by model
SETTINGS = {"mlp": "fig03", "cnn": "fig17"}


def _config(model, rule, attack):
    """The run config of the model's figure with this rule (its parameters
    in that figure, else the aggregator benchmark's) and attack."""
    from . import aggregators, attacks, experiment
    from .bench import BENCH_PARAMS
    spec = experiment.load_spec(SETTINGS[model])
    cfg = dict(experiment.resolve_runs(spec)[0])
    params = next((arm.rule_params for arm in spec.arms if arm.rule == rule),
                  BENCH_PARAMS.get(rule, {}))
    cfg["rule"], cfg["rule_params"] = rule, aggregators.get(rule, **params).params
    if attack == "none":
        cfg["attack"], cfg["attack_params"] = None, {}
    else:
        cfg["attack"], cfg["attack_params"] = attack, attacks.get(attack).params
    return cfg


def _phases(run):
    """One round split into timed phases (MXNet drained after each): what
    ByzantineTrainer.step() does, unrolled."""
    import mxnet as mx
    t, times = time.perf_counter(), {}

    def lap(name):
        nonlocal t
        mx.nd.waitall()
        now = time.perf_counter()
        times[name] = now - t
        t = now

    tr, cfg = run.trainer, run.cfg
    idx = run.sampler.next_round().ravel()
    x = mx.nd.array(run.normalise(run.x[idx]), ctx=run.ctx)
    y = mx.nd.array(run.y[idx], ctx=run.ctx)
    lap("batch")
    tr.backward_all(run.net, run.loss_fn, x, y)
    lap("forward/backward")
    grads = tr._grads.collect(tr._scale / cfg["batch_size"])
    lap("gradient matrix")
    sent = tr.attack(grads, tr.rng) if tr.attack is not None else grads
    lap("attack")
    agg = tr.aggregator(sent)
    lap("aggregation")
    tr._grads.scatter(agg)
    tr._reduced, tr._last = True, {}
    tr._optimizer.rescale_grad = 1.0
    tr._apply(False)
    lap("update")
    return times


@subcommand("round", help="one training round against one big-batch forward/backward")
def _round(parser):
    parser.add_argument("--model", choices=sorted(SETTINGS), default="mlp")
    parser.add_argument("--rules", nargs="+", default=["mean", "marmed", "meamed"])
    parser.add_argument("--attacks", nargs="+", default=["none", "gaussian"])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions (default 40 for mlp, 3 for cnn)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads (the experiments' default is 1 per run)")
    return _run_round


def _run_round(args):
    from . import runner, training
    runner._pin_threads(args.threads)
    import mxnet as mx
    from mxnet import autograd

    repeats = args.repeats or (40 if args.model == "mlp" else 3)
    runs = {}
    for attack in args.attacks:
        for rule in args.rules:
            runs[(rule, attack)] = training.Training(_config(args.model, rule, attack), None)
    first = next(iter(runs.values()))
    cfg = first.cfg
    n, b = cfg["n"], cfg["batch_size"]
    idx = first.sampler.next_round().ravel()
    xb = mx.nd.array(first.normalise(first.x[idx]))
    yb = mx.nd.array(first.y[idx])

    def big():   # the stock single-batch pass on the same net and samples
        with autograd.record():
            loss = first.loss_fn(first.net(xb), yb)
        loss.backward()
        mx.nd.waitall()

    def timed(fn):
        t = time.perf_counter()
        fn()
        mx.nd.waitall()
        return time.perf_counter() - t

    for run in runs.values():      # warm-up: allocation, numba, first-round checks
        for _ in range(2):
            run.round()
    big()
    single, rounds, aggs, phases = [], {k: [] for k in runs}, {k: [] for k in runs}, {}
    for _ in range(repeats):
        single.append(timed(big))
        for key, run in runs.items():
            rounds[key].append(timed(run.round))
            grads = run.trainer._grads.matrix.array   # this round's attacked input
            sent = run.trainer.attack(grads, np.random.default_rng(0)) \
                if run.trainer.attack is not None else grads
            aggs[key].append(timed(lambda: run.trainer.aggregator(sent)))
    for key, run in runs.items():
        laps = [_phases(run) for _ in range(max(3, repeats // 4))]
        phases[key] = {k: min(lap[k] for lap in laps) for k in laps[0]}
    floors = _floors(first, big, timed, repeats)

    s = min(single)
    lines = [machine(), "",
             f"model {args.model} (d = {first.trainer._grads.matrix.d}), n = {n} workers x "
             f"b = {b}, setting of {cfg['figure']}, {repeats} interleaved repetitions, "
             f"{args.threads} thread(s); gradients: "
             f"{first.trainer.gradient_path}",
             f"single batch of {n * b}: forward/backward min {1e3 * s:.2f} ms, "
             f"median {1e3 * np.median(single):.2f} ms", "",
             f"{'rule':<10}{'attack':<11}{'round ms':>9}{'ratio':>7}{'median':>8}"
             f"{'agg ms':>8}{'agg share':>10}"]
    for key, ts in rounds.items():
        r, a = min(ts), min(aggs[key])
        lines.append(f"{key[0]:<10}{key[1]:<11}{1e3 * r:>9.2f}{r / s:>7.2f}"
                     f"{np.median(ts) / np.median(single):>8.2f}{1e3 * a:>8.2f}"
                     f"{a / r:>10.0%}")
    lines += ["", "ratio: fastest round / fastest single batch; median: ratio of medians;",
              "agg share: fastest aggregation on a round's attacked matrix / fastest round",
              "", "profile of a round by phase (fastest of repeated rounds, ms):"]
    names = list(next(iter(phases.values())))
    lines.append(f"{'rule':<10}{'attack':<11}" + "".join(f"{k[:16]:>18}" for k in names))
    for key, ph in phases.items():
        lines.append(f"{key[0]:<10}{key[1]:<11}" + "".join(f"{1e3 * ph[k]:>18.2f}"
                                                          for k in names))
    return "\n".join(lines + _floor_lines(floors, s, cfg))


def _floors(run, big, timed, repeats):
    """Work no round of this setting can skip, timed alone and interleaved
    with the single batch: the per-worker weight products of the batched
    pass (random factors of the round's shapes), the Gaussian attack's
    normal draws, and one evaluation of the test set."""
    tr, cfg = run.trainer, run.cfg
    n, b, d = cfg["n"], cfg["batch_size"], tr._grads.matrix.d
    rng = np.random.default_rng(0)
    jobs = {"evaluation": lambda: run.evaluate(0, 0.0)}
    fused = next((f for f in tr._fused.values() if f is not None), None)
    if fused is not None:
        shapes = [(blk._units, blk.weight.shape[1]) for blk, _, _ in fused.slots]
        fac = [(rng.standard_normal((n, o, b), dtype=np.float32),
                rng.standard_normal((n, b, i), dtype=np.float32),
                np.empty((n, o, i), np.float32)) for o, i in shapes]
        jobs["products"] = lambda: [np.matmul(x, y, out=z) for x, y, z in fac]
    from . import attacks
    cells = attacks.get("gaussian").params["q"] * d     # the paper's q rows of d
    jobs["normals"] = lambda: rng.standard_normal(cells, dtype=np.float32)
    times, single = {k: [] for k in jobs}, []
    for _ in range(max(5, repeats // 2)):
        single.append(timed(big))
        for k, fn in jobs.items():
            times[k].append(timed(fn))
    return {"single": min(single), "cells": cells,
            **{k: min(v) for k, v in times.items()}}


def _floor_lines(f, s, cfg):
    lines = ["", "work every round must do, timed alone (fastest, ms; x: of the fastest "
             f"single batch, {1e3 * f['single']:.2f} ms in this loop):"]
    s = min(s, f["single"])
    if "products" in f:
        lines.append(f"  per-worker weight products (20 thin matmuls) {1e3 * f['products']:7.2f}"
                     f"  {f['products'] / s:5.2f}x")
    lines.append(f"  {f['cells']:,} float32 normals (Gaussian attack)   {1e3 * f['normals']:7.2f}"
                 f"  {f['normals'] / s:5.2f}x")
    per = f["evaluation"] / cfg["eval_every"]
    lines.append(f"  one evaluation of the test set            {1e3 * f['evaluation']:7.2f}"
                 f"  {f['evaluation'] / s:5.2f}x  ({1e3 * per:.2f} ms a round at "
                 f"eval_every={cfg['eval_every']})")
    if "products" in f:
        floor = 1 + (f["products"] + f["normals"]) / s
        lines.append(f"  floor of a Gaussian-attack round (single batch + products + normals, "
                     f"no aggregation): {floor:.2f}x")
    return lines


@subcommand("figure", help="a whole figure's runs with --jobs: wall time")
def _figure(parser):
    parser.add_argument("figure", nargs="?", default="fig02")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--results", default=None,
                        help="keep the logs here (default: a temporary folder)")
    return _run_figure


def _done_line(path):
    """The done line of a run's log, or None."""
    from . import runner
    return next((line for line in runner.read_log(path) if line["type"] == "done"), None)


def _run_figure(args):
    from . import experiment, runner
    spec = experiment.load_spec(args.figure)
    changes = {k: v for k, v in (("seeds", args.seeds and tuple(args.seeds)),
                                 ("rounds", args.rounds)) if v}
    if changes:
        spec = experiment.override(spec, **changes)
    out = args.results or tempfile.mkdtemp(prefix="byzsgd-bench-")
    paths = [runner.log_path(out, cfg) for cfg in experiment.resolve_runs(spec)]
    finished = {p for p in paths if _done_line(p) is not None}   # not timed: not rerun
    t = time.perf_counter()
    runner.run(spec, out=out, jobs=args.jobs, progress=False, reuse=False)  # train them all
    wall = time.perf_counter() - t
    done = [_done_line(p) for p in paths if p not in finished]
    if not done:
        return f"{spec.figure}: all {len(paths)} runs were already done in {out}: nothing timed"
    runs = len(done)
    per_run = np.array([d["elapsed"] for d in done])
    rounds = sum(d["rounds"] for d in done)
    skipped = f"; {len(finished)} runs already done, not timed" if finished else ""
    return "\n".join([
        machine(), "",
        f"{spec.figure}: {runs} runs{skipped} ({len(spec.arms)} arms x {len(spec.seeds)} seeds) x "
        f"{spec.rounds} rounds, evaluation every {spec.eval_every}, --jobs {args.jobs}",
        f"wall time {wall:.0f} s ({wall / 60:.1f} min); {rounds / wall:.0f} rounds/s overall",
        f"per run (training + evaluations, from the logs): median {np.median(per_run):.1f} s, "
        f"min {per_run.min():.1f} s, max {per_run.max():.1f} s",
        f"overhead (process start, data, model set-up, logs): "
        f"{wall - per_run.sum() / args.jobs:.0f} s of the wall time",
        f"logs: {os.path.abspath(out)}"])


@subcommand("scaling", help="rounds/s of one process against --jobs processes at once")
def _scaling(parser):
    parser.add_argument("--model", choices=sorted(SETTINGS), default="mlp")
    parser.add_argument("--rule", default="marmed")
    parser.add_argument("--attack", default="gaussian")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="timed rounds per process (after a warm-up)")
    return _run_scaling


def _timed_rounds(model, rule, attack, seconds, start):
    """In a child: rounds of one run for ``seconds`` from the shared start
    signal, with the run's evaluations (every eval_every rounds, timed with
    the round before); returns the round times."""
    from . import runner, training
    runner._pin_threads(1)
    import mxnet as mx
    run = training.Training(_config(model, rule, attack), None)
    for _ in range(5):
        run.round()
    mx.nd.waitall()
    start.wait()
    times, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        run.round()
        if (len(times) + 1) % run.cfg["eval_every"] == 0:
            run.evaluate(len(times) + 1, 0.0)
        mx.nd.waitall()
        times.append(time.perf_counter() - t)
    return times


def _run_scaling(args):
    """What --jobs K can gain here: the same rounds in 1 process, then in K
    at once (each pinned to 1 thread, in the runner's child environment)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import runner
    if args.jobs < 1:
        raise ValueError(f"--jobs={args.jobs} must be >= 1")
    spawn = multiprocessing.get_context("spawn")
    rates, medians = {}, {}
    for k in sorted({1, args.jobs}):
        with runner._child_environment(1), spawn.Manager() as manager, \
                ProcessPoolExecutor(max_workers=k, mp_context=spawn) as pool:
            start = manager.Barrier(k)
            futures = [pool.submit(_timed_rounds, args.model, args.rule, args.attack,
                                   args.seconds, start) for _ in range(k)]
            times = [f.result() for f in futures]
        rates[k] = sum(len(t) / sum(t) for t in times)
        medians[k] = [1e3 * float(np.median(t)) for t in times]
    lines = [machine(), "",
             f"model {args.model}, {args.rule} under {args.attack}, setting of "
             f"{SETTINGS[args.model]}; {args.seconds:g} s of rounds (and the run's evaluations) "
             "per process, 1 thread each"]
    for k in rates:
        lines.append(f"{k} process(es) at once: {rates[k]:6.1f} rounds/s in all; median round "
                     + ", ".join(f"{m:.1f}" for m in medians[k]) + " ms")
    k = max(rates)
    lines.append(f"throughput of {k} against 1: {rates[k] / rates[1]:.2f}x (ideal {k}x)")
    return "\n".join(lines)
