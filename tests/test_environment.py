"""The environment record's CPU facts: bf16 emulation, told from /proc/cpuinfo's text."""

import torch

from actrange import environment
from actrange.environment import bf16_is_emulated, bf16_warning

# abridged /proc/cpuinfo of two x86 cores (Zen 3 without bf16, Zen 4 with it) and an ARM core
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
flags\t\t: fpu sse sse2 avx avx2 fma sha_ni vaes
"""
ZEN4 = ZEN3.replace("vaes", "vaes avx512f avx512_bf16")
ARM = """processor\t: 0
Features\t: fp asimd bf16
CPU implementer\t: 0x41
"""


def test_an_x86_cpu_without_bf16_flags_emulates_it():
    assert bf16_is_emulated(ZEN3)
    assert not bf16_is_emulated(ZEN4)
    assert not bf16_is_emulated(ZEN3.replace("vaes", "vaes amx_bf16"))
    # a flag that merely contains the name is not the flag
    assert bf16_is_emulated(ZEN3.replace("vaes", "vaes not_avx512_bf16"))


def test_without_a_flags_line_nothing_is_claimed():
    assert not bf16_is_emulated(ARM)
    assert not bf16_is_emulated("")


def test_the_warning_is_given_only_for_bf16_on_an_emulating_cpu(tmp_path, monkeypatch):
    cpu_info = tmp_path / "cpuinfo"
    cpu_info.write_text(ZEN3)
    monkeypatch.setattr(environment, "CPU_INFO", cpu_info)
    cpu = torch.device("cpu")
    warning = bf16_warning("bf16", cpu)
    assert warning is not None and warning.startswith("warning: this CPU has no bf16 instructions")
    assert "\n" not in warning
    assert bf16_warning("fp32", cpu) is None
    assert bf16_warning("bf16", torch.device("cuda")) is None
    cpu_info.write_text(ZEN4)
    assert bf16_warning("bf16", cpu) is None
    monkeypatch.setattr(environment, "CPU_INFO", tmp_path / "missing")
    assert bf16_warning("bf16", cpu) is None
