# PPO on Atari with a divided space-time Vision Transformer over the 4 stacked frames: the TimeSformer agent of
# "Neural architecture impact on identifying temporally extended Reinforcement Learning tasks" (arXiv 2310.03161),
# after "Is Space-Time Attention All You Need for Video Understanding?" (Bertasius et al. 2021). Hyper-parameters
# and training loop those of ppo_atari_selfattn.py (CleanRL's ppo_atari_envpool.py in shape); the thesis trained
# with IMPALA / V-trace tuned per game, which this PPO loop does not reproduce.
import importlib
import io
import json
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
    """if toggled, a PNG grid (the 4 input frames under the CLS attention | the screen under the attention rollout) of a
    few evaluation states is written at the end"""

    # Algorithm specific arguments (the paper's table; Stable-Baselines3 2.0 defaults elsewhere)
    env_id: str = "Breakout"
    """the Atari game: `Pong`, `Pong-v5`, `PongNoFrameskip-v4` and `ALE/Pong-v5` all name the same game"""
    total_timesteps: int = 10_000_000
    """total agent steps (one step = 4 emulator frames) summed over all environments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 16
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing (linearly to 0)"""
    anneal_clip: bool = True
    """toggle clip coefficient annealing (linearly to 0)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 8
    """the number of mini-batches (8 x 256 = the paper's 16 x 128 batch)"""
    update_epochs: int = 3
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    clip_vloss: bool = False
    """toggles the use of a clipped loss for the value function (off in SB3)"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 1.0
    """coefficient of the value loss, a plain mean squared error as in SB3 (no 1/2 factor)"""
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
    """if toggled, the network is compiled with torch.compile"""
    torch_threads: int = 0
    """torch intra-op threads for the update (minibatches of `minibatch_size`); 0 = all cores"""
    rollout_threads: int = 1
    """torch intra-op threads while acting (small batches: the other cores run the emulators)"""
    env_threads: int = 0
    """envpool worker threads for each half of the envs; 0 = one per core"""

    # Architecture
    # (`cpu` sizes: trained at 63-75% of the SPS of ppo_atari_selfattn.py's NA agent on a 2-core CPU; one head: two
    # heads train about 30% slower there)
    preset: Literal["cpu", "gpu"] = "cpu"
    """the network sizes left unset take this preset's: `cpu` D 16, 1 head, 1 block, MLP x2, 12x12 patches (6,645
    parameters for Breakout); `gpu` D 64, 4 heads, 2 blocks, MLP x4, 12x12 patches (146,693). A size given on the
    command line always wins over the preset"""
    embed_dim: Optional[int] = None
    """token embedding size D (unset: the preset's)"""
    heads: Optional[int] = None
    """attention heads in each time and space attention, must divide `embed_dim` (unset: the preset's)"""
    depth: Optional[int] = None
    """divided space-time blocks (time attention, space attention, MLP) (unset: the preset's)"""
    mlp_ratio: Optional[int] = None
    """hidden size of each block's MLP, as a multiple of `embed_dim` (unset: the preset's)"""
    patch_size: Optional[Literal[4, 6, 7, 12, 14, 21, 28, 42]] = None
    """side of the square patches each 84x84 frame is cut into, 12: 7x7 = 49 tokens per frame (unset: the preset's)"""
    pos_encoding: Literal["gaussian", "sinusoidal"] = "gaussian"
    """how the learned space and time position embeddings start: `gaussian` N(0, 0.02^2) as in ViT and TimeSformer,
    `sinusoidal` the sine/cosine table of "Attention Is All You Need" over the patch index and the frame index (the
    thesis compared the two initialisations and found the sinusoidal one no better)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""

    # the sizes of each `--preset` (not a dataclass field: no annotation)
    PRESETS = {
        "cpu": {"embed_dim": 16, "heads": 1, "depth": 1, "mlp_ratio": 2, "patch_size": 12},
        "gpu": {"embed_dim": 64, "heads": 4, "depth": 2, "mlp_ratio": 4, "patch_size": 12},
    }

    def __post_init__(self):
        """Fill the sizes left unset (None) from the preset: explicit values, on the command line or from a
        checkpoint's args, are never overridden."""
        for name, value in self.PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)


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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, q (B, heads, Lq, d), k and v (B, heads, Lk, d) -> (softmax(q k^T / sqrt(d)) v
    (B, heads, Lq, d), the weights (B, heads, Lq, Lk)). Plain matmuls, the softmax in fp32: on a 2-core CPU they
    beat torch's fused scaled_dot_product_attention at these sizes (sequences of 4 and 50), one PPO minibatch
    taking about 0.6-0.75x its time, and they give the weights for the maps from the same code."""
    weights = torch.softmax((q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5, dim=-1)  # (B, heads, Lq, Lk)
    return weights.to(v.dtype) @ v, weights


class DividedSpaceTimeBlock(nn.Module):
    """One block of divided space-time attention (TimeSformer, "Is Space-Time Attention All You Need for Video
    Understanding?", Bertasius et al. 2021, Fig. 1 "T+S"; the thesis' TimeSformer agent), pre-LayerNorm with a
    residual around each part: time attention (each patch position attends to itself in the T frames), then
    space attention (within each frame), then an MLP (Linear D -> ratio x D, GELU, Linear back) on every token.
    Each attention: q, k, v from one Linear(D -> 3D), `heads` heads of D / heads features, the heads concatenated
    and projected by Linear(D -> D).

    The CLS token, as in TimeSformer, takes no part in time attention and joins the space attention of every
    frame: the patches of a frame attend to [CLS, the frame's patches]; the CLS query attends to each frame's
    patches (a softmax over that frame's P patches; its own value reaches it through the residual) and its T
    per-frame outputs are averaged."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible into {heads} heads")
        self.heads = heads
        self.norm_time = nn.LayerNorm(dim)
        self.time_qkv = layer_init(nn.Linear(dim, 3 * dim), std=1.0)
        self.time_out = layer_init(nn.Linear(dim, dim), std=1.0)
        self.norm_space = nn.LayerNorm(dim)
        self.space_qkv = layer_init(nn.Linear(dim, 3 * dim), std=1.0)
        self.space_out = layer_init(nn.Linear(dim, dim), std=1.0)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = mlp_ratio * dim
        self.mlp = nn.Sequential(layer_init(nn.Linear(dim, hidden)), nn.GELU(), layer_init(nn.Linear(hidden, dim), std=1.0))

    def forward(self, cls: torch.Tensor, patches: torch.Tensor):
        """cls (N, 1, D), patches (N, T, P, D) -> (cls, patches, weights): the weights (heads kept, fp32) are
        "time" (N*P, heads, T, T) [patch, query frame, key frame], "space" (N*T, heads, P, 1+P) [frame, query
        patch, key CLS then patches] and "cls" (N, heads, T, P) [CLS query, frame, key patch]."""
        n, t, p, d = patches.shape
        h, dh = self.heads, d // self.heads
        # time attention: the same patch position across the T frames
        x = self.norm_time(patches).transpose(1, 2).reshape(n * p, t, d)  # (N, P, T, D) -> (N*P, T, D)
        q, k, v = self.time_qkv(x).view(n * p, t, 3, h, dh).permute(2, 0, 3, 1, 4)  # (3, N*P, heads, T, dh)
        out, time_weights = attend(q, k, v)  # (N*P, heads, T, dh)
        out = self.time_out(out.transpose(1, 2).reshape(n * p, t, d))  # (N*P, T, heads, dh) -> (N*P, T, D)
        patches = patches + out.view(n, p, t, d).transpose(1, 2)  # (N, P, T, D) -> (N, T, P, D)

        # space attention within each frame
        qkv = self.space_qkv(self.norm_space(patches))  # (N, T, P, 3D)
        q, k, v = qkv.view(n * t, p, 3, h, dh).permute(2, 0, 3, 1, 4)  # (3, N*T, heads, P, dh)
        cls_qkv = self.space_qkv(self.norm_space(cls))  # (N, 1, 3D)
        cls_q, cls_k, cls_v = cls_qkv.view(n, 1, 3, h, dh).permute(2, 0, 3, 1, 4)  # (3, N, heads, 1, dh)
        # the patch queries: keys and values [CLS, the frame's P patches]
        k_all = torch.cat([cls_k[:, None].expand(n, t, h, 1, dh).reshape(n * t, h, 1, dh), k], 2)  # (N*T, heads, 1+P, dh)
        v_all = torch.cat([cls_v[:, None].expand(n, t, h, 1, dh).reshape(n * t, h, 1, dh), v], 2)  # (N*T, heads, 1+P, dh)
        out, space_weights = attend(q, k_all, v_all)  # (N*T, heads, P, dh)
        patches = patches + self.space_out(out.transpose(1, 2).reshape(n, t, p, d))  # (N*T, P, heads, dh) -> (N, T, P, D)
        # the CLS query: a softmax over each frame's patches; mean over frames of the per-frame outputs
        # (N, T*P, 2, heads, dh) -> (2, N, heads, T*P, dh)
        k_frames, v_frames = qkv.view(n, t * p, 3, h, dh)[:, :, 1:].permute(2, 0, 3, 1, 4)
        logits = (cls_q @ k_frames.transpose(-2, -1)).float() * dh**-0.5  # (N, heads, 1, T*P)
        cls_weights = torch.softmax(logits.view(n, h, t, p), dim=-1)  # (N, heads, T, P)
        out = (cls_weights.view(n, h, 1, t * p) / t).to(v.dtype) @ v_frames  # (N, heads, 1, dh)
        cls = cls + self.space_out(out.transpose(1, 2).reshape(n, 1, d))  # (N, 1, heads, dh) -> (N, 1, D)

        patches = patches + self.mlp(self.norm_mlp(patches))
        cls = cls + self.mlp(self.norm_mlp(cls))
        return cls, patches, {"time": time_weights, "space": space_weights, "cls": cls_weights}


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim) sine/cosine position encodings ("Attention Is All You Need", Vaswani et al. 2017, section
    3.5): PE[pos, 2i] = sin(pos / 10000^(2i / dim)), PE[pos, 2i + 1] = cos(pos / 10000^(2i / dim))."""
    position = torch.arange(positions, dtype=torch.float64)[:, None]  # (positions, 1)
    pair = torch.arange(dim, dtype=torch.float64) // 2  # i of the dims 2i and 2i + 1
    angle = position / 10000 ** (2 * pair / dim)  # (positions, dim)
    return torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos()).float()


def upsample_to_input(attention_map: torch.Tensor, patch_size: int = 12) -> torch.Tensor:
    """(N, [T,] g, g) map on the patch grid -> (N, [T,] g * patch_size, g * patch_size) (84x84): transposed
    convolution with a ones kernel of the patch size and stride, so each token lights exactly its patch."""
    ones = torch.ones(1, 1, patch_size, patch_size, dtype=attention_map.dtype, device=attention_map.device)
    flat = attention_map.reshape(-1, 1, *attention_map.shape[-2:])  # (N*T, 1, g, g)
    lit = F.conv_transpose2d(flat, ones, stride=patch_size)  # (N*T, 1, 84, 84)
    return lit.view(*attention_map.shape[:-2], *lit.shape[-2:])  # (N, [T,] 84, 84)


class Agent(nn.Module):
    """Divided space-time Vision Transformer (TimeSformer; the thesis' fourth agent) over the 4 stacked
    frames: each 84x84 frame cut into (84 / patch)^2 non-overlapping patches, each patch of each frame
    embedded by the same Linear(patch^2 -> D) (a convolution with kernel = stride = patch), plus a learned
    space position embedding (one per patch position) and a learned time position embedding (one per
    frame); a learned CLS token; `depth` divided space-time blocks; LayerNorm on the CLS output; policy and
    value heads straight on it. Init: orthogonal as in the other scripts (gain sqrt(2) for the patch
    embedding and the MLPs' first layers, 1 for the attention projections and the MLPs' second layers,
    which add to the residual stream; 0.01 policy, 1 value); CLS N(0, 0.02^2), as in ViT and TimeSformer.
    The position embeddings are learned in both `pos_encoding`s, which only set where they start (the thesis
    compares a Gaussian and a sinusoidal initialisation and found the sinusoidal one no better): `gaussian`
    N(0, 0.02^2) as in ViT and TimeSformer; `sinusoidal` the sine/cosine table (`sinusoidal_table`) of the
    patch index p = row * grid + column for space and of the frame index t (0 = oldest) for time. The same
    table serves both, so at the start patch p of frame t and patch t of frame p carry the same sum; training
    moves the two embeddings apart."""

    def __init__(
        self, num_actions: int, embed_dim=16, heads=1, depth=1, mlp_ratio=2, patch_size=12, frames=4, pos_encoding="gaussian"
    ):
        super().__init__()
        if 84 % patch_size:
            raise ValueError(f"patch size {patch_size} does not divide the 84x84 frame")
        self.patch_size, self.frames, self.grid = patch_size, frames, 84 // patch_size
        self.patch_embed = layer_init(nn.Conv2d(1, embed_dim, patch_size, stride=patch_size))
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        if pos_encoding == "gaussian":
            self.space_position = nn.Parameter(torch.randn(self.grid * self.grid, embed_dim) * 0.02)  # (P, D)
            self.time_position = nn.Parameter(torch.randn(frames, embed_dim) * 0.02)  # (T, D)
        elif pos_encoding == "sinusoidal":
            self.space_position = nn.Parameter(sinusoidal_table(self.grid * self.grid, embed_dim))  # (P, D)
            self.time_position = nn.Parameter(sinusoidal_table(frames, embed_dim))  # (T, D)
        else:
            raise ValueError(f"position encoding {pos_encoding!r} is not one of 'gaussian', 'sinusoidal'")
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(embed_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.actor = layer_init(nn.Linear(embed_dim, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(embed_dim, 1), std=1)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, 84, 84) uint8 -> (CLS (N, 1, D), patch tokens (N, T, P, D)). The embedding of x / 255 is
        computed as conv(x, w / 255) + b: the scaling touches the small kernel, not the large input, and
        0..255 are exact in bf16."""
        autocast_on = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast_on else torch.float32
        n = x.shape[0]
        frames = x.to(dtype).view(n * self.frames, 1, 84, 84)  # (N*T, 1, 84, 84)
        weight = self.patch_embed.weight / 255.0
        embedded = F.conv2d(frames, weight, self.patch_embed.bias, stride=self.patch_size)  # (N*T, D, g, g)
        embedded = embedded.permute(0, 2, 3, 1).reshape(n, self.frames, -1, embedded.shape[1])  # (N, T, P, D)
        position = self.space_position + self.time_position[:, None]  # (T, P, D)
        return self.cls_token.expand(n, 1, -1), embedded + position  # (N, 1, D), (N, T, P, D) in fp32

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """(N, T, 84, 84) uint8 -> (the normalised CLS output (N, D), each block's attention weights)."""
        cls, patches = self.embed(x)
        weights = []
        for block in self.blocks:
            cls, patches, block_weights = block(cls, patches)
            weights.append(block_weights)
        return self.norm(cls[:, 0]), weights

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def get_value(self, x):
        return self.critic(self.hidden(x)).float()

    def get_action_and_value(self, x, action=None, deterministic=False):
        hidden = self.hidden(x)
        logits = self.actor(hidden).float()  # the distribution and losses stay in fp32 under autocast
        probs = Categorical(logits=logits, validate_args=False)  # no per-call checks (a device sync each)
        if action is None:
            action = logits.argmax(-1) if deterministic else probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden).float()

    def attention_matrices(self, weights: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Each block's time and space attention, heads averaged, as (N, S, S) matrices over all S = 1 + T*P
        tokens (CLS first, then the patches frame by frame), row i = the weights of token i's output over the
        block's input tokens. Time: patch (t, p) draws on patches (t', p) only; the CLS row is the identity (it
        takes no part). Space: patch (t, p) draws on the CLS and on the patches of frame t; the CLS row is its
        per-frame weights divided by T (its output is the mean over frames). Every row sums to 1. Returns
        [time_1, space_1, time_2, space_2, ...]."""
        t, p = self.frames, self.grid * self.grid
        size = 1 + t * p
        matrices = []
        for block in weights:
            time_avg = block["time"].mean(1)  # (N*P, T, T)
            n = time_avg.shape[0] // p
            time_avg = time_avg.view(n, p, t, t).permute(0, 2, 3, 1)  # (N, P, T, T') -> (N, T, T', P)
            # (N, T, T', P, P') -> (N, T, P, T', P'): diagonal in p
            time_full = torch.diag_embed(time_avg).permute(0, 1, 3, 2, 4)
            matrix = torch.zeros(n, size, size, device=time_avg.device)
            matrix[:, 0, 0] = 1.0
            matrix[:, 1:, 1:] = time_full.reshape(n, t * p, t * p)  # (N, T*P, T*P)
            matrices.append(matrix)

            space_avg = block["space"].mean(1).view(n, t, p, 1 + p)  # (N*T, P, 1+P) -> (N, T, P, 1+P)
            eye = torch.eye(t, device=space_avg.device)
            space_full = space_avg[:, :, :, None, 1:] * eye[None, :, None, :, None]  # (N, T, P, T', P'): block diagonal in t
            matrix = torch.zeros(n, size, size, device=space_avg.device)
            matrix[:, 1:, 1:] = space_full.reshape(n, t * p, t * p)  # (N, T*P, T*P)
            matrix[:, 1:, 0] = space_avg[..., 0].reshape(n, t * p)  # patches <- CLS: (N, T, P) -> (N, T*P)
            matrix[:, 0, 1:] = block["cls"].mean(1).reshape(n, t * p) / t  # CLS <- patches: (N, heads, T, P) -> (N, T*P)
            matrices.append(matrix)
        return matrices

    def rollout(self, weights: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers") over all
        tokens, (N, S, S): for each attention layer in order (time_1, space_1, time_2, ...), the heads'
        average plus the identity for the residual, rows renormalised (0.5 A + 0.5 I), multiplied through:
        R = A'_L ... A'_1. Row i: how token i's last output draws on the input tokens; rows sum to 1. The
        MLPs mix no tokens and are left out."""
        rollout = None
        for matrix in self.attention_matrices(weights):
            eye = torch.eye(matrix.shape[-1], device=matrix.device)
            matrix = (matrix + eye) / (matrix + eye).sum(-1, keepdim=True)
            rollout = matrix if rollout is None else matrix @ rollout  # (N, S, S)
        return rollout

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"cls": (N, T, g, g) the last block's CLS attention over each frame's patches, heads averaged (a
        softmax per frame: each frame's map sums to 1); "rollout": (N, T, g, g) the CLS row of the attention
        rollout on the patch tokens, renormalised to sum 1 over the T frames together (the CLS's own share is
        left out: its input is a learned constant, no part of the observation)}."""
        with torch.autocast(x.device.type, enabled=False):  # fp32 maps, also when called under autocast
            weights = self.encode(x)[1]
        n, g = x.shape[0], self.grid
        cls_map = weights[-1]["cls"].mean(1).view(n, self.frames, g, g)  # (N, heads, T, P) -> (N, T, g, g)
        rollout = self.rollout(weights)[:, 0, 1:]  # (N, T*P)
        rollout = (rollout / rollout.sum(-1, keepdim=True)).view(n, self.frames, g, g)  # (N, T, g, g)
        return {"cls": cls_map, "rollout": rollout}


def make_agent(args: Args, num_actions: int) -> Agent:
    sizes = (args.embed_dim, args.heads, args.depth, args.mlp_ratio, args.patch_size)
    return Agent(num_actions, *sizes, pos_encoding=args.pos_encoding)


def variant_name(args: Args) -> str:
    """The architecture's name in run folders and checkpoints: its sizes, e.g. `d16_h1_l1_m2_p12` (embedding dim,
    heads, blocks, MLP ratio, patch size), `_sin` added for `--pos-encoding sinusoidal` (a run without the field,
    from before it, is `gaussian` and keeps its name). The preset is not in the name: the sizes it gave are."""
    sinusoidal = "_sin" if args.pos_encoding == "sinusoidal" else ""
    return f"d{args.embed_dim}_h{args.heads}_l{args.depth}_m{args.mlp_ratio}_p{args.patch_size}{sinusoidal}"


def check_args(args: Args) -> None:
    """Refuse, in one line and before anything is built, settings that cannot run."""
    batch_size = args.num_envs * args.num_steps
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
            args.heads < 1 or args.embed_dim % args.heads != 0,
            f"--embed-dim {args.embed_dim} is not divisible into --heads {args.heads}",
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


def evaluate(agent, envs, num_episodes, device, autocast, deterministic=False, on_episode=None):
    """`num_episodes` full (unclipped) games on the evaluation pool. Each env plays a number of episodes
    fixed in advance (not "the first N to finish", which would favour short episodes). Returns the
    per-episode (returns, lengths in agent steps, env indices); `on_episode(return, length, env)` is called as
    each game ends."""
    obs, _ = envs.reset()
    num_envs = len(obs)
    quota = num_episodes // num_envs + (np.arange(num_envs) < num_episodes % num_envs)
    played = np.zeros(num_envs, dtype=int)
    running_returns = np.zeros(num_envs)
    returns, lengths, env_ids = [], [], []
    while (played < quota).any():
        with torch.no_grad(), autocast():
            action, _, _, _ = agent.get_action_and_value(torch.from_numpy(obs).to(device), deterministic=deterministic)
        obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
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


def receive(envs, rows: slice, rewards_row, next_obs, next_done, next_terminal, episode_returns) -> list:
    """Collect the step a pool of envs (`rows` of the batch) executed: its reward into `rewards_row` (the buffer row
    of the step), the next observations and episode ends into `next_*`. Returns (full-game return, length) for
    every game that ended (all lives lost, or the time limit)."""
    obs, reward, terminated, truncated, info = envs.recv()
    scalars = np.stack([reward, terminated | truncated, terminated]).astype(np.float32)  # (3, n)
    rewards_row[rows], next_done[rows], next_terminal[rows] = torch.from_numpy(scalars).to(rewards_row.device)  # one copy
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
    env_groups = [make_env(game, group_size, args.seed + g * group_size, True, env_threads) for g in range(num_groups)]
    group_rows = [slice(g * group_size, (g + 1) * group_size) for g in range(num_groups)]
    eval_envs = make_env(game, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, False, env_threads)
    num_actions = int(env_groups[0].action_space.n)  # a plain int: torch.compile turns numpy scalars into arrays

    agent = make_agent(args, num_actions).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    global_step, start_iteration = load_checkpoint(checkpoint, agent, optimizer) if checkpoint is not None else (0, 1)
    get_action_and_value = torch.compile(agent.get_action_and_value) if args.compile else agent.get_action_and_value
    get_value = torch.compile(agent.get_value) if args.compile else agent.get_value

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

    # TRY NOT TO MODIFY: start the game
    next_obs = torch.zeros((args.num_envs, *obs_shape), dtype=torch.uint8, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    next_terminal = torch.zeros(args.num_envs, device=device)
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

                    # ALGO LOGIC: action logic
                    tic = time.time()
                    action, logprob, _, value = get_action_and_value(next_obs[rows])
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
                            next_obs,
                            next_done,
                            next_terminal,
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
                        next_obs,
                        next_done,
                        next_terminal,
                        episode_returns,
                    )
                    sent_step[g] = None
            env_time += time.time() - tic

            # bootstrap value if not done
            next_value = get_value(next_obs).reshape(1, -1)
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

        # Optimizing the policy and value network
        update_start = time.time()
        torch.set_num_threads(args.torch_threads or num_cores)
        clipfracs = []
        skipped_minibatches = 0
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(args.batch_size, device=device)  # minibatch indices made on the device
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = b_inds[start:end]
                mb_valid = b_valid[mb_inds]
                num_valid = mb_valid.sum().clamp(min=1.0)

                with autocast():
                    _, newlogprob, entropy, newvalue = get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

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
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

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
