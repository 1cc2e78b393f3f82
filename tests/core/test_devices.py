"""Where eval, predict and serve run: ``core.devices`` resolves --device, and CPU-only choices are refused early."""

from __future__ import annotations

import pytest
import torch

from ptuning.core.config import ConfigError
from ptuning.core.devices import inference_device
from ptuning.core.quantization import check_quantization, quantizes_after_loading


def pretend_cuda(monkeypatch, devices: int) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: devices > 0)
    monkeypatch.setattr("torch.cuda.device_count", lambda: devices)


@pytest.mark.parametrize("requested", [None, "auto"])
def test_auto_takes_cuda_only_where_there_is_a_cuda_device(monkeypatch, requested) -> None:
    pretend_cuda(monkeypatch, 0)
    assert inference_device(requested) == torch.device("cpu")
    pretend_cuda(monkeypatch, 1)
    assert inference_device(requested) == torch.device("cuda")


def test_explicit_devices_are_kept(monkeypatch) -> None:
    pretend_cuda(monkeypatch, 2)
    assert inference_device("cpu") == torch.device("cpu")
    assert inference_device("cuda:1") == torch.device("cuda", 1)
    assert inference_device(torch.device("cuda", 0)) == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("requested", "cuda_devices", "expected"),
    [
        ("cuda", 0, "--device cuda: torch sees no CUDA device here; use --device cpu or auto"),
        ("cuda:2", 2, "--device cuda:2: torch sees 2 CUDA device(s), cuda:0 to cuda:1"),
        ("gpu", 1, "--device 'gpu': expected auto, cpu, cuda or cuda:N"),
        ("mps", 0, "--device 'mps': expected auto, cpu, cuda or cuda:N"),
        ("meta", 0, "--device 'meta': expected auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_device_that_is_not_there_is_refused_in_one_line(
    monkeypatch, requested, cuda_devices, expected
) -> None:
    pretend_cuda(monkeypatch, cuda_devices)
    with pytest.raises(ConfigError) as error:
        inference_device(requested)
    assert str(error.value) == expected


def test_cpu_int8_follows_the_device_and_dynamic_int8_is_cpu_only(monkeypatch) -> None:
    pretend_cuda(monkeypatch, 1)
    assert quantizes_after_loading("int8", "cpu")  # weight-only int8 on the CPU, after loading
    assert not quantizes_after_loading("int8", "cuda")  # bitsandbytes while loading
    assert not quantizes_after_loading("int8")  # auto: CUDA here
    assert quantizes_after_loading("int8-dynamic", "cuda") and not quantizes_after_loading("nf4", "cpu")
    assert check_quantization("int8-dynamic", torch.device("cpu"))  # quantized after loading, on the CPU
    assert not check_quantization(None, torch.device("cuda"))
    with pytest.raises(ConfigError, match=r"int8-dynamic runs on the CPU only .* or --device cpu"):
        check_quantization("int8-dynamic", torch.device("cuda"))
    with pytest.raises(ConfigError, match="nf4 needs CUDA and bitsandbytes"):
        check_quantization("nf4", torch.device("cpu"))
    # refused before loading, naming the flag, where quantize_backbone refused only after the slow load
    assert check_quantization("int8-dynamic", torch.device("cpu"), "fp32")
    assert check_quantization("int8", torch.device("cpu"), "bf16")  # weight-only int8 keeps bf16 activations
    with pytest.raises(
        ConfigError, match=r"int8-dynamic needs an fp32 backbone .* --backbone-dtype fp16 gives"
    ):
        check_quantization("int8-dynamic", torch.device("cpu"), "fp16")
