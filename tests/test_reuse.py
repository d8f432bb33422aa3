"""Runs that equal a finished run in all but names (Fig. 16's Mean and Fig.
7's reference) are copied from its log instead of trained, and say so."""
import json

import pytest

from byzsgd import cli, experiment, runner
from byzsgd import training as training_module
from byzsgd.experiment import Arm, Spec


def spec(figure, label="Mean", reference=False, **changes):
    """One run of the MLP on MNIST without attack, a few rounds."""
    base = dict(figure=figure, title=f"test {figure}", dataset="mnist", model="mlp", n=20,
                attack=None, arms=(Arm(label, "mean", reference=reference),),
                rounds=4, lr=0.1, batch_size=32, eval_every=2, seeds=(0,))
    base.update(changes)
    return Spec(**base)


def log(out, s):
    [cfg] = experiment.resolve_runs(s)
    return runner.read_log(runner.log_path(out, cfg))


def no_elapsed(lines):
    return [{k: v for k, v in ln.items() if k != "elapsed"} for ln in lines]


class Trained(Exception):
    pass


def refuse_training(monkeypatch):
    def training(*args, **kwargs):
        raise Trained
    monkeypatch.setattr(training_module, "Training", training)


@pytest.fixture(scope="module")
def source(data_root, tmp_path_factory):
    """A finished run of figure "a"."""
    out = tmp_path_factory.mktemp("reuse")
    runner.run(spec("a"), out=out, data_dir=data_root, progress=False)
    return out


def test_same_settings_under_other_names_are_copied_not_trained(source, data_root,
                                                                monkeypatch, capsys):
    refuse_training(monkeypatch)
    b = spec("b", label="Mean without failures", reference=True,
             plot={"kind": "curves", "metric": "top1", "title": "other"})
    runner.run(b, out=source, data_dir=data_root, progress=False)
    got, original = log(source, b), log(source, spec("a"))
    assert got[1:] == original[1:]                     # every eval line and the done line
    head = got[0]
    assert (head["figure"], head["label"], head["reference"]) == \
        ("b", "Mean without failures", True)
    assert head["copied_from"] == "a/mean__seed0.jsonl"
    for key in ("versions", "started", "gradients"):   # provenance of the numbers
        assert head[key] == original[0][key]
    assert "b/mean-without-failures__seed0: the same run as" in capsys.readouterr().err
    # finished now: a rerun leaves it alone, and a copy of the copy names the first log
    runner.run(b, out=source, data_dir=data_root, progress=False)
    runner.run(spec("c"), out=source, data_dir=data_root, progress=False)
    assert log(source, spec("c"))[0]["copied_from"] == "a/mean__seed0.jsonl"


def test_a_copy_holds_what_training_gives(source, data_root, tmp_path):
    b = spec("b")
    runner.run(b, out=source, data_dir=data_root, progress=False)
    runner.run(b, out=tmp_path, data_dir=data_root, progress=False)   # nothing to copy there
    trained = log(tmp_path, b)
    assert "copied_from" not in trained[0]
    assert no_elapsed(log(source, b)[1:]) == no_elapsed(trained[1:])


@pytest.mark.parametrize("changes", [{"lr": 0.05}, {"seeds": (1,)}, {"eval_every": 4},
                                     {"threads": 2}], ids=lambda c: next(iter(c)))
def test_other_settings_are_trained(source, data_root, changes):
    d = spec("d-" + next(iter(changes)), **changes)   # threads=2: trained in a child
    runner.run(d, out=source, data_dir=data_root, progress=False)
    trained = log(source, d)
    assert "copied_from" not in trained[0] and trained[-1]["type"] == "done"


def _edited_source(source, tmp_path, edit):
    """Figure "a"'s log under tmp_path, its lines passed through ``edit``."""
    lines = runner.read_log(source / "a" / "mean__seed0.jsonl")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mean__seed0.jsonl").write_text(
        "".join(json.dumps(ln) + "\n" for ln in edit(lines)))


@pytest.mark.parametrize("edit", [
    lambda lines: lines[:-1],                                           # no done line yet
    lambda lines: [{**lines[0], "device": "cpu, dist_byz n=20 s=1"}, *lines[1:]],
    lambda lines: [{**lines[0], "device": "gpu(0)"}, *lines[1:]],
], ids=["unfinished", "distributed", "gpu"])
def test_unfinished_runs_and_other_devices_are_not_sources(source, data_root, tmp_path,
                                                           monkeypatch, edit):
    _edited_source(source, tmp_path, edit)
    refuse_training(monkeypatch)
    with pytest.raises(Trained):
        runner.run(spec("e"), out=tmp_path, data_dir=data_root, progress=False)


def test_no_reuse_trains(source, data_root, monkeypatch):
    refuse_training(monkeypatch)
    with pytest.raises(Trained):
        runner.run(spec("f"), out=source, data_dir=data_root, progress=False, reuse=False)
    calls = []
    monkeypatch.setattr(runner, "run", lambda *a, **kw: calls.append(kw) or [])
    assert cli.main(["run", "fig03", "--quick", "--no-reuse", "--no-plot", "--no-progress",
                     "--out", str(source), "--data-dir", str(data_root)]) == 0
    assert calls[0]["reuse"] is False


def test_committed_runs_that_share_their_settings_agree():
    """The committed logs hold 180 runs that another figure's run repeats
    (Fig. 2's Mean is the reference of Figs. 3-6 and 10, ...): each equals
    its twin in every eval and done line but the elapsed times, so a copy is
    what training gives."""
    from pathlib import Path

    from byzsgd.runlog import _computation
    results = Path(__file__).parents[1] / "experiments" / "results"
    twins, runs = {}, 0
    for path in sorted(results.rglob("*.jsonl")):
        lines = runner.read_log(path)
        if lines and lines[-1]["type"] == "done":
            key = (path.parent.parent, _computation(lines[0]))
            twins.setdefault(key, []).append(no_elapsed(lines[1:]))
            runs += 1
    shared = [group for group in twins.values() if len(group) > 1]
    assert runs > 1000 and sum(len(g) - 1 for g in shared) >= 184
    for group in shared:
        assert all(body == group[0] for body in group[1:])
