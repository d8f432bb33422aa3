"""Where a run ran: library versions and the CPU, for the config line of a log.

The CPU matters for the CNN: MXNet's oneDNN picks its kernels by the widest
instruction set the CPU has, and AVX-512 and AVX2 kernels round differently,
so the same CIFAR-10 run gives logs that differ from the first evaluation
on (top-3 in the third or fourth digit at round 10). ``DNNL_MAX_CPU_ISA=AVX2``
(the name MXNet 1.9.1's oneDNN reads; ``ONEDNN_MAX_CPU_ISA`` has no effect on
it) makes an AVX-512 machine compute what an AVX2 machine computes for the
CNN. MLP runs differ less (at most 0.0004 in top-1 over 500 rounds in our
reruns of Figs. 3 and 5) and the cap does not remove that: some other
kernel depends on the CPU too.
"""
import functools
import os
import platform

import numpy as np

from . import __version__

__all__ = ["versions", "cpu_model", "cpu_isa", "machine", "ISA_VAR"]

ISA_VAR = "DNNL_MAX_CPU_ISA"

# oneDNN's names, widest first, with the /proc/cpuinfo flags each needs
_ISAS = (("avx512_core", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
         ("avx512_common", {"avx512f"}),
         ("avx2", {"avx2", "fma"}),
         ("avx", {"avx"}),
         ("sse41", {"sse4_1"}))


def versions():
    """Versions of byzsgd, mxnet, numpy and Python."""
    import mxnet as mx
    return {"byzsgd": __version__, "mxnet": mx.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


@functools.lru_cache(maxsize=None)
def _cpuinfo():
    """"model name" and "flags" of the first CPU in /proc/cpuinfo, read once
    ({} where the file is missing)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if "model name" in fields and "flags" in fields:
                    break
    except OSError:
        pass
    return fields


def cpu_model():
    """The CPU's model name ("AMD EPYC", ...), or "?" if the system does not say."""
    return _cpuinfo().get("model name") or platform.processor() or "?"


def cpu_isa(flags=None):
    """The widest x86 instruction set of the CPU in oneDNN's naming
    ("avx512_core", "avx2", ...), from ``flags`` (/proc/cpuinfo flags; the
    system's if None); None if unknown (not Linux, not x86)."""
    if flags is None:
        flags = _cpuinfo().get("flags", "").split()
    flags = set(flags)
    return next((name for name, need in _ISAS if need <= flags), None)


def machine():
    """The config line's ``machine``: CPU model, its widest instruction set,
    and the cap on oneDNN's (the DNNL_MAX_CPU_ISA variable, None if unset)."""
    return {"cpu": cpu_model(), "isa": cpu_isa(), "dnnl_max_cpu_isa": os.environ.get(ISA_VAR)}
