"""Real datasets as numpy arrays, the workers' share of them, and top-k accuracy.

Datasets: ``mnist``, ``fashion-mnist``, ``cifar10``, read straight from their
official distribution files with gzip and numpy (fast, and it lets us accept
the current Fashion-MNIST release, which gluon's ``FashionMNIST`` rejects).

Where the files are: ``root`` argument (``--data-dir``) > ``$BYZSGD_DATA`` >
``$MXNET_HOME/datasets`` (``~/.mxnet/datasets``), always a folder holding
``mnist/``, ``fashion-mnist/``, ``cifar10/``. Missing files are downloaded into
that folder when online; when that fails, :class:`DataError` says which folder,
which files and the ways out. Every file is checked against its SHA-1 (MXNet's
pins for MNIST and CIFAR-10; the current official release for Fashion-MNIST).
CIFAR-10 is read from ``data_batch_1..5.bin`` and ``test_batch.bin`` in
``cifar10/`` or ``cifar10/cifar-10-batches-bin/``, or from the official
``cifar10/cifar-10-binary.tar.gz``. A file kept xz-compressed (``NAME.xz``)
is decompressed once into ``$BYZSGD_CACHE`` (``~/.cache/byzsgd``).

Normalisation (:func:`normalise`): MNIST and Fashion-MNIST pixels / 255, in
[0, 1]; CIFAR-10 pixels / 255, then per channel (x - mean) / std with the
training-set statistics below. Images are NCHW float32, labels int32.

Workers (:class:`WorkerSampler`): ``partition="shard"`` splits the training set
at random into n equal disjoint shards (the paper partitions the data;
``N mod n`` examples are left out); ``"iid"`` gives every worker the whole set.
Each worker draws its mini-batches from its own index set in shuffled epochs:
a fresh permutation per (seed, worker, epoch), consecutive slices of
``batch_size``, the last incomplete slice of an epoch dropped.
"""
import gzip
import os
from pathlib import Path

import numpy as np

from .datafiles import DataError, _Dataset, _File, read_verified

__all__ = ["DataError", "names", "resolve_root", "dataset_dir", "load", "load_raw",
           "normalise", "partition", "WorkerSampler", "topk_correct",
           "topk_accuracy", "evaluate"]


def _decode_idx(blobs, files):
    """(images, labels) from gzipped idx files: files = (images, labels)."""
    images = np.frombuffer(gzip.decompress(blobs[files[0].name]), np.uint8)
    labels = np.frombuffer(gzip.decompress(blobs[files[1].name]), np.uint8)
    magic_i, count_i, rows, cols = (int(v) for v in images[:16].view(">u4"))
    magic_l, count_l = (int(v) for v in labels[:8].view(">u4"))
    if (magic_i, magic_l) != (2051, 2049) or count_i != count_l:
        raise DataError(f"{files[0].name}/{files[1].name}: not a pair of idx files "
                        f"(magic {magic_i}/{magic_l}, counts {count_i}/{count_l})")
    x = images[16:].reshape(count_i, 1, rows, cols)
    return x, labels[8:].astype(np.int32)


def _decode_cifar(blobs, files):
    """(images, labels) from CIFAR-10 binary batches: 1 label byte + 3x32x32 bytes each."""
    recs = np.concatenate([np.frombuffer(blobs[f.name], np.uint8).reshape(-1, 3073)
                           for f in files])
    return recs[:, 1:].reshape(-1, 3, 32, 32), recs[:, 0].astype(np.int32)


