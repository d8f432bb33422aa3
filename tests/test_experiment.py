"""The experiment runner on real MNIST: learning vs. failing, divergence,
JSON-lines logs, pre-flight refusals, resume after a crash or kill -9, and
parallel runs."""
import dataclasses
import json
import math
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from byzsgd import aggregators, attacks, experiment, runner, training
from byzsgd.experiment import Arm, Spec

CONFIG_KEYS = {"type", "figure", "run_id", "label", "group", "x", "reference", "rule",
               "rule_params", "attack", "attack_params", "dataset", "model", "n", "rounds",
               "lr", "batch_size", "optimizer", "optimizer_params", "eval_every", "seed",
               "topk", "threads", "partition", "plot", "versions", "machine", "device",
               "gradients", "started"}
EVAL_KEYS = {"type", "round", "top1", "topk", "train_loss", "elapsed", "diverged",
             "diagnostics"}
DONE_KEYS = {"type", "rounds", "elapsed", "diverged_at", "dead_at"}


def _mlp_shapes():
    return [np.empty(s) for s in ((128, 784), (128,), (128, 128), (128,), (10, 128), (10,))]


def small_spec(**changes):
    """MLP on MNIST, n=20, Gaussian attack: the Fig. 3 setting, shortened."""
    base = dict(figure="t", title="test", dataset="mnist", model="mlp", n=20,
                attack="gaussian", attack_params={"q": 6, "sigma": 200.0},
                arms=(Arm("Mean", "mean"), Arm("Medoid", "medoid")),
                rounds=10, lr=0.1, batch_size=32, eval_every=5, seeds=(0,))
    base.update(changes)
    return Spec(**base)


