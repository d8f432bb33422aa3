"""Run logs and checkpoints on disk: the storage half of :mod:`byzsgd.runner`.

A log ``<out>/<figure>/<run_id>.jsonl`` is a config line, eval lines and a
done line (format: README.md, Logs). Lines are appended whole with flush + fsync;
a torn last line (a crash mid-write) is ignored when reading and cut when
resuming. Non-finite numbers are written as null. Checkpoints live in
``<out>/<figure>/.ckpt/<run_id>/r<round>/`` and are written to a temporary
folder, then renamed, so that a checkpoint is complete or absent.
"""
import contextlib
import fcntl
import json
import math
import os
import re
import shutil
from pathlib import Path

__all__ = ["CKPT", "log_path", "read_log", "finished_runs", "check_figure_folder",
           "exclusive", "BusyError"]

CKPT = ".ckpt"
_CKPT_NAME = re.compile(r"^r(\d{8})$")
# Where and how a run's numbers were made. Not part of its identity: a run
# may be resumed elsewhere (another device or CPU, or the batched gradients of
# byzsgd.fused instead of the loop, give close, not bit-identical, results;
# the log says how it began), and a copied run keeps its source's.
_PROVENANCE_KEYS = ("versions", "machine", "started", "device", "gradients")
_IGNORED_KEYS = ("type", "copied_from") + _PROVENANCE_KEYS
# What a figure calls a run and how it draws it: two runs that differ only
# here compute the same numbers (e.g. Fig. 16's Mean and Fig. 7's reference).
_PRESENTATION_KEYS = ("figure", "run_id", "label", "group", "x", "reference", "plot")


# ------------------------------------------------------------------ logs

class BusyError(RuntimeError):
    """A run's log is held by another process (two `byzsgd run` at once)."""


@contextlib.contextmanager
def exclusive(path):
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


def log_path(out, cfg):
    """Where the run ``cfg`` logs: ``<out>/<figure>/<run_id>.jsonl``."""
    return Path(out) / cfg["figure"] / f"{cfg['run_id']}.jsonl"


def _finite(value):
    return value if value is None or math.isfinite(value) else None


