# PPO on Atari with self-attention inside a small CNN: NA / SWA / CWRA / CWCA / CWRCA.
# "Revisiting Self-Attention in Deep RL: A Dimensional Perspective" (network, hyper-parameters);
# training loop in the shape of CleanRL's ppo_atari_envpool.py.
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
    """if toggled, a PNG grid (frame | attention overlay | c1 feature map) of a few evaluation states is written at the end"""

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
    self_attn: Literal["NA", "SWA", "CWRA", "CWCA", "CWRCA"] = "NA"
    """self-attention after the first conv: none, single-channel-wise, channel-wise row, column, or both"""
    ada_attn: Literal["none", "alpha", "beta", "alpha_beta"] = "none"
    """learnable scalars on the residual: alpha * attention + beta * input (alpha starts at 0, beta at 1)"""

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


class SelfAttention(nn.Module):
    """Scaled dot-product self-attention on a feature map (N, C, H, W) -> (N, C, H, W), residual
    included. `kind` picks the axes (the paper's Fig. 1): SWA attends rows to rows within each channel
    (columns as features); CWRA rows to rows within each column (channels as features: vertical
    blocks); CWCA columns to columns within each row (horizontal blocks); CWRCA sums CWRA and CWCA."""

    def __init__(self, channels: int, kind: str, ada_attn: str = "none"):
        super().__init__()
        if kind not in ("SWA", "CWRA", "CWCA", "CWRCA"):
            raise ValueError(f"unknown self-attention kind {kind!r}; valid: SWA, CWRA, CWCA, CWRCA")
        self.kind = kind
        self.query = layer_init(nn.Conv2d(channels, channels, 1))
        self.key = layer_init(nn.Conv2d(channels, channels, 1))
        self.value = layer_init(nn.Conv2d(channels, channels, 1))
        # as the paper's public code: alpha starts at 0 (the block starts as the identity), beta at 1
        self.alpha = nn.Parameter(torch.zeros(())) if ada_attn in ("alpha", "alpha_beta") else None
        self.beta = nn.Parameter(torch.ones(())) if ada_attn in ("beta", "alpha_beta") else None

    @staticmethod
    def _attend(q, k, v):
        """softmax(q k^T / sqrt(d)) v over the last two axes (..., L, d)."""
        weights = torch.softmax(q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5), dim=-1)  # (..., L, L)
        return weights @ v  # (..., L, d)

    def attention_term(self, h: torch.Tensor) -> torch.Tensor:
        """The attention output before the residual, scaled by alpha when learnable: (N, C, H, W)."""
        # fp32 even under bf16 autocast: with sequences of 20 and features <= 20 the products are tiny,
        # and on CPU fp32 beats bf16 (and scaled_dot_product_attention) here
        with torch.autocast(h.device.type, enabled=False):
            return self._attention_fp32(h.to(self.query.weight.dtype))  # the parameters' dtype (fp32)

    def _attention_fp32(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind != "SWA":  # channels-last memory makes the (N, H, W, C) permutations below views, not copies
            h = h.contiguous(memory_format=torch.channels_last)
        q, k, v = self.query(h), self.key(h), self.value(h)  # (N, C, H, W) each
        out = 0
        if self.kind == "SWA":
            out = self._attend(q, k, v)  # per channel: H rows with W features -> (N, C, H, W)
        if self.kind in ("CWRA", "CWRCA"):
            qr, kr, vr = (t.permute(0, 3, 2, 1) for t in (q, k, v))  # (N, W, H, C): rows within a column
            out = out + self._attend(qr, kr, vr).permute(0, 3, 2, 1)  # (N, W, H, C) -> (N, C, H, W)
        if self.kind in ("CWCA", "CWRCA"):
            qc, kc, vc = (t.permute(0, 2, 3, 1) for t in (q, k, v))  # (N, H, W, C): columns within a row
            out = out + self._attend(qc, kc, vc).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return out if self.alpha is None else self.alpha * out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        residual = h if self.beta is None else self.beta * h
        return self.attention_term(h) + residual


def upsample_to_input(attention_map: torch.Tensor) -> torch.Tensor:
    """(N, 20, 20) map on the c1 grid -> (N, 84, 84): transposed convolution with a ones kernel of c1's
    receptive field (8x8) and stride (4), so each cell lights exactly the input pixels it sees."""
    ones = torch.ones(1, 1, 8, 8, dtype=attention_map.dtype, device=attention_map.device)
    return F.conv_transpose2d(attention_map[:, None], ones, stride=4)[:, 0]  # (N, 1, 84, 84) -> (N, 84, 84)


class Agent(nn.Module):
    """The "PPO paper" CNN with optional self-attention after c1; policy and value heads straight on the
    256 features (SB3 `net_arch=[]`)."""

    def __init__(self, num_actions: int, self_attn: str = "NA", ada_attn: str = "none"):
        super().__init__()
        self.c1 = layer_init(nn.Conv2d(4, 16, 8, stride=4))
        self.attention = None if self_attn == "NA" else SelfAttention(16, self_attn, ada_attn)
        self.c2 = layer_init(nn.Conv2d(16, 32, 4, stride=2))
        self.fc = layer_init(nn.Linear(32 * 9 * 9, 256))
        self.actor = layer_init(nn.Linear(256, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(256, 1), std=1)

    def c1_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4, 84, 84) uint8 -> (N, 16, 20, 20). c1(x / 255) computed as conv(x, w / 255) + b: the
        scaling touches the small kernel, not the large input, and 0..255 are exact in bf16."""
        autocast_on = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast_on else torch.float32
        x = x.to(dtype=dtype, memory_format=torch.channels_last)  # channels-last convolutions: ~30% faster on CPU
        return F.relu(F.conv2d(x, self.c1.weight / 255.0, self.c1.bias, stride=4))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1_features(x)
        if self.attention is not None:
            h = self.attention(h)  # (N, 16, 20, 20)
        h = F.relu(self.c2(h))  # (N, 32, 9, 9)
        return F.relu(self.fc(h.flatten(1)))  # (N, 2592) -> (N, 256)

    def get_value(self, x):
        return self.critic(self.hidden(x)).float()

    def get_action_and_value(self, x, action=None, deterministic=False):
        hidden = self.hidden(x)
        logits = self.actor(hidden).float()  # the distribution and losses stay in fp32 under autocast
        probs = Categorical(logits=logits, validate_args=False)  # no per-call checks (a device sync each)
        if action is None:
            action = logits.argmax(-1) if deterministic else probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden).float()

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (N, 20, 20)}: channel mean of the (signed) attention term on the c1 grid; NA has
        no attention and returns {}."""
        if self.attention is None:
            return {}
        return {"attention": self.attention.attention_term(self.c1_features(x)).float().mean(1)}


def make_agent(args: Args, num_actions: int) -> Agent:
    return Agent(num_actions, args.self_attn, args.ada_attn)


def variant_name(args: Args) -> str:
    """The architecture's name in run folders and checkpoints: `CWCA`, or `CWCA+alpha_beta` with learnable scalars."""
    return args.self_attn if args.ada_attn == "none" else f"{args.self_attn}+{args.ada_attn}"


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
