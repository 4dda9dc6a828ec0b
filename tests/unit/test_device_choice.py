"""Where an embedded ComfyUI computes: the GPU where torch finds one, the CPU only when none is usable or asked."""

import stat
import sys

import pytest

from imageinference.comfyui.server_process import ComfyServer, choose_device


def fake_python(tmp_path, output, code=0):
    """An interpreter stand-in whose GPU probe prints `output` (the probe is a child process)."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_gpu_is_used_when_torch_finds_one(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGEINFERENCE_CPU", raising=False)
    device = choose_device(python=fake_python(tmp_path, "cuda: NVIDIA L4"))
    assert not device.cpu and device.args == [] and "NVIDIA L4" in device.reason


def test_the_cpu_when_no_gpu_or_the_probe_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGEINFERENCE_CPU", raising=False)
    assert choose_device(python=fake_python(tmp_path, "")).args == ["--cpu"]
    assert choose_device(python=fake_python(tmp_path, "", code=1)).cpu
    assert choose_device(python=str(tmp_path / "missing-python")).cpu


def test_the_cpu_when_asked(tmp_path, monkeypatch):
    gpu = fake_python(tmp_path, "cuda: NVIDIA L4")
    assert choose_device(force_cpu=True, python=gpu).args == ["--cpu"]
    monkeypatch.setenv("IMAGEINFERENCE_CPU", "1")
    assert choose_device(python=gpu).cpu


def test_this_machines_real_probe_agrees_with_torch(monkeypatch):
    """The real probe in this interpreter: this machine's answer, checked against torch directly."""
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("IMAGEINFERENCE_CPU", raising=False)
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    assert choose_device(python=sys.executable).cpu is (not gpu)


def test_a_server_started_without_a_device_chooses_one(tmp_path):
    assert ComfyServer(tmp_path).device is None  # decided at start, by the probe


def test_info_says_where_a_run_computes():
    from imageinference.commands.info import format_info

    info = {"version": "0", "comfyui": {"found": True, "path": "/c", "version": "0.8.0"}, "nodes": [],
            "device": "CPU: torch finds no CUDA, XPU or MPS device"}
    assert "computes on the CPU: torch finds no CUDA" in format_info(info)
