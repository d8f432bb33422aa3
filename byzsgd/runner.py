"""Executes a :class:`~byzsgd.experiment.Spec`: every (arm, seed) run, logged
as JSON lines, resumable after ``kill -9``, optionally in parallel processes.

Log ``<out>/<figure>/<run_id>.jsonl`` (format: README.md, Logs): a config line,
an eval line at round 0, every ``eval_every`` rounds and at the last round,
then a done line. Lines are appended whole with flush + fsync; a torn last
line (a crash mid-write) is ignored when reading and cut when resuming.
Non-finite numbers are written as null.

Dead runs: once every parameter of the net is NaN, no update can change it
(NaN minus anything is NaN), so the model and all its later evaluations are
fixed. The run then stops computing rounds: it evaluates once and writes the
remaining eval lines with that accuracy, ``train_loss`` null (it would be
NaN) and ``diagnostics`` ``{"skipped": true}``; the done line's ``dead_at``
names the round (null for a run that never died). ``skip_dead=False`` computes
every round, for the per-round diagnostics. A merely diverged run (some
parameter still finite, e.g. Krum selecting a row with finite cells) is
computed to the end.

Resume: at an evaluation, if CHECKPOINT_SECONDS have passed since the last
checkpoint (a checkpoint with its fsyncs costs ~50 ms, as much as a dozen MLP
rounds), the model, the trainer (optimizer state, attack rng, round counter)
and the sampler's position are checkpointed in
``<out>/<figure>/.ckpt/<run_id>/r<round>/`` (written to a temporary folder,
then renamed, so a checkpoint is complete or absent). A rerun skips runs
with a done line, cuts every other log back to its last checkpoint's round
and continues from there; a run without a checkpoint starts over.
Checkpoints are deleted when the run is done. MXNet's own RNG (dropout)
cannot be saved, so it is reseeded from (seed, round) after every
evaluation, interrupted or not: a resumed run is bit-identical to an
uninterrupted one at the same thread count.

Shared runs: a run not started yet that a finished log under the same
``out`` already holds under other names (another figure's reference, Fig.
9's b = 32 arms as Fig. 2's runs) is copied from it, see :func:`run`.
"""
import contextlib
import datetime
import fcntl
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from functools import partial
from pathlib import Path

import numpy as np

from . import data, provenance
from .experiment import _positive, preflight
# storage (logs, checkpoints) is runlog's; log_path, read_log and CKPT are re-exported
from .runlog import (CKPT, _Appender, _ckpt_root, _computation, _copy_run, _drop_checkpoints,
                     _finite, _resume_point, _rewrite, _rounds_done, _save_checkpoint,
                     check_figure_folder, finished_runs, jsonable, log_path, read_log)

__all__ = ["run", "execute", "context", "log_path", "read_log", "CKPT", "THREAD_VARS",
           "BusyError"]

#: Wall-clock seconds between checkpoints (taken at evaluations): the most
#: work an interrupted run repeats.
CHECKPOINT_SECONDS = 20.0
# Thread pools read these once, when their library loads (numba: see _pin_threads).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: OpenMP's idle threads sleep instead of spinning, unless the user set a
#: policy: with libgomp's default a thread of each run busy-waited, and with
#: --jobs 2 a run took 25.7 s instead of 15.3 s (experiments/benchmarks/wait_policy.txt).
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


# -------------------------------------------------------------- one run

def _mx_seed(seed, round_):
    # a distinct, reproducible MXNet RNG stream per (seed, round)
    return int(np.random.SeedSequence([seed, round_, 0x3D]).generate_state(1)[0] >> 1)


_CONTEXT = re.compile(r"^(cpu|gpu)(?:\((\d+)\))?$")


def context(text):
    """The mxnet Context named ``text``: "cpu", "gpu", "gpu(1)", ...; refuses a
    GPU this mxnet build does not see."""
    import mxnet as mx
    m = _CONTEXT.match(str(text).replace(" ", ""))
    if m is None:
        raise ValueError(f"unknown context {text!r}; valid forms: cpu, gpu, gpu(K)")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "gpu" and index >= mx.context.num_gpus():
        raise ValueError(f"context {text!r}: this mxnet build sees "
                         f"{mx.context.num_gpus()} GPU(s) (a CUDA build such as "
                         f"mxnet-cu112==1.9.1 is needed for GPUs)")
    return getattr(mx, kind)(index)