def strict_lines(path):
    """Every line parsed by a JSON parser that refuses NaN and Infinity."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")

    def refuse(token):
        raise AssertionError(f"{path.name}: non-JSON constant {token}")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def without_elapsed(lines):
    return [{k: v for k, v in ln.items() if k not in ("elapsed", "started")} for ln in lines]


def finals(out, spec):
    return {cfg["label"]: strict_lines(runner.log_path(out, cfg))[-2]["top1"]
            for cfg in experiment.resolve_runs(spec)}


@pytest.fixture(scope="module")
def gaussian_runs(data_root, tmp_path_factory):
    """Mean and MarMed, 60 rounds, 6 of 20 gradients ~ N(0, 200^2)."""
    out = tmp_path_factory.mktemp("gauss")
    spec = small_spec(arms=(Arm("Mean", "mean"), Arm("MarMed", "marmed")),
                      rounds=60, eval_every=20)
    paths = runner.run(spec, out=out, data_dir=data_root, progress=False)
    return spec, out, paths


def test_mean_fails_marmed_learns(gaussian_runs):
    spec, out, _ = gaussian_runs
    acc = finals(out, spec)
    assert acc["MarMed"] > 0.75, acc
    assert acc["Mean"] < 0.3, acc


def test_logs_are_strict_json_lines_in_contract_format(gaussian_runs):
    spec, out, paths = gaussian_runs
    for cfg, path in zip(experiment.resolve_runs(spec), paths):
        lines = strict_lines(path)
        config, evals, done = lines[0], lines[1:-1], lines[-1]
        assert config["type"] == "config" and set(config) == CONFIG_KEYS
        assert {k: config[k] for k in cfg} == cfg
        assert set(config["versions"]) == {"byzsgd", "mxnet", "numpy", "python"}
        assert set(config["machine"]) == {"cpu", "isa", "dnnl_max_cpu_isa"}
        assert config["gradients"] == "batched"   # the MLP: one pass for all workers
        assert config["plot"]["kind"] == "curves" and config["plot"]["metric"] == "top1"
        assert [e["round"] for e in evals] == [0, 20, 40, 60]
        assert all(e["type"] == "eval" and set(e) == EVAL_KEYS for e in evals)
        assert evals[0]["train_loss"] is None
        assert evals[0]["diagnostics"] == {}                  # no round yet
        assert done["type"] == "done" and set(done) == DONE_KEYS and done["rounds"] == 60
        diag = evals[-1]["diagnostics"]                       # of the last round
        if cfg["rule"] == "mean":    # all NaN after a few rounds: the rest was skipped
            # (the round depends on the CPU: before 20 with AVX2 kernels, 21 with AVX-512)
            dead = done["dead_at"]
            assert dead is not None and dead < 60 and diag == {"skipped": True}
            assert all(e["diagnostics"] == {"skipped": True} and e["train_loss"] is None
                       for e in evals if e["round"] > dead)
            continue
        assert done["dead_at"] is None
        assert diag["cells_attacked"] == 6 * sum(
            p.size for p in _mlp_shapes())                    # 6 whole rows, Gaussian
        assert diag["agg_norm"] is None or diag["agg_norm"] >= 0
        assert not (path.parent / runner.CKPT).exists()      # checkpoints cleaned up


def test_eval_lines_carry_the_rules_diagnostics(data_root, tmp_path):
    """GeoMed's iterations and optimality residual, Krum's pick: in the log."""
    spec = small_spec(arms=(Arm("GeoMed", "geomed"), Arm("Krum", "krum", {"q": 6})),
                      rounds=2, eval_every=2)
    geo, krum = (strict_lines(p)[-2]["diagnostics"]["rule_info"]
                 for p in runner.run(spec, out=tmp_path, data_dir=data_root, progress=False))
    assert geo["converged"] and geo["iterations"] >= 1 and 0 <= geo["residual"] <= 1e-6
    assert geo["finite_rows"] == 20
    assert 0 <= krum["selected"] < 20


def test_same_seed_same_start_for_every_arm(gaussian_runs):
    spec, out, paths = gaussian_runs
    first = [strict_lines(p)[1] for p in paths]
    assert first[0]["top1"] == first[1]["top1"]              # same initial network


def test_arms_share_batches_and_attack_draws(data_root):
    """Seed k fixes the same initial weights, batches and attacked cells for
    every rule: after 3 rounds under different rules, the sampler and the
    attack's generator are in the same state, while the weights differ."""
    cfgs = experiment.resolve_runs(small_spec(arms=(Arm("Mean", "mean"), Arm("MarMed", "marmed"))))
    states, weights = [], []
    for cfg in cfgs:
        run = training.Training(cfg, data_root)
        params = list(run.net.collect_params().values())   # names differ per net
        first = [p.data().asnumpy().copy() for p in params]
        for _ in range(3):
            run.round()
        states.append((json.dumps(run.sampler.state(), sort_keys=True, default=str),
                       json.dumps(run.trainer.rng.bit_generator.state, sort_keys=True,
                                  default=str)))
        weights.append((first, [p.data().asnumpy() for p in params]))
    assert states[0] == states[1]
    (a0, a3), (b0, b3) = weights
    assert all(np.array_equal(a, b) for a, b in zip(a0, b0))      # same initial network
    assert not all(np.array_equal(a, b) for a, b in zip(a3, b3))  # other rule, other path


def test_divergence_is_logged_not_raised(gaussian_runs, data_root, tmp_path):
    """Mean under the 1e20 omniscient attack: non-finite weights at once."""
    spec = small_spec(attack="omniscient", attack_params={"q": 6},
                      arms=(Arm("Mean", "mean"),), rounds=4, eval_every=2)
    [path] = runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    lines = strict_lines(path)                 # NaN/inf would fail the strict parser
    evals, done = lines[1:-1], lines[-1]
    assert done["diverged_at"] in (1, 2, 3)
    assert [e["diverged"] for e in evals] == [e["round"] >= done["diverged_at"]
                                              for e in evals] == [False, True, True]
    assert evals[-1]["train_loss"] is None and evals[-1]["top1"] == 0.0


