"""trainer.precision=auto: the decision from (faked) hardware facts, and its use in a run."""
from __future__ import annotations

import json

import pytest

from ser.precision import BF16, FP32, Hardware, choose_precision, read_cpu_info, resolve_precision


ZEN4 = frozenset("fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni".split())
ZEN3 = frozenset("fpu sse2 avx avx2 fma".split())
SPR = frozenset("avx2 avx512f avx512_bf16 amx_bf16 amx_tile".split())
ICX = frozenset("avx2 avx512f avx512bw avx512_vnni".split())  # AVX512 but no bf16 instructions


@pytest.mark.parametrize("flags, expected", [(ZEN4, BF16), (SPR, BF16), (ZEN3, FP32), (ICX, FP32),
                                             (frozenset("fp asimd bf16 sve".split()), BF16),  # aarch64 (Graviton 3)
                                             (frozenset("fp asimd".split()), FP32), (frozenset(), FP32)])
def test_auto_on_cpus(flags, expected):
    choice = choose_precision("auto", Hardware(cpu_model="some CPU", cpu_flags=flags))
    assert choice.precision == expected
    assert choice.reason.startswith("auto: ")
    assert "some CPU" in choice.line() and expected in choice.line()


@pytest.mark.parametrize("isa, aten, expected", [
    ("AVX2", None, FP32), ("avx512_core", None, FP32), ("AVX512_CORE_BF16", None, BF16), ("AVX512_CORE_AMX", None, BF16),
    (None, "avx2", FP32), (None, "default", FP32), (None, "avx512", BF16), ("ALL", "avx512", BF16)])
def test_instruction_set_caps_turn_native_bf16_off(isa, aten, expected):
    """ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY (how an AVX2 CPU is reproduced on a newer one) count."""
    hw = Hardware(cpu_flags=ZEN4, onednn_max_isa=isa, aten_capability=aten)
    choice = choose_precision("auto", hw)
    assert choice.precision == expected
    if expected == FP32:
        assert (isa or aten) in choice.reason and (isa or aten) in choice.hardware


@pytest.mark.parametrize("cc, expected", [((9, 0), BF16), ((8, 0), BF16), ((7, 0), FP32), (None, FP32)])
def test_auto_on_cuda(cc, expected):
    hw = Hardware(accelerator="cuda", cuda_name="GPU X", cuda_capability=cc, cpu_flags=ZEN3)
    assert choose_precision("auto", hw).precision == expected


@pytest.mark.parametrize("value", ["32-true", "bf16-mixed", "16-mixed", "bf16-true"])
def test_explicit_values_win(value):
    for flags in (ZEN3, ZEN4):
        choice = choose_precision(value, Hardware(cpu_flags=flags))
        assert choice.precision == value and choice.reason == "set explicitly"


def test_cpu_info_parsing(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n\n"
                 "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n")
    model, flags = read_cpu_info(f)
    assert model == "AMD EPYC 7B13" and flags == frozenset({"fpu", "avx2", "fma"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\n")
    assert "bf16" in read_cpu_info(arm)[1]
    assert read_cpu_info(tmp_path / "missing")[1] == frozenset()


def test_env_caps_are_read(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == FP32 and "AVX2" in choice.hardware


def test_run_records_and_keeps_its_choice(tmp_path, monkeypatch):
    """A run logs the decision, writes it to results.json, and a resumed run keeps it."""
    from ser.train import run_precision
    from tests.conftest import compose

    cfg = compose(["model=tiny"], output_dir=tmp_path)
    assert cfg.trainer.precision == "auto"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    first = run_precision(cfg, tmp_path)
    assert first.precision == FP32
    saved = json.loads((tmp_path / "precision.json").read_text())
    assert saved["precision"] == FP32 and saved["requested"] == "auto"
    monkeypatch.setattr("ser.train.resolve_precision", lambda req, acc: choose_precision(req, Hardware(cpu_flags=ZEN4)))
    again = run_precision(cfg, tmp_path)  # the machine would now pick bf16; the run keeps fp32
    assert again.precision == FP32