def jsonable(value):
    """``value`` with numpy scalars as Python numbers and non-finite floats
    as None, recursively (diagnostics come from user rules too)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):               # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, float):
        return _finite(value)
    return value if value is None or isinstance(value, (bool, int, str)) else str(value)


def _dumps(obj):
    return json.dumps(obj, allow_nan=False)


def read_log(path):
    """The complete lines of a log as dicts; a torn (unterminated or
    unparsable) last line is left out. Missing file: []."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a byzsgd log (not UTF-8 text: {err.reason}); "
                         "move it out of the figure's folder") from None
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]   # tail is "" when the file ends in \n
    out = []
    for i, line in enumerate(complete):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(complete) - 1 and not tail:
                break           # a garbled last line: the crash hit mid-write
            raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return out


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rewrite(path, lines):
    """Replace the log by ``lines`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(_dumps(line) + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class _Appender:
    """Appends whole lines to a log, each flushed and fsynced before returning."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, line):
        self.file.write(_dumps(line) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        self.file.close()


def _differences(logged, cfg, keys, where="now"):
    """The text "k=<logged> there, <cfg> now" (or <cfg> ``where``) for each
    of ``keys`` that differ."""
    return ", ".join(f"{k}={logged.get(k)!r} there, {cfg.get(k)!r} {where}"
                     for k in sorted(keys) if logged.get(k) != cfg.get(k))


def _conflict(path, logged, cfg):
    """Refuse to mix runs of different settings in one log."""
    what = _differences(logged, cfg, (set(logged) | set(cfg)) - set(_IGNORED_KEYS))
    if what:
        raise ValueError(f"{path} holds a run with other settings ({what}); delete it "
                         f"or write elsewhere with --out")


#: settings every run of one figure shares (arms may set their own rule,
#: attack, lr and batch size; runs of one arm differ only in the seed)
_FIGURE_KEYS = ("dataset", "model", "n", "rounds", "eval_every", "optimizer",
                "optimizer_params", "topk", "partition")


def _arm(cfg):
    """The arm of a run: its run id without the seed (label, group and x)."""
    return str(cfg.get("run_id", "")).rsplit("__seed", 1)[0]


def check_figure_folder(out, configs):
    """Refuse ``configs`` (runs of one figure) if the other logs of their
    figure under ``out`` were run with other settings: the plot and the
    report average over every log of an arm, so a seed run with --rounds 3
    beside seeds run with 500 would be averaged silently. A log of the same
    arm (run id but the seed) must agree in everything but the seed and run id, any other
    log in the settings of _FIGURE_KEYS."""
    if not configs:
        return
    planned = {log_path(out, cfg) for cfg in configs}
    by_arm = {_arm(cfg): cfg for cfg in configs}
    folder = Path(out) / configs[0]["figure"]
    for path in sorted(folder.glob("*.jsonl")):
        lines = read_log(path) if path not in planned else None
        if not lines or lines[0].get("type") != "config":
            continue   # its own log: _conflict; an empty or foreign file: not a run
        logged, new = lines[0], by_arm.get(_arm(lines[0]))
        keys = (set(logged) | set(new)) - set(_IGNORED_KEYS) - {"seed", "run_id"} \
            if new is not None else _FIGURE_KEYS
        ref = new if new is not None else configs[0]
        what = _differences(logged, ref, keys)
        if what:
            raise ValueError(
                f"{path} holds a run of {ref['figure']} with other settings ({what}); "
                "the plot and the report would average them together: use the same "
                "settings, delete those logs, or write elsewhere with --out")


# ------------------------------------------------------------ shared runs

def _computation(cfg):
    """The part of a config that decides a run's numbers, as a hashable key."""
    skip = _IGNORED_KEYS + _PRESENTATION_KEYS
    return json.dumps({k: v for k, v in cfg.items() if k not in skip}, sort_keys=True)


def finished_runs(out):
    """{(computation key, device): log path} of the finished runs under
    ``out`` (``<out>/<figure>/<run>.jsonl`` with a done line), first found
    first. The device (``cpu``, ``gpu(0)``, a distributed cluster) is part of
    the key: other devices give close, not equal, numbers."""
    found = {}
    for path in sorted(Path(out).glob("*/*.jsonl")):
        lines = read_log(path)
        if len(lines) > 1 and lines[0].get("type") == "config" \
                and lines[-1].get("type") == "done":
            found.setdefault((_computation(lines[0]), lines[0].get("device")), path)
    return found


def _copy_run(source, path, cfg, out):
    """Write the finished run at ``source`` as the log of ``cfg`` at ``path``:
    its eval and done lines as they are, the config line of ``cfg`` with the
    source's provenance (versions, machine, device, gradients, started) and
    ``copied_from``, the source log relative to ``out`` (the first one when
    the source is itself a copy)."""
    lines = read_log(source)
    head = lines[0]
    provenance = {k: head[k] for k in _PROVENANCE_KEYS if k in head}
    origin = head.get("copied_from") or Path(source).relative_to(out).as_posix()
    _rewrite(path, [{"type": "config", **cfg, **provenance, "copied_from": origin},
                    *lines[1:]])


# ------------------------------------------------------------ checkpoints

def _ckpt_root(path):
    return path.parent / CKPT / path.stem


def _checkpoints(root):
    """{round: folder} of the complete checkpoints under ``root``."""
    found = {}
    if root.is_dir():
        for d in root.iterdir():
            m = _CKPT_NAME.match(d.name)
            if m and (d / "meta.json").is_file():
                found[int(m.group(1))] = d
    return found


def _save_checkpoint(root, round_, net, trainer, meta):
    final = root / f"r{round_:08d}"
    tmp = root / f"r{round_:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    net.save_parameters(str(tmp / "model.params"))
    trainer.save_states(str(tmp / "trainer.states"))
    (tmp / "meta.json").write_text(_dumps(meta), encoding="utf-8")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    _fsync_dir(root)
    for r, d in _checkpoints(root).items():
        if r != round_:
            shutil.rmtree(d, ignore_errors=True)


def _drop_checkpoints(root):
    """Delete a run's checkpoints, and the .ckpt folder once it is empty."""
    shutil.rmtree(root, ignore_errors=True)
    try:
        root.parent.rmdir()
    except OSError:
        pass                    # other runs' checkpoints are still there


def _resume_point(path, cfg):
    """(log lines, lines to keep, checkpoint folder or None) of the run at
    ``path``: the last checkpoint whose round the log reaches. Raises if the
    log holds a run of other settings."""
    lines = read_log(path)
    if lines and lines[0].get("type") == "config":
        _conflict(path, lines[0], cfg)
    ckpts = _checkpoints(_ckpt_root(path))
    for round_ in sorted(ckpts, reverse=True):
        kept = [ln for ln in lines if ln.get("type") == "config"
                or (ln.get("type") == "eval" and ln["round"] <= round_)]
        if kept and kept[0].get("type") == "config" and kept[-1].get("round") == round_:
            return lines, kept, ckpts[round_]
    return lines, [], None


def kept_elsewhere(path, cfg, device):
    """For a finished run that is not trained again: a note when its log says
    it ran on another ``device`` (a cluster's log read by a simulated run, or
    the reverse), else None. Reads the config line only."""
    with open(path, encoding="utf-8", errors="replace") as f:
        try:
            logged = json.loads(f.readline()).get("device")
        except (json.JSONDecodeError, AttributeError):
            return None
    if logged is None or logged == device:
        return None
    return (f"{cfg['figure']}/{cfg['run_id']}: finished on {logged!r}, not {device!r}: kept "
            f"(delete {path} or use another --out to run it here)")


def _rounds_done(path, cfg):
    """Rounds of the run already safe on disk (all of them once it is done)."""
    lines, _, ckpt = _resume_point(path, cfg)
    if lines and lines[-1].get("type") == "done":
        return cfg["rounds"]
    return int(_CKPT_NAME.match(ckpt.name).group(1)) if ckpt else 0
