"""The paper's networks as Gluon HybridBlocks, and a name → model lookup.

``mlp`` is Table 2 of the paper's appendix 8.5 (784-128-128-10 on MNIST,
d = 118,282 parameters) and ``cnn`` is Table 3 (two conv blocks with 'same'
padding, dropout 0.2, two dense layers of 512; d = 2,431,018 on 32×32×3
CIFAR-10 input). The paper's final ``SoftmaxOutput`` is not part of the
blocks: they return logits, to be used with ``SoftmaxCrossEntropyLoss``.

``get_model(name, **kw)`` builds one of ours by name, or any gluoncv model-zoo
name (e.g. ``cifar_resnet20_v1``) with ``pretrained=False``: byzsgd never
downloads weights.
"""
from mxnet.gluon import HybridBlock, nn

from .registry import Registry

__all__ = ["MLP", "CNN", "mlp", "cnn", "register_model", "names", "get_model",
           "REGISTRY"]

REGISTRY = Registry("model", data_args=0)
register_model = REGISTRY.register


class MLP(HybridBlock):
    """Multi-layer perceptron of Table 2: flatten, two ReLU layers, logits.

    Parameters
    ----------
    classes : int
        Number of outputs (10 for MNIST).
    hidden : int
        Width of both hidden layers (128 in the paper).
    """

    def __init__(self, classes=10, hidden=128, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.flatten = nn.Flatten()
            self.fc1 = nn.Dense(hidden, activation="relu")
            self.fc2 = nn.Dense(hidden, activation="relu")
            self.fc3 = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.fc3(self.fc2(self.fc1(self.flatten(x))))


class CNN(HybridBlock):
    """Convolutional network of Table 3 (3×3 convolutions, padding 1).

    conv32-conv32-pool-dropout, conv64-conv64-pool-dropout, flatten,
    dense512-dropout, dense512-dropout, dense(classes). Table 3 has these
    4 + 3 layers (the text says five convolutional and two dense: we follow
    the table) and names no activation or pooling type: ReLU and max pooling
    (MXNet's default pooling) are our choice.

    Parameters
    ----------
    classes : int
        Number of outputs (10 for CIFAR-10).
    dropout : float
        Dropout probability after each pooling and hidden dense layer
        (0.2 in the paper).
    """

    def __init__(self, classes=10, dropout=0.2, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            for channels in (32, 64):
                self.features.add(
                    nn.Conv2D(channels, 3, padding=1, activation="relu"),
                    nn.Conv2D(channels, 3, padding=1, activation="relu"),
                    nn.MaxPool2D(2),
                    nn.Dropout(dropout))
            self.features.add(nn.Flatten())
            self.output = nn.HybridSequential(prefix="")
            self.output.add(nn.Dense(512, activation="relu"), nn.Dropout(dropout),
                            nn.Dense(512, activation="relu"), nn.Dropout(dropout),
                            nn.Dense(classes))

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


@register_model()
def mlp(classes=10, hidden=128):
    """The MLP of Table 2 (d = 118,282 on 28×28 input with 10 classes)."""
    return MLP(classes=classes, hidden=hidden)


@register_model()
def cnn(classes=10, dropout=0.2):
    """The CNN of Table 3 (d = 2,431,018 on 32×32×3 input with 10 classes)."""
    return CNN(classes=classes, dropout=dropout)


def names():
    """byzsgd's own model names; gluoncv model-zoo names also work in get_model."""
    return REGISTRY.names()


def _gluoncv_names():
    from gluoncv import model_zoo  # imported only when a zoo name is asked for
    return set(model_zoo.get_model_list())


def get_model(name, **kw):
    """Build model ``name`` (a byzsgd name or a gluoncv model-zoo name).

    Parameters
    ----------
    name : str
        One of :func:`names` (``mlp``, ``cnn``) or a gluoncv model-zoo name such
        as ``cifar_resnet20_v1`` (built with ``pretrained=False``).
    **kw
        Constructor parameters (e.g. ``classes=10``).

    Returns
    -------
    mxnet.gluon.HybridBlock
        Uninitialised; call ``.initialize()`` before use.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {name!r}")
    if name in REGISTRY:
        return REGISTRY.get(name, **kw)()
    if kw.get("pretrained"):
        raise ValueError(
            f"model {name!r}: pretrained=True would download weights; byzsgd "
            "only builds randomly initialised models (pretrained=False)")
    if name.lower() in _gluoncv_names():
        from gluoncv import model_zoo
        kw["pretrained"] = False
        return model_zoo.get_model(name, **kw)
    raise ValueError(
        f"unknown model {name!r}; byzsgd models: {', '.join(names())}; any "
        "gluoncv model-zoo name (e.g. cifar_resnet20_v1, see "
        "gluoncv.model_zoo.get_model_list()) also works")
