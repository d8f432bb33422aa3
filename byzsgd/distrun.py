"""``byzsgd run FIGURE --distributed -n WORKERS -s SERVERS``: a figure's runs,
each on its own local ps-lite cluster.

For every (arm, seed) run not finished yet, :func:`run` starts a cluster
(:func:`byzsgd.launch.launch`) whose workers execute ``python -m
byzsgd.distrun JOB`` (:func:`worker_main`): the run's training of
:mod:`byzsgd.training` with ``kvstore="dist_byz"``, each worker computing
its own batches (the sampler is seeded, so every worker knows every batch;
a Byzantine worker computes all of them). Worker 0 evaluates and writes the
same log lines as a single-process run (``device`` says "dist_byz n=.. s=..";
``train_loss`` is the mean over the batches worker 0 computed). The spec's
n is replaced by the cluster's n. Distributed runs are not resumable: an
unfinished log is restarted from round 0 (optimizer states live on the
servers).
"""
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from . import data, launch, provenance
from .experiment import override, preflight
from .runlog import (_Appender, _rewrite, _rounds_done, check_figure_folder, exclusive,
                     jsonable, kept_elsewhere, log_path)

__all__ = ["run", "worker_main", "train"]


def _training(cfg, data_dir, options):
    """training.Training with the trainer rebuilt in distributed mode."""
    from .training import Training
    from .trainer import ByzantineTrainer

    class _DistTraining(Training):
        def __init__(self):
            super().__init__(cfg, data_dir)    # seeded weights; a local trainer, replaced:
            self.trainer = ByzantineTrainer(
                self.net.collect_params(), cfg["optimizer"],
                {"learning_rate": cfg["lr"], **cfg["optimizer_params"]},
                aggregator=(cfg["rule"], cfg["rule_params"]),
                attack=(cfg["attack"], cfg["attack_params"]) if cfg["attack"] else None,
                num_workers=cfg["n"], seed=cfg["seed"], kvstore="dist_byz", **options)

        def round(self):
            from mxnet import autograd
            nd, b = self.mx.nd, self.cfg["batch_size"]
            idx = self.sampler.next_round()          # (n, b): every worker's batch
            local = self.trainer.local_workers
            for w in local:
                x = nd.array(self.normalise(self.x[idx[w]]), ctx=self.ctx)
                y = nd.array(self.y[idx[w]], ctx=self.ctx)
                with self.trainer.worker(w):
                    with autograd.record():
                        loss = self.loss_fn(self.net(x), y)
                    loss.backward()
                # evaluate() divides by n per round: weight the local mean accordingly
                self.loss_sum += loss.mean() * (self.cfg["n"] / len(local))
            self.trainer.step(b)
            self.loss_rounds += 1

    return _DistTraining()


def _device(n, servers):
    """A cluster run's ``device`` in its log."""
    return f"cpu, dist_byz n={n} s={servers}"


def train(cfg, data_dir, options, servers=None, log=None, weights_out=None):
    """One run on the cluster this worker is in; worker 0 writes ``log``
    (and the final parameters to ``weights_out``, an .npz)."""
    run = _training(cfg, data_dir, options)
    lead = run.trainer.rank == 0
    appender = None
    if lead and log is not None:
        _rewrite(Path(log), [{"type": "config", **cfg, "versions": provenance.versions(),
                              "machine": provenance.machine(),
                              "device": _device(cfg["n"], servers),
                              "started": datetime.datetime.now().isoformat(timespec="seconds")}])
        appender = _Appender(Path(log))
    t0 = time.perf_counter()
    try:
        if appender:
            appender.write(run.evaluate(0, 0.0))
        run.reseed(0)
        for round_ in range(1, cfg["rounds"] + 1):
            run.round()
            if round_ % cfg["eval_every"] and round_ != cfg["rounds"]:
                continue
            if appender:
                appender.write(run.evaluate(round_, time.perf_counter() - t0))
            # the others wait here, not inside the next round, whose stall
            # timeout (on the servers) must not count worker 0's evaluation
            run.trainer.client.barrier(f"evaluation at round {round_}")
            run.reseed(round_)
        if appender:
            appender.write({"type": "done", "rounds": cfg["rounds"],
                            "elapsed": round(time.perf_counter() - t0, 3),
                            "diverged_at": run.trainer.diverged_at,
                            "dead_at": None})   # every round is computed (training: skip_dead)
    finally:
        if appender:
            appender.close()
    if lead and weights_out:
        import numpy as np
        params = run.net.collect_params()
        np.savez(weights_out, **{k: params[k].data().asnumpy() for k in sorted(params.keys())})


def worker_main(argv=None):
    """``python -m byzsgd.distrun JOB``: JOB is a JSON file with cfg,
    data_dir, options (DistributedTrainer keywords + servers), log,
    weights_out."""
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    train(job["cfg"], job.get("data_dir"), dict(job.get("options") or {}), job.get("servers"),
          job.get("log"), job.get("weights_out"))
    return 0


def run(spec, workers, servers, out="results", data_dir=None, round_timeout=120.0,
        timeout=None, options=None):
    """Run every unfinished (arm, seed) run of ``spec`` on a local cluster of
    ``workers`` workers and ``servers`` servers; return the log paths."""
    from .runner import _child_environment
    spec = override(spec, n=workers)
    configs = preflight(spec, data_dir)
    check_figure_folder(out, configs)
    data_dir = str(data.resolve_root(data_dir))
    paths = []
    for cfg in configs:
        path = log_path(out, cfg)
        paths.append(path)
        if _rounds_done(path, cfg) == cfg["rounds"]:   # raises on a log of other settings
            note = kept_elsewhere(path, cfg, _device(cfg["n"], servers))
            if note:
                print(note)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(path), tempfile.TemporaryDirectory(prefix="byzsgd-dist-") as tmp:
            job = Path(tmp) / "job.json"
            job.write_text(json.dumps(jsonable({
                "cfg": cfg, "data_dir": data_dir, "log": str(path),
                "options": options or {}, "servers": servers})), encoding="utf-8")
            with _child_environment(spec.threads):     # the spec's thread count
                status = launch.launch([sys.executable, "-m", "byzsgd.distrun", str(job)],
                                       workers, servers, timeout=timeout,
                                       round_timeout=round_timeout)
        if status != 0:
            raise launch.ClusterError(f"{cfg['run_id']}: the cluster failed (status "
                                      f"{status}); see the messages above")
        print(f"{cfg['run_id']}: done on {workers} workers, {servers} servers")
    return paths


if __name__ == "__main__":
    sys.exit(worker_main())
