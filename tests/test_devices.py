"""GPU paths checked on a CPU: which precision `auto` resolves to on a CUDA card, what `--torch-deterministic` and
`--precision fp32` switch on, and that a checkpoint carries the random stream of the device it was written on."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO, load_module

# configure_determinism is word for word the same in every script (tests/test_layout.py): one is checked
SCRIPT = "ppo_atari_selfattn.py"


@pytest.fixture(scope="module")
def selfattn():
    return load_module(REPO / "ppo_atari_selfattn.py", "ppo_atari_selfattn")


@pytest.mark.parametrize(
    "capability,hip,native", [((7, 5), None, False), ((8, 0), None, True), ((9, 0), None, True), ((7, 0), "6.2", True)]
)
def test_auto_precision_is_bf16_only_on_cards_that_compute_it(selfattn, monkeypatch, capability, hip, native):
    # a Turing card (7.5) only emulates bf16 (torch.cuda.is_bf16_supported() says True there); Ampere (8.0) and newer
    # and ROCm compute it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", hip)
    assert selfattn.native_bf16(torch.device("cuda")) is native


def test_mps_runs_fp32(selfattn):
    assert selfattn.native_bf16(torch.device("mps")) is False


@pytest.mark.parametrize(
    "deterministic,precision,device", [(True, "fp32", "cuda"), (False, "bf16", "cuda"), (True, "fp32", "cpu")]
)
def test_determinism_and_tf32_settings(deterministic, precision, device):
    # global torch state: checked in a fresh interpreter
    code = f"""
import os, sys, torch
sys.path.insert(0, {str(REPO / "tests")!r})
from conftest import load_module
module = load_module({str(REPO / SCRIPT)!r})
os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
module.configure_determinism({deterministic}, {precision!r}, torch.device({device!r}))
print(torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
      os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    cudnn_deterministic, all_deterministic, workspace, tf32_matmul, tf32_cudnn = out.stdout.split()
    on_cuda = deterministic and device == "cuda"
    assert cudnn_deterministic == str(deterministic)
    assert all_deterministic == str(on_cuda)
    assert workspace == (":4096:8" if on_cuda else "None")
    assert tf32_matmul == tf32_cudnn == str(precision != "fp32")
