"""``trainer.precision: auto``: bf16-mixed where the device runs bf16 natively, fp32 elsewhere.

Measured on one MiniLM training step (``benchmarks/precision.py``, 2 threads): bf16 autocast is
1.4x *faster* than fp32 on an AMD EPYC with AVX512-BF16, and 17x *slower* on the same CPU capped
at AVX2 (21x on a real Zen 3; oneDNN emulates bf16 there). No single fixed value is right on every
machine, so the default is decided once at start from what the hardware says of itself:

- CUDA: bf16-mixed when the GPU computes bf16 natively (compute capability >= 8.0), else fp32.
- CPU: bf16-mixed when it has AVX512-BF16 or AMX-BF16 (x86) or BF16 (aarch64), and neither
  ``ONEDNN_MAX_CPU_ISA`` nor ``ATEN_CPU_CAPABILITY`` caps the instruction set below them;
  fp32 elsewhere.

:func:`choose_precision` is the pure decision (tested with faked capabilities);
:func:`resolve_precision` gathers the facts of this machine and calls it.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"
# CPU flags (as /proc/cpuinfo spells them) that give native bf16 dot products
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still include bf16 instructions
ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                    "AVX10_2_512_AMX_2", "ALL")
# ATen capabilities (ATEN_CPU_CAPABILITY) whose vector kernels run bf16 at speed
ATEN_BF16_CAPS = ("avx512", "avx512_bf16", "amx", "sve", "sve128", "sve256")


@dataclass
class Hardware:
    """What the decision needs to know of the machine (faked in tests)."""

    accelerator: str = "cpu"  # cpu | cuda
    cpu_model: str = "unknown"
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    cuda_name: str | None = None
    cuda_capability: tuple[int, int] | None = None
    onednn_max_isa: str | None = None  # $ONEDNN_MAX_CPU_ISA
    aten_capability: str | None = None  # $ATEN_CPU_CAPABILITY

    def describe(self) -> str:
        if self.accelerator == "cuda":
            cc = ".".join(map(str, self.cuda_capability)) if self.cuda_capability else "?"
            return f"{self.cuda_name or 'CUDA GPU'} (compute capability {cc})"
        bf = sorted(f for f in BF16_CPU_FLAGS if f in self.cpu_flags)
        caps = [f"flags: {', '.join(bf) if bf else 'no native bf16'}"]
        if self.onednn_max_isa:
            caps.append(f"ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}")
        if self.aten_capability:
            caps.append(f"ATEN_CPU_CAPABILITY={self.aten_capability}")
        return f"{self.cpu_model} ({'; '.join(caps)})"


@dataclass
class PrecisionChoice:
    requested: str
    precision: str
    reason: str
    hardware: str

    def line(self) -> str:
        return f"precision: {self.precision} ({self.reason}) on {self.hardware}"

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_has_native_bf16(hw: Hardware) -> tuple[bool, str]:
    """Whether bf16 matmuls run natively on this CPU, and why (one phrase)."""
    flags = [f for f in BF16_CPU_FLAGS if f in hw.cpu_flags]
    if not flags:
        return False, "the CPU has no native bf16 (no AVX512-BF16/AMX-BF16/BF16 flag); bf16 autocast would be emulated and slow"
    if hw.onednn_max_isa and hw.onednn_max_isa.upper() not in ONEDNN_BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={hw.onednn_max_isa} caps oneDNN below its bf16 instructions"
    if hw.aten_capability and hw.aten_capability.lower() not in ATEN_BF16_CAPS:
        return False, f"ATEN_CPU_CAPABILITY={hw.aten_capability} caps ATen below bf16 vector kernels"
    return True, f"the CPU runs bf16 natively ({', '.join(flags)})"


def choose_precision(requested: str, hw: Hardware) -> PrecisionChoice:
    """The Lightning precision for ``requested`` (``auto`` or any explicit value, which wins)."""
    requested = str(requested)
    if requested != AUTO:
        return PrecisionChoice(requested, requested, "set explicitly", hw.describe())
    if hw.accelerator == "cuda":
        ok = hw.cuda_capability is not None and hw.cuda_capability >= (8, 0)
        why = "the GPU computes bf16 natively" if ok else "the GPU has no native bf16 (compute capability < 8.0)"
        return PrecisionChoice(requested, BF16 if ok else FP32, f"auto: {why}", hw.describe())
    ok, why = cpu_has_native_bf16(hw)
    return PrecisionChoice(requested, BF16 if ok else FP32, f"auto: {why}", hw.describe())


# --------------------------------------------------------------------------------------------
# The facts of this machine
# --------------------------------------------------------------------------------------------

def read_cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """CPU model name and feature flags (x86 ``flags``, aarch64 ``Features``); empty where unknown."""
    model, flags = None, frozenset()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model or platform.machine() or "unknown", flags


def uses_cuda(accelerator: str | None) -> bool:
    import torch

    acc = str(accelerator or "auto").lower()
    if acc in ("gpu", "cuda"):
        return True
    return acc == "auto" and torch.cuda.is_available()


def machine(accelerator: str | None = "cpu") -> Hardware:
    model, flags = read_cpu_info()
    hw = Hardware(accelerator="cpu", cpu_model=model, cpu_flags=flags,
                  onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
                  aten_capability=os.environ.get("ATEN_CPU_CAPABILITY") or None)
    if uses_cuda(accelerator):
        import torch

        hw.accelerator = "cuda"
        if torch.cuda.is_available():
            hw.cuda_name = torch.cuda.get_device_name(0)
            hw.cuda_capability = tuple(torch.cuda.get_device_capability(0))
    return hw


def resolve_precision(requested: str, accelerator: str | None = "cpu") -> PrecisionChoice:
    return choose_precision(requested, machine(accelerator))