def _idx_files(namespace, mirror, sha1s):
    """(train, test) file pairs of an idx dataset: MXNet's repository first
    (when it hosts the dataset), then ``mirror``."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    files = [_File(n, s, (f"mxnet:gluon/dataset/{namespace}/{n}",) * bool(namespace)
                   + (mirror + n,))
             for n, s in zip(names, sha1s)]
    return tuple(files[:2]), tuple(files[2:])


_MNIST = _idx_files("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", (
    "6c95f4b05d2bf285e1bfb0e7960c31bd3b3f8a7d", "2a80914081dc54586dbdf242f9805a6b8d2a15fc",
    "c3a25af1f52dad7f726cce8cacb138654b760d48", "763e7fa3757d93b0cdec073cef058b2004252c17"))
# Current official release (2017-08-31, duplicates removed); MXNet pins an older one.
_FASHION = _idx_files("", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (
    "95978b76b6897f6ca69a25145d01716efb615989", "09814cfef5a041118ceace42f8dae995319d331a",
    "5edda96c6d8c36ff915115a0e8136d370a021576", "9caad14e1aff9adac77d3744963212d36af15bee"))
_CIFAR_TRAIN = tuple(_File(f"data_batch_{i}.bin", s) for i, s in enumerate((
    "aadd24acce27caa71bf4b10992e9e7b2d74c2540", "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795",
    "1dd00a74ab1d17a6e7d73e185b69dbf31242f295", "aab85764eb3584312d3c7f65fd2fd016e36a258e",
    "26e2849e66a845b7f1e4614ae70f4889ae604628"), start=1))
_CIFAR_TEST = (_File("test_batch.bin", "67eb016db431130d61cd03c7ad570b013799c88c"),)

DATASETS = {
    "mnist": _Dataset("MNIST", "mnist", *_MNIST, _decode_idx, (0.0,), (1.0,),
                      home="http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": _Dataset("Fashion-MNIST", "fashion-mnist", *_FASHION, _decode_idx,
                              (0.0,), (1.0,),
                              home="https://github.com/zalandoresearch/fashion-mnist"),
    # mean/std of pixel/255 over the 50k training images, per channel (R, G, B)
    "cifar10": _Dataset("CIFAR-10", "cifar10", _CIFAR_TRAIN, _CIFAR_TEST, _decode_cifar,
                        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                        subdirs=("", "cifar-10-batches-bin"),
                        # integrity is checked on the members, so no archive SHA-1
                        archive=_File("cifar-10-binary.tar.gz", "", (
                            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)),
                        home="https://www.cs.toronto.edu/~kriz/cifar.html"),
}

_RAW = {}      # (name, folder, train) -> (uint8 images, int32 labels), per process
_FLOAT = {}    # same key -> (float32 images, int32 labels)


def names():
    """Names of the available datasets."""
    return sorted(DATASETS)


def _info(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: "
                         f"{', '.join(names())}") from None


def resolve_root(root=None):
    """The data folder: ``root`` > ``$BYZSGD_DATA`` > ``$MXNET_HOME/datasets``."""
    if root:
        return Path(root).expanduser().resolve()
    if os.environ.get("BYZSGD_DATA"):
        return Path(os.environ["BYZSGD_DATA"]).expanduser().resolve()
    mxnet_home = os.environ.get("MXNET_HOME", Path.home() / ".mxnet")
    return (Path(mxnet_home) / "datasets").expanduser().resolve()


def dataset_dir(name, root=None):
    """Folder of dataset ``name`` under the data folder (e.g. ``<root>/mnist``)."""
    return resolve_root(root) / _info(name).folder


def load_raw(name, root=None, train=True, download=True):
    """Undecoded pixels: (uint8 images NCHW, int32 labels), cached per process.

    The arrays are read-only views shared by every caller.
    """
    info = _info(name)
    folder = dataset_dir(name, root)
    key = (name, str(folder), bool(train))
    if key not in _RAW:
        files = info.train if train else info.test
        x, y = info.decode(read_verified(info, folder, files, download), files)
        x.flags.writeable = False
        y.flags.writeable = False
        _RAW[key] = (x, y)
    return _RAW[key]


def normalise(name, images):
    """float32 images from uint8 ones: pixel / 255, then (x - mean) / std per channel."""
    info = _info(name)
    x = images.astype(np.float32)
    x /= 255.0
    if any(info.mean) or any(s != 1 for s in info.std):
        x -= np.asarray(info.mean, np.float32).reshape(1, -1, 1, 1)
        x /= np.asarray(info.std, np.float32).reshape(1, -1, 1, 1)
    return x


def load(name, root=None, train=True, download=True):
    """(float32 images NCHW normalised as in :func:`normalise`, int32 labels).

    Cached per process; the arrays are read-only.
    """
    x_raw, y = load_raw(name, root, train, download)
    key = (name, str(dataset_dir(name, root)), bool(train))
    if key not in _FLOAT:
        x = normalise(name, x_raw)
        x.flags.writeable = False
        _FLOAT[key] = (x, y)
    return _FLOAT[key]


# Seed-sequence tags keep the partition and the batch order independent streams.
_PARTITION_TAG, _EPOCH_TAG = 0x9A47, 0xE90C


def _shards(num_examples, n, rng):
    per = num_examples // n
    return np.split(rng.permutation(num_examples)[:per * n], n)


def _whole(num_examples, n, rng):
    return [np.arange(num_examples)] * n


PARTITIONS = {"shard": _shards, "iid": _whole}


def partition(num_examples, n, seed, mode="shard"):
    """The n workers' index sets into a training set of ``num_examples``.

    ``"shard"``: n equal disjoint random shards of ``num_examples // n``
    (the remainder is unused); ``"iid"``: every worker gets the whole set.
    Deterministic in ``seed``.
    """
    if mode not in PARTITIONS:
        raise ValueError(f"unknown partition {mode!r}; valid names: "
                         f"{', '.join(sorted(PARTITIONS))}")
    if not 1 <= n <= num_examples:
        raise ValueError(f"cannot split {num_examples} examples among n={n} workers")
    rng = np.random.default_rng([int(seed), _PARTITION_TAG])
    return PARTITIONS[mode](num_examples, n, rng)


class WorkerSampler:
    """Mini-batch indices for n workers, each in shuffled epochs over its index set.

    Worker w's epoch e is the permutation drawn from (seed, w, e) of its index
    set, consumed in consecutive slices of ``batch_size``; an incomplete last
    slice is dropped. The state is two small integer lists, see :meth:`state`.
    """

    def __init__(self, num_examples, n, batch_size, seed, mode="shard"):
        self.indices = partition(num_examples, n, seed, mode)
        smallest = min(len(ix) for ix in self.indices)
        if not 1 <= batch_size <= smallest:
            raise ValueError(f"batch_size={batch_size} must be between 1 and the "
                             f"{smallest} examples of a worker (n={n}, partition={mode!r})")
        self.n, self.batch_size, self.seed = n, batch_size, int(seed)
        self.epoch = [0] * n
        self.pos = [0] * n
        self._perm = [None] * n

    def _order(self, w):
        if self._perm[w] is None:
            rng = np.random.default_rng([self.seed, w, self.epoch[w], _EPOCH_TAG])
            self._perm[w] = self.indices[w][rng.permutation(len(self.indices[w]))]
        return self._perm[w]

    def next(self, w):
        """Indices of worker ``w``'s next mini-batch."""
        if self.pos[w] + self.batch_size > len(self.indices[w]):
            self.epoch[w] += 1
            self.pos[w] = 0
            self._perm[w] = None
        start = self.pos[w]
        self.pos[w] += self.batch_size
        return self._order(w)[start:start + self.batch_size]

    def next_round(self):
        """(n, batch_size) indices: one mini-batch per worker."""
        return np.stack([self.next(w) for w in range(self.n)])

    def state(self):
        """JSON-serialisable position of every worker."""
        return {"epoch": list(self.epoch), "pos": list(self.pos)}

    def set_state(self, state):
        """Continue from a :meth:`state` of a sampler built with the same arguments."""
        if len(state["epoch"]) != self.n or len(state["pos"]) != self.n:
            raise ValueError(f"sampler state is for {len(state['epoch'])} workers, not n={self.n}")
        self.epoch = [int(e) for e in state["epoch"]]
        self.pos = [int(p) for p in state["pos"]]
        self._perm = [None] * self.n


