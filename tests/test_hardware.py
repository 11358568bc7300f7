"""choose_precision picks only what is fast here, with its reason; the CPU is described from /proc/cpuinfo."""
import pytest
import torch

from betavae import hardware
from betavae.hardware import CpuInfo, choose_precision, parse_cpuinfo, parse_lscpu

EPYC_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma avx f16c avx2 bmi2 vaes vpclmulqdq
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma avx f16c avx2 bmi2 vaes vpclmulqdq
"""
XEON_SPR = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
SKYLAKE = "model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz\nflags\t\t: avx avx2 avx512f avx512bw avx512vl\n"
LSCPU = "Architecture:   x86_64\nModel name:     AMD EPYC 9B14\nFlags:          avx2 avx512f avx512_bf16 sse\n"
CPU = torch.device("cpu")


def cpu(text: str, name="cpuinfo") -> CpuInfo:
    model, flags = parse_cpuinfo(text) if name == "cpuinfo" else parse_lscpu(text)
    return CpuInfo(model=model, flags=flags, source=name, logical_cpus=2)


@pytest.fixture
def on(monkeypatch):
    """Pretends to run on the CPU given (and whether torch's oneDNN does bf16 there)."""
    def install(info: CpuInfo, torch_bf16: bool = True):
        monkeypatch.setattr(hardware, "cpu_info", lambda: info)
        monkeypatch.setattr(hardware, "torch_cpu_bf16", lambda: torch_bf16)
    return install


def test_cpuinfo_and_lscpu_are_parsed_to_the_relevant_flags():
    zen3 = cpu(EPYC_ZEN3)
    assert zen3.model == "AMD EPYC" and zen3.flags == {"avx2"} and not zen3.native_bf16
    spr = cpu(XEON_SPR)
    assert spr.flags == {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"} and spr.native_bf16
    genoa = cpu(LSCPU, "lscpu")
    assert genoa.model == "AMD EPYC 9B14" and genoa.native_bf16
    assert "avx2 yes, avx512f no, avx512_bf16 no" in zen3.describe()


def test_auto_on_an_avx2_only_cpu_is_fp32_and_says_why(on):
    on(cpu(EPYC_ZEN3), torch_bf16=False)
    precision, reason = choose_precision("auto", CPU)
    assert precision == "fp32"
    assert reason == ("auto → fp32: AMD EPYC has AVX2 but no native bf16 (no AVX-512-BF16/AMX); "
                      "bf16 would be emulated and ~4× slower")


def test_auto_on_a_cpu_with_amx_is_bf16(on):
    on(cpu(XEON_SPR))
    precision, reason = choose_precision("auto", CPU)
    assert precision == "bf16" and "AMX-BF16 and AVX-512-BF16" in reason and reason.startswith("auto → bf16")


def test_native_bf16_flag_is_not_enough_when_torch_cannot_use_it(on):
    on(cpu(XEON_SPR), torch_bf16=False)
    assert choose_precision("auto", CPU)[0] == "fp32"


def test_avx512_without_bf16_stays_fp32_even_if_onednn_would_emulate_it(on):
    on(cpu(SKYLAKE), torch_bf16=True)
    precision, reason = choose_precision("auto", CPU)
    assert precision == "fp32" and "AVX-512 but no native bf16" in reason


def test_cpu_bf16_native_needs_the_flag_and_torch(on):
    """The one bf16 check (training's auto precision and the FID network's bf16 both ask it): oneDNN
    alone says yes on plain AVX-512, where bf16 is only emulated."""
    on(cpu(SKYLAKE), torch_bf16=True)
    assert not hardware.cpu_bf16_native()
    on(cpu(XEON_SPR), torch_bf16=False)
    assert not hardware.cpu_bf16_native()
    on(cpu(XEON_SPR), torch_bf16=True)
    assert hardware.cpu_bf16_native() and hardware.cpu_bf16_native(cpu(LSCPU, "lscpu"))
    assert not hardware.cpu_bf16_native(cpu(EPYC_ZEN3))
    on(CpuInfo(model="arm64", flags=None, source="platform"), torch_bf16=True)
    assert not hardware.cpu_bf16_native()


def test_unknown_flags_fall_back_to_fp32(on):
    on(CpuInfo(model="arm64", flags=None, source="platform"))
    precision, reason = choose_precision("auto", CPU)
    assert precision == "fp32" and "unreadable" in reason


def test_explicit_choices_are_kept_and_fp16_on_cpu_is_refused(on):
    on(cpu(EPYC_ZEN3), torch_bf16=False)
    assert choose_precision("fp32", CPU)[0] == "fp32"
    precision, reason = choose_precision("bf16", CPU)
    assert precision == "bf16" and "emulated" in reason
    with pytest.raises(ValueError, match="needs CUDA"):
        choose_precision("fp16", CPU)
    with pytest.raises(ValueError, match="unknown"):
        choose_precision("fp64", CPU)


@pytest.mark.parametrize("capability, bf16, expected", [((9, 0), True, "bf16"), ((8, 0), True, "bf16"),
                                                         ((7, 5), False, "fp16"), ((6, 1), False, "fp32")])
def test_auto_on_cuda_follows_the_gpu(monkeypatch, capability, bf16, expected):
    monkeypatch.setattr(hardware, "cuda_name", lambda device: "Some GPU")
    monkeypatch.setattr(hardware, "cuda_capability", lambda device: capability)
    monkeypatch.setattr(hardware, "cuda_bf16_native", lambda device: bf16)
    precision, reason = choose_precision("auto", torch.device("cuda", 0))
    assert precision == expected and "Some GPU" in reason and f"{capability[0]}.{capability[1]}" in reason
    assert choose_precision("fp16", torch.device("cuda", 0))[0] == "fp16"  # allowed on CUDA


def test_this_machine_is_described():
    info = hardware.cpu_info()
    assert info.model and info.logical_cpus >= 1
    precision, reason = choose_precision("auto", CPU)
    assert precision in ("fp32", "bf16") and reason.startswith("auto → ")
