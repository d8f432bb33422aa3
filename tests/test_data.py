"""byzsgd.data on the real files: loading, checksums, offline errors,
worker partitioning and top-k accuracy."""
import gzip
import lzma
import socket
import tarfile

import numpy as np
import pytest

from byzsgd import data

SHAPES = {"mnist": ((60000, 1, 28, 28), (10000, 1, 28, 28)),
          "fashion-mnist": ((60000, 1, 28, 28), (10000, 1, 28, 28)),
          "cifar10": ((50000, 3, 32, 32), (10000, 3, 32, 32))}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_load_shapes_dtypes_labels(data_root, name):
    for train, shape in zip((True, False), SHAPES[name]):
        x, y = data.load(name, root=data_root, train=train)
        assert x.shape == shape and x.dtype == np.float32
        assert y.shape == shape[:1] and y.dtype == np.int32
        assert y.min() == 0 and y.max() == 9
        # every class is present in roughly equal numbers in these datasets
        assert np.bincount(y, minlength=10).min() > len(y) // 20
        assert not x.flags.writeable and np.isfinite(x).all()


def test_mnist_scaled_to_unit_interval(data_root):
    x, _ = data.load("mnist", root=data_root, train=False)
    raw, _ = data.load_raw("mnist", root=data_root, train=False)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x, raw / 255.0, rtol=1e-6)


def test_cifar_standardised_per_channel(data_root):
    x, _ = data.load("cifar10", root=data_root, train=True)
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, 0.0, atol=2e-3)
    np.testing.assert_allclose(std, 1.0, atol=2e-3)


def test_cached_per_process(data_root):
    first = data.load("mnist", root=data_root)
    assert data.load("mnist", root=data_root)[0] is first[0]


def test_root_from_environment(data_root, monkeypatch):
    monkeypatch.setenv("BYZSGD_DATA", str(data_root))
    assert data.dataset_dir("mnist") == data_root.resolve() / "mnist"
    x, _ = data.load_raw("mnist", train=False)
    assert x.shape == (10000, 1, 28, 28)


def test_root_defaults_to_mxnet_home(monkeypatch, tmp_path):
    monkeypatch.delenv("BYZSGD_DATA", raising=False)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    assert data.dataset_dir("cifar10") == tmp_path.resolve() / "datasets" / "cifar10"
    assert data.dataset_dir("mnist", root=tmp_path / "x") == tmp_path.resolve() / "x" / "mnist"


def _copy_mnist(data_root, dst):
    (dst / "mnist").mkdir(parents=True)
    for f in (data_root / "mnist").iterdir():
        (dst / "mnist" / f.name).write_bytes(f.read_bytes())
    return dst / "mnist"


def test_bad_checksum_is_a_clear_error(data_root, tmp_path):
    folder = _copy_mnist(data_root, tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10          # still a valid idx file, one label changed
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.DataError) as err:
        data.load("mnist", root=tmp_path, train=False)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(folder) in msg
    assert "763e7fa3757d93b0cdec073cef058b2004252c17" in msg      # the expected SHA-1
    # the training files are intact and still load
    assert data.load_raw("mnist", root=tmp_path, train=True)[0].shape[0] == 60000


