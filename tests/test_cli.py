"""The byzsgd command line: list, run (as `python -m byzsgd.cli` and as a
figure script), plot, report, forwarding, and errors that list valid names."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from byzsgd import cli, experiment, runner
from byzsgd.experiment import Arm

FIG03 = Path(experiment.__file__).resolve().parents[1] / "experiments" / "fig03_mnist_gaussian.py"


def test_list_names_everything(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fig03" in out and "fig03_mnist_gaussian" in out
    for word in ("marmed", "meamed", "krum", "gaussian", "bitflip", "mlp", "cnn",
                 "mnist", "fashion-mnist", "cifar10"):
        assert word in out


def test_unknown_figure_lists_valid_ones(capsys):
    assert cli.main(["run", "fig99", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown figure 'fig99'" in err and "fig03 (fig03_mnist_gaussian)" in err
    assert "Traceback" not in err


def test_unknown_rule_in_a_figure_script_lists_valid_ones(capsys, tmp_path, data_root):
    spec = experiment.override(experiment.load_spec("fig03"),
                               arms=(Arm("Median", "median"),))
    with pytest.raises(SystemExit) as code:
        cli.run_main(spec, ["--out", str(tmp_path), "--data-dir", str(data_root)])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "unknown aggregation rule 'median'" in err and "marmed" in err
    assert not any(tmp_path.iterdir())


def test_unknown_arm_lists_labels(capsys):
    assert cli.main(["run", "fig03", "--arms", "Bulyan", "--no-progress"]) == 2
    assert "'Mean without failures'" in capsys.readouterr().err


def test_run_quick_subprocess_then_plot_and_report(tmp_path, data_root, capsys):
    """`python -m byzsgd.cli run fig03 --quick` with tiny overrides, end to end."""
    out = tmp_path / "res"
    env = dict(os.environ, OMP_NUM_THREADS="1", BYZSGD_DATA=str(data_root))
    proc = subprocess.run(
        [sys.executable, "-m", "byzsgd.cli", "run", "fig03", "--quick", "--seeds", "1",
         "--rounds", "3", "--eval-every", "2", "--arms", "Mean", "medoid",
         "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = [Path(line) for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert printed and printed[0].is_file()
    logs = sorted(p.name for p in (out / "fig03").glob("*.jsonl"))
    assert logs == ["mean__seed1.jsonl", "medoid__seed1.jsonl"]
    for name in logs:
        lines = [json.loads(ln) for ln in (out / "fig03" / name).read_text().splitlines()]
        assert [ln.get("round") for ln in lines[1:-1]] == [0, 2, 3]
        assert lines[-1]["type"] == "done"

    assert cli.main(["plot", "fig03_mnist_gaussian", "--results", str(out),
                     "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "fig03.png").is_file()
    assert cli.main(["report", "--results", str(out)]) == 0
    report = Path(capsys.readouterr().out.splitlines()[-1])
    assert report.is_file() and "fig03" in report.read_text()


def test_figure_script_takes_the_same_options(tmp_path, data_root, monkeypatch, capsys):
    """`python experiments/fig03_mnist_gaussian.py --quick ...` (run in-process)."""
    monkeypatch.setattr(sys, "argv", [str(FIG03), "--quick", "--seeds", "0", "--rounds", "1",
                                      "--arms", "Mean", "--out", str(tmp_path),
                                      "--data-dir", str(data_root), "--no-plot",
                                      "--no-progress"])
    with pytest.raises(SystemExit) as code:
        runpy.run_path(str(FIG03), run_name="__main__")
    assert code.value.code == 0
    [log] = (tmp_path / "fig03").glob("*.jsonl")
    assert runner.read_log(log)[-1] == {**runner.read_log(log)[-1], "type": "done", "rounds": 1}
    assert "fig03: logs in" in capsys.readouterr().out


def test_quick_results_go_to_their_own_folder(monkeypatch, tmp_path, data_root, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "fig03", "--quick", "--seeds", "0", "--rounds", "1", "--arms",
                     "Mean", "--data-dir", str(data_root), "--no-plot",
                     "--no-progress"]) == 0
    assert (tmp_path / cli.QUICK_RESULTS / "fig03" / "mean__seed0.jsonl").is_file()
    assert cli.main(["plot", "fig03"]) == 2       # the default results hold no fig03
    assert "byzsgd plot fig03 --quick" in capsys.readouterr().err
    assert cli.main(["report"]) == 0
    assert "byzsgd report --quick" in capsys.readouterr().err


def test_plot_of_a_table_is_one_line(capsys):
    assert cli.main(["plot", "table1"]) == 2
    assert "is a table, not a plot: `byzsgd run table1`" in capsys.readouterr().err


def test_an_interrupted_run_says_how_to_resume(capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    assert cli._guarded(interrupted, type("Args", (), {"command": "run"})()) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_bench_forwards_its_arguments(monkeypatch, tmp_path, capfd):
    doc = tmp_path / "x.json"
    doc.write_text('{"b": 1, "a": [1, 2]}')
    monkeypatch.setitem(cli.FORWARD, "bench", "json.tool")
    assert cli.main(["bench", "--sort-keys", "--compact", str(doc)]) == 0
    assert capfd.readouterr().out.strip() == '{"a":[1,2],"b":1}'


def test_forward_to_a_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.FORWARD, "bench", "byzsgd.no_such_module")
    assert cli.main(["bench", "--help"]) == 2
    assert "byzsgd.no_such_module is not installed" in capsys.readouterr().err


DERIVED = '''"""A figure drawn from fig03's runs with a zoomed panel (test module)."""
from byzsgd.experiment import main
from byzsgd.experiments.fig03_mnist_gaussian import SPEC