def topk_correct(scores, labels, k=1):
    """Whether each label is among the k highest scores of its row.

    Ties are broken like ``argmax``/a stable sort, by class index: the label's
    rank is the number of classes scoring higher, plus those scoring equal
    with a smaller index. A row holding NaN counts as wrong.

    Parameters
    ----------
    scores : (m, c) array; labels : (m,) ints; k : int >= 1
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64)
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} do not match")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    own = scores[np.arange(len(labels)), labels][:, None]
    before = np.arange(scores.shape[1])[None, :] < labels[:, None]
    rank = np.sum((scores > own) | ((scores == own) & before), axis=1)
    return (rank < k) & ~np.isnan(scores).any(axis=1)


def topk_accuracy(scores, labels, k=1):
    """Fraction of rows whose label is among the k highest scores (see :func:`topk_correct`)."""
    return float(np.mean(topk_correct(scores, labels, k))) if len(labels) else float("nan")


def evaluate(net, images, labels, ks=(1,), batch_size=1000, transform=None, ctx=None):
    """Top-k accuracies {k: fraction} of ``net`` on the whole set, in batches.

    ``images`` is a numpy array or an NDArray (already the network's input,
    e.g. a test set normalised once for many evaluations); ``transform`` maps
    a numpy batch of ``images`` to the network's input (e.g.
    ``functools.partial(normalise, "mnist")`` for uint8 images).
    """
    import mxnet as mx  # the rest of this module does not need mxnet

    ctx = ctx or mx.cpu()
    hits = {k: 0 for k in ks}
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size]
        x = transform(x) if transform else x
        x = x.as_in_context(ctx) if isinstance(x, mx.nd.NDArray) else mx.nd.array(x, ctx=ctx)
        scores = net(x).asnumpy()
        y = labels[start:start + batch_size]
        for k in ks:
            hits[k] += int(np.sum(topk_correct(scores, y, k)))
    return {k: hits[k] / len(labels) for k in ks}