@pytest.fixture
def offline(monkeypatch):
    """Make every network connection fail, as on a machine without network."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_offline_missing_files_error(tmp_path, offline, name):
    with pytest.raises(data.DataError) as err:
        data.load(name, root=tmp_path)
    msg = str(err.value)
    folder = tmp_path.resolve() / data.DATASETS[name].folder
    assert str(folder) in msg
    assert data.DATASETS[name].train[0].name in msg           # the expected file names
    assert "BYZSGD_DATA" in msg and "--data-dir" in msg       # the ways out
    assert "network disabled by the test" in msg               # why the download failed
    assert not any(folder.glob("*")) if folder.exists() else True  # no partial files


def test_corrupt_xz_copy_is_a_clear_error(tmp_path, offline):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "test_batch.bin.xz").write_bytes(b"not xz at all")
    with pytest.raises(data.DataError, match="cannot decompress .*test_batch.bin.xz"):
        data.load_raw("cifar10", root=tmp_path, train=False)


def test_xz_copies_are_read_through_a_cache(data_root, tmp_path, monkeypatch, offline):
    """A read-only folder of NAME.bin.xz files (like ../shared/data) works as
    given: decompressed once into BYZSGD_CACHE, checked by SHA-1, then reused."""
    source = data_root / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin"
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    with lzma.open(folder / "test_batch.bin.xz", "wb", preset=0) as f:
        f.write(source.read_bytes())
    monkeypatch.setenv("BYZSGD_CACHE", str(tmp_path / "cache"))
    x, y = data.load_raw("cifar10", root=tmp_path / "data", train=False)
    assert x.shape == (10000, 3, 32, 32) and y.max() == 9
    cached = list((tmp_path / "cache").rglob("test_batch.bin"))
    assert len(cached) == 1 and cached[0].stat().st_size == source.stat().st_size
    cached[0].write_bytes(b"stale")           # a damaged cache is decompressed again
    data._RAW.clear()
    x2, _ = data.load_raw("cifar10", root=tmp_path / "data", train=False)
    assert np.array_equal(x, x2) and cached[0].stat().st_size == source.stat().st_size


def test_cifar_from_official_archive(data_root, tmp_path):
    """The official tarball (members under cifar-10-batches-bin/) is read in place."""
    bins = data_root / "cifar10" / "cifar-10-batches-bin"
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", "w:gz",
                      compresslevel=1) as tar:
        tar.add(bins / "test_batch.bin", arcname="cifar-10-batches-bin/test_batch.bin")
    x, y = data.load_raw("cifar10", root=tmp_path, train=False)
    ref_x, ref_y = data.load_raw("cifar10", root=data_root, train=False)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="cifar10, fashion-mnist, mnist"):
        data.load("svhn")


def test_shards_disjoint_equal_deterministic():
    shards = data.partition(60000, 20, seed=3)
    assert len(shards) == 20 and all(len(s) == 3000 for s in shards)
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == 60000
    again = data.partition(60000, 20, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))
    other = data.partition(60000, 20, seed=4)
    assert not np.array_equal(shards[0], other[0])


def test_shards_drop_the_remainder():
    shards = data.partition(103, 10, seed=0)
    assert [len(s) for s in shards] == [10] * 10
    assert len(np.unique(np.concatenate(shards))) == 100


def test_iid_partition_gives_everyone_everything():
    sets = data.partition(50, 4, seed=0, mode="iid")
    assert all(np.array_equal(s, np.arange(50)) for s in sets)


def test_partition_errors_name_values():
    with pytest.raises(ValueError, match="iid, shard"):
        data.partition(10, 2, seed=0, mode="dirichlet")
    with pytest.raises(ValueError, match="n=11"):
        data.partition(10, 11, seed=0)
    with pytest.raises(ValueError, match="batch_size=6"):
        data.WorkerSampler(10, 2, batch_size=6, seed=0)


def test_sampler_epochs_stay_in_shard():
    s = data.WorkerSampler(100, 4, batch_size=8, seed=1)
    seen = [s.next(1) for _ in range(3)]          # 25 examples per shard: 3 batches/epoch
    epoch = np.concatenate(seen)
    assert set(epoch) <= set(s.indices[1]) and len(np.unique(epoch)) == 24
    fourth = s.next(1)                            # new epoch, new order
    assert s.epoch[1] == 1 and set(fourth) <= set(s.indices[1])
    assert s.epoch[0] == 0 and s.pos[0] == 0      # other workers untouched


def test_sampler_same_seed_same_batches_and_resumable_state():
    a = data.WorkerSampler(1000, 5, batch_size=16, seed=7)
    b = data.WorkerSampler(1000, 5, batch_size=16, seed=7)
    for _ in range(30):
        np.testing.assert_array_equal(a.next_round(), b.next_round())
    state = a.state()
    expected = [a.next_round() for _ in range(20)]
    c = data.WorkerSampler(1000, 5, batch_size=16, seed=7)
    c.set_state(state)
    for e in expected:
        np.testing.assert_array_equal(c.next_round(), e)
    assert a.next_round().shape == (5, 16)


def test_topk_by_hand():
    scores = np.array([[0.1, 0.5, 0.4],     # label 2: second best
                       [0.7, 0.2, 0.1],     # label 0: best
                       [0.3, 0.3, 0.4],     # label 1: tied with 0, lower index wins
                       [np.nan, 1.0, 0.0]])  # non-finite: wrong whatever k
    labels = np.array([2, 0, 1, 1])
    assert data.topk_correct(scores, labels, 1).tolist() == [False, True, False, False]
    assert data.topk_correct(scores, labels, 2).tolist() == [True, True, False, False]
    assert data.topk_correct(scores, labels, 3).tolist() == [True, True, True, False]
    assert data.topk_accuracy(scores, labels, 2) == 0.5


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """A local HTTP server standing in for MXNet's dataset repository
    (MXNET_GLUON_REPO points to it); its mnist/ folder is returned."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    folder = served / "gluon" / "dataset" / "mnist"
    folder.mkdir(parents=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MXNET_GLUON_REPO", f"http://127.0.0.1:{server.server_port}/")
    yield folder
    server.shutdown()
    server.server_close()


def test_missing_files_are_downloaded_and_verified(data_root, tmp_path, local_mirror):
    for f in data.DATASETS["mnist"].test:
        (local_mirror / f.name).write_bytes((data_root / "mnist" / f.name).read_bytes())
    x, y = data.load_raw("mnist", root=tmp_path / "home", train=False)
    ref_x, ref_y = data.load_raw("mnist", root=data_root, train=False)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)
    got = sorted(p.name for p in (tmp_path / "home" / "mnist").iterdir())
    assert got == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_a_download_with_the_wrong_checksum_is_refused(data_root, tmp_path, local_mirror,
                                                       monkeypatch):
    for f in data.DATASETS["mnist"].test:
        (local_mirror / f.name).write_bytes((data_root / "mnist" / f.name).read_bytes())
    (local_mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    # keep the second mirror of the list from being tried over the network
    monkeypatch.setattr(socket, "getaddrinfo", _local_only(socket.getaddrinfo))
    with pytest.raises(data.DataError) as err:
        data.load_raw("mnist", root=tmp_path / "home", train=False)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "expected 763e7fa3" in msg
    assert sorted(p.name for p in (tmp_path / "home" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz"]                  # no partial or wrong file kept


def _local_only(getaddrinfo):
    def lookup(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise OSError("network disabled by the test")
        return getaddrinfo(host, *args, **kwargs)
    return lookup


def test_a_failed_download_leaves_no_folders_behind(tmp_path, local_mirror, monkeypatch):
    """A mistyped --data-dir: the error, and no empty <typo>/mnist/ created."""
    monkeypatch.setattr(socket, "getaddrinfo", _local_only(socket.getaddrinfo))
    typo = tmp_path / "typo" / "data"
    with pytest.raises(data.DataError, match="MNIST files missing"):
        data.load_raw("mnist", root=typo, train=False)      # the mirror holds nothing
    assert not (tmp_path / "typo").exists()
