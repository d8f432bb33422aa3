"""Executes a :class:`~byzsgd.experiment.Spec`: every (arm, seed) run not
done yet, here or in parallel processes each pinned to the spec's thread
count, with one progress bar. A run itself (training, logging, resume) is
:func:`byzsgd.training.execute`.

A rerun skips runs with a done line and resumes every other one from its last
checkpoint (:mod:`byzsgd.training`).

Shared runs: a run not started yet that a finished log under the same
``out`` already holds under other names (another figure's reference, Fig.
9's b = 32 arms as Fig. 2's runs) is copied from it, see :func:`run`.
"""
import contextlib
import importlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

from . import data
from .experiment import _positive, preflight
# log_path, read_log and CKPT (runlog's), execute and context (training's)
# are re-exported: one module to import for running and reading runs
from .runlog import (CKPT, BusyError, _ckpt_root, _computation, _copy_run, _drop_checkpoints,
                     _rounds_done, check_figure_folder, exclusive, finished_runs,
                     kept_elsewhere, log_path, read_log)
from .training import context, execute

__all__ = ["run", "execute", "context", "log_path", "read_log", "CKPT", "THREAD_VARS",
           "BusyError"]

# Thread pools read these once, when their library loads (numba: see _pin_threads).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: OpenMP's idle threads sleep instead of spinning, unless the user set a
#: policy: with libgomp's default a thread of each run busy-waited, and with
#: --jobs 2 a run took 25.7 s instead of 15.3 s (experiments/benchmarks/wait_policy.txt).
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


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


# modules whose plugins every process has: byzsgd imports them itself
_OWN_PLUGIN_MODULES = {"byzsgd.aggregators", "byzsgd.attacks", "byzsgd.failures"}


def _plugins(cfg):
    """(kind, name, module that registered it) of the rule, attack and
    failure model a run config names."""
    from . import aggregators, attacks, failures
    found = [("aggregation rule", cfg["rule"], aggregators.REGISTRY)]
    if cfg["attack"] is not None:
        found.append(("attack", cfg["attack"], attacks.REGISTRY))
        model = cfg["attack_params"].get("model")
        model = model[0] if isinstance(model, (list, tuple)) and model else model
        if isinstance(model, str):
            found.append(("failure model", model, failures.REGISTRY))
    return [(kind, name, reg.module(name)) for kind, name, reg in found if name in reg]


def _importable(module):
    """Whether a spawned process can import ``module``: a file it can read,
    or a name its import system finds; the main script (spawn runs it again
    in each child) only if it is a file, not a notebook, a REPL or stdin."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if module == "__main__":
        return bool(file) and os.path.isfile(file)
    if file and os.path.isfile(file):
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # a missing parent package, a __spec__ of None
        return False


def _plugin_modules(configs, why):
    """[(module name, file)] that registered the plugins of ``configs``,
    which a spawned process imports before training (it would not know them
    otherwise). A plugin registered where no process can import it (a
    notebook, a REPL) is refused here, saying ``why`` the runs leave this
    process."""
    out = {}
    for cfg in configs:
        for kind, name, module in _plugins(cfg):
            if module in _OWN_PLUGIN_MODULES or module in out:
                continue
            if not module or not _importable(module):
                raise ValueError(
                    f"{kind} {name!r} is registered by {module or 'an unknown module'}, which "
                    f"the worker processes that would train these runs cannot import ({why}); "
                    "register it in a .py module imported here, or train in this process")
            if module != "__main__":    # spawn runs the main script again by itself
                out[module] = getattr(sys.modules.get(module), "__file__", None)
    return sorted(out.items())


def _import_plugins(modules):
    """Import (or load from their files) the modules of _plugin_modules."""
    for name, file in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            if file is None:
                raise
            load_file(name, file)


def load_file(name, file):
    """Run the Python file ``file`` as module ``name`` (e.g. one registering
    rules, not on sys.path); return the module."""
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _child_init(threads, queue, modules):
    global _TICKER
    _die_with_parent()
    _pin_threads(threads)
    _import_plugins(modules)
    _TICKER = _Ticker(queue)


def _child_run(cfg, path, data_dir, ctx, skip_dead):
    try:
        return execute(cfg, path, data_dir, _TICKER, ctx, skip_dead)
    finally:
        _TICKER.flush()


def _run_in_children(todo, jobs, threads, data_dir, ctx, bar, skip_dead, why):
    modules = _plugin_modules([cfg for cfg, _ in todo], why)
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()        # handed over at process start, as initargs
    with _child_environment(threads), ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)), mp_context=spawn, initializer=_child_init,
            initargs=(threads, queue, modules)) as pool:
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
        with exclusive(path):
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
    for path, cfg, k in zip(paths, configs, done):
        note = kept_elsewhere(path, cfg, str(ctx)) if k == cfg["rounds"] else None
        if note:
            bar.note(note)
    try:
        if reuse:
            todo = _reuse_finished(todo, [p for p, k in zip(paths, done) if not k], out, ctx, bar)
        if here:
            for cfg, path in todo:
                execute(cfg, path, data_dir, bar.update, ctx, skip_dead)
                bar.runs_done()
        elif todo:
            why = (f"jobs={jobs}" if jobs > 1 else
                   f"mxnet is loaded here with OMP_NUM_THREADS="
                   f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, the spec asks for "
                   f"threads={spec.threads}; set OMP_NUM_THREADS={spec.threads} before "
                   "importing mxnet to train here")
            _run_in_children(todo, jobs, spec.threads, data_dir, ctx, bar, skip_dead, why)
    finally:
        bar.close()
    return paths