def test_dead_run_skips_its_rounds_with_the_same_evaluations(data_root, tmp_path):
    """Mean under the omniscient attack: every weight NaN within a few rounds.
    Skipping the rounds of the dead run writes what computing them gives,
    but for the diagnostics of rounds that were not computed."""
    spec = small_spec(attack="omniscient", attack_params={"q": 6},
                      arms=(Arm("Mean", "mean"),), rounds=12, eval_every=2)
    ticks = []
    [skipped] = runner.run(spec, out=tmp_path / "skip", data_dir=data_root, progress=False)
    [computed] = runner.run(spec, out=tmp_path / "all", data_dir=data_root, progress=False,
                            skip_dead=False)
    a, b = strict_lines(skipped), strict_lines(computed)
    dead_at = a[-1]["dead_at"]
    assert dead_at is not None and a[-1]["diverged_at"] <= dead_at < 12
    assert b[-1]["dead_at"] is None and b[-1]["diverged_at"] == a[-1]["diverged_at"]
    assert [ln["type"] for ln in a] == [ln["type"] for ln in b]
    keep = ("round", "top1", "topk", "train_loss", "diverged")
    assert [{k: ln[k] for k in keep} for ln in a[1:-1]] == \
        [{k: ln[k] for k in keep} for ln in b[1:-1]]
    for x, y in zip(a[1:-1], b[1:-1]):
        if x["round"] <= dead_at:
            assert x["diagnostics"] == y["diagnostics"]   # computed rounds: all of it
        else:
            assert x["diagnostics"] == {"skipped": True} and x["train_loss"] is None
    assert a[-1]["elapsed"] < b[-1]["elapsed"]
    execute_ticks = runner.execute(experiment.resolve_runs(spec)[0],
                                   tmp_path / "tick" / "mean.jsonl", data_root,
                                   tick=ticks.append)
    assert sum(ticks) == 12 and execute_ticks["dead_at"] == dead_at   # the bar completes


def test_a_finite_parameter_keeps_a_run_alive(data_root):
    """Dead means every parameter NaN: one finite cell (as Krum leaves when it
    selects a row with finite cells) can still move, so the run is computed."""
    cfg = experiment.resolve_runs(small_spec(arms=(Arm("Mean", "mean"),)))[0]
    run = training.Training(cfg, data_root)
    params = list(run.net.collect_params().values())
    assert not run.dead()
    for p in params:
        p.set_data(np.full(p.shape, np.nan, np.float32))
    assert not run.dead()           # the trainer has not seen them all NaN: never checked
    run.trainer.diagnostics = {"all_nan": True}
    assert run.dead()
    w = params[0].data().asnumpy()
    w[0, 0] = 0.5
    params[0].set_data(w)
    assert not run.dead()


def test_rerun_of_finished_runs_trains_nothing(gaussian_runs, data_root):
    spec, out, paths = gaussian_runs
    before = [p.read_bytes() for p in paths]
    t0 = time.perf_counter()
    runner.run(spec, out=out, data_dir=data_root, progress=False)
    assert [p.read_bytes() for p in paths] == before
    assert time.perf_counter() - t0 < 10


class Crash(Exception):
    pass


def crash_at(round_):
    count = [0]

    def tick(k):
        count[0] += k
        if count[0] == round_:
            raise Crash(round_)
    return tick


def test_crash_then_resume_is_bit_identical(data_root, tmp_path, monkeypatch):
    """Crash after round 12 (checkpoint at 10), leave a stale line for round 15
    and a torn line, resume: the log equals an uninterrupted run's."""
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 0.0)   # one at every evaluation
    spec = small_spec(rounds=20, eval_every=5, arms=(Arm("Medoid", "medoid"),))
    [cfg] = experiment.resolve_runs(spec)
    ref = runner.run(spec, out=tmp_path / "ref", data_dir=data_root, progress=False)[0]
    path = runner.log_path(tmp_path / "crash", cfg)
    with pytest.raises(Crash):
        runner.execute(cfg, path, data_root, tick=crash_at(12))
    assert [ln["round"] for ln in strict_lines(path)[1:]] == [0, 5, 10]
    assert (runner._ckpt_root(path) / "r00000010").is_dir()
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"type": "eval", "round": 15, "top1": 0.5, "topk": 0.5,
                            "train_loss": 1.0, "elapsed": 1.0, "diverged": False}) + "\n")
        f.write('{"type": "eval", "round": 20, "to')
    assert [ln.get("round") for ln in runner.read_log(path)][-1] == 15
    # resumed on another machine: its CPU is not part of the run's identity
    lines = path.read_text().splitlines(keepends=True)
    config = json.loads(lines[0])
    elsewhere = {"cpu": "elsewhere", "isa": "avx2", "dnnl_max_cpu_isa": None}
    path.write_text(json.dumps({**config, "machine": elsewhere}) + "\n" + "".join(lines[1:]))
    runner.run(spec, out=tmp_path / "crash", data_dir=data_root, progress=False)
    resumed = strict_lines(path)
    assert resumed[0]["machine"] == elsewhere        # the log says where it began
    resumed[0]["machine"] = config["machine"]
    assert without_elapsed(resumed) == without_elapsed(strict_lines(ref))


