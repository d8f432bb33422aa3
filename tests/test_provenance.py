"""The config line's machine description: the instruction set oneDNN will use."""
import pytest

from byzsgd import provenance

ZEN4 = {"sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}


@pytest.mark.parametrize("flags, isa", [
    (ZEN4, "avx512_core"),
    ({"sse4_1", "avx", "avx2", "fma", "avx512f"}, "avx512_common"),   # Knights Landing
    ({"sse4_1", "avx", "avx2", "fma"}, "avx2"),                     # Zen 2/3, Haswell
    ({"sse4_1", "avx", "avx2"}, "avx"),                             # avx2 without fma
    ({"sse4_1"}, "sse41"),
    (set(), None),                                                  # not x86
])
def test_isa_is_the_widest_the_flags_allow(flags, isa):
    assert provenance.cpu_isa(flags) == isa


def test_machine_names_the_cap_on_onednn(monkeypatch):
    monkeypatch.setenv(provenance.ISA_VAR, "AVX2")
    m = provenance.machine()
    assert set(m) == {"cpu", "isa", "dnnl_max_cpu_isa"} and m["dnnl_max_cpu_isa"] == "AVX2"
    assert isinstance(m["cpu"], str) and m["cpu"]
    monkeypatch.delenv(provenance.ISA_VAR)
    assert provenance.machine()["dnnl_max_cpu_isa"] is None
