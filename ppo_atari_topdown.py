# Recurrent PPO on Atari with the top-down attention agent of "Towards Interpretable Reinforcement Learning
# Using Attention Augmented Agents": ConvLSTM vision core, keys and values with a Fourier spatial basis, queries
# from the policy LSTM. Training loop in the shape of CleanRL's ppo_atari_envpool.py, recurrent as its ppo_atari_lstm.py.
import importlib
import io
import json
import math
import os
import random
import re
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, Optional

import envpool
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training envs use seed..seed+num_envs-1, evaluation a disjoint range)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, CUDA is used when available (else Apple MPS when available, else CPU)"""
    track: bool = False
    """if toggled, this experiment is tracked with Weights and Biases (works with WANDB_MODE=offline)"""
    wandb_project_name: str = "attention-atari"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of the wandb project"""
    capture_video: bool = False
    """if toggled, one rendered evaluation episode is saved as mp4 (run folder and wandb) at every evaluation"""
    save_model: bool = True
    """if toggled, checkpoints are written every `save_freq` steps and at the end"""
    save_attention: bool = False
    """if toggled, a PNG grid of a few evaluation states (frame | each head's attention, what/where) is written at the end"""

    # Algorithm specific arguments (CleanRL's ppo_atari_lstm.py defaults; the paper trains with IMPALA)
    env_id: str = "Breakout"
    """the Atari game: `Pong`, `Pong-v5`, `PongNoFrameskip-v4` and `ALE/Pong-v5` all name the same game"""
    frame_input: Literal["grey_stack", "rgb"] = "grey_stack"
    """what the agent sees at each step: `grey_stack`, the last 4 grey 84x84 frames (the input of this toolkit's other
    scripts and of the thesis's agents); `rgb`, the last frame alone, in colour, 84x84 (the paper's input: the
    ConvLSTM and LSTM carry what happened before)"""
    total_timesteps: int = 10_000_000
    """total agent steps (one step = 4 emulator frames) summed over all environments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 8
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing (linearly to 0)"""
    anneal_clip: bool = False
    """toggle clip coefficient annealing (linearly to 0)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches, each made of whole environments (num_envs must be divisible by it)"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles the use of a clipped loss for the value function"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.25
    """coefficient of the value loss, a plain mean squared error (CleanRL's vf_coef 0.5 on half the squared error)"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold (stops the epoch loop when exceeded)"""
    nan_policy: Literal["stop", "skip"] = "stop"
    """a non-finite loss or gradient never reaches the weights: `stop` ends the run naming the last good checkpoint,
    `skip` drops that minibatch and counts it (`losses/skipped_minibatches`)"""

    # Evaluation, checkpoints, speed
    eval_freq: int = 200_000
    """evaluate every `eval_freq` agent steps (and at the end) on a separate unclipped full-game env"""
    eval_episodes: int = 5
    """the number of episodes per evaluation (run in parallel)"""
    eval_deterministic: bool = False
    """if toggled, evaluation takes the most probable action instead of sampling"""
    eval_only: bool = False
    """if toggled, only evaluate the `--resume` checkpoint: `eval_episodes` games on unseen seeds with all cores,
    each episode's return and length written to a CSV beside the checkpoint (Free-Lunch Saliency's 8192-episode evaluation)"""
    eval_env_id: Optional[str] = None
    """with `--eval-only`: the game to evaluate on when not the checkpoint's (e.g. `BreakoutInfinite` for a Breakout agent)"""
    eval_dir: Optional[str] = None
    """with `--eval-only`: the folder for the per-episode CSV (default: the checkpoint's folder, which must be writable)"""
    save_freq: int = 500_000
    """write a checkpoint every `save_freq` agent steps"""
    resume: Optional[str] = None
    """a `.cleanrl_model` checkpoint, or a run folder (its latest loadable checkpoint), to continue (step counter,
    schedules, optimizer, RNG; envs restart)"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """`bf16`: forward passes under bfloat16 autocast, losses in fp32; `fp32`: everything in float32; `auto`: bf16
    where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), else fp32"""
    compile: bool = False
    """if toggled, the agent is compiled with torch.compile: its per-step cell where it steps through a sequence
    (`attention`, `resnet_lstm`), else its sequence function (`resnet`)"""
    torch_threads: int = 0
    """torch intra-op threads for the update (minibatches of `minibatch_size`); 0 = all cores"""
    rollout_threads: int = 1
    """torch intra-op threads while acting (small batches: the other cores run the emulators)"""
    env_threads: int = 0
    """envpool worker threads for each half of the envs; 0 = one per core"""

    # Architecture
    agent: Literal["attention", "resnet", "resnet_lstm"] = "attention"
    """`attention`: the paper's agent (Figure 1); Table 1's baselines without attention, on IMPALA's residual network:
    `resnet` (Feedforward Baseline: the network's output feeds the policy and value heads) and `resnet_lstm` (LSTM
    Baseline: an LSTM of `core_hidden` units, also fed the previous action and reward, in between)"""
    query_mode: Literal["topdown", "fixed", "l2norm"] = "topdown"
    """`attention`: queries from the policy LSTM's previous state (the paper's agent), a learned query per head
    (fixed), or no query: attention from each head's key L2 norm (l2norm); section 4.4"""
    num_queries: int = 4
    """the number of attention heads N (queries per step)"""
    key_channels: int = 8
    """c_k: ConvLSTM channels used as keys"""
    value_channels: int = 120
    """c_v: ConvLSTM channels used as values (the ConvLSTM has c_k + c_v channels)"""
    basis_frequencies: int = 4
    """spatial frequencies per axis for each of the even (cos) and odd (sin) parts: (2 x 4)^2 = 64 basis channels"""
    conv_channels: int = 64
    """channels of conv2 and conv3 (conv1 has half)"""
    core_hidden: int = 256
    """size of the policy LSTM (`attention`, `resnet_lstm`) and of the policy MLP's second layer (`attention`)"""
    mlp_hidden: int = 512
    """size of the policy MLP's first layer"""
    query_hidden: tuple[int, ...] = (128, 128)
    """hidden layer sizes of the query network: two make the paper's three-layer MLP (section 4), one the earlier
    two-layer network (`--query-hidden 128`, as checkpoints written before this option took a list load)"""
    impala_channels: tuple[int, ...] = (16, 32, 32)
    """`resnet`, `resnet_lstm`: channels of the residual network's stages (IMPALA's 16, 32, 32)"""
    resnet_hidden: int = 256
    """`resnet`, `resnet_lstm`: size of the fully connected layer after the residual stages (IMPALA's 256)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


# Seed offsets from `--seed`: evaluation games, videos, attention pictures and `--eval-only` games use seeds
# that no training environment does.
EVAL_SEED_OFFSET, VIDEO_SEED_OFFSET, PICTURE_SEED_OFFSET, EVAL_ONLY_SEED_OFFSET = 1_000_000, 2_000_000, 3_000_000, 4_000_000


def import_optional(module: str, feature: str):
    """`attention_utils.<module>`, imported only when `feature` is asked for (as CleanRL imports cleanrl_utils):
    without the package the script still trains, evaluates and checkpoints, and the feature fails in one line."""
    try:
        return importlib.import_module(f"attention_utils.{module}")
    except ImportError as error:
        sys.exit(f"error: {feature} needs the attention_utils package ({error}); install this project with `pip install -e .`")


def parse_game(env_id: str) -> str:
    """`Pong`, `Pong-v5`, `PongNoFrameskip-v4`, `ALE/Pong-v5` -> `Pong`; `BreakoutInfinite` is Breakout with endless
    walls (Free-Lunch Saliency, section 6.2). An unknown game exits with one line naming the closest valid ones."""
    game = re.sub(r"(NoFrameskip-v[04]|-v[045])$", "", env_id.removeprefix("ALE/"))
    if game == "BreakoutInfinite":  # it runs on ale-py (attention_utils.ale): a missing package is reported now
        import_optional("ale", "BreakoutInfinite")
    elif f"{game}-v5" not in envpool.list_all_envs():
        sys.exit(import_optional("runs", f"unknown game '{env_id}': suggesting valid names").unknown_game(env_id))
    return game


def make_env(game: str, num_envs: int, seed: int, training: bool, num_threads: int = 0, rgb: bool = False):
    """envpool Atari with the papers' protocol (NoFrameskip-v4 + SB3 AtariWrapper): frame skip 4 with
    max-pool, 84x84 grey, stack 4, noop_max 30, no sticky actions, minimal actions, fire on reset,
    108k frames max; life loss ends an episode and rewards are clipped for training only. `rgb`: one
    84x84 RGB frame per observation, (3, 84, 84), instead of the 4 grey ones."""
    if game == "BreakoutInfinite":  # envpool cannot write the emulator's RAM: ale-py games behind envpool's interface
        return import_optional("ale", "BreakoutInfinite").AlePool(game, num_envs, seed, training, rgb)
    return envpool.make(
        f"{game}-v5",
        env_type="gymnasium",
        num_envs=num_envs,
        batch_size=num_envs,
        seed=seed,
        num_threads=num_threads,
        episodic_life=training,
        reward_clip=training,
        repeat_action_probability=0.0,
        noop_max=30,
        full_action_space=False,
        use_fire_reset=True,
        max_episode_steps=27_000,
        img_height=84,
        img_width=84,
        stack_num=1 if rgb else 4,
        gray_scale=not rgb,
        frame_skip=4,
    )


def auto_precision(device: torch.device) -> tuple[str, str]:
    """`--precision auto`: (precision, reason). bf16 where the device computes it natively: a CUDA GPU of compute
    capability >= 8.0 or ROCm, a CPU with AMX or AVX512-BF16. Emulated bf16 (older GPUs, AVX2-only CPUs, MPS) is
    several times slower than fp32. On a CPU whose cores another program keeps busy, bf16 loses more than fp32
    (docs/throughput.md): there, `--precision fp32`."""
    if device.type == "cuda":
        if torch.version.hip:
            return "bf16", "ROCm GPU"
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "bf16", f"GPU of compute capability {major}.{minor}"
        return "fp32", f"GPU of compute capability {major}.{minor}, which only emulates bf16"
    flags = cpu_flags() if device.type == "cpu" else set()
    if "amx_bf16" in flags:
        return "bf16", "CPU with AMX"
    if "avx512_bf16" in flags:
        return "bf16", "CPU with AVX512-BF16"
    return "fp32", f"no native bf16 on this {device.type}"


def cpu_flags() -> set[str]:
    """The CPU's feature flags, read from /proc/cpuinfo (Linux); empty elsewhere."""
    if not os.path.exists("/proc/cpuinfo"):
        return set()
    with open("/proc/cpuinfo") as f:
        return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def configure_determinism(deterministic: bool, precision: str, device: torch.device) -> None:
    """`--torch-deterministic`: cuDNN's deterministic kernels and, on CUDA, deterministic algorithms everywhere (cuBLAS
    needs its workspace setting for that; an op without a deterministic kernel warns). `--precision fp32` also turns
    TF32 off in CUDA matmuls and convolutions, so fp32 means fp32."""
    torch.backends.cudnn.deterministic = deterministic
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def spatial_basis(height: int, width: int, num_frequencies: int = 4) -> torch.Tensor:
    """The fixed Fourier spatial basis S of eq. 7, (C_s, h, w) with C_s = (2 x num_frequencies)^2 (64 for 4 + 4):
    each channel is the outer product of one vertical and one horizontal basis function, cos(pi u x) (even)
    or sin(pi u x) (odd) with u = 1..num_frequencies and x the cell centre scaled to [0, 1]. Values lie in
    [-1, 1]; no constant channel (it would shift every logit equally and answer nothing)."""
    frequencies = torch.arange(1, num_frequencies + 1, dtype=torch.float64)[:, None]  # (F, 1)
    functions = []
    for n in (height, width):
        angles = math.pi * frequencies * (torch.arange(n, dtype=torch.float64) + 0.5) / n  # (F, n): at the cell centres
        functions.append(torch.cat([torch.cos(angles), torch.sin(angles)]))  # (2F, n): even, then odd
    rows, cols = functions  # (2F, h), (2F, w)
    basis = rows[:, None, :, None] * cols[None, :, None, :]  # (2F, 2F, h, w)
    return basis.reshape(-1, height, width).float()  # (4F^2, h, w)


