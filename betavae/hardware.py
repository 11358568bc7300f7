"""What the machine at hand can do fast, and the training precision that follows from it.

``precision: auto`` must not pick a path that is slow here: bf16 autocast on a CPU is only fast
with native bf16 arithmetic (AVX-512-BF16 or AMX). On an AVX2-only CPU (e.g. AMD EPYC Zen 3)
oneDNN emulates bf16 and a training step was measured ~4× *slower* than fp32, so ``auto`` stays
fp32 there. On CUDA, bf16 needs compute capability ≥ 8 (Ampere); older GPUs with tensor cores
(≥ 7) get fp16 with a GradScaler; anything older fp32.

The CPU is described from ``/proc/cpuinfo`` (Linux), else ``lscpu``, else :mod:`platform` only
(flags then unknown, and ``auto`` stays fp32: nothing is assumed that was not seen).
"""
from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

# The CPU flags that decide the precision (Linux /proc/cpuinfo spelling).
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and which of :data:`RELEVANT_FLAGS` it has.

    ``flags`` is None when they could not be read (no /proc/cpuinfo, no lscpu): unknown, not absent.
    """

    model: str
    flags: frozenset[str] | None
    source: str  # "/proc/cpuinfo", "lscpu" or "platform"
    logical_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    def has(self, flag: str) -> bool:
        return self.flags is not None and flag in self.flags

    @property
    def native_bf16(self) -> bool:
        """AVX-512-BF16 or AMX-BF16: bf16 dot products in hardware."""
        return any(self.has(flag) for flag in NATIVE_BF16_FLAGS)

    def flag_summary(self) -> str:
        """E.g. ``avx2 yes, avx512f no, avx512_bf16 no, amx_bf16 no, amx_tile no``."""
        if self.flags is None:
            return "flags unknown"
        return ", ".join(f"{flag} {'yes' if flag in self.flags else 'no'}" for flag in RELEVANT_FLAGS)

    def describe(self) -> str:
        """One line: model, cores and the relevant flags."""
        return f"{self.model} ({self.logical_cpus} logical CPUs; {self.flag_summary()}; read from {self.source})"

    def to_dict(self) -> dict:
        return {"model": self.model, "logical_cpus": self.logical_cpus, "source": self.source,
                "flags": None if self.flags is None else sorted(self.flags)}


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str] | None]:
    """Model name and relevant flags from ``/proc/cpuinfo`` text (x86: ``flags``; first CPU)."""
    model = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "cpu model", "hardware"):
            model = value.strip() or None
        elif flags is None and key in ("flags", "features"):
            flags = frozenset(value.split()) & frozenset(RELEVANT_FLAGS)
        if model is not None and flags is not None:
            break
    return model, flags


def parse_lscpu(text: str) -> tuple[str | None, frozenset[str] | None]:
    """Model name and relevant flags from ``lscpu`` output."""
    model = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key == "flags" and flags is None:
            flags = frozenset(value.split()) & frozenset(RELEVANT_FLAGS)
    return model, flags


def _read_lscpu() -> str | None:
    if shutil.which("lscpu") is None:
        return None
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    model = flags = None
    source = "platform"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
            source = "/proc/cpuinfo"
        except OSError:
            pass
    if flags is None:
        text = _read_lscpu()
        if text:
            lscpu_model, flags = parse_lscpu(text)
            model = model or lscpu_model
            source = "lscpu" if flags is not None else source
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return CpuInfo(model=re.sub(r"\s+", " ", model).strip(), flags=flags, source=source)


# ----- capability probes (tests monkeypatch these) -----------------------------------------------
def torch_cpu_bf16() -> bool:
    """Whether this torch build's oneDNN would run bf16 on this CPU at all (natively or emulated)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_native(cpu: CpuInfo | None = None) -> bool:
    """Whether bf16 is native on this CPU: AVX-512-BF16 or AMX-BF16 among its flags *and* this
    torch build's oneDNN runs bf16 on it (:func:`torch_cpu_bf16`).

    The one bf16 check for the CPU: training's ``precision: auto`` (:func:`choose_precision`) and the
    FID network's bf16 opt-in (:func:`betavae.metrics.fid.precision_refusal`) both ask it, so they
    agree. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` alone is not enough: it is true on plain
    AVX-512 (no bf16 instructions), where oneDNN emulates bf16. Unreadable flags count as no.
    """
    cpu = cpu_info() if cpu is None else cpu
    return cpu.native_bf16 and torch_cpu_bf16()


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of a CUDA device."""
    return torch.cuda.get_device_capability(device)


def cuda_bf16_native(device: torch.device) -> bool:
    """bf16 in hardware on this CUDA device (torch.cuda.is_bf16_supported without emulation)."""
    if torch.version.hip:
        return True
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def cuda_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


# ----- the decision ------------------------------------------------------------------------------
def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The training precision for ``requested`` (``auto``/``fp32``/``bf16``/``fp16``) on ``device``,
    and a one-line reason to record (run.json).

    ``auto`` picks only what is fast and safe here: on CPU bf16 autocast with native bf16
    (AVX-512-BF16/AMX) else fp32; on CUDA bf16 where supported in hardware, else fp16 with a
    GradScaler on tensor-core GPUs, else fp32. ``fp16`` on a CPU is a ValueError.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"unknown train.precision {requested!r}; valid: {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        return _cuda_precision(requested, device)
    if requested == "fp16":
        raise ValueError("train.precision 'fp16' needs CUDA; use 'bf16' or 'fp32' on CPU")
    if device.type != "cpu":
        if requested == "auto":
            return "fp32", f"auto → fp32: no measured fast mixed-precision path on {device.type}"
        return requested, f"{requested} as configured ({device.type})"
    return _cpu_precision(requested)


def _cpu_precision(requested: str) -> tuple[str, str]:
    cpu = cpu_info()
    if cpu.flags is None:
        why = f"{cpu.model}: CPU flags unreadable here (no /proc/cpuinfo or lscpu), so native bf16 is not known"
        if requested == "auto":
            return "fp32", f"auto → fp32: {why}; fp32 is the safe choice"
        return requested, f"{requested} as configured ({why})"
    if cpu_bf16_native(cpu):
        which = " and ".join(name for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512-BF16"))
                             if cpu.has(flag))
        why = f"{cpu.model} has native bf16 ({which})"
        if requested == "auto":
            return "bf16", f"auto → bf16 autocast: {why}"
        return requested, f"{requested} as configured ({why})"
    if cpu.native_bf16:  # the CPU has it but this torch's oneDNN will not use it
        why = f"{cpu.model} has native bf16 but this torch build's oneDNN does not support bf16 on it"
    elif cpu.has("avx512f"):
        why = (f"{cpu.model} has AVX-512 but no native bf16 (no AVX-512-BF16/AMX); "
               "bf16 would be emulated (not measured to be faster)")
    elif cpu.has("avx2"):
        why = (f"{cpu.model} has AVX2 but no native bf16 (no AVX-512-BF16/AMX); "
               "bf16 would be emulated and ~4× slower")
    else:
        why = f"{cpu.model} has neither AVX2 nor native bf16"
    if requested == "auto":
        return "fp32", f"auto → fp32: {why}"
    if requested == "bf16":
        return "bf16", f"bf16 as configured, although {why}"
    return "fp32", f"fp32 as configured ({cpu.model})"


def _cuda_precision(requested: str, device: torch.device) -> tuple[str, str]:
    name = cuda_name(device)
    major, minor = cuda_capability(device)
    gpu = f"{name} (compute capability {major}.{minor})"
    bf16 = cuda_bf16_native(device)
    if requested == "auto":
        if bf16:
            return "bf16", f"auto → bf16 autocast: {gpu} supports bf16"
        if major >= 7:
            return "fp16", f"auto → fp16 autocast with a GradScaler: {gpu} has no bf16 but fp16 tensor cores"
        return "fp32", f"auto → fp32: {gpu} has neither bf16 nor fp16 tensor cores"
    if requested == "bf16" and not bf16:
        return "bf16", f"bf16 as configured, although {gpu} has no native bf16 (emulated, slow)"
    return requested, f"{requested} as configured ({gpu})"