KILL_SCRIPT = """
from byzsgd.experiment import Arm, Spec, main
SPEC = Spec(figure="killed", title="kill -9 test", dataset="mnist", model="mlp", n=20,
            attack="gaussian", attack_params={"q": 6},
            arms=(Arm("Medoid", "medoid"), Arm("Mean", "mean")),
            rounds=50, lr=0.1, batch_size=32, eval_every=5, seeds=(0,))
if __name__ == "__main__":
    main(SPEC)
"""


def _children(pid):
    """Live (non-zombie) child processes of ``pid``, from /proc."""
    found = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(stat))
    return found


def _alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_and_rerun_loses_and_duplicates_nothing(data_root, tmp_path):
    """`run --jobs 2`, kill -9 the main process after the first evaluations:
    its workers die with it, and the same command finishes every run
    exactly as an uninterrupted run would have."""
    script = tmp_path / "killed_spec.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    env = dict(os.environ, OMP_NUM_THREADS="1", BYZSGD_DATA=str(data_root))
    # --compute-dead: a dead Mean run would otherwise finish at once, maybe before the kill
    cmd = [sys.executable, str(script), "--out", str(tmp_path / "out"), "--jobs", "2",
           "--no-plot", "--no-progress", "--compute-dead"]
    spec = runpy.run_path(str(script))["SPEC"]
    cfgs = experiment.resolve_runs(spec)
    logs = [runner.log_path(tmp_path / "out", cfg) for cfg in cfgs]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            # the first run to reach round 5 of 50 (config + 2 evals): the two
            # children can start seconds apart, so waiting for one given run let the
            # other finish first (seen under load)
            if any(p.exists() and len(runner.read_log(p)) >= 3 for p in logs):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), "worker processes outlived the killed run"
    finally:
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
    assert all(runner.read_log(p)[-1]["type"] != "done" for p in logs if p.exists())
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    runner.run(spec, out=tmp_path / "ref", data_dir=data_root, progress=False,
               skip_dead=False)
    for cfg, log in zip(cfgs, logs):
        got = strict_lines(log)
        want = strict_lines(runner.log_path(tmp_path / "ref", cfg))
        assert [ln.get("round") for ln in got[1:-1]] == list(range(0, 51, 5))
        assert without_elapsed(got) == without_elapsed(want)
    assert not (logs[0].parent / runner.CKPT).exists()
    assert not list(logs[0].parent.glob(".*.lock"))


