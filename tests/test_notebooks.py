"""The notebooks run top to bottom on tiny settings (real MNIST) in a
kernel of this environment's Python, with their settings from environment
variables; cells appended by the test check what they computed. The
committed notebooks carry no outputs."""
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from byzsgd import runner
from byzsgd.experiment import Arm, Spec

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
NAMES = ("inspect_results.ipynb", "extend.ipynb")


def execute(name, cwd, checks):
    """Run notebook ``name`` with ``checks`` (source lines) appended as a last
    cell, in ``cwd``; return the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("\n".join(
        ["import sys", "print(sys.executable)", *checks])))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb, kind):
    return [o for cell in nb.cells for o in cell.get("outputs", []) if kind in o.get("data", {})]


def kernel_python(nb):
    return nb.cells[-1].outputs[0]["text"].strip()


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_have_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert nb.metadata.kernelspec.name == "python3"


def test_inspect_results(data_root, tmp_path, monkeypatch):
    """Tidy frame of every evaluation, final table per arm, plots written."""
    spec = Spec(figure="nbtest", title="test", dataset="mnist", model="mlp", n=20,
                attack="gaussian", attack_params={"q": 6, "sigma": 200.0},
                arms=(Arm("Mean", "mean"), Arm("MarMed", "marmed"),
                      Arm("Mean without failures", "mean", attack=None, reference=True)),
                rounds=10, lr=0.1, batch_size=32, eval_every=5, seeds=(0, 1))
    results = tmp_path / "results"
    runner.run(spec, out=results, data_dir=data_root, progress=False)
    monkeypatch.setenv("BYZSGD_RESULTS", str(results))
    monkeypatch.setenv("BYZSGD_FIGURE", "nbtest")
    monkeypatch.setenv("BYZSGD_ZOOM", "0.5,1")
    nb = execute("inspect_results.ipynb", tmp_path, [
        "assert len(df) == 3 * 2 * 3 and set(df['round']) == {0, 5, 10}",
        "assert df.groupby(['run_id', 'round']).size().eq(1).all()",
        "assert set(final.index) == {'Mean', 'MarMed', 'Mean without failures'}",
        "assert (final['seeds'] == 2).all() and (final['round'] == 10).all()",
        "assert (final['left_out'] == 0).all()",
        "assert final.loc['Mean', 'mean'] < final.loc['MarMed', 'mean']",
        "assert abs(gap['Mean without failures']).max() == 0",
    ])
    assert kernel_python(nb) == sys.executable
    assert len(outputs(nb, "image/png")) == 2
    assert (results / "notebook-plots" / "nbtest.png").stat().st_size > 1000
    assert not (results / "plots").exists()    # the results plots are byzsgd plot's, untouched


def test_extend(data_root, tmp_path, monkeypatch):
    """A new rule and attack registered in the notebook, run and plotted."""
    out = tmp_path / "out"
    monkeypatch.setenv("BYZSGD_DATA", str(data_root))
    monkeypatch.setenv("BYZSGD_NB_ROUNDS", "10")
    monkeypatch.setenv("BYZSGD_NB_SEEDS", "1")
    monkeypatch.setenv("BYZSGD_NB_OUT", str(out))
    nb = execute("extend.ipynb", tmp_path, [
        "from byzsgd import aggregators, attacks",
        "assert 'midmean' in aggregators.names() and 'scaled_mean' in attacks.names()",
        "assert len(runs) == 5 and all(r['complete'] for r in runs)",
        "assert {r['config']['rule'] for r in runs} >= {'midmean'}",
        "assert {r['config']['attack'] for r in runs} == {'scaled_mean', None}",
    ])
    assert kernel_python(nb) == sys.executable
    assert len(outputs(nb, "image/png")) == 1
    logs = sorted(p.name for p in (out / "nb_extend").glob("*.jsonl"))
    assert logs == sorted(f"{s}__seed0.jsonl" for s in (
        "mean", "marmed", "meamed", "midmean-new", "mean-without-failures"))


def test_inspect_results_keeps_arms_apart_and_leaves_out_unfinished_runs(tmp_path,
                                                                          monkeypatch):
    """Arms that share a label (Fig. 8's one point per q) stay apart, and a
    run that stopped early is not averaged in as if it had finished."""
    from synthetic_logs import write_run
    results = tmp_path / "results"
    plot = {"kind": "final_vs_x", "xlabel": "q"}
    for q in (1, 2):
        for seed in (0, 1, 2):
            write_run(results, "xfig", "Krum", seed, rule="krum", x=q, final=0.5 + 0.1 * q,
                      plot=plot, stop_at=30 if (q, seed) == (2, 0) else None)
    monkeypatch.setenv("BYZSGD_RESULTS", str(results))
    monkeypatch.setenv("BYZSGD_FIGURE", "xfig")
    monkeypatch.delenv("BYZSGD_ZOOM", raising=False)
    execute("inspect_results.ipynb", tmp_path, [
        "assert set(final.index) == {'Krum [x 1]', 'Krum [x 2]'}",
        "assert final.loc['Krum [x 2]', 'seeds'] == 2 and final.loc['Krum [x 2]', 'left_out'] == 1",
        "assert final.loc['Krum [x 1]', 'left_out'] == 0 and (final['round'] == 100).all()",
        "assert abs(final.loc['Krum [x 2]', 'mean'] - 0.7) < 1e-9",
    ])
