"""README's promises: CI runs exactly its test command, and its Python
example runs as printed (on real MNIST) and learns under the attack."""
import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks():
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_cmds = [b.strip() for b in _bash_blocks() if "pytest" in b]
    assert len(test_cmds) == 1, "README must give exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_cmds[0] in [line.strip() for line in ci]


def test_main_job_command_runs_a_paper_figure_quickly():
    main = [b.strip() for b in _bash_blocks() if "byzsgd run" in b]
    assert len(main) == 1 and "--quick" in main[0] and "fig" in main[0]


def test_python_example_trains_with_a_custom_rule(data_root, tmp_path, monkeypatch, capsys):
    from byzsgd import aggregators
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    monkeypatch.setenv("BYZSGD_DATA", str(data_root))
    path = tmp_path / "readme_example.py"
    path.write_text(code, encoding="utf-8")
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        if "middle_mean" in aggregators.names():  # leave the registry as found
            aggregators.REGISTRY.unregister("middle_mean")
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    acc = float(re.search(r"1: ([0-9.]+)", printed).group(1))
    assert acc > 0.8, printed


def test_the_example_rule_passes_the_property_suite_as_readme_says(tmp_path):
    """README's way to test one's own rule (BYZSGD_PLUGINS), on README's rule."""
    import os
    import subprocess
    import sys
    rule = re.search(r'(@aggregators\.register\("middle_mean"\)\ndef middle_mean.*?)\n\n',
                     README, re.S).group(1)
    (tmp_path / "my_rules.py").write_text(
        f"import numpy as np\nfrom byzsgd import aggregators\n\n{rule}\n", encoding="utf-8")
    cmd = re.search(r"`BYZSGD_PLUGINS=my_rules python (-m pytest [^`]*)`", README).group(1)
    env = {**os.environ, "BYZSGD_PLUGINS": "my_rules",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, *cmd.split(), "-q", "-p", "no:cacheprovider",
                           "-k", "middle_mean"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-2000:]
