"""Distributed mode on real ps-lite clusters over loopback (byzsgd.launch,
byzsgd.psserver, byzsgd.distributed).

Every cluster is 1 scheduler + 2 servers + 4 workers training the paper's
MLP on real MNIST batches, compared with the single-process simulation
(byzsgd.runner's training) on the same seeds. Every launch has a hard
timeout (launcher --timeout, and a subprocess timeout above it), so a ps-lite
hang fails the test instead of the suite."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from byzsgd import attacks, launch, psconfig
from byzsgd.experiment import Arm, load_spec, override, resolve_runs

HERE = Path(__file__).parent
N, S, ROUNDS, D = 4, 2, 5, 118282
CLUSTER_TIMEOUT = 150           # launcher --timeout; the subprocess gets 30 s more


def run_config(rule, rule_params=None, attack=None, attack_params=None, rounds=ROUNDS):
    spec = override(load_spec("fig02"), n=N, rounds=rounds, eval_every=rounds, seeds=(0,),
                    arms=(Arm(label=rule, rule=rule, rule_params=rule_params or {},
                              attack=attack, attack_params=attack_params or {}),))
    return resolve_runs(spec)[0]


def start(tmp_path, cfg, data_root, options=None, round_timeout=30, sealed=None, **extra):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"cfg": cfg, "data_dir": str(data_root),
                               "options": options or {},
                               "weights_out": str(tmp_path / "weights.npz"), **extra}))
    argv = [sys.executable, "-m", "byzsgd.launch", "-n", str(N), "-s", str(S),
            "--timeout", str(CLUSTER_TIMEOUT), "--round-timeout", str(round_timeout),
            "--grace", "5"]
    if sealed:
        (tmp_path / "server.json").write_text(sealed)
        argv += ["--server-config", str(tmp_path / "server.json")]
    argv += ["--", sys.executable, str(HERE / "dist_program.py"), str(job)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def finish(proc):
    try:
        out, err = proc.communicate(timeout=CLUSTER_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the launcher itself hung:\n{err[-3000:]}")
    return proc.returncode, out, err


def simulate(cfg, data_root, attack=None):
    """Final parameters of the single-process run of cfg (optionally another
    attack), its gradients computed worker by worker as distributed workers
    do (the runner's batched pass agrees with it only up to rounding)."""
    from byzsgd.training import Training
    from byzsgd.trainer import ByzantineTrainer
    run = Training(cfg, str(data_root))
    run.batched = False
    if attack is not None:
        run.trainer = ByzantineTrainer(
            run.net.collect_params(), cfg["optimizer"], {"learning_rate": cfg["lr"]},
            aggregator=(cfg["rule"], cfg["rule_params"]), attack=attack,
            num_workers=cfg["n"], seed=cfg["seed"])
    run.reseed(0)
    for _ in range(cfg["rounds"]):
        run.round()
    params = run.net.collect_params()
    return {k: params[k].data().asnumpy() for k in sorted(params.keys())}


def flat(weights):
    """All parameters, in sorted-name order, as one vector (names carry a
    per-process prefix such as mlp0_ / mlp1_, the order does not)."""
    return np.concatenate([weights[k].ravel() for k in sorted(weights)])


def assert_same(weights_file, expected):
    got, want = flat(np.load(weights_file)), flat(expected)
    assert got.shape == want.shape == (D,)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
        f"max |diff| {np.nanmax(np.abs(got - want))}"


def children(pid):
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def role_of(pid):
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"DMLC_ROLE=")),
                None)


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_workers(proc, count=N, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(proc.pid)
        workers = [p for p in kids if role_of(p) == "worker"]
        if len(workers) == count:
            return kids, workers
        time.sleep(0.2)
    pytest.fail("the cluster's workers did not start")


# ------------------------------------------------------------ bit for bit

def test_marmed_sharded_matches_simulation_and_refuses_pickles(tmp_path, data_root):
    """marmed sharded over 2 servers == simulation; a worker's pickle (which
    would create a file on the server) and a valid but different
    configuration are refused, and the servers go on unharmed."""
    cfg = run_config("marmed")
    marker = tmp_path / "PWNED"
    sealed = psconfig.make("marmed", {}, "sgd", {"learning_rate": 0.1, "rescale_grad": 1.0},
                           N, S, D, timeout=30.0)
    proc = start(tmp_path, cfg, data_root, sealed=sealed, evil=str(marker))
    expected = simulate(cfg, data_root)
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    assert_same(tmp_path / "weights.npz", expected)
    assert not marker.exists()
    assert "refused command 0" in err and "not byzsgd JSON" in err
    assert "differs from the one fixed at launch" in err
    assert "2 block(s)" not in err and err.count("1 block(s) of [59141] values") == 2


def test_krum_whole_vector_matches_simulation(tmp_path, data_root):
    cfg = run_config("krum", {"q": 0})
    proc = start(tmp_path, cfg, data_root)
    expected = simulate(cfg, data_root)
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    assert_same(tmp_path / "weights.npz", expected)
    assert "1 block(s) of [118282] values" in err     # the whole vector on one server


# ----------------------------------------------------- Byzantine actors

def test_byzantine_worker_and_faulty_server(tmp_path, data_root):
    """Worker 0 sign-flips and triples its gradient (an attack of the core
    library, run on the worker); server 1 multiplies every value of its
    shard by -1 (the gambler with prob=1, run on the server). The mean then
    equals the simulation of exactly these two corruptions, bit for bit, and
    differs from the honest run on both shards."""
    atk = {"q": 1, "scale": 3.0, "model": ["classic", {"fixed": True}]}
    cfg = run_config("mean", attack="signflip", attack_params=atk, rounds=3)
    gambler = {"servers": 1, "faulty": 1, "prob": 1.0, "factor": -1.0}
    proc = start(tmp_path, cfg, data_root, options={
        "byzantine": [0], "server_attack": ["gambler", gambler], "faulty_servers": [1]})
    worker_attack = attacks.get("signflip", **atk)
    lo = D - D // 2                                   # server 1's shard: [lo, D)

    def both(grads, rng):
        out = worker_attack(grads, rng)
        out[:, lo:] *= np.float32(-1.0)
        return out

    expected = simulate(cfg, data_root, attack=both)
    honest = simulate(run_config("mean", rounds=3), data_root)
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    assert "FAULTY: gambler" in err and err.count("FAULTY") == 1
    assert_same(tmp_path / "weights.npz", expected)
    got, ref = flat(np.load(tmp_path / "weights.npz")), flat(honest)
    assert not np.array_equal(got[:lo], ref[:lo]) and not np.array_equal(got[lo:], ref[lo:])


def test_push_on_another_workers_key_stops_the_cluster(tmp_path, data_root):
    """ps-lite does not say who pushed. Worker 1 pushes on worker 0's key,
    tagged with the right round, while worker 0 is late: the round completes
    with the impostor's row, and worker 0's genuine push, tagged with that
    round, then arrives while the block collects the next one. The server
    stops the cluster rather than let worker 0's rows run one round late."""
    cfg = run_config("marmed", rounds=5)
    proc = start(tmp_path, cfg, data_root, impersonate_at=2)
    kids, _ = wait_for_workers(proc)
    code, _, err = finish(proc)
    assert code != 0, err[-3000:]
    assert "(block 0, worker 0): a push tagged round 3 while the block collects round 4" \
        in err, err[-3000:]
    assert "server #" in err and "stopping the cluster" in err
    assert not [p for p in kids if alive(p)]


# -------------------------------------------------------------- fail fast

@pytest.mark.parametrize("role", ["worker", "server"])
def test_killed_process_stops_the_cluster(tmp_path, data_root, role):
    """kill -9 of a worker or a server after 3 rounds: the launcher names it,
    stops every other process and returns non-zero within seconds."""
    cfg = run_config("marmed", rounds=2000)
    progress = tmp_path / "progress"
    proc = start(tmp_path, cfg, data_root, round_timeout=20, progress=str(progress))
    kids, workers = wait_for_workers(proc)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and int(progress.read_text() or 0
                                              if progress.exists() else 0) < 3:
        time.sleep(0.1)                                # mid-training: 3 rounds done
    assert progress.exists(), "training never started"
    victim = workers[2] if role == "worker" else [p for p in kids if role_of(p) == role][1]
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    code, _, err = finish(proc)
    assert time.monotonic() - t0 < 15
    assert code != 0
    assert f"{role} #" in err and "was killed by signal SIGKILL; stopping the cluster" in err
    assert not [p for p in kids if alive(p)]


def test_stalled_worker_times_out(tmp_path, data_root):
    """A worker that stops pushing (alive, silent): the server holding the
    block names it after the round timeout and the launcher stops everyone."""
    cfg = run_config("marmed", rounds=4)
    proc = start(tmp_path, cfg, data_root, round_timeout=6, hang_after=2)
    kids, _ = wait_for_workers(proc)
    code, _, err = finish(proc)
    assert code != 0
    assert "no push from worker(s) [2]" in err, err[-3000:]
    assert "stopping the cluster" in err
    assert not [p for p in kids if alive(p)]


def test_run_distributed_writes_the_usual_log(tmp_path, data_root):
    """`byzsgd run FIGURE --distributed -n 4 -s 2`: worker 0 logs config,
    evaluations and the done line, as a single-process run does."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "byzsgd.cli", "run", "fig02", "--distributed", "-n", str(N),
         "-s", str(S), "--arms", "MarMed", "--seeds", "0", "--rounds", "4", "--eval-every",
         "2", "--data-dir", str(data_root), "--out", str(out), "--no-plot", "--no-progress"],
        capture_output=True, text=True, timeout=CLUSTER_TIMEOUT + 30,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "fig02" / "marmed__seed0.jsonl").read_text()
             .splitlines()]
    assert [x["type"] for x in lines] == ["config", "eval", "eval", "eval", "done"]
    assert lines[0]["n"] == N and lines[0]["device"] == f"cpu, dist_byz n={N} s={S}"
    assert [x["round"] for x in lines[1:4]] == [0, 2, 4] and lines[3]["top1"] > 0.2


# -------------------------------------------------- configuration, launcher

def test_config_refuses_pickles_and_bad_settings():
    good = psconfig.make("krum", {"q": 1}, "sgd", {"learning_rate": 0.1}, 5, 2, 10)
    assert psconfig.parse(good)["placement"] == "whole"
    import pickle
    with pytest.raises(psconfig.ConfigError, match="not byzsgd JSON"):
        psconfig.parse(pickle.dumps({"a": 1}, 0))
    bad = json.loads(good)
    for field, value, match in [
            ("rule", "nope", "unknown aggregation rule 'nope'"),
            ("rule_params", {"q": 3}, "n > 2q \\+ 2"),
            ("placement", "sharded", "only .* may be sharded"),
            ("optimizer_params", {"lr_scheduler": {"__class__": "x"}}, "only numbers"),
            ("num_workers", 0, "num_workers must be an integer in \\[1, 100000\\], got 0"),
            ("server_attack", {"attack": "gambler", "params": {}, "servers": [2], "seed": 0},
             "servers\\[\\] must be an integer in \\[0, 1\\]"),
            # krum keeps the whole vector on server 0: a faulty server 1 would attack nothing
            ("server_attack", {"attack": "gambler", "params": {}, "servers": [1], "seed": 0},
             "servers \\[1\\] hold no block of the parameters")]:
        with pytest.raises(psconfig.ConfigError, match=match):
            psconfig.parse(json.dumps({**bad, field: value}))
    with pytest.raises(psconfig.ConfigError, match="this cluster has 3 servers"):
        psconfig.parse(good, num_servers=3)


def test_config_from_a_byzantine_worker_cannot_crash_a_server():
    """What a message's values make a rule or an attack do is a refusal, not
    a server's death: a claimed n beyond the cluster's (a 100000 x 100000
    distance matrix), a rule that raises something else than ValueError, a
    server attack that fails on the shard it would attack, a d of 2**31 - 1."""
    good = json.loads(psconfig.make("medoid", {}, "sgd", {"learning_rate": 0.1}, 2, 2, 10))
    with pytest.raises(psconfig.ConfigError, match="num_workers=100000 but this cluster has 2"):
        psconfig.parse(json.dumps({**good, "num_workers": 100000}), 2, 2)
    with pytest.raises(psconfig.ConfigError, match="ZeroDivisionError"):
        psconfig.parse(json.dumps({**good, "rule": "cclip", "rule_params": {"tau": 10 ** 30}}),
                       2, 2)
    attack = {"attack": "signflip", "params": {"q": 9}, "servers": [1], "seed": 0}
    with pytest.raises(psconfig.ConfigError, match=r"signflip.*\(n=2, 5\) shard.*q=9"):
        psconfig.parse(json.dumps({**good, "rule": "marmed", "placement": "sharded",
                                   "server_attack": attack}), 2, 2)
    attack["params"] = {"q": 1}
    assert psconfig.parse(json.dumps({**good, "rule": "marmed", "placement": "sharded",
                                      "server_attack": attack, "d": 2 ** 31 - 1}), 2, 2)
    assert psconfig.blocks(2 ** 31 - 1, 2, "sharded")[1] == (1073741824, 2147483647, 1)


def test_a_cluster_that_fails_to_start_leaves_no_process(tmp_path):
    procs = launch.plan(["/nonexistent/command"], 2, 1)
    before = set(os.listdir("/proc"))
    with pytest.raises(FileNotFoundError):
        launch.Cluster(procs)
    time.sleep(0.5)
    new = [p for p in set(os.listdir("/proc")) - before if p.isdigit()]
    alive = [p for p in new if Path(f"/proc/{p}/cmdline").exists()
             and b"byzsgd.psserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert not alive


@pytest.mark.parametrize("servers", [1, 2, 3, 7])
def test_key_table_places_each_block_on_its_server(servers):
    spans = psconfig.blocks(1000, servers, "sharded")
    table = psconfig.key_table([s for *_, s in spans], 5, servers)
    keys = [k for row in table for k in row]
    assert len(set(keys)) == len(keys)
    for (_, _, s), row in zip(spans, table):
        assert all((k * 9973) % servers == s for k in row)   # kvstore_dist.h's rule


def test_ssh_commands_for_hosts(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# cluster\nnode-a\nnode-b:2222\n")
    parsed = launch.read_hosts(hosts)
    assert parsed == [("node-a", None), ("node-b", 2222)]
    procs = launch.plan(["python", "train.py", "--x", "a b"], 3, 2, hosts=parsed, port=9100,
                        root_uri="10.0.0.1", python="/venv/bin/python", cwd="/work/x")
    labels = [p[0] for p in procs]
    assert labels == ["scheduler", "server #0 on node-a", "server #1 on node-b",
                      "worker #0 on node-a", "worker #1 on node-b", "worker #2 on node-a"]
    assert procs[0][1] == ["/venv/bin/python", "-m", "byzsgd.psserver"]
    assert procs[0][2]["DMLC_ROLE"] == "scheduler"
    ssh = procs[4][1]
    assert ssh[:6] == ["ssh", "-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    assert ssh[6:9] == ["-p", "2222", "node-b"]
    remote = ssh[9]
    assert remote.startswith("cd /work/x && exec env ")
    for var in ("DMLC_ROLE=worker", "DMLC_PS_ROOT_URI=10.0.0.1", "DMLC_PS_ROOT_PORT=9100",
                "DMLC_NUM_SERVER=2", "DMLC_NUM_WORKER=3", "DMLC_NODE_HOST=node-b"):
        assert var in remote
    assert remote.endswith("python train.py --x 'a b'")
    assert "/venv/bin/python -m byzsgd.psserver" in procs[2][1][-1]


def test_local_plan_and_bad_counts():
    procs = launch.plan(["true"], 2, 1, port=9000)
    assert [p[2]["DMLC_ROLE"] for p in procs] == ["scheduler", "server", "worker", "worker"]
    assert all(p[2]["DMLC_PS_ROOT_URI"] == "127.0.0.1" == p[2]["DMLC_NODE_HOST"] for p in procs)
    with pytest.raises(ValueError, match="number of servers must be an integer >= 1, got 0"):
        launch.plan(["true"], 2, 0)
    with pytest.raises(ValueError, match="no worker COMMAND"):
        launch.plan([], 2, 1)
    for option in ("timeout", "grace", "round_timeout"):
        # 0 stopped the cluster at once, or (grace) counted a clean exit as a failure
        with pytest.raises(ValueError, match=f"{option}=0 must be a number of seconds > 0"):
            launch.launch(["true"], 2, 1, **{option: 0})


def test_trainer_outside_a_cluster_says_how_to_start_one():
    # no Gluon block here: test_trainer.py's helpers sort parameters by
    # name, and an extra block would shift its dense9/dense10 names
    from byzsgd.trainer import ByzantineTrainer
    with pytest.raises(RuntimeError, match="byzsgd launch"):
        ByzantineTrainer([], "sgd", {"learning_rate": 0.1}, kvstore="dist_byz")


def test_launcher_reports_a_failing_worker_and_reaps_everyone(tmp_path):
    """Status and role of a worker that fails at once; servers and scheduler
    (waiting for a cluster that never forms) are stopped, nothing is left."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "byzsgd.cli", "launch", "-n", "2", "-s", "1", "--timeout", "60",
         "--grace", "1", "--", "sh", "-c", "sleep 1; exit 3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    kids, deadline = [], time.monotonic() + 30
    while len(kids) < 4 and time.monotonic() < deadline:   # the cli launches in-process
        kids = children(proc.pid)
        time.sleep(0.05)
    code, _, err = finish(proc)
    assert code == 3
    assert "worker #" in err and "exited with status 3; stopping the cluster" in err
    assert len(kids) == 4 and not [p for p in kids if alive(p)]


def test_cli_launch_and_distributed_run_refuse_bad_settings(data_root, capsys):
    from byzsgd import cli
    assert subprocess.run([sys.executable, "-m", "byzsgd.cli", "launch", "-n", "0", "-s", "1",
                           "--", "true"], capture_output=True, text=True,
                          timeout=60).stderr.strip().endswith(
        "number of workers must be an integer >= 1, got 0")
    code = cli.main(["run", "fig02", "--distributed", "-n", "4", "-s", "2", "--arms", "Krum",
                     "--data-dir", str(data_root), "--no-plot", "--no-progress"])
    assert code == 2
    assert "krum needs q >= 0 and n > 2q + 2, got n=4, q=6" in capsys.readouterr().err


def test_distributed_runs_beside_other_settings_are_refused_before_a_cluster(tmp_path,
                                                                            data_root):
    """A simulated log of the figure with other rounds is there: refused, as
    byzsgd run refuses it, before any cluster starts."""
    from byzsgd import distrun, runner
    spec = override(load_spec("fig02"), seeds=[0], rounds=1, eval_every=1, arms=["Mean"])
    runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    with pytest.raises(ValueError, match="rounds=1 there, 2 now"):
        distrun.run(override(spec, rounds=2, seeds=[1]), workers=20, servers=1, out=tmp_path,
                    data_dir=data_root)
    assert not (tmp_path / "fig02" / "mean__seed1.jsonl").exists()