# what each eval line records of the last round (trainer.diagnostics)
_DIAGNOSTICS = ("agg_norm", "cells_attacked", "rule_info")


class _Training:
    """One run's network, trainer and data, and its three operations: a round,
    an evaluation, a checkpoint."""

    def __init__(self, cfg, data_dir, ctx="cpu"):
        import mxnet as mx
        from mxnet import gluon

        from . import fused, models
        from .trainer import ByzantineTrainer

        self.cfg, self.mx, self.ctx = cfg, mx, context(ctx)
        self.x, self.y = data.load_raw(cfg["dataset"], data_dir, train=True)
        self.x_test, self.y_test = data.load_raw(cfg["dataset"], data_dir, train=False)
        self.sampler = data.WorkerSampler(len(self.y), cfg["n"], cfg["batch_size"],
                                          cfg["seed"], cfg["partition"])
        self.normalise = partial(data.normalise, cfg["dataset"])
        self.test_input = None
        mx.random.seed(cfg["seed"])                      # the initial weights
        self.net = models.get_model(cfg["model"])
        self.net.initialize(mx.init.Xavier(), ctx=self.ctx)
        self.net(mx.nd.zeros((1,) + self.x.shape[1:], ctx=self.ctx))  # deferred shapes
        self.trainer = ByzantineTrainer(
            self.net.collect_params(), cfg["optimizer"],
            {"learning_rate": cfg["lr"], **cfg["optimizer_params"]},
            aggregator=(cfg["rule"], cfg["rule_params"]),
            attack=(cfg["attack"], cfg["attack_params"]) if cfg["attack"] else None,
            num_workers=cfg["n"], seed=cfg["seed"])
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        # None: all workers in one batched pass where the net allows it
        # (byzsgd.fused), False: worker by worker (what distributed workers do)
        self.batched = None
        self._plan = fused.plan(self.net)
        self.loss_sum, self.loss_rounds = mx.nd.zeros((1,), ctx=self.ctx), 0

    @property
    def gradients(self):
        """How the workers' gradients are computed, as logged: "batched" or "loop"."""
        return "batched" if self.batched is not False and self._plan is not None else "loop"

    def restore(self, ckpt):
        """Continue from checkpoint folder ``ckpt``; return its meta dict."""
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        self.net.load_parameters(str(ckpt / "model.params"), ctx=self.ctx)
        self.trainer.load_states(str(ckpt / "trainer.states"))
        self.sampler.set_state(meta["sampler"])
        return meta

    def reseed(self, round_):
        """MXNet's RNG (dropout) after an evaluation; see the module docstring."""
        self.mx.random.seed(_mx_seed(self.cfg["seed"], round_))

    def round(self):
        """Every worker's forward/backward on its own batch (one batched pass
        where the model allows it), then one step."""
        nd, b = self.mx.nd, self.cfg["batch_size"]
        idx = self.sampler.next_round().ravel()
        x = nd.array(self.normalise(self.x[idx]), ctx=self.ctx)
        y = nd.array(self.y[idx], ctx=self.ctx)
        loss = self.trainer.backward_all(self.net, self.loss_fn, x, y, batched=self.batched)
        self.loss_sum += loss.mean() * self.cfg["n"]   # the sum of the workers' means
        self.trainer.step(b)
        self.loss_rounds += 1

    def evaluate(self, round_, elapsed):
        """The eval line: accuracies on the whole test set, and the mean
        training loss of the workers' batches since the last evaluation."""
        topk = self.cfg["topk"]
        if self.test_input is None:   # normalised once: 51 evaluations of a run
            self.test_input = self.mx.nd.array(self.normalise(self.x_test), ctx=self.ctx)
        acc = data.evaluate(self.net, self.test_input, self.y_test, sorted({1, topk}),
                            ctx=self.ctx)
        loss = (float(self.loss_sum.asscalar()) / (self.cfg["n"] * self.loss_rounds)
                if self.loss_rounds else None)
        self.loss_sum, self.loss_rounds = self.mx.nd.zeros((1,), ctx=self.ctx), 0
        diag = self.trainer.diagnostics   # of the round just finished; {} at round 0
        return {"type": "eval", "round": round_, "top1": acc[1], "topk": acc[topk],
                "train_loss": _finite(loss), "elapsed": round(elapsed, 3),
                "diverged": self.trainer.diverged_at is not None,
                "diagnostics": jsonable({k: diag[k] for k in _DIAGNOSTICS if k in diag})}

    def dead(self):
        """Whether every parameter of the net (trained or not, BatchNorm's
        running statistics included) is NaN: no update changes a NaN (NaN
        minus anything is NaN), so the model, and every later evaluation, are
        fixed for good. The trainer's per-round copy of its parameters says
        when those are all NaN; only then is the rest of the net copied."""
        if not self.trainer.diagnostics.get("all_nan"):
            return False
        return all(np.isnan(p.data(self.ctx).asnumpy()).all()
                   for p in self.net.collect_params().values() if p._data is not None)

    def checkpoint(self, root, round_, elapsed):
        _save_checkpoint(root, round_, self.net, self.trainer, {
            "round": round_, "elapsed": elapsed, "sampler": self.sampler.state()})