class ConvLSTM(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015, the paper's vision-core recurrence): the gates are 3x3
    convolutions of the input and of the previous hidden map. The input half is computed for a whole
    sequence at once (`input_gates`), only the recurrent half step by step."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.input_conv = layer_init(
            nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2), std=1.0
        )
        self.hidden_conv = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.orthogonal_(self.hidden_conv.weight, 1.0)
        with torch.no_grad():  # forget-gate bias 1: remember by default early in training
            self.input_conv.bias[hidden_channels : 2 * hidden_channels] = 1.0

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_conv(x)  # (B, 4C, h, w)

    def forward(self, input_gates: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state  # (N, C, h, w) each
        gates = input_gates + self.hidden_conv(h.to(input_gates.dtype))  # (N, 4C, h, w)
        i, f, o, g = gates.float().chunk(4, 1)  # the cell state is kept in fp32 under autocast
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def in_fp32(module: nn.Module, *inputs):
    """Runs `module` in fp32 whatever the autocast. The per-step parts of a recurrent agent (query network, policy MLP
    and LSTM) see a few rows at a time: bf16 saves nothing there (small bf16 matmuls are slower than fp32 ones on
    CPUs), and CUDA autocast would run `lstm_cell` in bf16 and round the cell state at every step (the ConvLSTM keeps
    its cell state in fp32 for the same reason)."""
    with torch.autocast(inputs[0].device.type, enabled=False):
        return module(*(x.float() if isinstance(x, torch.Tensor) else x for x in inputs))


def upsample_to_input(attention_map: torch.Tensor) -> torch.Tensor:
    """(N, 17, 17) or (N, heads, 17, 17) map on the vision core's grid -> (N, [heads,] 84, 84): transposed
    convolution with a ones kernel of the footprint of conv1 then conv2 on the input (20x20, stride 4), so
    a cell lights the input pixels its feature column is computed from; the footprints overlap, so the
    result is divided by how many cover each pixel (a map that sums to 1 keeps its scale per cell)."""
    flat = attention_map.reshape(-1, 1, *attention_map.shape[-2:])  # (N * heads, 1, h, w)
    ones = torch.ones(1, 1, 20, 20, dtype=flat.dtype, device=flat.device)
    summed = F.conv_transpose2d(flat, ones, stride=4)  # (N * heads, 1, 84, 84)
    coverage = F.conv_transpose2d(torch.ones_like(flat[:1]), ones, stride=4)  # (1, 1, 84, 84)
    return (summed / coverage).reshape(*attention_map.shape[:-2], *summed.shape[-2:])


class PolicyHeads(nn.Module):
    """What every agent of this script shares on top of its `unroll` (time-major core outputs and the state after
    them): the policy and value heads `actor` and `critic`, and the loop's hooks for an auxiliary loss and logged
    scalars (none here; the thesis's temporal agents use them)."""

    def get_value(self, x, state, prev_action, prev_reward, done):
        hidden, _ = self.unroll(x, state, prev_action, prev_reward, done)
        return self.critic(hidden).float()

    def get_action_and_value(self, x, state, prev_action, prev_reward, done, action=None, deterministic=False):
        hidden, state = self.unroll(x, state, prev_action, prev_reward, done)
        logits = self.actor(hidden).float()  # the distribution and losses stay in fp32 under autocast
        probs = Categorical(logits=logits, validate_args=False)  # no per-call checks (a device sync each)
        if action is None:
            action = logits.argmax(-1) if deterministic else probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden).float(), state

    def compile_core(self) -> None:
        """`--compile`: torch.compile on the agent's per-step cell when it steps through a sequence (`step`, traced once
        and reused at every step; tracing the unrolled sequence would copy it num_steps times), else on `unroll`."""
        name = "step" if hasattr(self, "step") else "unroll"
        setattr(self, name, torch.compile(getattr(self, name)))

    def auxiliary_loss(self) -> torch.Tensor:
        """Added to the PPO loss: nothing for these agents (the thesis's temporal agents add a span penalty here)."""
        return torch.zeros((), device=self.actor.weight.device)

    def logged_scalars(self) -> dict[str, float]:
        """The architecture's own scalars, logged every iteration: none for these agents."""
        return {}


