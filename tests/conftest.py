"""Shared fixtures. Real datasets come from BYZSGD_DATA (a folder holding
mnist/, fashion-mnist/, cifar10/); tests never download. Without it, tests
that need data are skipped, unless BYZSGD_REQUIRE_DATA=1 (CI) makes that an
error.

OpenMP threads default to 1 (set here, before any test imports mxnet): MXNet
results depend on the thread count, and the runner then trains in the test
process instead of spawning a process pinned to the spec's thread count."""
import importlib
import lzma
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _import_plugins(spec):
    """BYZSGD_PLUGINS: modules or .py files registering a user's rules and
    attacks, imported before collection so that the suites parametrised over
    the registries (test_aggregator_properties.py) test them too."""
    from byzsgd.runner import load_file
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item.endswith(".py"):
            load_file(Path(item).stem, Path(item).resolve())
        else:
            importlib.import_module(item)


_import_plugins(os.environ.get("BYZSGD_PLUGINS", ""))

CACHE = Path(os.environ.get("BYZSGD_TEST_CACHE",
                            Path.home() / ".cache" / "byzsgd-tests"))


def _source_root():
    root = os.environ.get("BYZSGD_DATA")
    if root and Path(root).is_dir():
        return Path(root).resolve()
    msg = ("real datasets not available: set BYZSGD_DATA to a folder holding "
           "mnist/, fashion-mnist/, cifar10/ (e.g. ../shared/data)")
    if os.environ.get("BYZSGD_REQUIRE_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _materialise_cifar(src, dst):
    """Decompress ``*.bin.xz`` once into the cache; link everything else."""
    for f in sorted(src.rglob("*")):
        if f.is_dir():
            continue
        rel = f.relative_to(src)
        if f.suffix == ".xz":
            out = dst / rel.with_suffix("")
            if out.exists() and out.stat().st_size > 0:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".part")
            with lzma.open(f) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            tmp.replace(out)
        else:
            out = dst / rel
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                out.symlink_to(f)


@pytest.fixture(scope="session")
def data_root():
    """A BYZSGD_DATA-style folder with MNIST, Fashion-MNIST and CIFAR-10
    ready to read (CIFAR-10 decompressed into a cache outside the repo)."""
    src = _source_root()
    dst = CACHE / "data"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("mnist", "fashion-mnist"):
        link = dst / name
        if not link.exists() and (src / name).is_dir():
            link.symlink_to(src / name)
    if (src / "cifar10").is_dir():
        _materialise_cifar(src / "cifar10", dst / "cifar10")
    return dst


def pytest_configure(config):
    # mxnet 1.9 and matplotlib 3.9 call APIs their own dependencies deprecated
    # (distutils, np.bool, scipy.sparse.csr, pyparsing camelCase); not ours to fix.
    for module in ("mxnet", "matplotlib", "gluoncv"):
        config.addinivalue_line("filterwarnings", rf"ignore::DeprecationWarning:{module}(\..*)?")
