"""Name → plugin registries shared by aggregation rules and attacks.

A plugin is a plain function whose leading positional arguments are the data
(``grads`` for a rule; ``grads, rng`` for an attack) and whose remaining
arguments are its keyword parameters. ``Registry.get(name, **params)`` checks
the parameter names against the signature and returns a :class:`Bound`
callable. A plugin may return either its result or ``(result, info)`` where
``info`` is a dict of diagnostics; :class:`Bound` returns the result and keeps
the last ``info`` (the function itself stays pure).
"""
import inspect
import sys
from collections.abc import Mapping

import numpy as np

__all__ = ["Registry", "Bound", "call", "checked", "probe"]


class Bound:
    """A registered function with its parameters fixed; callable on the data."""

    def __init__(self, name, fn, params):
        self.name = name
        self.fn = fn
        self.params = dict(params)
        self.info = {}

    def __call__(self, *data):
        out = self.fn(*data, **self.params)
        if isinstance(out, tuple):
            out, self.info = out
        else:
            self.info = {}
        return out

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


def call(what, fn, shape, *data):
    """``fn(*data)`` with the arrays of ``data`` passed as read-only views,
    its result checked by :func:`checked` against ``shape``; numpy's error
    for a write to a read-only array ("assignment destination is read-only",
    ...) becomes one naming the plugin, ``what`` being "aggregator" or
    "attack"."""
    data = [_readonly(a) if isinstance(a, np.ndarray) else a for a in data]
    try:
        return checked(fn(*data), shape, what, fn)
    except ValueError as err:
        if "read-only" not in str(err):
            raise
        raise ValueError(f"{what} {fn!r} wrote to a read-only array ({err}): if that is its "
                         "input, the gradient matrix, it must work on a copy (grads.copy())"
                         ) from err


def checked(out, shape, what, fn):
    """``out`` as a numpy array, refused (naming the plugin) unless it is a
    float array of ``shape``: an integer result would silently truncate
    the gradients."""
    out = np.asarray(out)
    if out.shape != shape:
        raise ValueError(f"{what} {fn!r} returned shape {out.shape}, expected {shape}")
    if out.dtype.kind != "f":
        raise ValueError(f"{what} {fn!r} returned dtype {out.dtype}, expected a float array")
    return out


def probe(what, fn, shape, out_shape, *rest):
    """:func:`call` on float32 zeros of ``shape`` (and ``rest``, e.g. an
    attack's rng): catches, before training, a plugin that writes to its
    input or returns the wrong shape or dtype. Returns the result."""
    return call(what, fn, out_shape, np.zeros(shape, np.float32), *rest)


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


class Registry:
    """A named collection of plugin functions of one kind.

    Parameters
    ----------
    kind : str
        What the plugins are ("aggregation rule", "attack"), used in errors.
    data_args : int
        How many leading positional arguments are data rather than parameters.
    """

    def __init__(self, kind, data_args):
        self.kind = kind
        self.data_args = data_args
        self._fns = {}
        self._modules = {}
        self._a = "an" if kind[0] in "aeiou" else "a"  # the article, for messages

    def register(self, name=None, *, override=False, _module=None):
        """Decorator registering ``fn`` under ``name`` (default: its __name__);
        ``@register`` without parentheses registers under the __name__ too.
        The calling module is kept (:meth:`module`): importing it registers
        the plugin again, e.g. in a worker process."""
        module = _module or sys._getframe(1).f_globals.get("__name__")
        if callable(name):   # bare @register: the function itself came as name
            fn, name = name, None
            return self.register(override=override, _module=module)(fn)
        if name is not None and not (isinstance(name, str) and name):
            raise TypeError(f"{self.kind} names are non-empty strings, got {name!r}")

        def deco(fn):
            key = name or getattr(fn, "__name__", None)
            if not key:
                raise TypeError(f"{fn!r} has no __name__ (a functools.partial or a callable "
                                f"object): register it with a name, register(\"...\")")
            if key in self._fns and not override:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered; "
                    f"pass override=True to replace it")
            self._param_names(fn)  # refuse malformed plugins at registration
            self._fns[key] = fn
            self._modules[key] = module
            return fn

        return deco

    def unregister(self, name):
        """Remove ``name`` (e.g. a plugin registered for one experiment)."""
        self.function(name)  # the usual error for an unknown name
        del self._fns[name]
        del self._modules[name]

    def module(self, name):
        """The name of the module that registered ``name`` (not necessarily the
        one defining the function: a partial's is functools)."""
        self.function(name)
        return self._modules[name]

    def names(self):
        """Sorted list of registered names."""
        return sorted(self._fns)

    def __contains__(self, name):
        return name in self._fns

    def function(self, name):
        """The raw registered function for ``name``."""
        try:
            return self._fns[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid names: "
                f"{', '.join(self.names())}") from None

    def defaults(self, name):
        """Default keyword parameters of ``name`` as a dict."""
        sig = inspect.signature(self.function(name))
        return {p.name: p.default for p in list(sig.parameters.values())[self.data_args:]
                if p.default is not inspect.Parameter.empty}

    def get(self, name, **params):
        """Return ``name`` bound to ``params`` (defaults filled in)."""
        fn = self.function(name)
        valid = self._param_names(fn)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise TypeError(
                f"{self.kind} {name!r} got unknown parameter(s) "
                f"{', '.join(unknown)}; valid parameters: "
                f"{', '.join(valid) or '(none)'}")
        sig = inspect.signature(fn)
        missing = [p for p in valid if p not in params
                   and sig.parameters[p].default is inspect.Parameter.empty]
        if missing:
            raise TypeError(
                f"{self.kind} {name!r} needs parameter(s) {', '.join(missing)}")
        resolved = self.defaults(name)
        resolved.update(params)
        return Bound(name, fn, resolved)

    def resolve(self, spec):
        """Accept a name, a ``(name, params)`` pair, a Bound or any callable."""
        if spec is None or isinstance(spec, Bound):
            return spec
        if isinstance(spec, str):
            return self.get(spec)
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
            if spec[1] is not None and not isinstance(spec[1], Mapping):
                raise TypeError(f"{self.kind} {spec[0]!r}: parameters must be a dict, as in "
                                f"({spec[0]!r}, {{...}}), got {spec[1]!r}")
            return self.get(spec[0], **dict(spec[1] or {}))
        if callable(spec):
            name = getattr(spec, "__name__", type(spec).__name__)
            return Bound(name, spec, {})
        raise TypeError(
            f"cannot interpret {spec!r} as {self._a} {self.kind}: give a name "
            f"({', '.join(self.names())}), a (name, params) pair or a callable")

    def _param_names(self, fn):
        params = list(inspect.signature(fn).parameters.values())
        if len(params) < self.data_args or any(
                p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in params[:self.data_args]):
            raise TypeError(
                f"{self._a} {self.kind} must take {self.data_args} positional data "
                f"argument(s) first; {getattr(fn, '__name__', fn)!r} has "
                f"{[p.name for p in params]}")
        return [p.name for p in params[self.data_args:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