FIGURE = "fig97"
PLOT = {"zoom": [0.0, 0.5]}
'''
NO_SPEC = '''"""A module that trains nothing (like Table 1) (test module)."""
def main(argv=None):
    print("no-spec main got", argv)
    return 0
'''


@pytest.fixture
def extra_figures(tmp_path, monkeypatch):
    """fig97 (derived from fig03's runs) and fig98 (no SPEC) as figure modules."""
    import byzsgd.experiments
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "fig97_derived.py").write_text(DERIVED)
    (folder / "fig98_notrain.py").write_text(NO_SPEC)
    monkeypatch.setattr(byzsgd.experiments, "__path__",
                        [*byzsgd.experiments.__path__, str(folder)])
    yield
    for name in ("byzsgd.experiments.fig97_derived", "byzsgd.experiments.fig98_notrain"):
        sys.modules.pop(name, None)


def test_derived_figure_runs_its_source_and_plots_under_its_name(
        extra_figures, tmp_path, data_root, capsys):
    out = tmp_path / "res"
    assert cli.main(["run", "fig97", "--seeds", "0", "--rounds", "1", "--arms", "Mean",
                     "--out", str(out), "--data-dir", str(data_root), "--no-progress"]) == 0
    assert (out / "fig03" / "mean__seed0.jsonl").is_file()     # the source's runs
    assert (out / "plots" / "fig97.png").is_file()
    manifest = json.loads((out / "plots" / "fig97.json").read_text())
    assert manifest["source"] == "fig03" and manifest["overrides"] == {"zoom": [0.0, 0.5]}
    assert cli.main(["plot", "fig97_derived", "--results", str(out)]) == 0
    assert "fig97.png" in capsys.readouterr().out
    assert "plotted from the runs of fig03" in _listing(capsys)


def test_module_without_spec_gets_its_own_arguments(extra_figures, capsys):
    assert cli.main(["run", "fig98", "--data-dir", "D"]) == 0
    assert "no-spec main got ['--data-dir', 'D']" in capsys.readouterr().out


def _listing(capsys):
    cli.main(["list"])
    return capsys.readouterr().out


def test_unavailable_gpu_is_refused_before_training(tmp_path, data_root, capsys):
    import mxnet as mx
    if mx.context.num_gpus():
        pytest.skip("this machine has a GPU")
    assert cli.main(["run", "fig03", "--quick", "--ctx", "gpu(0)", "--out", str(tmp_path),
                     "--data-dir", str(data_root), "--no-progress"]) == 2
    assert "sees 0 GPU" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.jsonl"))


@pytest.mark.parametrize("argv, words", [
    (["-n", "4"], ["-n/--workers", "--distributed"]),
    (["-s", "2"], ["-s/--servers", "--distributed"]),
    (["--distributed", "--jobs", "2"], ["--jobs=2", "must be 1"]),
    (["--distributed", "--ctx", "gpu(0)"], ["--ctx='gpu(0)'", "cpu"]),
])
def test_options_a_mode_would_ignore_are_refused(argv, words, tmp_path, data_root, capsys):
    assert cli.main(["run", "fig02", "--seeds", "0", "--rounds", "1", "--arms", "Mean",
                     "--out", str(tmp_path), "--data-dir", str(data_root), "--no-progress",
                     *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("byzsgd: error:") and all(w in err for w in words)
    assert not any(tmp_path.rglob("*.jsonl"))


def test_report_of_a_missing_folder_is_an_error(tmp_path, capsys):
    missing = tmp_path / "typo"
    assert cli.main(["report", "--results", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()


def test_report_help_says_where_it_writes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    assert "REPORT.md" in capsys.readouterr().out


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, data_root, capsys):
    out = tmp_path / "k.log"
    out.write_text("")
    assert cli.main(["run", "fig02", "--seeds", "0", "--rounds", "1", "--arms", "Mean",
                     "--out", str(out), "--data-dir", str(data_root), "--no-progress",
                     "--no-plot"]) == 2
    assert capsys.readouterr().err.startswith("byzsgd: error:")