class Agent(PolicyHeads):
    """The top-down attention agent of the paper's Figure 1. Vision core: 3 convolutions and a ConvLSTM (eq. 1)
    whose output is split along channels into keys K and values V; the spatial basis S is concatenated to both.
    Queries (eq. 2) come from the policy LSTM's previous state through an MLP (section 4: three layers, i.e. the
    two hidden layers of `query_hidden`; one hidden size makes the earlier two-layer network); logits are inner
    products with [K, S] at every location (eq. 3), a spatial softmax per head gives the attention maps (eq. 4) and
    answers are the attention-weighted sums of [V, S] (eq. 5). The policy core (eq. 6) is an MLP and an LSTM on [answers,
    queries, previous clipped reward, one-hot previous action]; policy and value heads read the LSTM output.
    `query_mode` (section 4.4): `topdown` (as above), `fixed` (a learned query per head), `l2norm` (no queries:
    head n attends in proportion to exp of the L2 norm of its slice of the key channels).

    Observations are (C, 84, 84) uint8: C = 4 grey frames, or 3 for one RGB frame (`--frame-input rgb`).
    The recurrent state is (vision h, vision c, core h, core c). Every method takes a sequence flattened
    time-major, (T * N, ...), with the state at its start (N, ...), and per step the previous action
    (`num_actions`: "none", at the start of an episode), the previous reward and `done`: the observation ended an
    episode, so the state after it is reset to zeros."""

    def __init__(self, num_actions: int, query_mode: str = "topdown", num_queries: int = 4, key_channels: int = 8,
                 value_channels: int = 120, basis_frequencies: int = 4, conv_channels: int = 64, core_hidden: int = 256,
                 mlp_hidden: int = 512, query_hidden: int | tuple[int, ...] = (128, 128), in_channels: int = 4):  # fmt: skip
        super().__init__()
        if query_mode not in ("topdown", "fixed", "l2norm"):
            raise ValueError(f"unknown query mode {query_mode!r}; valid: topdown, fixed, l2norm")
        if query_mode == "l2norm" and key_channels % num_queries:
            raise ValueError(f"l2norm splits the {key_channels} key channels among {num_queries} heads: make them divisible")
        self.num_actions, self.query_mode, self.num_queries = num_actions, query_mode, num_queries
        self.key_channels, self.value_channels, self.in_channels = key_channels, value_channels, in_channels
        self.conv1 = layer_init(nn.Conv2d(in_channels, conv_channels // 2, 8, stride=4))  # 4 grey frames or 1 RGB
        self.conv2 = layer_init(nn.Conv2d(conv_channels // 2, conv_channels, 4, stride=1))
        self.conv3 = layer_init(nn.Conv2d(conv_channels, conv_channels, 3, padding=1))
        self.conv_lstm = ConvLSTM(conv_channels, key_channels + value_channels)
        self.register_buffer("basis", spatial_basis(17, 17, basis_frequencies), persistent=False)  # (C_s, 17, 17)
        basis_channels = self.basis.shape[0]
        self.query_size = key_channels + basis_channels  # c_k + c_s
        if query_mode == "topdown":
            # a checkpoint written when the query network had one hidden layer saved its size as an int
            sizes = [core_hidden, *((query_hidden,) if isinstance(query_hidden, int) else query_hidden)]
            hidden_layers = []
            for size_in, size_out in zip(sizes[:-1], sizes[1:]):
                hidden_layers += [layer_init(nn.Linear(size_in, size_out)), nn.ReLU()]
            self.query_net = nn.Sequential(
                *hidden_layers, layer_init(nn.Linear(sizes[-1], num_queries * self.query_size), std=1.0)
            )  # (N, core_hidden) -> (N, heads x (c_k + c_s))
        elif query_mode == "fixed":
            self.query_bias = nn.Parameter(torch.randn(num_queries, self.query_size) / math.sqrt(self.query_size))
        answer_size = num_queries * (value_channels + basis_channels)
        query_input = 0 if query_mode == "l2norm" else num_queries * self.query_size
        mlp = [
            layer_init(nn.Linear(answer_size + query_input + 1 + num_actions, mlp_hidden)),
            layer_init(nn.Linear(mlp_hidden, core_hidden)),
        ]
        self.core_mlp = nn.Sequential(mlp[0], nn.ReLU(), mlp[1], nn.ReLU())
        self.lstm = nn.LSTMCell(core_hidden, core_hidden)
        for name, param in self.lstm.named_parameters():  # orthogonal weights, zero biases
            nn.init.orthogonal_(param, 1.0) if "weight" in name else nn.init.constant_(param, 0)
        self.actor = layer_init(nn.Linear(core_hidden, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(core_hidden, 1), std=1)

    def initial_state(self, num_envs: int, device) -> tuple[torch.Tensor, ...]:
        vision = torch.zeros(num_envs, self.key_channels + self.value_channels, 17, 17, device=device)
        core = torch.zeros(num_envs, self.lstm.hidden_size, device=device)
        return (vision, vision.clone(), core, core.clone())

    def vision_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 84, 84) uint8 -> (B, 4 C_lstm, 17, 17): the convolutions and the input half of the ConvLSTM
        gates, batched over a whole sequence. conv1(x / 255) is computed as conv(x, w / 255) + b."""
        autocast_on = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast_on else torch.float32
        x = x.to(dtype=dtype, memory_format=torch.channels_last)  # channels-last convolutions: faster on CPU
        h = F.relu(F.conv2d(x, self.conv1.weight / 255.0, self.conv1.bias, stride=4))  # (B, C/2, 20, 20)
        h = F.relu(self.conv2(h))  # (B, C, 17, 17)
        h = F.relu(self.conv3(h))  # (B, C, 17, 17)
        return self.conv_lstm.input_gates(h)  # (B, 4 C_lstm, 17, 17)

    def queries(self, core_h: torch.Tensor) -> Optional[torch.Tensor]:
        """(N, heads, c_k + c_s) queries from the previous core output (eq. 2); None for l2norm."""
        if self.query_mode == "topdown":
            return in_fp32(self.query_net, core_h).view(-1, self.num_queries, self.query_size)  # (N, heads, c_k + c_s)
        if self.query_mode == "fixed":
            return self.query_bias.expand(core_h.shape[0], -1, -1)  # (N, heads, c_k + c_s)
        return None

    def attend(self, vision_h: torch.Tensor, core_h: torch.Tensor):
        """One step of eqs. 2-5 on the ConvLSTM output (N, c_k + c_v, h, w). Returns (the policy core's input from
        the attention: answers (N, heads x (c_v + c_s)) and, unless l2norm, queries (N, heads x (c_k + c_s));
        attention (N, heads, h*w), content logits, position logits), the two logit parts (N, heads, h*w) being
        q_k.K and q_s.S (their sum is eq. 3)."""
        num_envs = vision_h.shape[0]
        keys = vision_h[:, : self.key_channels].float().flatten(2)  # (N, c_k, h*w)
        values = vision_h[:, self.key_channels :].float().flatten(2)  # (N, c_v, h*w)
        basis = self.basis.flatten(1)  # (c_s, h*w), the same for every env
        queries = self.queries(core_h)
        if queries is None:  # l2norm: bottom-up, head n from the norm of its key slice
            head_keys = keys.view(num_envs, self.num_queries, -1, keys.shape[-1])  # (N, heads, c_k / heads, h*w)
            content_logits = head_keys.norm(dim=2)  # (N, heads, h*w)
            position_logits = torch.zeros_like(content_logits)
        else:
            content_logits = queries[..., : self.key_channels] @ keys  # (N, heads, c_k) @ (N, c_k, h*w) -> (N, heads, h*w)
            position_logits = queries[..., self.key_channels :] @ basis  # (N, heads, c_s) @ (c_s, h*w)
        attention = torch.softmax(content_logits + position_logits, dim=-1)  # eq. 4: (N, heads, h*w)
        answers = torch.cat(
            [attention @ values.transpose(1, 2), attention @ basis.T], -1
        )  # eq. 5 on [values, basis]: (N, heads, c_v + c_s)
        core_input = torch.cat([answers.flatten(1)] + ([] if queries is None else [queries.flatten(1)]), 1)
        return core_input, attention, content_logits, position_logits

    def spatial_maps(self, x: torch.Tensor, vision_state, core_h: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": each head's spatial softmax (eq. 4, sums to 1 over space), "what_where": section 4.6's share
        of each logit coming from the content part of the query, |q_k.K| / (|q_k.K| + |q_s.S|) in [0, 1] (1 = all
        "what", 0 = all "where", 0.5 where both parts vanish; l2norm has no query: all content)}, each (N, heads,
        17, 17), for the observations x (N, C, 84, 84) seen with the vision state and core output before them."""
        vision_h, _ = self.conv_lstm(self.vision_features(x), vision_state)  # eq. 1
        _, attention, content, position = self.attend(vision_h, core_h)
        content, position = content.abs(), position.abs()
        total = content + position
        share = torch.where(total > 0, content / total.clamp(min=1e-12), torch.full_like(total, 0.5))
        grid = (x.shape[0], self.num_queries, 17, 17)  # (N, heads, h*w) -> (N, heads, h, w)
        return {"attention": attention.view(grid), "what_where": share.view(grid)}

    def step(self, input_gates, extra_inputs, keep, state):
        """One step from the ConvLSTM's input gates (N, 4 C_lstm, 17, 17), [previous clipped reward, one-hot previous
        action] (N, 1 + A) and `keep` (N,), 0 where the observation ended an episode. Returns (core output (N,
        core_hidden), the state after the step: zeros where an episode ended, so the next one starts from them)."""
        vision_h, vision_c, core_h, core_c = state
        vision_h, vision_c = self.conv_lstm(input_gates, (vision_h, vision_c))  # eq. 1
        core_input, _, _, _ = self.attend(vision_h, core_h)  # eqs. 2-5, queries from the previous core output
        embedding = in_fp32(self.core_mlp, torch.cat([core_input, extra_inputs], 1))  # (N, core_hidden)
        core_h, core_c = in_fp32(self.lstm, embedding, (core_h, core_c))  # eq. 6
        vision_keep, core_keep = keep[:, None, None, None], keep[:, None]
        return core_h, (vision_h * vision_keep, vision_c * vision_keep, core_h * core_keep, core_c * core_keep)

    def unroll(self, x, state, prev_action, prev_reward, done):
        """Runs a time-major sequence: x (T * N, C, 84, 84), prev_action / prev_reward / done (T * N,), state
        at its start. Returns the core outputs (T * N, core_hidden) and the state after the sequence."""
        num_envs = state[0].shape[0]
        input_gates = self.vision_features(x)
        input_gates = input_gates.reshape(-1, num_envs, *input_gates.shape[1:])  # (T * N, ...) -> (T, N, 4 C_lstm, 17, 17)
        prev_action = F.one_hot(prev_action, self.num_actions + 1)[:, : self.num_actions]  # "none" -> zeros: (T * N, A)
        extra_inputs = torch.cat([prev_reward[:, None], prev_action.float()], 1).reshape(-1, num_envs, 1 + self.num_actions)
        keep = (1.0 - done).reshape(-1, num_envs)  # (T * N,) -> (T, N)
        outputs = []
        # unbind, not [t]: autograd would back-propagate each [t] through a zero-filled copy of the whole sequence
        for step_gates, step_extra, step_keep in zip(input_gates.unbind(0), extra_inputs.unbind(0), keep.unbind(0)):
            core_h, state = self.step(step_gates, step_extra, step_keep, state)
            outputs.append(core_h)
        return torch.cat(outputs), state  # (T * N, core_hidden)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, state, prev_action=None, prev_reward=None) -> dict[str, torch.Tensor]:
        """{"attention", "what_where"}: `spatial_maps`, (N, heads, 17, 17) each, for the observations x (N, C, 84, 84)
        seen with `state`, the recurrent state before them (the previous action and reward, which every recurrent
        agent's `attention_maps` takes, do not change them)."""
        vision_h, vision_c, core_h, _ = state
        return self.spatial_maps(x, (vision_h, vision_c), core_h)


class ResidualBlock(nn.Module):
    """IMPALA's residual block (Espeholt et al. 2018): x + conv(relu(conv(relu(x)))), 3x3 convolutions. The residual
    network keeps PyTorch's default initialisation, as CleanRL's ppo_procgen.py does: orthogonal gains of sqrt(2)
    would double the activations' variance at every one of the six blocks."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class ResidualStage(nn.Module):
    """One stage of IMPALA's residual network: a 3x3 convolution, a 3x3 max-pool with stride 2 and two residual
    blocks, (B, C_in, h, w) -> (B, C_out, ceil(h / 2), ceil(w / 2))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.res0, self.res1 = ResidualBlock(out_channels), ResidualBlock(out_channels)

    def forward(self, x, input_scale: float = 1.0):
        x = F.conv2d(x, self.conv.weight * input_scale, self.conv.bias, padding=1)  # = conv(input_scale * x)
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        return self.res1(self.res0(x))


class ResidualNetwork(nn.Module):
    """The vision network of Table 1's baselines, "the deeper residual network" of IMPALA (Espeholt et al. 2018):
    residual stages of 16, 32, 32 channels (84 -> 42 -> 21 -> 11), then ReLU, a fully connected layer (256) and
    ReLU. (B, C, 84, 84) uint8 -> (B, hidden); C = 4 grey frames or 3 (one RGB frame)."""

    def __init__(self, impala_channels=(16, 32, 32), hidden: int = 256, in_channels: int = 4):
        super().__init__()
        channels = [in_channels, *impala_channels]
        self.stages = nn.ModuleList(ResidualStage(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))
        size = 84
        for _ in impala_channels:
            size = (size + 1) // 2  # max-pool 3x3, stride 2, padding 1
        self.fc = nn.Linear(channels[-1] * size * size, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast_on = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast_on else torch.float32
        h = x.to(dtype=dtype, memory_format=torch.channels_last)  # channels-last convolutions: faster on CPU
        for i, stage in enumerate(self.stages):
            h = stage(h, 1.0 / 255.0 if i == 0 else 1.0)  # the first stage sees x / 255: (B, C_i, 84 / 2^(i+1) rounded up, ..)
        return F.relu(self.fc(F.relu(h).flatten(1)))  # (B, C, 11, 11) -> (B, C * 11 * 11) -> (B, hidden)


class ResNetAgent(PolicyHeads):
    """Table 1's Feedforward Baseline: the output of IMPALA's residual network (`ResidualNetwork`) feeds the policy and
    value heads directly. No attention and no memory: `attention_maps` returns no map.

    It takes and returns what the recurrent agents do, so that the same loop, `Memory` and attention_utils tools run
    it: its state is a placeholder, (N, 1) zeros that nothing reads, and the previous action, reward and `done` are
    not used."""

    def __init__(self, num_actions: int, impala_channels=(16, 32, 32), resnet_hidden: int = 256, in_channels: int = 4):
        super().__init__()
        self.num_actions, self.in_channels = num_actions, in_channels
        self.vision = ResidualNetwork(impala_channels, resnet_hidden, in_channels)
        self.actor = layer_init(nn.Linear(resnet_hidden, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(resnet_hidden, 1), std=1)

    def initial_state(self, num_envs: int, device) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(num_envs, 1, device=device),)

    def unroll(self, x, state, prev_action, prev_reward, done):
        """x (T * N, C, 84, 84) -> (the network's outputs (T * N, resnet_hidden), `state` unchanged)."""
        return self.vision(x), state

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, state, prev_action=None, prev_reward=None) -> dict[str, torch.Tensor]:
        """{}: no attention (the tools then say the agent has no map)."""
        return {}


class ResNetLSTMAgent(PolicyHeads):
    """Table 1's LSTM Baseline: IMPALA's residual network (`ResidualNetwork`), then an LSTM (256) fed its output, the
    previous clipped reward and the one-hot previous action; policy and value heads read the LSTM output. No
    attention: `attention_maps` returns no map.

    The recurrent state is (h, c), (N, core_hidden) each; sequences, previous action ("none" = `num_actions`),
    reward and `done` as `Agent.unroll` takes them. The network below the LSTM has no recurrence, so a whole sequence
    goes through it at once."""

    def __init__(self, num_actions: int, impala_channels=(16, 32, 32), resnet_hidden: int = 256, core_hidden: int = 256,
                 in_channels: int = 4):  # fmt: skip
        super().__init__()
        self.num_actions, self.in_channels = num_actions, in_channels
        self.vision = ResidualNetwork(impala_channels, resnet_hidden, in_channels)
        self.lstm = nn.LSTMCell(resnet_hidden + 1 + num_actions, core_hidden)
        for name, param in self.lstm.named_parameters():  # orthogonal weights, zero biases
            nn.init.orthogonal_(param, 1.0) if "weight" in name else nn.init.constant_(param, 0)
        self.actor = layer_init(nn.Linear(core_hidden, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(core_hidden, 1), std=1)

    def initial_state(self, num_envs: int, device) -> tuple[torch.Tensor, ...]:
        core = torch.zeros(num_envs, self.lstm.hidden_size, device=device)
        return (core, core.clone())

    def unroll(self, x, state, prev_action, prev_reward, done):
        """Runs a time-major sequence: x (T * N, C, 84, 84), prev_action / prev_reward / done (T * N,), state
        at its start. Returns the LSTM outputs (T * N, core_hidden) and the state after the sequence."""
        num_envs = state[0].shape[0]
        prev_action = F.one_hot(prev_action, self.num_actions + 1)[:, : self.num_actions]  # "none" -> zeros: (T * N, A)
        inputs = torch.cat([self.vision(x).float(), prev_reward[:, None], prev_action.float()], 1)  # (T * N, F)
        inputs = inputs.reshape(-1, num_envs, inputs.shape[-1])  # (T * N, F) -> (T, N, F)
        keep = (1.0 - done).reshape(-1, num_envs)  # (T * N,) -> (T, N)
        outputs = []
        # unbind, not [t]: autograd would back-propagate each [t] through a zero-filled copy of the whole sequence
        for step_inputs, step_keep in zip(inputs.unbind(0), keep.unbind(0)):
            core_h, state = self.step(step_inputs, step_keep, state)
            outputs.append(core_h)
        return torch.cat(outputs), state  # (T * N, core_hidden)

    def step(self, inputs, keep, state):
        """One LSTM step on (N, F) inputs; `keep` (N,) is 0 where the observation ended an episode. Returns (output
        (N, core_hidden), the state after the step: zeros where an episode ended)."""
        core_h, core_c = in_fp32(self.lstm, inputs, state)
        return core_h, (core_h * keep[:, None], core_c * keep[:, None])

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, state, prev_action=None, prev_reward=None) -> dict[str, torch.Tensor]:
        """{}: no attention (the tools then say the agent has no map)."""
        return {}


def make_agent(args: Args, num_actions: int) -> nn.Module:
    in_channels = 3 if args.frame_input == "rgb" else 4  # one RGB frame, or 4 grey ones
    if args.agent == "resnet":
        return ResNetAgent(num_actions, tuple(args.impala_channels), args.resnet_hidden, in_channels)
    if args.agent == "resnet_lstm":
        return ResNetLSTMAgent(num_actions, tuple(args.impala_channels), args.resnet_hidden, args.core_hidden, in_channels)
    return Agent(num_actions, args.query_mode, args.num_queries, args.key_channels, args.value_channels,
                 args.basis_frequencies, args.conv_channels, args.core_hidden, args.mlp_hidden, args.query_hidden,
                 in_channels)  # fmt: skip


def variant_name(args: Args) -> str:
    """The architecture's name in run folders and checkpoints: the attention agent's query mode (`topdown`, `fixed`,
    `l2norm`), else the baseline (`resnet`, `resnet_lstm`)."""
    return args.query_mode if args.agent == "attention" else args.agent


# the settings only some agents read: giving one to another agent is refused rather than silently ignored
ATTENTION_FIELDS = ("query_mode", "num_queries", "key_channels", "value_channels", "basis_frequencies", "conv_channels",
                    "mlp_hidden", "query_hidden")  # fmt: skip
RESNET_FIELDS = ("impala_channels", "resnet_hidden")


def check_args(args: Args) -> None:
    """Refuse, in one line and before anything is built, settings that cannot run."""
    batch_size = args.num_envs * args.num_steps
    defaults = Args()
    unused = [
        f
        for f in {"attention": RESNET_FIELDS, "resnet": ATTENTION_FIELDS + ("core_hidden",)}.get(args.agent, ATTENTION_FIELDS)
        if getattr(args, f) != getattr(defaults, f)
    ]
    query_hidden = (args.query_hidden,) if isinstance(args.query_hidden, int) else tuple(args.query_hidden)
    problems = [
        (args.eval_only and args.resume is None, "--eval-only evaluates a checkpoint: name it with --resume PATH"),
        (args.eval_env_id is not None and not args.eval_only, "--eval-env-id is only used with --eval-only"),
        (args.eval_dir is not None and not args.eval_only, "--eval-dir is only used with --eval-only"),
        (args.eval_episodes < 1, f"--eval-episodes {args.eval_episodes}: give at least 1"),
        (min(args.num_envs, args.num_steps) < 1, f"--num-envs {args.num_envs} and --num-steps {args.num_steps} must be >= 1"),
        (min(args.num_minibatches, args.update_epochs) < 1, "--num-minibatches and --update-epochs must be >= 1"),
        (not (0 < args.gamma <= 1 and 0 < args.gae_lambda <= 1), "--gamma and --gae-lambda must be in (0, 1]"),
        (
            min(args.learning_rate, args.clip_coef, args.max_grad_norm) <= 0,
            "--learning-rate, --clip-coef and --max-grad-norm must be > 0",
        ),
        (min(args.ent_coef, args.vf_coef) < 0, "--ent-coef and --vf-coef must be >= 0"),
        (
            args.target_kl is not None and args.target_kl <= 0,
            f"--target-kl {args.target_kl}: give a value > 0 or leave it unset",
        ),
        (min(args.eval_freq, args.save_freq) < 1, "--eval-freq and --save-freq must be >= 1"),
        (
            min(args.torch_threads, args.env_threads) < 0 or args.rollout_threads < 1,
            "thread counts must be >= 1 (0 = all cores where allowed)",
        ),
        (
            args.total_timesteps < batch_size,
            f"--total-timesteps {args.total_timesteps} is smaller than one batch (num_envs x num_steps = {batch_size})",
        ),
        (
            args.num_minibatches > 0 and batch_size % args.num_minibatches != 0,
            f"batch size {batch_size} is not divisible into --num-minibatches {args.num_minibatches}",
        ),
        (
            args.num_minibatches > 0 and args.num_envs % args.num_minibatches != 0,
            f"--num-envs {args.num_envs} is not divisible by --num-minibatches {args.num_minibatches} "
            "(minibatches are made of whole environments)",
        ),
        (
            bool(unused),
            f"{', '.join('--' + f.replace('_', '-') for f in unused)} {'does' if len(unused) == 1 else 'do'} not apply to "
            f"--agent {args.agent}",
        ),
        (
            args.save_attention and args.agent != "attention",
            f"--save-attention draws the attention maps and --agent {args.agent} has none; leave it out "
            "(--capture-video records its games)",
        ),
        (
            not query_hidden or min(query_hidden) < 1,
            f"--query-hidden {' '.join(map(str, query_hidden))}: give one or more hidden sizes, each at least 1",
        ),
        (
            not args.impala_channels or min(args.impala_channels) < 1 or args.resnet_hidden < 1,
            f"--impala-channels {' '.join(map(str, args.impala_channels))} and --resnet-hidden {args.resnet_hidden} "
            "must be positive",
        ),
        (
            args.query_mode == "l2norm" and args.key_channels % max(args.num_queries, 1) != 0,
            f"--query-mode l2norm gives each of the {args.num_queries} heads an equal slice of the --key-channels "
            f"{args.key_channels}: make them divisible",
        ),
    ]
    for failed, problem in problems:
        if failed:
            sys.exit(f"error: {problem}")
    for env_id in (args.env_id, args.eval_env_id or args.env_id):
        parse_game(env_id)


def compute_gae(rewards, values, dones, terminals, next_value, next_done, next_terminal, gamma, gae_lambda):
    """GAE over a (T, N) rollout. dones[t]: obs[t] ended an episode (life) and the step taken from it is
    envpool's reset step; terminals[t]: that end was a termination, not a time limit. A time limit
    bootstraps from the value of its final observation (as SB3 does); any end cuts the lambda chain.
    Returns (advantages, returns)."""
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    num_steps = rewards.shape[0]
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextvalues, nextdone, nextterminal = next_value, next_done, next_terminal
        else:
            nextvalues, nextdone, nextterminal = values[t + 1], dones[t + 1], terminals[t + 1]
        delta = rewards[t] + gamma * nextvalues * (1.0 - nextterminal) - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * (1.0 - nextdone) * lastgaelam
    return advantages, advantages + values


class Memory:
    """What a recurrent agent carries from step to step over N games outside the training loop (evaluation,
    videos, pictures): its state, previous action and clipped reward, and whether the last observation ended
    an episode or a life. A life loss resets the state as in training (where it ends the episode), so a
    full-game evaluation shows the agent the state dynamics it was trained with."""

    def __init__(self, agent, num_envs: int, device):
        self.none = agent.num_actions  # the "no previous action" index
        self.state = agent.initial_state(num_envs, device)
        self.prev_action = torch.full((num_envs,), self.none, dtype=torch.long, device=device)
        self.prev_reward = torch.zeros(num_envs, device=device)
        self.done = torch.zeros(num_envs, device=device)
        self.action = self.prev_action

    def act(self, agent, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for obs (N, C, 84, 84); the state advances (`state_before` keeps the one obs was seen with)."""
        self.state_before = self.state
        self.action, _, _, _, self.state = agent.get_action_and_value(
            obs, self.state, self.prev_action, self.prev_reward, self.done, deterministic=deterministic
        )
        return self.action

    def observe(self, reward, episode_end) -> None:
        """After the env step: its (unclipped) rewards and whether each new observation ends a life or game."""
        ended = self.done.bool()  # the step just taken left an ended episode: the new observation starts one
        self.prev_action = torch.where(ended, torch.full_like(self.action, self.none), self.action)
        reward = torch.as_tensor(np.sign(reward), dtype=torch.float32, device=self.done.device).reshape(-1)
        self.prev_reward = torch.where(ended, torch.zeros_like(reward), reward)
        self.done = torch.as_tensor(episode_end, dtype=torch.float32, device=self.done.device).reshape(-1)


def evaluate(agent, envs, num_episodes, device, autocast, deterministic=False, on_episode=None):
    """`num_episodes` full (unclipped) games on the evaluation pool. Each env plays a number of episodes
    fixed in advance (not "the first N to finish", which would favour short episodes). Returns the
    per-episode (returns, lengths in agent steps, env indices); `on_episode(return, length, env)` is called as
    each game ends. The agent's `Memory` is reset at every lost life, as in training."""
    obs, _ = envs.reset()
    num_envs = len(obs)
    quota = num_episodes // num_envs + (np.arange(num_envs) < num_episodes % num_envs)
    played = np.zeros(num_envs, dtype=int)
    running_returns = np.zeros(num_envs)
    returns, lengths, env_ids = [], [], []
    memory, lives = Memory(agent, num_envs, device), None
    while (played < quota).any():
        with torch.no_grad(), autocast():
            action = memory.act(agent, torch.from_numpy(obs).to(device), deterministic=deterministic)
        obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
        life_lost = np.zeros(num_envs, dtype=bool) if lives is None else info["lives"] < lives
        lives = info["lives"]
        memory.observe(info["reward"], terminated | truncated | life_lost)
        counting = played < quota
        running_returns += np.where(counting, info["reward"], 0.0)
        for i in np.flatnonzero((terminated | truncated) & counting):
            returns.append(running_returns[i])
            lengths.append(int(info["elapsed_step"][i]))
            env_ids.append(i)
            running_returns[i] = 0.0
            played[i] += 1
            if on_episode is not None:
                on_episode(returns[-1], lengths[-1], i)
    return np.array(returns), np.array(lengths), np.array(env_ids)


def write_atomically(path: str, write) -> None:
    """`write(f)` into a hidden temporary file beside `path`, flushed to disk, then renamed over `path`: a kill or a
    full disk mid-write leaves the previous file (or none) under the name, never a truncated one."""
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        sys.exit(
            f"error: cannot write {path} ({error.strerror}); everything written before is intact: free space or fix "
            f"permissions, then continue with --resume {os.path.dirname(path)}"
        )
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_checkpoint(path: str, agent, optimizer, args: Args, global_step: int, iteration: int) -> None:
    """Everything a resumed run needs: weights, optimizer, settings, counters and the RNG states."""
    device = next(agent.parameters()).device
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "device": device.type}
    if device.type == "cuda":  # actions are sampled on the device: its random stream is part of the run's state
        rng["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        rng["mps"] = torch.mps.get_rng_state()
    checkpoint = {"model": agent.state_dict(), "optimizer": optimizer.state_dict(), "args": vars(args), "rng": rng}
    checkpoint.update(
        global_step=global_step, iteration=iteration, script=os.path.basename(__file__), variant=variant_name(args)
    )
    serialized = io.BytesIO()  # in memory first: a full disk then fails in write_atomically, with a clear message
    torch.save(checkpoint, serialized)
    write_atomically(path, lambda f: f.write(serialized.getbuffer()))


def load_checkpoint(checkpoint: dict, agent, optimizer) -> tuple[int, int]:
    """Restore a `save_checkpoint` dict; returns (global_step, the iteration to start from)."""
    agent.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    else:
        print("resume: no optimizer state in the checkpoint (an exported agent, e.g. zoo/): fresh Adam, a new run folder")
    random.setstate(checkpoint["rng"]["python"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    device, saved_device = next(agent.parameters()).device, checkpoint["rng"].get("device", "cpu")
    if device.type == saved_device == "cuda":
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
    elif device.type == saved_device == "mps":
        torch.mps.set_rng_state(checkpoint["rng"]["mps"])
    elif device.type != saved_device:
        print(f"resume: written on {saved_device}, continuing on {device.type}: weights and optimizer moved; the sampling "
              f"random stream starts afresh from the CPU one (a {saved_device} stream does not carry over)")  # fmt: skip
    return checkpoint["global_step"], checkpoint["iteration"] + 1


STOP_SIGNALS = []  # SIGINT/SIGTERM received: the loop stops after the current iteration, with a checkpoint


def request_stop(signum, frame) -> None:
    """The first Ctrl-C or SIGTERM (schedulers, preemption) asks for a clean stop; the default handlers are put back,
    so a second one stops the run at once."""
    STOP_SIGNALS.append(signum)
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.SIG_DFL)
    os.write(
        2, f"\n{signal.Signals(signum).name}: stopping after this iteration with a checkpoint (again: stop now)\n".encode()
    )


def receive(
    envs, rows: slice, rewards_row, dones_row, next_obs, next_done, next_terminal, next_prev_reward, episode_returns
) -> list:
    """Collect the step a pool of envs (`rows` of the batch) executed: its reward into `rewards_row` (the buffer row
    of the step) and, as the next step's previous reward, into `next_prev_reward` (0 after a reset step, taken from
    an episode's last observation per `dones_row`: a new episode starts clean), the next observations and episode
    ends into `next_*`. Returns (full-game return, length) for every game that ended (all lives lost, or the time
    limit)."""
    obs, reward, terminated, truncated, info = envs.recv()
    scalars = np.stack([reward, terminated | truncated, terminated]).astype(np.float32)  # (3, n)
    rewards_row[rows], next_done[rows], next_terminal[rows] = torch.from_numpy(scalars).to(rewards_row.device)  # one copy
    next_prev_reward[rows] = rewards_row[rows] * (1.0 - dones_row[rows])
    next_obs[rows] = torch.from_numpy(obs).to(next_obs.device)
    episode_returns[rows] += info["reward"]
    finished = []
    for i in np.flatnonzero(info["terminated"] | truncated):
        finished.append((episode_returns[rows.start + i], int(info["elapsed_step"][i])))
        episode_returns[rows.start + i] = 0.0
    return finished


if __name__ == "__main__":
    args = tyro.cli(Args)
    checkpoint = None
    if args.resume is not None:  # the experiment's settings, counters, weights and RNG states come from the checkpoint
        args, checkpoint = import_optional("runs", "--resume").resume(args, os.path.basename(__file__))
    check_args(args)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    game = parse_game(args.env_id)
    # the optional features asked for are imported now, so a missing package stops the run before any work
    pictures = (
        import_optional("pictures", "--capture-video and --save-attention")
        if args.capture_video or args.save_attention
        else None
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    num_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.torch_threads or num_cores)
    cuda, mps = args.cuda and torch.cuda.is_available(), args.cuda and torch.backends.mps.is_available()
    device = torch.device("cuda" if cuda else "mps" if mps else "cpu")
    precision_reason = "given"
    if args.precision == "auto":
        args.precision, precision_reason = auto_precision(device)
    configure_determinism(args.torch_deterministic, args.precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext

    if args.eval_only:  # the long evaluation of a checkpoint (Free-Lunch Saliency: 8192 episodes on unseen seeds)
        import_optional("runs", "--eval-only").eval_only(sys.modules[__name__], args, checkpoint, device, autocast)
        sys.exit(0)

    # a resumed run goes on in its checkpoint's folder; an exported agent (no optimizer, e.g. zoo/) starts a new one
    if checkpoint is not None and "optimizer" in checkpoint:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        run_dir = base_dir = os.path.join(
            "runs", f"{game}__{args.exp_name}__{variant_name(args)}__{args.seed}__{int(time.time())}"
        )
        copy = 1
        while os.path.exists(run_dir):  # same second, same settings: never reuse a folder
            copy += 1
            run_dir = f"{base_dir}-{copy}"
    run_name = os.path.basename(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        sys.exit(f"error: the run folder {run_dir} is not writable; fix its permissions (or copy the checkpoint elsewhere)")

    # env setup: two half pools stepped alternately, so one half runs the emulators (envpool's C++
    # threads) while the policy acts on the other half
    num_groups = 2 if args.num_envs % 2 == 0 else 1
    group_size = args.num_envs // num_groups
    env_threads = args.env_threads or num_cores
    rgb = args.frame_input == "rgb"
    env_groups = [make_env(game, group_size, args.seed + g * group_size, True, env_threads, rgb) for g in range(num_groups)]
    group_rows = [slice(g * group_size, (g + 1) * group_size) for g in range(num_groups)]
    eval_envs = make_env(game, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, False, env_threads, rgb)
    num_actions = int(env_groups[0].action_space.n)  # a plain int: torch.compile turns numpy scalars into arrays

    agent = make_agent(args, num_actions).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    global_step, start_iteration = load_checkpoint(checkpoint, agent, optimizer) if checkpoint is not None else (0, 1)
    if args.compile:  # the agent's per-step cell, not the unrolled sequence (`compile_core`)
        agent.compile_core()
    get_action_and_value, get_value = agent.get_action_and_value, agent.get_value

    # logging: tensorboard (+ wandb), evals.csv, args.json
    if args.track:
        import wandb

        wandb_run = dict(name=run_name, id=run_name, resume="allow", save_code=True, dir=run_dir)
        wandb.init(
            project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args), **wandb_run
        )
    # on resume, tensorboard hides what the interrupted run logged past the checkpoint
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint is not None else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    args_path, evals_path = os.path.join(run_dir, "args.json"), os.path.join(run_dir, "evals.csv")
    if not os.path.exists(args_path):
        write_atomically(args_path, lambda f: f.write(json.dumps(vars(args), indent=2).encode()))
    if not os.path.exists(evals_path):
        write_atomically(evals_path, lambda f: f.write(b"global_step,mean_return,std_return,episode_returns\n"))

    # ALGO Logic: Storage setup (observations stay uint8; the network divides by 255)
    obs_shape = tuple(env_groups[0].observation_space.shape)  # (4, 84, 84) grey frames, or (3, 84, 84) one RGB frame
    obs_buf = torch.zeros((args.num_steps, args.num_envs, *obs_shape), dtype=torch.uint8, device=device)
    actions_buf = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminals_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    values_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    prev_actions_buf = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    prev_rewards_buf = torch.zeros((args.num_steps, args.num_envs), device=device)

    # TRY NOT TO MODIFY: start the game
    next_obs = torch.zeros((args.num_envs, *obs_shape), dtype=torch.uint8, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    next_terminal = torch.zeros(args.num_envs, device=device)
    # recurrent inputs of the next step: the agent's state (env dimension first), previous action ("none" = num_actions)
    # and previous clipped reward
    next_state = agent.initial_state(args.num_envs, device)
    next_prev_action = torch.full((args.num_envs,), num_actions, dtype=torch.long, device=device)
    next_prev_reward = torch.zeros(args.num_envs, device=device)
    for g, envs in enumerate(env_groups):
        next_obs[group_rows[g]] = torch.from_numpy(envs.reset()[0]).to(device)
    episode_returns = np.zeros(args.num_envs)  # full-game, unclipped (summed over lives)
    sent_step = [None] * num_groups  # the rollout step whose actions a group's emulators are executing, or None
    last_return, last_eval = float("nan"), float("nan")
    next_eval = (global_step // args.eval_freq + 1) * args.eval_freq
    next_save = (global_step // args.save_freq + 1) * args.save_freq
    last_checkpoint = args.resume if checkpoint is not None else None
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    progress = tqdm(
        total=args.num_iterations * args.batch_size,
        initial=global_step,
        unit="step",
        dynamic_ncols=True,
        disable=not sys.stderr.isatty(),
    )
    print(
        f"{run_name}: {variant_name(args)} on {game}, {args.num_iterations * args.batch_size:,} steps, device {device}, "
        f"precision {args.precision} ({precision_reason}), outputs in {run_dir}"
    )
    start_time, start_step = time.time(), global_step
    for iteration in range(start_iteration, args.num_iterations + 1):
        iteration_start = time.time()
        env_time = policy_time = 0.0
        # Annealing the rate and the clip coefficient if instructed to do so (both x alpha, alpha 1 -> 0)
        frac = 1.0 - (iteration - 1.0) / args.num_iterations
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate if args.anneal_lr else args.learning_rate
        clip_coef = frac * args.clip_coef if args.anneal_clip else args.clip_coef
        torch.set_num_threads(args.rollout_threads)
        initial_state = tuple(s.clone() for s in next_state)  # the update replays each env's sequence from here

        # one autocast region for the whole rollout: bf16 copies of the weights are made once, not every step
        finished = []  # (return, length) of the games that ended
        with torch.no_grad(), autocast():
            for step in range(0, args.num_steps):
                global_step += args.num_envs
                for g, envs in enumerate(env_groups):
                    rows = group_rows[g]
                    obs_buf[step, rows] = next_obs[rows]
                    dones_buf[step, rows] = next_done[rows]
                    terminals_buf[step, rows] = next_terminal[rows]

                    prev_actions_buf[step, rows] = next_prev_action[rows]
                    prev_rewards_buf[step, rows] = next_prev_reward[rows]

                    # ALGO LOGIC: action logic
                    tic = time.time()
                    state = tuple(s[rows] for s in next_state)
                    action, logprob, _, value, state = get_action_and_value(
                        next_obs[rows], state, next_prev_action[rows], next_prev_reward[rows], next_done[rows]
                    )
                    for s, new in zip(next_state, state):  # zeros after an episode's last observation
                        s[rows] = new
                    next_prev_action[rows] = torch.where(next_done[rows].bool(), num_actions, action)
                    values_buf[step, rows] = value.flatten()
                    actions_buf[step, rows] = action
                    logprobs_buf[step, rows] = logprob
                    action_np = action.cpu().numpy()
                    policy_time += time.time() - tic

                    # TRY NOT TO MODIFY: execute the game; collect the other group (one group: itself) while this one steps
                    tic = time.time()
                    envs.send(action_np)
                    sent_step[g] = step
                    if sent_step[g - 1] is not None:
                        finished += receive(
                            env_groups[g - 1],
                            group_rows[g - 1],
                            rewards_buf[sent_step[g - 1]],
                            dones_buf[sent_step[g - 1]],
                            next_obs,
                            next_done,
                            next_terminal,
                            next_prev_reward,
                            episode_returns,
                        )
                        sent_step[g - 1] = None
                    env_time += time.time() - tic
            tic = time.time()
            for g in range(num_groups):
                if sent_step[g] is not None:
                    finished += receive(
                        env_groups[g],
                        group_rows[g],
                        rewards_buf[sent_step[g]],
                        dones_buf[sent_step[g]],
                        next_obs,
                        next_done,
                        next_terminal,
                        next_prev_reward,
                        episode_returns,
                    )
                    sent_step[g] = None
            env_time += time.time() - tic

            # bootstrap value if not done
            next_value = get_value(next_obs, next_state, next_prev_action, next_prev_reward, next_done).reshape(1, -1)
        for last_return, length in finished:
            writer.add_scalar("charts/episodic_return", last_return, global_step)
            writer.add_scalar("charts/episodic_length", length, global_step)
        advantages, returns = compute_gae(
            rewards_buf,
            values_buf,
            dones_buf,
            terminals_buf,
            next_value,
            next_done,
            next_terminal,
            args.gamma,
            args.gae_lambda,
        )
        # a step taken from an episode's final observation is envpool's reset step (action ignored, no reward): not trained on
        valid = 1.0 - dones_buf

        # flatten the batch
        b_obs = obs_buf.reshape((-1, *obs_shape))  # (T * N, C, 84, 84)
        b_logprobs = logprobs_buf.reshape(-1)
        b_actions = actions_buf.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values_buf.reshape(-1)
        b_valid = valid.reshape(-1)
        b_prev_actions = prev_actions_buf.reshape(-1)
        b_prev_rewards = prev_rewards_buf.reshape(-1)
        b_dones = dones_buf.reshape(-1)

        # Optimizing the policy and value network
        update_start = time.time()
        torch.set_num_threads(args.torch_threads or num_cores)
        # minibatches of whole environments: each env's sequence is replayed from the rollout's initial state
        envs_per_batch = args.num_envs // args.num_minibatches
        env_inds = np.arange(args.num_envs)
        flat_inds = np.arange(args.batch_size).reshape(args.num_steps, args.num_envs)
        clipfracs = []
        skipped_minibatches = 0
        for epoch in range(args.update_epochs):
            np.random.shuffle(env_inds)
            for start in range(0, args.num_envs, envs_per_batch):
                mb_envs = env_inds[start : start + envs_per_batch]
                mb_inds = torch.from_numpy(flat_inds[:, mb_envs].ravel()).to(device)  # (T * n,) time-major
                mb_state = tuple(s[torch.from_numpy(mb_envs).to(device)] for s in initial_state)
                mb_valid = b_valid[mb_inds]
                num_valid = mb_valid.sum().clamp(min=1.0)

                with autocast():
                    _, newlogprob, entropy, newvalue, _ = get_action_and_value(
                        b_obs[mb_inds],
                        mb_state,
                        b_prev_actions[mb_inds],
                        b_prev_rewards[mb_inds],
                        b_dones[mb_inds],
                        b_actions[mb_inds],
                    )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                if epoch == 0 and start == 0:  # before any gradient step the replay must reproduce the rollout exactly
                    replay_logprob_error = logratio.abs().max().item()
                    replay_value_error = (newvalue.view(-1) - b_values[mb_inds]).abs().max().item()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = ((-logratio) * mb_valid).sum() / num_valid
                    approx_kl = (((ratio - 1) - logratio) * mb_valid).sum() / num_valid
                    clipfracs += [(((ratio - 1.0).abs() > clip_coef).float() * mb_valid).sum() / num_valid]  # on the device

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    adv_mean = (mb_advantages * mb_valid).sum() / num_valid
                    adv_std = (((mb_advantages - adv_mean) ** 2 * mb_valid).sum() / (num_valid - 1).clamp(min=1.0)).sqrt()
                    mb_advantages = (mb_advantages - adv_mean) / (adv_std + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
                pg_loss = (torch.max(pg_loss1, pg_loss2) * mb_valid).sum() / num_valid

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -clip_coef, clip_coef)
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = (torch.max(v_loss_unclipped, v_loss_clipped) * mb_valid).sum() / num_valid
                else:
                    v_loss = (((newvalue - b_returns[mb_inds]) ** 2) * mb_valid).sum() / num_valid

                entropy_loss = (entropy * mb_valid).sum() / num_valid
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef + agent.auxiliary_loss()

                optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                if not torch.isfinite(loss + grad_norm):  # NaN/inf never reaches the weights (--nan-policy)
                    skipped_minibatches += 1
                    if args.nan_policy == "stop":
                        break
                    continue
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl or skipped_minibatches and args.nan_policy == "stop":
                break
        if skipped_minibatches and args.nan_policy == "stop":
            writer.add_scalar("losses/skipped_minibatches", skipped_minibatches, global_step)
            writer.close()
            sys.exit(
                f"error: non-finite loss or gradient at iteration {iteration} (step {global_step}), stopped before the "
                f"optimizer step; last good checkpoint: {last_checkpoint} (continue with --resume and --nan-policy skip, "
                "or start again with other settings)"
            )
        update_time = time.time() - update_start

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # evaluation (small batches: acting threads, the other cores run the emulators)
        eval_start = time.time()
        torch.set_num_threads(args.rollout_threads)
        if global_step >= next_eval or iteration == args.num_iterations:
            eval_returns = evaluate(agent, eval_envs, args.eval_episodes, device, autocast, args.eval_deterministic)[0]
            last_eval, next_eval = eval_returns.mean(), (global_step // args.eval_freq + 1) * args.eval_freq
            writer.add_scalar("eval/mean_return", eval_returns.mean(), global_step)
            writer.add_scalar("eval/std_return", eval_returns.std(), global_step)
            with open(evals_path) as f:  # rewritten whole, atomically: a kill never leaves half a row
                evals_text = f.read()
            episodes = ";".join(f"{r:g}" for r in eval_returns)
            evals_text += f"{global_step},{eval_returns.mean():.4f},{eval_returns.std():.4f},{episodes}\n"
            write_atomically(evals_path, lambda f: f.write(evals_text.encode()))
            progress.write(
                f"global_step={global_step}, eval mean_return={eval_returns.mean():.2f} +- {eval_returns.std():.2f}"
            )
            if args.capture_video:
                video_path = os.path.join(run_dir, "videos", f"eval_step_{global_step:09d}.mp4")
                os.makedirs(os.path.dirname(video_path), exist_ok=True)
                video_seed = args.seed + VIDEO_SEED_OFFSET + global_step
                pictures.record_video(
                    sys.modules[__name__], agent, game, video_seed, device, autocast, video_path, args.eval_deterministic
                )
                if args.track:
                    wandb.log({"eval/video": wandb.Video(video_path, format="mp4"), "global_step": global_step})
        eval_time = time.time() - eval_start

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        iteration_time = time.time() - iteration_start
        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("charts/clip_coef", clip_coef, global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("losses/skipped_minibatches", skipped_minibatches, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        writer.add_scalar("debug/replay_logprob_error", replay_logprob_error, global_step)
        writer.add_scalar("debug/replay_value_error", replay_value_error, global_step)
        for tag, value in agent.logged_scalars().items():
            writer.add_scalar(tag, value, global_step)
        writer.add_scalar("perf/env_s", env_time, global_step)
        writer.add_scalar("perf/policy_s", policy_time, global_step)
        writer.add_scalar("perf/update_s", update_time, global_step)
        writer.add_scalar("perf/eval_s", eval_time, global_step)
        writer.add_scalar("perf/other_s", iteration_time - env_time - policy_time - update_time - eval_time, global_step)
        progress.set_postfix(SPS=sps, episodic_return=f"{last_return:.1f}", eval_return=f"{last_eval:.1f}", refresh=False)
        progress.update(args.batch_size)
        if progress.disable and (iteration % max(1, args.num_iterations // 20) == 0 or iteration == args.num_iterations):
            eta = (args.num_iterations - iteration) * args.batch_size / max(sps, 1)
            print(
                f"global_step={global_step}/{args.num_iterations * args.batch_size}, SPS={sps}, ETA={eta / 60:.1f} min, "
                f"episodic_return={last_return:.1f}",
                flush=True,
            )

        # checkpoints once the iteration's logs are on disk, so a run killed later resumes with no gap in its history
        stopping = STOP_SIGNALS and iteration < args.num_iterations  # Ctrl-C / SIGTERM: a checkpoint now, then stop
        if stopping or args.save_model and (global_step >= next_save or iteration == args.num_iterations):
            writer.flush()
            checkpoint_path = os.path.join(run_dir, f"step_{global_step:09d}.cleanrl_model")
            save_checkpoint(checkpoint_path, agent, optimizer, args, global_step, iteration)
            last_checkpoint, next_save = checkpoint_path, (global_step // args.save_freq + 1) * args.save_freq
        if stopping:
            break

    progress.close()
    if last_checkpoint is not None:
        print(f"checkpoint: {last_checkpoint}")
    if stopping:
        track = " --track" if args.track else ""
        print(f"stopped at step {global_step} by {signal.Signals(STOP_SIGNALS[0]).name}; to continue:")
        print(f"python {sys.argv[0]} --resume {last_checkpoint}{track}", flush=True)
        if args.track:
            wandb.mark_preempting()  # a sweep agent sees the run as preempted, not failed
    elif args.save_attention:
        attention_path = os.path.join(run_dir, f"attention_step_{global_step:09d}.png")
        picture_seed = args.seed + PICTURE_SEED_OFFSET
        pictures.save_attention_grid(sys.modules[__name__], agent, game, picture_seed, device, autocast, attention_path)
        print(f"attention grid: {attention_path}")
        if args.track:
            wandb.log({"eval/attention": wandb.Image(attention_path), "global_step": global_step})
    for envs in env_groups + [eval_envs]:
        envs.close()
    writer.close()
    if args.track:
        wandb.finish(exit_code=128 + STOP_SIGNALS[0] if stopping else 0)
    if stopping:
        sys.exit(128 + STOP_SIGNALS[0])