class BusyError(RuntimeError):
    """A run's log is held by another process (two `byzsgd run` at once)."""


@contextlib.contextmanager
def _exclusive(path):
    """Hold an exclusive lock on the run at ``path`` (two processes writing one
    log would corrupt it): ``.<run_id>.lock`` beside the log, deleted after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.stem}.lock")
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{path} is being written by another process; wait for "
                               f"it to finish or stop it") from None
        try:
            yield
        finally:
            lock.unlink()


def execute(cfg, path, data_dir=None, tick=None, ctx="cpu", skip_dead=True):
    """Run (or finish) the run ``cfg``, logging to ``path``; return the done line.

    ``tick(k)`` is called as rounds complete (progress reporting); ``ctx``
    ("cpu", "gpu(0)", ...) is the device of the network and its n workers.
    ``skip_dead``: once every parameter is NaN (the run is dead, see
    :meth:`_Training.dead`), evaluate once and write the remaining eval lines
    instead of computing rounds that cannot change anything.
    """
    with _exclusive(Path(path)):
        return _execute(cfg, Path(path), data_dir, tick, ctx, skip_dead)


def _skipped_evals(run, log, after, elapsed):
    """The eval lines of a dead run after round ``after``: one evaluation of
    its fixed model; the rounds were not computed, so there is no training
    loss (it would be NaN: null) and no per-round diagnostics."""
    cfg = run.cfg
    later = [r for r in range(after + 1, cfg["rounds"] + 1)
             if r % cfg["eval_every"] == 0 or r == cfg["rounds"]]
    line = run.evaluate(later[0], elapsed)
    for r in later:
        log.write({**line, "round": r, "train_loss": None, "diagnostics": {"skipped": True}})


def _execute(cfg, path, data_dir, tick, ctx, skip_dead=True):
    root = _ckpt_root(path)
    lines, kept, ckpt = _resume_point(path, cfg)
    if lines and lines[-1].get("type") == "done":
        _drop_checkpoints(root)
        return lines[-1]
    run = _Training(cfg, data_dir, ctx)
    if ckpt is None:
        shutil.rmtree(root, ignore_errors=True)
        kept = [{"type": "config", **cfg, "versions": provenance.versions(),
                 "machine": provenance.machine(), "device": str(ctx),
                 "gradients": run.gradients,
                 "started": datetime.datetime.now().isoformat(timespec="seconds")}]
    _rewrite(path, kept)
    start, elapsed0 = 0, 0.0
    if ckpt is not None:
        meta = run.restore(ckpt)
        start, elapsed0 = meta["round"], meta["elapsed"]
    t0 = last_ckpt = time.perf_counter()
    log = _Appender(path)
    try:
        if ckpt is None:
            log.write(run.evaluate(0, time.perf_counter() - t0))
        run.reseed(start)
        dead_at = None
        for round_ in range(start + 1, cfg["rounds"] + 1):
            run.round()
            if tick:
                tick(1)
            last = round_ == cfg["rounds"]
            if round_ % cfg["eval_every"] == 0 or last:
                elapsed = elapsed0 + time.perf_counter() - t0
                log.write(run.evaluate(round_, elapsed))     # the line first, then the
                run.reseed(round_)                            # checkpoint that makes it final
                if not last and time.perf_counter() - last_ckpt >= CHECKPOINT_SECONDS:
                    run.checkpoint(root, round_, elapsed)
                    last_ckpt = time.perf_counter()
            if skip_dead and not last and run.dead():
                dead_at = round_
                _skipped_evals(run, log, round_, elapsed0 + time.perf_counter() - t0)
                if tick:
                    tick(cfg["rounds"] - round_)
                break
        done = {"type": "done", "rounds": cfg["rounds"],
                "elapsed": round(elapsed0 + time.perf_counter() - t0, 3),
                "diverged_at": run.trainer.diverged_at, "dead_at": dead_at}
        log.write(done)
    finally:
        log.close()
    _drop_checkpoints(root)
    return done


# ------------------------------------------------------------ many runs

def _pin_threads(threads):
    """Pin this process's thread pools: environment variables for libraries
    not loaded yet (OpenMP, so mxnet, reads its variable once, at load), and
    numba's runtime setting (changing NUMBA_NUM_THREADS after numba started
    its threads is an error)."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ.setdefault(*WAIT_POLICY)
    if "numba" in sys.modules:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)


