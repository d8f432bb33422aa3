"""The figure modules: one per figure of the paper, each with a docstring
saying what is fixed and what varies and a SPEC with the paper's settings
that passes pre-flight (full and quick); quick presets end to end on real
data through ``byzsgd run``, shrunk to 10 rounds and a few arms except
Fig. 8's (the cheapest, run as is); shared figures plotted from their
source's logs; a CIFAR-10 figure at a tiny scale; Table 1 from the SPECs."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from byzsgd import cli, plotting, runner
from byzsgd.experiment import Spec, figures, load_figure, override, preflight, resolve_runs

PAPER_FIGURES = [f"fig{k:02d}" for k in range(2, 21)]   # Fig. 1 is a diagram
FIGURES = [k for k in figures() if k.startswith("fig")]
DERIVED = {"fig11": "fig02", "fig12": "fig03", "fig13": "fig04", "fig14": "fig05",
           "fig15": "fig06", "fig20": "fig07"}
SOURCES = [f for f in PAPER_FIGURES if f not in DERIVED]
CIFAR = {"fig07", "fig16", "fig17", "fig18", "fig19"}
PAPER_RULES = {"mean", "medoid", "krum", "multikrum", "geomed", "marmed", "meamed"}
WITH_REFERENCE = {"fig03", "fig04", "fig05", "fig06", "fig07", "fig10", "fig17", "fig18", "fig19"}
SHRINK = ["--rounds", "10", "--seeds", "0", "--eval-every", "5"]
UNSHRUNK = "fig08"    # its quick preset runs as is: 6 runs x 100 rounds, ~30-50 s
# Arms kept when a figure's quick preset is shrunk for the test.
SHRUNK_ARMS = {"fig02": ["Mean", "Krum"], "fig03": ["Mean", "MeaMed", "Mean without failures"],
               "fig04": ["Mean", "MeaMed", "Mean without failures"],
               "fig05": ["MarMed", "Mean without failures"], "fig06": ["Krum", "MarMed"],
               "fig09": ["Mean", "MeaMed"], "fig10": ["Krum (q=2)", "MarMed"]}


def spec_of(name):
    return load_figure(name).SPEC


def test_one_module_per_figure_of_the_paper():
    assert FIGURES == PAPER_FIGURES
    assert "table1" in figures()


@pytest.mark.parametrize("name", PAPER_FIGURES)
def test_module_docstring_and_spec(name):
    module = load_figure(name)
    doc = module.__doc__ or ""
    assert "Fixed" in doc and "Varies" in doc, name
    assert isinstance(module.SPEC, Spec)
    if name in DERIVED:       # the same SPEC object as its source: shared runs
        assert module.SPEC is spec_of(DERIVED[name])
        assert module.FIGURE == name and isinstance(module.PLOT, dict)
    else:
        assert module.SPEC.figure == name and not hasattr(module, "FIGURE")


@pytest.mark.parametrize("name", SOURCES)
def test_spec_passes_preflight_full_and_quick(name, data_root):
    spec = spec_of(name)
    assert len(preflight(spec, data_root)) == len(spec.arms) * len(spec.seeds)
    quick = override(spec, quick=True)
    assert quick.dataset == spec.dataset and quick.model == spec.model and quick.arms
    assert all(arm in spec.arms for arm in quick.arms)
    # The quick arms are the full spec's, checked above; one arm checks the rest of
    # the preset (batch size vs shard, rounds, seeds) without repeating every attack.
    assert len(preflight(override(quick, arms=quick.arms[:1]), data_root)) == len(quick.seeds)


@pytest.mark.parametrize("name", SOURCES)
def test_spec_has_the_papers_settings(name):
    spec = spec_of(name)
    paper = (dict(dataset="cifar10", model="cnn", lr=5e-4, batch_size=128, rounds=4000, topk=3)
             if name in CIFAR else
             dict(dataset="mnist", model="mlp", lr=0.1, batch_size=32, rounds=500, topk=1))
    assert {k: getattr(spec, k) for k in paper} == paper
    assert spec.n == 20 and spec.seeds == tuple(range(10))
    rules = {a.rule for a in spec.arms if not a.reference}
    assert rules == ({"krum", "multikrum"} if name == "fig08" else
                     {"krum", "multikrum", "meamed", "marmed"} if name == "fig10" else PAPER_RULES)
    refs = [a for a in spec.arms if a.reference]
    assert [(a.rule, a.attack) for a in refs] == ([("mean", None)] if name in WITH_REFERENCE
                                                  else [])
    q = {a.rule_params.get("q") for a in spec.arms if a.rule in ("krum", "multikrum", "meamed")}
    if name == "fig08":
        assert q == set(range(1, 9))
    elif name == "fig10":
        assert q == {2, 4, 6, 8}
    else:  # q = 8 under bit-flip and gambler, 6 under Gaussian/omniscient (and no failures)
        assert q == ({8} if spec.attack in ("bitflip", "gambler") else {6})


def test_attacks_are_the_papers():
    attacks = {spec_of(f).figure: (spec_of(f).attack, spec_of(f).attack_params) for f in SOURCES}
    gaussian = ("gaussian", {"q": 6, "sigma": 200.0})
    omniscient = ("omniscient", {"q": 6, "scale": 1e20})
    bitflip = ("bitflip", {"bits": (22, 30, 31, 32), "dims": 1000, "per_dim": 1})
    gambler = ("gambler", {"servers": 20, "faulty": 1, "prob": 0.0005, "factor": -1e20})
    none = (None, {})
    assert attacks == {"fig02": none, "fig03": gaussian, "fig04": omniscient, "fig05": bitflip,
                       "fig06": gambler, "fig07": gambler, "fig08": bitflip, "fig09": none,
                       "fig10": gambler, "fig16": none, "fig17": gaussian, "fig18": omniscient,
                       "fig19": bitflip}


def test_fig09_varies_batch_size_with_scaled_learning_rate():
    spec = spec_of("fig09")
    assert {a.group for a in spec.arms} == {32, 64, 128, 256}
    for arm in spec.arms:
        assert arm.batch_size == arm.group and arm.lr == pytest.approx(0.1 * arm.batch_size / 32)
    assert spec.plot["kind"] == "groups" and spec_of("fig08").plot["kind"] == "final_vs_x"
    assert [a.x for a in spec_of("fig08").arms if a.rule == "krum"] == list(range(1, 9))


def _byzsgd(*argv):
    """``byzsgd ARGV`` in this process: (exit status, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue()


@pytest.fixture(scope="module")
def quick_results(data_root, tmp_path_factory):
    """Every MNIST figure's quick preset shrunk (UNSHRUNK's as is), run by
    ``byzsgd run``, into one results folder; returns it."""
    out = tmp_path_factory.mktemp("quick")
    common = ["--quick", "--out", out, "--data-dir", data_root, "--no-progress"]
    for name in [f for f in SOURCES if f not in CIFAR]:
        extra = [] if name == UNSHRUNK else [*SHRINK, "--arms", *SHRUNK_ARMS[name]]
        status, _ = _byzsgd("run", name, *common, *extra)
        assert status == 0, name
    return out


def _quick_spec(name):
    spec = spec_of(name)
    if name == UNSHRUNK:
        return override(spec, quick=True)
    return override(spec, quick=True, rounds=10, seeds=(0,), eval_every=5,
                    arms=SHRUNK_ARMS[name])


@pytest.mark.parametrize("name", [f for f in SOURCES if f not in CIFAR])
def test_quick_preset_runs_end_to_end(name, quick_results):
    spec = _quick_spec(name)
    for cfg in resolve_runs(spec):
        lines = runner.read_log(runner.log_path(quick_results, cfg))
        assert lines[0]["type"] == "config" and lines[-1]["type"] == "done", cfg["run_id"]
        assert [ln["round"] for ln in lines[1:-1]] == list(
            range(0, spec.rounds + 1, spec.eval_every))
    for fmt in ("png", "pdf"):
        assert (quick_results / "plots" / f"{name}.{fmt}").stat().st_size > 1000
    manifest = json.loads((quick_results / "plots" / f"{name}.json").read_text())
    assert manifest["missing"] == []


def _finals(results, name):
    return {r["config"]["label"]: (r["evals"][-1]["top1"], r["diverged"])
            for r in plotting.load_runs(results, name)}


def test_fig08_quick_preset_krum_stuck_whatever_q(quick_results):
    """The real quick preset: under bit-flip, Krum and Multi-Krum end at a bad
    solution for every q (Section 5.4)."""
    runs = plotting.load_runs(quick_results, "fig08")
    assert sorted((r["config"]["label"], r["config"]["x"]) for r in runs) == [
        (label, q) for label in ("Krum", "Multi-Krum") for q in (1, 4, 8)]
    for r in runs:
        assert r["diverged"] or r["evals"][-1]["top1"] < 0.5, (r["run_id"], r["evals"][-1])


def test_shrunk_runs_learn_or_fail_as_expected(quick_results):
    """Even 10 rounds separate the rules: Mean fails under the Gaussian attack
    while MeaMed and the reference learn; MarMed learns under bit-flip."""
    gauss, bitflip = _finals(quick_results, "fig03"), _finals(quick_results, "fig05")
    assert gauss["Mean"][0] < 0.2 and gauss["MeaMed"][0] > 0.5, gauss
    assert gauss["Mean without failures"][0] > 0.5 and bitflip["MarMed"][0] > 0.5, bitflip


@pytest.mark.parametrize("name", [f for f in DERIVED if f != "fig20"])
def test_shared_figure_plots_from_its_sources_logs(name, quick_results):
    logs = sorted((quick_results / DERIVED[name]).glob("*.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in logs]
    status, printed = _byzsgd("plot", name, "--results", quick_results)
    assert status == 0 and f"{name}.png" in printed
    manifest = json.loads((quick_results / "plots" / f"{name}.json").read_text())
    assert manifest["source"] == DERIVED[name]
    assert manifest["overrides"] == load_figure(name).PLOT and manifest["overrides"]["zoom"]
    assert not (quick_results / name).exists()          # nothing was run for it
    assert [p.stat().st_mtime_ns for p in logs] == stamps


def test_derived_module_as_script_reuses_the_runs(quick_results, data_root):
    """``python experiments/fig11_*.py --quick ...`` finds Fig. 2's runs done
    and only plots Fig. 11."""
    logs = sorted((quick_results / "fig02").glob("*.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in logs]
    script = Path(__file__).parents[1] / "experiments" / f"{figures()['fig11']}.py"
    done = subprocess.run([sys.executable, str(script), "--quick", *SHRINK, "--arms",
                           *SHRUNK_ARMS["fig02"], "--out", str(quick_results), "--data-dir",
                           str(data_root), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "fig11.png" in done.stdout
    assert [p.stat().st_mtime_ns for p in logs] == stamps


def test_cifar_figure_end_to_end_at_tiny_scale(data_root, tmp_path):
    """Fig. 7 (gambler) on real CIFAR-10 at n = 4, batch 8, 2 rounds, one
    arm; then Fig. 20 plotted from its logs."""
    spec = override(spec_of("fig07"), n=4, batch_size=8, rounds=2, eval_every=2, seeds=(0,),
                    arms=["MarMed"])
    paths = runner.run(spec, out=tmp_path, data_dir=data_root, progress=False)
    lines = runner.read_log(paths[0])
    assert lines[0]["dataset"] == "cifar10" and lines[0]["topk"] == 3
    assert [ln["round"] for ln in lines[1:-1]] == [0, 2] and lines[-1]["type"] == "done"
    assert 0.0 <= lines[-2]["topk"] <= 1.0
    status, printed = _byzsgd("plot", "fig20", "--results", tmp_path)
    assert status == 0 and "fig20.png" in printed
    manifest = json.loads((tmp_path / "plots" / "fig20.json").read_text())
    assert manifest["source"] == "fig07"


def test_table1_is_built_from_the_specs(data_root):
    status, printed = _byzsgd("run", "table1", "--data-dir", data_root)
    assert status == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in printed.splitlines() if line.startswith("| ") and "Dataset" not in line}
    # columns: # train, # test, gamma, # rounds, batch size, metric, optimizer, model, d
    mlp = 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10            # Table 2
    assert rows["MNIST"][:6] == ["60,000", "10,000", "0.1", "500", "32", "top-1 accuracy"]
    assert rows["MNIST"][7:] == ["MLP", f"{mlp:,}"]
    assert rows["CIFAR-10"][:6] == ["50,000", "10,000", "0.0005", "4000", "128",
                                    "top-3 accuracy"]
    assert rows["CIFAR-10"][7] == "CNN"
    assert "fig09: batch size per arm 32, 64, 128, 256" in printed


def test_table1_refuses_run_options_it_would_ignore(data_root, capsys):
    with pytest.raises(SystemExit) as exit_:
        _byzsgd("run", "table1", "--quick", "--data-dir", data_root)
    assert exit_.value.code == 2
    assert "byzsgd run table1: error: unrecognized arguments: --quick" in capsys.readouterr().err


def test_table1_follows_the_specs_not_a_copy(data_root):
    """Rows take the value most figures share; the others are listed."""
    table1 = load_figure("table1")
    specs = [override(spec_of("fig03"), lr=0.05, rounds=123),
             override(spec_of("fig04"), lr=0.05, rounds=123), spec_of("fig02")]
    rows, notes = table1.rows(data_root, specs)
    assert len(rows) == 1 and rows[0]["figures"] == ["fig02", "fig03", "fig04"]
    assert rows[0]["\u03b3"] == "0.05" and rows[0]["# rounds"] == 123
    assert notes == ["fig02: \u03b3 0.1", "fig02: # rounds 500"]


EXTENSIONS = [k for k in figures() if k.startswith("ext")]


def test_extensions_beyond_the_paper():
    """Fashion-MNIST bit-flip and gambler, and the bit-flip figure under the
    authors' code's bit numbering: Fig. 5's and Fig. 6's settings otherwise."""
    assert EXTENSIONS == ["ext01", "ext02", "ext03"]
    fig05, fig06 = spec_of("fig05"), spec_of("fig06")
    for name, like, changed in (("ext01", fig05, {"dataset": "fashion-mnist"}),
                                ("ext02", fig06, {"dataset": "fashion-mnist"}),
                                ("ext03", fig05, {"attack_params": {
                                    "bits": (22, 29, 30, 31), "numbering": "zero",
                                    "dims": 500, "per_dim": 1}})):
        module = load_figure(name)
        assert "Fixed" in module.__doc__ and "Varies" in module.__doc__
        spec = module.SPEC
        assert spec.figure == name and spec.arms == like.arms
        for key in ("model", "n", "rounds", "lr", "batch_size", "seeds", "attack",
                    "attack_params", "dataset", "eval_every"):
            assert getattr(spec, key) == changed.get(key, getattr(like, key)), (name, key)


@pytest.mark.parametrize("name", EXTENSIONS)
def test_extension_passes_preflight(name, data_root):
    spec = spec_of(name)
    preflight(spec, data_root)
    preflight(override(spec, quick=True), data_root)
