"""GPU paths checked on a CPU: which precision `auto` resolves to on a CUDA card, what `--torch-deterministic` and
`--precision fp32` switch on, and that a checkpoint carries the random stream of the device it was written on."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO, load_module

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`

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
    precision, reason = selfattn.auto_precision(torch.device("cuda"))
    assert precision == ("bf16" if native else "fp32")
    assert ("ROCm" if hip else f"{capability[0]}.{capability[1]}") in reason


@pytest.mark.parametrize(
    "flags,precision",
    [
        ({"avx2"}, "fp32"),  # bf16 emulated
        ({"avx2", "avx512f"}, "fp32"),  # AVX-512 without BF16: emulated too
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),  # AMD EPYC (machine A)
        ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16"),  # Intel Xeon with AMX (machine C)
    ],
)
def test_auto_precision_on_cpus(selfattn, monkeypatch, flags, precision):
    monkeypatch.setattr(selfattn, "cpu_flags", lambda: flags)
    assert selfattn.auto_precision(torch.device("cpu"))[0] == precision


def test_cpu_flags_are_the_whole_words_of_the_flags_line(selfattn):
    # auto_precision looks flags up by name: a substring match ("avx512f" inside "avx512fp16") or the line's label
    # must not count as a flag
    flags = selfattn.cpu_flags()
    with open("/proc/cpuinfo") as f:
        lines = [line for line in f if line.startswith("flags")]
    assert lines, "no flags line in /proc/cpuinfo"
    assert flags == set(lines[0].split(":", 1)[1].split()) and "flags" not in flags and len(flags) > 10


def test_mps_runs_fp32(selfattn):
    assert selfattn.auto_precision(torch.device("mps"))[0] == "fp32"


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


def record_linears(monkeypatch, agent, names) -> tuple[list, int]:
    """Records (autocast on, input dtype) at every call of the linears inside `agent`'s submodules `names` (those it
    has); returns the record and how many linears are watched."""
    watched = {
        id(m) for name in names if hasattr(agent, name) for m in getattr(agent, name).modules()
        if isinstance(m, torch.nn.Linear)
    }  # fmt: skip
    seen, linear_forward = [], torch.nn.Linear.forward

    def recording_linear(layer, x):
        if id(layer) in watched:
            seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return linear_forward(layer, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", recording_linear)
    return seen, len(watched)


def unroll_under_bf16_autocast(agent, steps: int, envs: int = 2):
    """The agent's `unroll` over `steps` steps of random observations under CPU bf16 autocast; the state after it."""
    obs = torch.randint(0, 255, (steps * envs, 4, 84, 84), dtype=torch.uint8)
    zeros = torch.zeros(steps * envs)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = agent.unroll(obs, agent.initial_state(envs, "cpu"), zeros.long(), zeros, zeros)
    return state


@pytest.mark.parametrize("agent_kind", ["attention", "resnet_lstm"])
def test_policy_lstm_runs_in_fp32_under_autocast(agent_kind, monkeypatch):
    # CUDA autocast would run lstm_cell in bf16 and round the cell state each step; the step runs with autocast off
    # (checked on the CPU by recording the autocast state inside the LSTM cell)
    topdown = load_module(REPO / "ppo_atari_topdown.py", "ppo_atari_topdown")
    small = dict(conv_channels=16, value_channels=24, core_hidden=32, mlp_hidden=32, query_hidden=(32,))
    agent = topdown.make_agent(topdown.Args(agent=agent_kind, impala_channels=(4, 4, 4), resnet_hidden=16, **small), 4)
    seen = []
    forward = torch.nn.LSTMCell.forward

    def recording_forward(cell, x, state=None):
        seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return forward(cell, x, state)

    monkeypatch.setattr(torch.nn.LSTMCell, "forward", recording_forward)
    # the attention agent's other per-step parts (query network, policy MLP) run in fp32 too: record their linears
    seen_linears, watched = record_linears(monkeypatch, agent, ("query_net", "core_mlp"))
    steps = 3
    state = unroll_under_bf16_autocast(agent, steps)
    assert seen == [(False, torch.float32)] * steps
    assert all(s.dtype == torch.float32 for s in state)
    assert seen_linears == [(False, torch.float32)] * (steps * watched)


def test_spatiotemporal_per_step_parts_run_in_fp32_under_autocast(monkeypatch):
    # the spatio-temporal agent's query network, policy MLP and Transformer-XL core see a few rows per step: they run
    # with autocast off, in fp32, so the memory the core carries is never rounded (recorded in every linear they hold)
    temporal = load_module(REPO / "ppo_atari_temporal.py", "ppo_atari_temporal")
    small = dict(conv_channels=16, value_channels=24, mlp_hidden=32, query_hidden=(32, 32), d_model=32, memory_len=4)
    agent = temporal.SpatioTemporalAgent(4, transformer_ff=32, **small)
    seen, watched = record_linears(monkeypatch, agent, ("query_net", "core_mlp", "temporal"))
    steps = 3
    state = unroll_under_bf16_autocast(agent, steps)
    # each linear once per step (a GRU gate's three included)
    assert len(seen) == steps * watched and set(seen) == {(False, torch.float32)}
    assert all(s.dtype == torch.float32 for s in state)  # vision state, memory, valid, core output