def _can_run_here(threads):
    """Pin the thread count for this process if mxnet is not loaded yet; say
    whether this process runs with ``threads`` threads."""
    if "mxnet" not in sys.modules:
        _pin_threads(threads)
    return os.environ.get("OMP_NUM_THREADS") == str(threads)


@contextlib.contextmanager
def _child_environment(threads):
    """Thread variables that spawned processes inherit from birth, before
    anything (even their __main__ module) loads a library reading them;
    OMP_WAIT_POLICY unless the user set one."""
    var = WAIT_POLICY[0]
    saved = {v: os.environ.get(v) for v in THREAD_VARS + (var,)}
    os.environ.update({v: str(threads) for v in THREAD_VARS})
    os.environ.setdefault(*WAIT_POLICY)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


class _Ticker:
    """Sends round counts to the parent at most every 0.5 s."""

    def __init__(self, queue):
        self.queue, self.pending, self.last = queue, 0, time.monotonic()

    def __call__(self, k):
        self.pending += k
        if time.monotonic() - self.last > 0.5:
            self.flush()

    def flush(self):
        if self.pending:
            self.queue.put(self.pending)
        self.pending, self.last = 0, time.monotonic()


_TICKER = None   # a child process's _Ticker


def _die_with_parent():
    """Linux: have the kernel kill this process when its parent dies, so a
    killed `byzsgd run` leaves no orphan writing logs behind a rerun."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)      # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass                                            # not Linux: best effort


def _child_init(threads, queue):
    global _TICKER
    _die_with_parent()
    _pin_threads(threads)
    _TICKER = _Ticker(queue)


def _child_run(cfg, path, data_dir, ctx, skip_dead):
    try:
        return execute(cfg, path, data_dir, _TICKER, ctx, skip_dead)
    finally:
        _TICKER.flush()


def _run_in_children(todo, jobs, threads, data_dir, ctx, bar, skip_dead):
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()        # handed over at process start, as initargs
    with _child_environment(threads), ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)), mp_context=spawn, initializer=_child_init,
            initargs=(threads, queue)) as pool:
        pending = {pool.submit(_child_run, cfg, str(path), data_dir, ctx, skip_dead): cfg
                   for cfg, path in todo}
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    pending.pop(fut)
                    fut.result()            # re-raises a run's failure here
                    bar.runs_done()
                while not queue.empty():
                    bar.update(queue.get())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    while not queue.empty():         # the children are gone: every tick has arrived
        bar.update(queue.get())


def _reuse_finished(todo, fresh, out, ctx, bar):
    """Copy the runs of ``todo`` whose log paths are in ``fresh`` (nothing of
    them on disk to resume) from finished runs with the same computation on
    device ``ctx`` under ``out``; return the runs still to train."""
    if not fresh:
        return todo
    finished, fresh, left = finished_runs(out), set(fresh), []
    for cfg, path in todo:
        source = finished.get((_computation(cfg), str(ctx))) if path in fresh else None
        if source is None:
            left.append((cfg, path))
            continue
        with _exclusive(path):
            _copy_run(source, path, cfg, out)
        _drop_checkpoints(_ckpt_root(path))
        bar.note(f"{cfg['figure']}/{cfg['run_id']}: the same run as {source} "
                 "(settings equal but for names), copied; --no-reuse trains it")
        bar.update(cfg["rounds"])
        bar.runs_done()
    return left


class _Bar:
    """tqdm over all rounds of all runs, with the count of finished runs."""

    def __init__(self, figure, total_runs, done_runs, total_rounds, done_rounds, enabled):
        from tqdm import tqdm
        self.figure, self.total, self.done = figure, total_runs, done_runs
        self.tqdm = tqdm(total=total_rounds, initial=done_rounds, unit="round",
                         disable=not enabled, dynamic_ncols=True, desc=self._desc())

    def _desc(self):
        return f"{self.figure}: {self.done}/{self.total} runs"

    def update(self, k):
        self.tqdm.update(k)

    def note(self, text):
        self.tqdm.write(text, file=sys.stderr)

    def runs_done(self, k=1):
        self.done += k
        self.tqdm.set_description(self._desc())

    def close(self):
        self.tqdm.close()


def run(spec, out="results", jobs=1, data_dir=None, progress=True, ctx="cpu",
        skip_dead=True, reuse=True):
    """Execute every (arm, seed) run of ``spec`` not done yet; return the log paths.

    Settings are checked first (:func:`byzsgd.experiment.preflight`), and so
    are the logs of the figure already under ``out``
    (:func:`byzsgd.runlog.check_figure_folder`): nothing trains on a bad spec
    or beside runs of other settings. ``jobs`` > 1 runs that many processes,
    each pinned to ``spec.threads`` threads; with 1 job the runs are done here unless MXNet
    is already loaded with another thread count. ``ctx``, ``skip_dead``: see
    :func:`execute`.

    ``reuse``: a run not started yet whose settings equal those of a finished
    run in another log under ``out`` in everything but how a figure names and
    draws it (figure, label, reference, ...: e.g. Fig. 16's Mean and Fig. 7's
    reference) is copied from that log instead of trained; its config line
    says ``copied_from`` and keeps the source's versions and machine. Runs are
    deterministic on one instruction set (README, Logs), so the copy holds
    what training there gives.
    """
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    # checked before pinning: a bad count would reach OpenMP's environment
    _positive(spec, threads=spec.threads)
    here = jobs == 1 and _can_run_here(spec.threads)
    configs = preflight(spec, data_dir)
    context(ctx)
    data_dir = str(data.resolve_root(data_dir))
    check_figure_folder(out, configs)
    paths = [log_path(out, cfg) for cfg in configs]
    done = [_rounds_done(p, cfg) for p, cfg in zip(paths, configs)]
    todo = [(cfg, p) for cfg, p, k in zip(configs, paths, done) if k < cfg["rounds"]]
    bar = _Bar(spec.figure, len(configs), len(configs) - len(todo),
               sum(c["rounds"] for c in configs), sum(done), progress)
    try:
        if reuse:
            todo = _reuse_finished(todo, [p for p, k in zip(paths, done) if not k], out, ctx, bar)
        if here:
            for cfg, path in todo:
                execute(cfg, path, data_dir, bar.update, ctx, skip_dead)
                bar.runs_done()
        elif todo:
            _run_in_children(todo, jobs, spec.threads, data_dir, ctx, bar, skip_dead)
    finally:
        bar.close()
    return paths