def test_a_run_in_progress_is_locked(data_root, tmp_path):
    import fcntl
    spec = small_spec(arms=(Arm("Mean", "mean"),), rounds=1, eval_every=1)
    [cfg] = experiment.resolve_runs(spec)
    path = runner.log_path(tmp_path, cfg)
    path.parent.mkdir(parents=True)
    with open(path.with_name(".mean__seed0.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(runner.BusyError, match="being written by another process"):
            runner.execute(cfg, path, data_root)
    assert not path.exists()


PLUGIN_SOURCE = """
import numpy as np
from byzsgd import aggregators

@aggregators.register("test_file_rule", override=True)
def file_rule(grads):
    return grads.mean(axis=0, dtype=np.float64).astype(grads.dtype)
"""


def test_parallel_jobs_match_serial(data_root, tmp_path):
    """Also for a rule registered by a module that is not on sys.path (a
    figure module loaded from its file): the worker processes load it too."""
    path = tmp_path / "user_plugins.py"
    path.write_text(PLUGIN_SOURCE)
    runner.load_file("test_user_plugins", path)
    try:
        spec = small_spec(attack=None, attack_params={}, rounds=6, eval_every=3,
                          arms=(Arm("Mean", "mean"), Arm("Medoid", "medoid"),
                                Arm("File", "test_file_rule")))
        serial = runner.run(spec, out=tmp_path / "serial", data_dir=data_root, progress=False)
        parallel = runner.run(spec, out=tmp_path / "parallel", jobs=2, data_dir=data_root,
                              progress=False)
    finally:
        aggregators.REGISTRY.unregister("test_file_rule")
        del sys.modules["test_user_plugins"]
    for a, b in zip(serial, parallel):
        assert without_elapsed(strict_lines(a)) == without_elapsed(strict_lines(b))


@pytest.mark.parametrize("where", ["interactive_session", "__main__"])
def test_a_rule_no_worker_process_can_import_is_refused_before_training(
        data_root, tmp_path, monkeypatch, where):
    """A rule registered in a notebook or a REPL (__main__ without a file) or
    in a module nothing can import: spawned processes cannot know it."""
    session = types.ModuleType(where)                       # no file, not importable
    if where == "__main__":
        monkeypatch.setitem(sys.modules, "__main__", session)
    exec("from byzsgd import aggregators\n"
         "@aggregators.register('test_session_rule', override=True)\n"
         "def session_rule(grads):\n    return grads[0].copy()", session.__dict__)
    try:
        with pytest.raises(ValueError, match=f"'test_session_rule' is registered by {where}, "
                                             "which the worker processes.*cannot import.*jobs=2"):
            runner.run(small_spec(arms=(Arm("S", "test_session_rule"),)), out=tmp_path,
                       jobs=2, data_dir=data_root, progress=False)
    finally:
        aggregators.REGISTRY.unregister("test_session_rule")


@pytest.mark.parametrize("user, want", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_children_idle_threads_sleep_unless_the_user_says(monkeypatch, user, want):
    """Runs' processes get OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads
    made two runs on 2 cores no faster than one), or the user's policy."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    if user is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user)
    spawn = multiprocessing.get_context("spawn")
    with runner._child_environment(1), ProcessPoolExecutor(1, mp_context=spawn) as pool:
        got = [pool.submit(os.getenv, v).result() for v in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")]
    assert got == [want, "1"]
    assert os.environ.get("OMP_WAIT_POLICY") == user      # the parent's is restored


@pytest.mark.parametrize("changes, words", [
    (dict(arms=(Arm("Krum", "krum", {"q": 9}),)), ["krum", "n=20", "q=9"]),
    (dict(arms=(Arm("X", "median"),)), ["unknown aggregation rule 'median'", "marmed"]),
    (dict(arms=(Arm("X", "krum", {"f": 2}),)), ["unknown parameter", "f", "q"]),
    (dict(attack="sybil"), ["unknown attack 'sybil'", "gaussian", "omniscient"]),
    (dict(attack="bitflip", attack_params={"dims": 200000}), ["dims=200000"]),
    (dict(model="vgg99"), ["unknown model 'vgg99'", "mlp"]),
    (dict(dataset="svhn"), ["unknown dataset 'svhn'", "mnist"]),
    (dict(optimizer="sgdd"), ["unknown optimizer 'sgdd'", "sgd"]),
    (dict(partition="dirichlet"), ["unknown partition", "iid", "shard"]),
    (dict(batch_size=4000), ["batch_size=4000", "3000"]),
    (dict(rounds=0), ["rounds=0"]),
    (dict(topk=11), ["topk=11"]),
    (dict(arms=(Arm("A", "mean"), Arm("a", "medoid"))), ["a__seed0"]),
    (dict(seeds=(1.5, 1)), ["integers in 0..2147483647", "1.5"]),
    (dict(seeds=(-1,)), ["integers in 0..2147483647", "-1"]),
    (dict(seeds=(2 ** 32,)), ["integers in 0..2147483647", "4294967296"]),
    (dict(lr="0.1"), ["lr='0.1'", "number > 0"]),
    (dict(threads=0), ["threads=0"]),
    (dict(optimizer_params={"momentum": "x"}), ["optimizer 'sgd'", "momentum"]),
    (dict(optimizer_params={"learning_rate": 0.5}), ["as lr", "learning_rate"]),
    (dict(attack=("gaussian", {"q": 6})), ["attack must be a registered name", "attack_params",
                                           "('gaussian', {'q': 6})"]),
    (dict(arms=(Arm("A", "mean", None),)), ["arm 'A'", "rule_params must be a dict", "None"]),
    (dict(arms=(Arm("A", "mean", attack_params=[6]),)), ["arm 'A'", "attack_params", "[6]"]),
    (dict(arms=(Arm("G", "geomed", {"tol": {1e-6}}),)),
     ["arm 'G'", "{1e-06}", "cannot be logged"]),
    (dict(arms=(Arm("G", "geomed", {"tol": np.nan}),)), ["arm 'G'", "not JSON compliant"]),
])
def test_preflight_refuses_before_training(data_root, tmp_path, changes, words):
    with pytest.raises((ValueError, TypeError)) as err:
        runner.run(small_spec(**changes), out=tmp_path, data_dir=data_root, progress=False)
    for word in words:
        assert word in str(err.value)
    assert not any(tmp_path.iterdir())                     # nothing written


def test_numpy_numbers_in_settings_are_logged_as_python_numbers():
    """q from np.arange in a sweep: the same run as q=2."""
    spec = small_spec(arms=(Arm("K", "krum", {"q": np.int64(2)}),
                            Arm("G", "geomed", {"tol": np.float32(0.5)})))
    krum, geomed = experiment.resolve_runs(spec)
    assert krum["rule_params"] == {"q": 2} and type(krum["rule_params"]["q"]) is int
    assert geomed["rule_params"]["tol"] == 0.5


@pytest.fixture
def writing_plugins():
    """A rule and an attack that write to their input, registered for one test."""
    @aggregators.register("test_inplace_rule", override=True)
    def inplace_rule(grads):
        grads[0] = 0.0
        return grads.mean(axis=0)

    @attacks.register("test_inplace_attack", override=True)
    def inplace_attack(grads, rng):
        grads *= -1.0
        return grads
    yield
    aggregators.REGISTRY.unregister("test_inplace_rule")
    attacks.REGISTRY.unregister("test_inplace_attack")


@pytest.mark.parametrize("changes, words", [
    (dict(arms=(Arm("X", "test_inplace_rule"),)), ["aggregator test_inplace_rule()",
                                                    "wrote to a read-only array"]),
    (dict(attack="test_inplace_attack", attack_params={}),
     ["attack test_inplace_attack()", "wrote to a read-only array"]),
])
def test_preflight_refuses_plugins_that_write_to_their_input(data_root, tmp_path,
                                                             writing_plugins, changes, words):
    """Caught before the log and its round-0 line are written, not at round 1."""
    with pytest.raises(ValueError) as err:
        runner.run(small_spec(**changes), out=tmp_path, data_dir=data_root, progress=False)
    for word in words:
        assert word in str(err.value)
    assert not any(tmp_path.iterdir())


def test_existing_log_with_other_settings_is_refused(data_root, tmp_path):
    spec = small_spec(arms=(Arm("Mean", "mean"),), rounds=2, eval_every=1, attack=None,
                      attack_params={})
    [path] = runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="rounds=2 there, 3 now"):
        runner.run(dataclasses.replace(spec, rounds=3), out=tmp_path, data_dir=data_root,
                   progress=False)
    assert path.read_bytes() == before


@pytest.mark.parametrize("changes, words", [
    (dict(seeds=(1,), rounds=3), ["mean__seed0.jsonl", "rounds=2 there, 3 now"]),
    (dict(seeds=(1,), eval_every=2), ["eval_every=1 there, 2 now"]),
    (dict(seeds=(1,), arms=(Arm("Mean", "mean", lr=0.2),)), ["lr=0.1 there, 0.2 now"]),
    (dict(seeds=(1,), arms=(Arm("Medoid", "medoid"),), rounds=3), ["rounds=2 there, 3 now"]),
])
def test_runs_beside_other_settings_of_their_figure_are_refused(data_root, tmp_path,
                                                                 changes, words):
    """Other seeds or arms with other settings in one figure's folder would be
    averaged together by the plot and the report: refused before training."""
    spec = small_spec(arms=(Arm("Mean", "mean"),), rounds=2, eval_every=1, attack=None,
                      attack_params={})
    [path] = runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    with pytest.raises(ValueError) as err:
        runner.run(dataclasses.replace(spec, **changes), out=tmp_path, data_dir=data_root,
                   progress=False)
    for word in words:
        assert word in str(err.value)
    assert sorted(p.name for p in path.parent.glob("*.jsonl")) == ["mean__seed0.jsonl"]
    # the same settings, another seed and another arm: accepted
    more = dataclasses.replace(spec, seeds=(1,), arms=(Arm("Mean", "mean"), Arm("Medoid", "medoid")))
    runner.run(more, out=tmp_path, data_dir=data_root, progress=False)


def test_arm_inherits_and_overrides_attack():
    spec = small_spec(arms=(Arm("A", "mean"), Arm("B", "mean", attack_params={"q": 2}),
                            Arm("Ref", "mean", attack=None, reference=True),
                            Arm("C", "meamed", {"q": 6}, batch_size=64, lr=0.2, group=64,
                                x=6)))
    a, b, ref, c = experiment.resolve_runs(spec)
    assert a["attack"] == "gaussian" and a["attack_params"]["q"] == 6
    assert b["attack_params"] == {"q": 2, "sigma": 200.0, "model": "classic"}
    assert ref["attack"] is None and ref["attack_params"] == {} and ref["reference"]
    assert (c["batch_size"], c["lr"], c["run_id"]) == (64, 0.2, "c-g64-x6__seed0")
    assert c["rule_params"] == {"q": 6}


def test_override_quick_and_arm_selection():
    spec = small_spec(quick={"rounds": 3, "seeds": [0, 1]})
    quick = experiment.override(spec, quick=True, arms=["medoid"], rounds=None)
    assert (quick.rounds, quick.seeds, [a.label for a in quick.arms]) == (3, (0, 1), ["Medoid"])
    assert experiment.override(spec, rounds=7).rounds == 7
    preset = small_spec(quick={"arms": (Arm("Krum", "krum", {"q": 2}),)})
    assert experiment.override(preset, quick=True, arms=["Krum"]).arms[0].rule == "krum"
    with pytest.raises(ValueError, match="valid labels: 'Mean', 'Medoid'"):
        experiment.override(spec, arms=["Krum"])
    with pytest.raises(ValueError, match=r"arms must be a list, got arms='Mean' \(e.g. arms=\['Mean'\]\)"):
        experiment.override(spec, arms="Mean")
    with pytest.raises(ValueError, match="seeds must be a list, got seeds=3"):
        experiment.override(spec, seeds=3)


def test_figures_are_discovered():
    found = experiment.figures()
    assert found["fig03"] == "fig03_mnist_gaussian"
    assert experiment.load_spec("fig03") is experiment.load_spec("fig03_mnist_gaussian")
    with pytest.raises(ValueError, match="fig03"):
        experiment.load_spec("fig42")


def test_fig03_declares_the_paper_setting():
    spec = experiment.load_spec("fig03")
    assert (spec.dataset, spec.model, spec.n, spec.rounds, spec.lr, spec.batch_size,
            spec.topk, len(spec.seeds)) == ("mnist", "mlp", 20, 500, 0.1, 32, 1, 10)
    assert (spec.attack, spec.attack_params) == ("gaussian", {"q": 6, "sigma": 200.0})
    runs = {r["label"]: r for r in experiment.resolve_runs(spec) if r["seed"] == 0}
    assert [r["rule"] for r in runs.values()] == [
        "mean", "medoid", "krum", "multikrum", "geomed", "marmed", "meamed", "mean"]
    assert all(runs[k]["rule_params"]["q"] == 6 for k in ("Krum", "Multi-Krum", "MeaMed"))
    ref = runs["Mean without failures"]
    assert ref["reference"] and ref["attack"] is None
    assert math.isclose(spec.lr, 0.1)


def test_context_names():
    import mxnet as mx
    assert runner.context("cpu") == mx.cpu() and runner.context("cpu(0)") == mx.cpu(0)
    with pytest.raises(ValueError, match="valid forms: cpu, gpu, gpu"):
        runner.context("tpu")
    if mx.context.num_gpus() == 0:
        with pytest.raises(ValueError, match="sees 0 GPU"):
            runner.context("gpu(0)")


def test_a_log_that_is_not_text_is_named(tmp_path):
    from byzsgd import runlog
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(bytes(range(128, 256)))
    with pytest.raises(ValueError, match="garbage.jsonl is not a byzsgd log \\(not UTF-8"):
        runlog.read_log(path)


def test_a_finished_run_from_another_device_is_kept_and_said(data_root, tmp_path, capsys):
    """A cluster's finished log is not retrained by a simulated run (nor the
    reverse): kept, but the run says where it ran instead of passing silently."""
    spec = small_spec(attack=None, attack_params={}, rounds=1, eval_every=1,
                      arms=(Arm("Mean", "mean"),))
    [path] = runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    lines = path.read_text().splitlines()
    config = json.loads(lines[0])
    lines[0] = json.dumps({**config, "device": "cpu, dist_byz n=20 s=1"})
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    assert "t/mean__seed0: finished on 'cpu, dist_byz n=20 s=1', not 'cpu': kept" in \
        capsys.readouterr().err
