"""One run: its network, trainer and data, trained round by round and
logged as JSON lines, resumable after ``kill -9`` (:func:`execute`). Many runs,
in parallel processes, are :mod:`byzsgd.runner`'s; the log files and
checkpoints on disk are :mod:`byzsgd.runlog`'s.

Log ``<out>/<figure>/<run_id>.jsonl`` (format: README.md, Logs): a config line,
an eval line at round 0, every ``eval_every`` rounds and at the last round,
then a done line.

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
``<out>/<figure>/.ckpt/<run_id>/r<round>/``. A rerun cuts the log back to its
last checkpoint's round and continues from there; a run without a checkpoint
starts over. Checkpoints are deleted when the run is done. MXNet's own RNG
(dropout) cannot be saved, so it is reseeded from (seed, round) after every
evaluation, interrupted or not: a resumed run is bit-identical to an
uninterrupted one at the same thread count.
"""
import datetime
import json
import re
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np

from . import data, provenance
from .runlog import (_Appender, _ckpt_root, _drop_checkpoints, _finite, _resume_point,
                     _rewrite, _save_checkpoint, exclusive, jsonable)

__all__ = ["Training", "execute", "context"]

#: Wall-clock seconds between checkpoints (taken at evaluations): the most
#: work an interrupted run repeats.
CHECKPOINT_SECONDS = 20.0


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


class Training:
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


def execute(cfg, path, data_dir=None, tick=None, ctx="cpu", skip_dead=True):
    """Run (or finish) the run ``cfg``, logging to ``path``; return the done line.

    ``tick(k)`` is called as rounds complete (progress reporting); ``ctx``
    ("cpu", "gpu(0)", ...) is the device of the network and its n workers.
    ``skip_dead``: once every parameter is NaN (the run is dead, see
    :meth:`Training.dead`), evaluate once and write the remaining eval lines
    instead of computing rounds that cannot change anything.
    """
    with exclusive(Path(path)):
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
    run = Training(cfg, data_dir, ctx)
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
