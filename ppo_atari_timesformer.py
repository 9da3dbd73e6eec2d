# PPO on Atari with a divided space-time Vision Transformer over the 4 stacked frames: the TimeSformer agent of
# "Neural architecture impact on identifying temporally extended Reinforcement Learning tasks" (arXiv 2310.03161),
# after "Is Space-Time Attention All You Need for Video Understanding?" (Bertasius et al. 2021); hyper-parameters
# and training loop those of ppo_atari_selfattn.py (CleanRL's ppo_atari_envpool.py in shape).
import csv
import dataclasses
import difflib
import json
import math
import os
import random
import re
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
    """if toggled, a PNG grid (the 4 input frames under the CLS attention | the screen under the attention rollout) of a few evaluation states is written at the end"""

    # Algorithm specific arguments (ppo_atari_selfattn.py's: its paper's table, Stable-Baselines3 2.0 defaults elsewhere;
    # the thesis trained with IMPALA / V-trace tuned per game, which this PPO loop does not reproduce)
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

    # Evaluation, checkpoints, speed
    eval_freq: int = 200_000
    """evaluate every `eval_freq` agent steps (and at the end) on a separate unclipped full-game env"""
    eval_episodes: int = 5
    """the number of episodes per evaluation (run in parallel)"""
    eval_deterministic: bool = False
    """if toggled, evaluation takes the most probable action instead of sampling"""
    eval_only: bool = False
    """if toggled, only evaluate the `--resume` checkpoint: `eval_episodes` games on unseen seeds with all cores,
    each episode's return and length written to a CSV beside the checkpoint (seed 004's 8192-episode evaluation)"""
    eval_env_id: Optional[str] = None
    """with `--eval-only`: the game to evaluate on when not the checkpoint's (e.g. `BreakoutInfinite` for a Breakout agent)"""
    save_freq: int = 500_000
    """write a checkpoint every `save_freq` agent steps"""
    resume: Optional[str] = None
    """path of a `.cleanrl_model` checkpoint to continue (step counter, schedules, optimizer, RNG; envs restart)"""
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
    # (defaults sized for a 2-core CPU, where they train at 63-75% of the SPS of ppo_atari_selfattn.py's NA agent;
    # one head: two heads train about 30% slower there. With a GPU try e.g. --embed-dim 64 --heads 4 --depth 2 --mlp-ratio 4)
    embed_dim: int = 16
    """token embedding size D"""
    heads: int = 1
    """attention heads in each time and space attention (must divide `embed_dim`)"""
    depth: int = 1
    """divided space-time blocks (time attention, space attention, MLP)"""
    mlp_ratio: int = 2
    """hidden size of each block's MLP, as a multiple of `embed_dim`"""
    patch_size: Literal[4, 6, 7, 12, 14, 21, 28, 42] = 12
    """side of the square patches each 84x84 frame is cut into (12: 7x7 = 49 tokens per frame)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


# Fields that may differ from a checkpoint's when resuming: they control where and how the run is
# shown, not what is learned.
RUN_CONTROL_FIELDS = (
    "resume", "track", "wandb_project_name", "wandb_entity", "capture_video", "save_attention",
    "cuda", "compile", "torch_threads", "rollout_threads", "env_threads", "eval_only", "eval_env_id",
)
# with --eval-only, these also come from the command line
EVAL_ONLY_FIELDS = ("eval_episodes", "eval_deterministic", "precision")


def atari_games() -> list[str]:
    """The game names envpool can make, e.g. `Pong` (its `Pong-v5`)."""
    from envpool.registration import registry

    return sorted(k[: -len("-v5")] for k, spec in registry.specs.items() if spec[0] == "envpool.atari" and k.endswith("-v5"))


def parse_game(env_id: str) -> str:
    """`Pong`, `Pong-v5`, `PongNoFrameskip-v4`, `ALE/Pong-v5` -> `Pong` (and `BreakoutInfinite`, seed 004's
    Breakout with endless walls); exits with one line if unknown."""
    name = env_id.removeprefix("ALE/")
    for suffix in ("NoFrameskip-v4", "NoFrameskip-v0", "-v5", "-v4", "-v0"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    games = atari_games() + ["BreakoutInfinite"]
    if name not in games:
        close = difflib.get_close_matches(name, games, n=3, cutoff=0.5)
        hint = f"closest valid games: {', '.join(close)}" if close else f"valid games: {', '.join(games)}"
        sys.exit(f"error: unknown Atari game '{env_id}'; {hint} (forms: Pong, Pong-v5, PongNoFrameskip-v4, ALE/Pong-v5)")
    return name


def make_env(game: str, num_envs: int, seed: int, training: bool, num_threads: int = 0):
    """envpool Atari with the papers' protocol (NoFrameskip-v4 + SB3 AtariWrapper): frame skip 4 with
    max-pool, 84x84 grey, stack 4, noop_max 30, no sticky actions, minimal actions, fire on reset,
    108k frames max; life loss ends an episode and rewards are clipped for training only."""
    if game == "BreakoutInfinite":  # envpool cannot write the emulator's RAM
        return AlePool(game, num_envs, seed, training)
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
        stack_num=4,
        gray_scale=True,
        frame_skip=4,
    )


class RenderedAtari:
    """One ALE game (gymnasium + ale-py) with the protocol of `make_env` applied by hand, keeping the RGB
    frames: used for videos and attention pictures (envpool renders nothing) and, pooled in `AlePool`, for
    `BreakoutInfinite`, Breakout whose bricks respawn forever (seed 004, section 6.2), which needs the
    emulator's RAM written and so cannot run in envpool."""

    def __init__(self, game: str, seed: int):
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        self.infinite = game == "BreakoutInfinite"
        self.env = gym.make(
            f"ALE/{'Breakout' if self.infinite else game}-v5", frameskip=1, repeat_action_probability=0.0,
            full_action_space=False, render_mode="rgb_array", max_num_frames_per_episode=108_000,
        )
        self.ale = self.env.unwrapped.ale
        self.action_set = self.ale.getMinimalActionSet()
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.fire_on_reset = "FIRE" in self.env.unwrapped.get_action_meanings()
        self.game_over = self.truncated = False
        self.elapsed_step = 0  # agent steps since the game started (after its no-ops)
        self.score_rewritten = False

    def _frame(self) -> torch.Tensor:
        grey = torch.from_numpy(self.ale.getScreenGrayscale().astype(np.float32))  # (210, 160)
        return grey

    def _respawn_bricks(self, reward: float) -> float:
        """BreakoutInfinite's rule, after every emulator frame: once the score (BCD in RAM bytes 76-77) reaches
        864, write it back down by 432, which makes the game lay a new wall. The emulator then reports the
        432 drop as a reward of -432 on the next frame; it is added back, so the agent never sees it and the
        summed rewards stay the true total."""
        if self.score_rewritten:
            reward += 432.0
            self.score_rewritten = False
        ram = self.ale.getRAM()
        score = 100 * int(ram[76] & 0x0F) + 10 * int(ram[77] >> 4) + int(ram[77] & 0x0F)
        if score >= 864:
            score -= 432
            self.ale.setRAM(76, (int(ram[76]) & 0xF0) | score // 100)
            self.ale.setRAM(77, ((score // 10 % 10) << 4) | score % 10)
            self.score_rewritten = True
        return reward

    def _act(self, action: int) -> float:
        """Four emulator frames, max-pool of the last two; returns the (unclipped) reward."""
        reward, frames = 0.0, []
        for i in range(4):
            frame_reward = self.ale.act(self.action_set[action])
            reward += self._respawn_bricks(frame_reward) if self.infinite else frame_reward
            if i >= 2:
                frames.append(self._frame())
            if self.ale.game_over(with_truncation=False):
                break
        pooled = torch.stack(frames or [self._frame()]).amax(0)  # (210, 160)
        small = F.interpolate(pooled[None, None], size=(84, 84), mode="area")[0, 0]  # (84, 84), like cv2 INTER_AREA
        self.stack = torch.cat([self.stack[1:], small.round().to(torch.uint8)[None]])  # (4, 84, 84)
        return reward

    def reset(self) -> torch.Tensor:
        self.env.reset(seed=int(self.rng.integers(2**31)))
        self.stack = torch.zeros(4, 84, 84, dtype=torch.uint8)
        self.score_rewritten = False
        for _ in range(int(self.rng.integers(1, 31))):  # noop_max 30
            self._act(0)
        if self.fire_on_reset:
            self._act(1)
        self.game_over = self.truncated = False
        self.elapsed_step = 0
        return self.stack.clone()

    def step(self, action: int) -> tuple[torch.Tensor, float, bool]:
        """One agent step; returns (stacked observation, unclipped reward, game over or time limit)."""
        reward = self._act(action)
        self.elapsed_step += 1
        self.game_over = self.ale.game_over(with_truncation=False)
        self.truncated = not self.game_over and self.elapsed_step >= 27_000  # 108k frames, as envpool's limit
        return self.stack.clone(), reward, self.game_over or self.truncated

    def rgb(self) -> np.ndarray:
        return self.env.render()  # (210, 160, 3) uint8


class AlePool:
    """`num_envs` RenderedAtari games behind the part of envpool's interface the loop uses (`reset`, `send`,
    `recv`, `step`, `action_space`, `close`) and with its protocol: for training, a life loss ends the
    episode and rewards are clipped to their sign (info["reward"] stays unclipped, info["terminated"] marks
    game over); the step after an episode end is a reset step whose action is ignored (after a life loss:
    FIRE, or a no-op, to serve the next ball). The games run one after another in this process."""

    def __init__(self, game: str, num_envs: int, seed: int, training: bool):
        import gymnasium as gym

        self.games = [RenderedAtari(game, seed + i) for i in range(num_envs)]
        self.training = training
        self.action_space = gym.spaces.Discrete(len(self.games[0].action_set))
        self.needs_reset = np.zeros(num_envs, dtype=bool)
        self.actions = np.zeros(num_envs, dtype=np.int64)

    def reset(self):
        obs = torch.stack([g.reset() for g in self.games]).numpy()  # (N, 4, 84, 84)
        self.needs_reset[:] = False
        return obs, {}

    def send(self, actions: np.ndarray):
        self.actions = np.asarray(actions)

    def recv(self):
        num_envs = len(self.games)
        obs = np.zeros((num_envs, 4, 84, 84), dtype=np.uint8)
        reward, terminated, truncated = np.zeros(num_envs), np.zeros(num_envs, dtype=bool), np.zeros(num_envs, dtype=bool)
        info = {"reward": np.zeros(num_envs), "terminated": np.zeros(num_envs, dtype=bool), "lives": np.zeros(num_envs, dtype=np.int32),
                "elapsed_step": np.zeros(num_envs, dtype=np.int32)}
        for i, game in enumerate(self.games):
            if self.needs_reset[i]:  # reset step: no reward for the agent, the action is ignored
                if game.game_over or game.truncated:
                    observation = game.reset()
                else:  # a life was lost: the game goes on
                    observation, info["reward"][i], _ = game.step(1 if game.fire_on_reset else 0)
                self.needs_reset[i] = False
            else:
                lives = game.ale.lives()
                observation, info["reward"][i], _ = game.step(int(self.actions[i]))
                life_lost = game.ale.lives() < lives
                reward[i] = np.sign(info["reward"][i]) if self.training else info["reward"][i]
                terminated[i] = game.game_over or (self.training and life_lost)
                truncated[i] = game.truncated
                info["terminated"][i] = game.game_over
                self.needs_reset[i] = terminated[i] or truncated[i]
            obs[i] = observation.numpy()
            info["lives"][i], info["elapsed_step"][i] = game.ale.lives(), game.elapsed_step
        return obs, reward, terminated, truncated, info

    def step(self, actions: np.ndarray):
        self.send(actions)
        return self.recv()

    def close(self):
        for game in self.games:
            game.env.close()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16
    or AMX (read from /proc/cpuinfo; elsewhere the CPU is assumed not to)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


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
        self.mlp = nn.Sequential(layer_init(nn.Linear(dim, mlp_ratio * dim)), nn.GELU(), layer_init(nn.Linear(mlp_ratio * dim, dim), std=1.0))

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
        cls_q, cls_k, cls_v = self.space_qkv(self.norm_space(cls)).view(n, 1, 3, h, dh).permute(2, 0, 3, 1, 4)  # (3, N, heads, 1, dh)
        # the patch queries: keys and values [CLS, the frame's P patches]
        k_all = torch.cat([cls_k[:, None].expand(n, t, h, 1, dh).reshape(n * t, h, 1, dh), k], 2)  # (N*T, heads, 1+P, dh)
        v_all = torch.cat([cls_v[:, None].expand(n, t, h, 1, dh).reshape(n * t, h, 1, dh), v], 2)  # (N*T, heads, 1+P, dh)
        out, space_weights = attend(q, k_all, v_all)  # (N*T, heads, P, dh)
        patches = patches + self.space_out(out.transpose(1, 2).reshape(n, t, p, d))  # (N*T, P, heads, dh) -> (N, T, P, D)
        # the CLS query: a softmax over each frame's patches; mean over frames of the per-frame outputs
        k_frames, v_frames = qkv.view(n, t * p, 3, h, dh)[:, :, 1:].permute(2, 0, 3, 1, 4)  # (N, T*P, 2, heads, dh) -> (2, N, heads, T*P, dh)
        logits = (cls_q @ k_frames.transpose(-2, -1)).float() * dh**-0.5  # (N, heads, 1, T*P)
        cls_weights = torch.softmax(logits.view(n, h, t, p), dim=-1)  # (N, heads, T, P)
        out = (cls_weights.view(n, h, 1, t * p) / t).to(v.dtype) @ v_frames  # (N, heads, 1, dh)
        cls = cls + self.space_out(out.transpose(1, 2).reshape(n, 1, d))  # (N, 1, heads, dh) -> (N, 1, D)

        patches = patches + self.mlp(self.norm_mlp(patches))
        cls = cls + self.mlp(self.norm_mlp(cls))
        return cls, patches, {"time": time_weights, "space": space_weights, "cls": cls_weights}


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
    which add to the residual stream; 0.01 policy, 1 value); CLS and position embeddings N(0, 0.02^2),
    as in ViT and TimeSformer (the thesis found a sinusoidal initialisation of the position embeddings no
    better than this Gaussian one)."""

    def __init__(self, num_actions: int, embed_dim: int = 16, heads: int = 1, depth: int = 1, mlp_ratio: int = 2, patch_size: int = 12, frames: int = 4):
        super().__init__()
        if 84 % patch_size:
            raise ValueError(f"patch size {patch_size} does not divide the 84x84 frame")
        self.patch_size, self.frames, self.grid = patch_size, frames, 84 // patch_size
        self.patch_embed = layer_init(nn.Conv2d(1, embed_dim, patch_size, stride=patch_size))
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.space_position = nn.Parameter(torch.randn(self.grid * self.grid, embed_dim) * 0.02)
        self.time_position = nn.Parameter(torch.randn(frames, embed_dim) * 0.02)
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
        embedded = F.conv2d(frames, self.patch_embed.weight / 255.0, self.patch_embed.bias, stride=self.patch_size)  # (N*T, D, g, g)
        embedded = embedded.permute(0, 2, 3, 1).reshape(n, self.frames, self.grid * self.grid, -1)  # (N*T, g, g, D) -> (N, T, P, D)
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
        probs = Categorical(logits=logits)
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
            time_full = torch.diag_embed(time_avg).permute(0, 1, 3, 2, 4)  # (N, T, T', P, P') -> (N, T, P, T', P'): diagonal in p
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
    return Agent(num_actions, args.embed_dim, args.heads, args.depth, args.mlp_ratio, args.patch_size)


def variant_name(args: Args) -> str:
    """The architecture's name in run folders and checkpoints: its sizes, e.g. `d16_h1_l1_m2_p12` (embedding dim,
    heads, blocks, MLP ratio, patch size)."""
    return f"d{args.embed_dim}_h{args.heads}_l{args.depth}_m{args.mlp_ratio}_p{args.patch_size}"


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


def heat_on_screen(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(84, 84) map on the input -> (H, W) on the screen, bilinear, fp32 (also under autocast)."""
    return F.interpolate(heat.float()[None, None], size=size, mode="bilinear")[0, 0].cpu()  # (210, 160)


def save_attention_grid(agent, game, seed, device, autocast, path, num_states=4, spacing=40):
    """PNG grid, one row per evaluation state: the 4 stacked input frames (oldest to newest), each under the
    last block's CLS attention on that frame | the RGB screen under the attention rollout summed over the 4
    frames. A state's CLS maps share one colour scale (0 to their largest weight), so the frames compare;
    the rollout is min-max scaled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = RenderedAtari(game, seed)
    obs, states = env.reset(), []
    for step in range(num_states * spacing):
        with torch.no_grad(), autocast():
            action, _, _, _ = agent.get_action_and_value(obs[None].to(device))
        if step % spacing == spacing - 1:
            states.append((env.rgb(), obs.clone()))
        obs, _, done = env.step(int(action))
        if done:
            obs = env.reset()
    batch = torch.stack([o for _, o in states]).to(device)  # (K, 4, 84, 84)
    maps = agent.attention_maps(batch)
    cls_heat = upsample_to_input(maps["cls"].float(), agent.patch_size).cpu()  # (K, 4, 84, 84)
    rollout_heat = upsample_to_input(maps["rollout"].float().sum(1), agent.patch_size)  # (K, 4, g, g) -> (K, g, g) -> (K, 84, 84)
    frames = agent.frames
    titles = [f"frame t-{frames - 1 - i}, CLS attention" if i < frames - 1 else "frame t, CLS attention" for i in range(frames)]
    titles.append("screen, attention rollout")
    fig, axes = plt.subplots(len(states), frames + 1, figsize=(2.4 * (frames + 1), 2.8 * len(states)), squeeze=False)
    for row, (rgb, stacked) in enumerate(states):
        top = cls_heat[row].max().item() + 1e-8
        for col in range(frames):
            axes[row, col].imshow(stacked[col].numpy(), cmap="gray", vmin=0, vmax=255)
            axes[row, col].imshow(cls_heat[row, col].numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=top)
        heat = heat_on_screen(rollout_heat[row], rgb.shape[:2])  # (210, 160)
        heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)
        axes[row, frames].imshow(rgb)
        axes[row, frames].imshow(heat.numpy(), cmap="jet", alpha=0.5)
        for col in range(frames + 1):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(titles[col], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def video_frame(agent, rgb: np.ndarray, obs: torch.Tensor) -> np.ndarray:
    """One video frame: the RGB screen | the screen under the CLS attention on the newest frame | the screen
    under the attention rollout summed over the 4 frames (jet colours, each min-max scaled). obs: (4, 84, 84)."""
    import matplotlib

    maps = agent.attention_maps(obs[None])
    panels = [rgb]
    for heat in (maps["cls"][0, -1], maps["rollout"][0].sum(0)):  # (g, g) each
        heat = heat_on_screen(upsample_to_input(heat[None].float(), agent.patch_size)[0], rgb.shape[:2])  # (84, 84) -> (210, 160)
        heat = ((heat - heat.min()) / (heat.max() - heat.min() + 1e-8)).numpy()
        colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0  # (210, 160, 3)
        panels.append((0.5 * rgb.astype(np.float32) + 0.5 * colours).astype(np.uint8))
    return np.concatenate(panels, axis=1)  # (210, 480, 3)


def record_video(agent, game, seed, device, autocast, path, deterministic=False):
    """One rendered full-game evaluation episode as mp4, the agent's attention drawn on every frame
    (`video_frame`); returns its (unclipped) return."""
    import imageio

    env = RenderedAtari(game, seed)
    obs, done, episode_return = env.reset(), False, 0.0
    with imageio.get_writer(path, fps=15, macro_block_size=1) as video:  # streamed: long episodes stay out of memory
        while not done:
            with autocast():
                video.append_data(video_frame(agent, env.rgb(), obs.to(device)))
            with torch.no_grad(), autocast():
                action, _, _, _ = agent.get_action_and_value(obs[None].to(device), deterministic=deterministic)
            obs, reward, done = env.step(int(action))
            episode_return += reward
    return episode_return


def evaluate(agent, envs, num_episodes, device, autocast, deterministic=False, progress=None):
    """`num_episodes` full (unclipped) games on the evaluation pool. Each env plays a number of episodes
    fixed in advance (not "the first N to finish", which would favour short episodes). Returns the
    per-episode (returns, lengths in agent steps, env indices)."""
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
            if progress is not None:
                progress.update(1)
    return np.array(returns), np.array(lengths), np.array(env_ids)


if __name__ == "__main__":
    args = tyro.cli(Args)
    game = parse_game(args.env_id)
    if args.eval_only and args.resume is None:
        sys.exit("error: --eval-only evaluates a checkpoint: name it with --resume PATH")
    if args.eval_env_id is not None and not args.eval_only:
        sys.exit("error: --eval-env-id is only used with --eval-only")
    if args.eval_episodes < 1:
        sys.exit(f"error: --eval-episodes {args.eval_episodes}: give at least 1")
    eval_game = parse_game(args.eval_env_id) if args.eval_env_id is not None else None
    checkpoint = None
    if args.resume is not None:
        if not os.path.isfile(args.resume):
            sys.exit(f"error: --resume {args.resume}: no such checkpoint file")
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        saved = checkpoint["args"]
        defaults = Args()
        kept = RUN_CONTROL_FIELDS + (EVAL_ONLY_FIELDS if args.eval_only else ())
        changed = [f for f in saved if f not in kept and f in vars(args) and getattr(args, f) not in (getattr(defaults, f), saved[f])]
        if changed:
            print(f"resume: experiment settings come from the checkpoint; ignoring command-line {', '.join(changed)}")
        args = dataclasses.replace(args, **{k: v for k, v in saved.items() if k not in kept and k in vars(args)})
        game = parse_game(args.env_id)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations < 1:
        sys.exit(f"error: --total-timesteps {args.total_timesteps} is smaller than one batch (num_envs x num_steps = {args.batch_size})")
    if args.minibatch_size < 1 or args.batch_size % args.num_minibatches:
        sys.exit(f"error: batch size {args.batch_size} is not divisible into --num-minibatches {args.num_minibatches}")
    if args.embed_dim % args.heads:
        sys.exit(f"error: --embed-dim {args.embed_dim} is not divisible into --heads {args.heads}")
    if checkpoint is not None:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        run_name = os.path.basename(run_dir)
    if checkpoint is not None and not args.eval_only:
        if checkpoint["iteration"] >= args.num_iterations:
            sys.exit(f"error: checkpoint is at step {checkpoint['global_step']}, already at total_timesteps {args.total_timesteps}")
        saved_steps = {f: re.fullmatch(r"step_(\d+)\.cleanrl_model", f) for f in os.listdir(run_dir)}
        later = [f for f, match in saved_steps.items() if match and int(match.group(1)) > checkpoint["global_step"]]
        if later:
            sys.exit(f"error: {run_dir} has checkpoints past step {checkpoint['global_step']} ({', '.join(sorted(later))}); copy the checkpoint into a new folder to branch from it")
    if checkpoint is None:
        run_name = f"{game}__{args.exp_name}__{variant_name(args)}__{args.seed}__{int(time.time())}"
        base_name, copy = run_name, 1
        while os.path.exists(os.path.join("runs", run_name)):  # same second, same settings: never reuse a folder
            copy += 1
            run_name = f"{base_name}-{copy}"
        run_dir = os.path.join("runs", run_name)
    os.makedirs(run_dir, exist_ok=True)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    num_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.torch_threads or num_cores)
    if args.cuda and torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.cuda and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if args.precision == "auto":  # emulated bf16 (e.g. AVX2-only CPUs) is several times slower than fp32
        args.precision = "bf16" if native_bf16(device) else "fp32"
    if args.precision == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = nullcontext

    # long evaluation of a checkpoint (seed 004: 8192 episodes on unseen seeds), then exit
    if args.eval_only:
        eval_game = eval_game or game
        eval_pool = make_env(eval_game, min(args.eval_episodes, 8 * num_cores), args.seed + 4_000_000, False, num_cores)
        agent = make_agent(args, eval_pool.action_space.n).to(device)
        try:
            agent.load_state_dict(checkpoint["model"])
        except RuntimeError:
            sys.exit(f"error: the checkpoint's agent does not fit {eval_game} ({eval_pool.action_space.n} actions); evaluate it on the game it was trained on ({game}) or one with the same actions")
        agent.eval()
        print(f"eval-only: {variant_name(args)} at step {checkpoint['global_step']:,} on {eval_game}, {args.eval_episodes} episodes, {eval_pool.action_space.n} actions, precision {args.precision}")
        with tqdm(total=args.eval_episodes, unit="episode", dynamic_ncols=True, disable=not sys.stderr.isatty()) as progress:
            returns, lengths, env_ids = evaluate(agent, eval_pool, args.eval_episodes, device, autocast, args.eval_deterministic, progress)
        eval_pool.close()
        base = os.path.join(run_dir, f"eval_only_{eval_game}_step_{checkpoint['global_step']:09d}_{args.eval_episodes}ep")
        results_path, copy = f"{base}.csv", 1
        while os.path.exists(results_path):  # an earlier evaluation is never overwritten
            copy += 1
            results_path = f"{base}-{copy}.csv"
        with open(results_path, "w", newline="") as f:
            csv.writer(f).writerows([["episode", "env", "return", "length"]] + [[i, e, f"{r:g}", n] for i, (e, r, n) in enumerate(zip(env_ids, returns, lengths))])
        print(f"eval-only: mean return {returns.mean():.2f} +- {returns.std():.2f} (standard error {returns.std(ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else float('nan'):.2f}), "
              f"median {np.median(returns):g}, min {returns.min():g}, max {returns.max():g}, mean length {lengths.mean():.0f} steps; episodes in {results_path}")
        sys.exit(0)

    # env setup: two half pools stepped alternately, so one half runs the emulators (envpool's C++
    # threads) while the policy acts on the other half
    num_groups = 2 if args.num_envs % 2 == 0 else 1
    group_size = args.num_envs // num_groups
    env_threads = args.env_threads or num_cores
    env_groups = [make_env(game, group_size, args.seed + g * group_size, True, env_threads) for g in range(num_groups)]
    group_rows = [slice(g * group_size, (g + 1) * group_size) for g in range(num_groups)]
    eval_envs = make_env(game, args.eval_episodes, args.seed + 1_000_000, False, env_threads)
    num_actions = env_groups[0].action_space.n

    agent = make_agent(args, num_actions).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    global_step, start_iteration = 0, 1
    if checkpoint is not None:
        agent.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        global_step, start_iteration = checkpoint["global_step"], checkpoint["iteration"] + 1
        random.setstate(checkpoint["rng"]["python"])
        np.random.set_state(checkpoint["rng"]["numpy"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
    get_action_and_value = torch.compile(agent.get_action_and_value) if args.compile else agent.get_action_and_value
    get_value = torch.compile(agent.get_value) if args.compile else agent.get_value

    # logging: tensorboard (+ wandb), evals.csv, args.json
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=run_name, id=run_name.replace("/", "_"), resume="allow", save_code=True, dir=run_dir)
    # on resume, tensorboard hides what the interrupted run logged past the checkpoint
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint is not None else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    args_path = os.path.join(run_dir, "args.json")
    if not os.path.exists(args_path):
        with open(args_path, "w") as f:
            json.dump(vars(args), f, indent=2)
    evals_path = os.path.join(run_dir, "evals.csv")
    if checkpoint is not None and os.path.exists(evals_path):
        # evaluations logged after the checkpoint was written are superseded by the resumed run: kept aside
        with open(evals_path) as f:
            rows = list(csv.reader(f))
        stale = [r for r in rows[1:] if int(r[0]) > global_step]
        if stale:
            with open(os.path.join(run_dir, "evals.superseded.csv"), "a", newline="") as f:
                csv.writer(f).writerows(stale)
            with open(evals_path, "w", newline="") as f:
                csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if int(r[0]) <= global_step])
    if not os.path.exists(evals_path):
        with open(evals_path, "w", newline="") as f:
            csv.writer(f).writerow(["global_step", "mean_return", "std_return", "episode_returns"])

    # ALGO Logic: Storage setup (observations stay uint8; the network divides by 255)
    obs_buf = torch.zeros((args.num_steps, args.num_envs, 4, 84, 84), dtype=torch.uint8, device=device)
    actions_buf = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminals_buf = torch.zeros((args.num_steps, args.num_envs), device=device)
    values_buf = torch.zeros((args.num_steps, args.num_envs), device=device)

    # TRY NOT TO MODIFY: start the game
    next_obs = torch.zeros((args.num_envs, 4, 84, 84), dtype=torch.uint8, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    next_terminal = torch.zeros(args.num_envs, device=device)
    for g, envs in enumerate(env_groups):
        next_obs[group_rows[g]] = torch.from_numpy(envs.reset()[0]).to(device)
    episode_returns = np.zeros(args.num_envs)  # full-game, unclipped (summed over lives)
    in_flight = [None] * num_groups  # rollout step whose actions a group is executing, or None
    last_return, last_eval = float("nan"), float("nan")
    next_eval = (global_step // args.eval_freq + 1) * args.eval_freq
    next_save = (global_step // args.save_freq + 1) * args.save_freq

    def receive(g):
        """Collect group g's step: reward of the step it executed, next observation and episode ends."""
        global last_return
        obs, reward, terminated, truncated, info = env_groups[g].recv()
        rows = group_rows[g]
        rewards_buf[in_flight[g], rows] = torch.as_tensor(reward, dtype=torch.float32, device=device)
        next_obs[rows] = torch.from_numpy(obs).to(device)
        next_done[rows] = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
        next_terminal[rows] = torch.as_tensor(terminated, dtype=torch.float32, device=device)
        in_flight[g] = None
        episode_returns[rows] += info["reward"]
        for i in np.flatnonzero(info["terminated"] | truncated):  # game over (all lives) or time limit
            last_return = episode_returns[rows][i]
            writer.add_scalar("charts/episodic_return", last_return, global_step)
            writer.add_scalar("charts/episodic_length", info["elapsed_step"][i], global_step)
            episode_returns[rows.start + i] = 0.0

    def checkpoint_now(iteration):
        path = os.path.join(run_dir, f"step_{global_step:09d}.cleanrl_model")
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        torch.save({"model": agent.state_dict(), "optimizer": optimizer.state_dict(), "args": vars(args), "global_step": global_step,
                    "iteration": iteration, "rng": rng, "script": os.path.basename(__file__), "variant": variant_name(args)}, path)
        return path

    def evaluate_now():
        returns = evaluate(agent, eval_envs, args.eval_episodes, device, autocast, args.eval_deterministic)[0]
        writer.add_scalar("eval/mean_return", returns.mean(), global_step)
        writer.add_scalar("eval/std_return", returns.std(), global_step)
        with open(evals_path, "a", newline="") as f:
            csv.writer(f).writerow([global_step, f"{returns.mean():.4f}", f"{returns.std():.4f}", ";".join(f"{r:g}" for r in returns)])
        if args.capture_video:
            os.makedirs(os.path.join(run_dir, "videos"), exist_ok=True)
            video_path = os.path.join(run_dir, "videos", f"eval_step_{global_step:09d}.mp4")
            record_video(agent, game, args.seed + 2_000_000 + global_step, device, autocast, video_path, args.eval_deterministic)
            if args.track:
                wandb.log({"eval/video": wandb.Video(video_path, format="mp4"), "global_step": global_step})
        return returns

    progress = tqdm(total=args.num_iterations * args.batch_size, initial=global_step, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty())
    print(f"{run_name}: {variant_name(args)} on {game}, {args.num_iterations * args.batch_size:,} steps, device {device}, precision {args.precision}, outputs in {run_dir}")
    start_time, start_step = time.time(), global_step
    for iteration in range(start_iteration, args.num_iterations + 1):
        iteration_start = time.time()
        env_time = policy_time = 0.0
        # Annealing the rate and the clip coefficient if instructed to do so (seed table: both x alpha, alpha 1 -> 0)
        frac = 1.0 - (iteration - 1.0) / args.num_iterations
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate if args.anneal_lr else args.learning_rate
        clip_coef = frac * args.clip_coef if args.anneal_clip else args.clip_coef
        torch.set_num_threads(args.rollout_threads)

        # one autocast region for the whole rollout: bf16 copies of the weights are made once, not every step
        with autocast():
            for step in range(0, args.num_steps):
                global_step += args.num_envs
                for g, envs in enumerate(env_groups):
                    rows = group_rows[g]
                    obs_buf[step, rows] = next_obs[rows]
                    dones_buf[step, rows] = next_done[rows]
                    terminals_buf[step, rows] = next_terminal[rows]

                    # ALGO LOGIC: action logic
                    tic = time.time()
                    with torch.no_grad(), autocast():
                        action, logprob, _, value = get_action_and_value(next_obs[rows])
                    values_buf[step, rows] = value.flatten()
                    actions_buf[step, rows] = action
                    logprobs_buf[step, rows] = logprob
                    action_np = action.cpu().numpy()
                    policy_time += time.time() - tic

                    # TRY NOT TO MODIFY: execute the game; collect the other group while this one steps
                    tic = time.time()
                    envs.send(action_np)
                    in_flight[g] = step
                    if in_flight[g - 1] is not None:  # with one group: itself
                        receive(g - 1)
                    env_time += time.time() - tic
        tic = time.time()
        for g in range(num_groups):
            if in_flight[g] is not None:
                receive(g)
        env_time += time.time() - tic

        # bootstrap value if not done
        with torch.no_grad(), autocast():
            next_value = get_value(next_obs).reshape(1, -1)
        advantages, returns = compute_gae(rewards_buf, values_buf, dones_buf, terminals_buf, next_value, next_done, next_terminal, args.gamma, args.gae_lambda)
        # a step taken from an episode's final observation is envpool's reset step (action ignored, no reward): not trained on
        valid = 1.0 - dones_buf

        # flatten the batch
        b_obs = obs_buf.reshape((-1, 4, 84, 84))  # (T * N, 4, 84, 84)
        b_logprobs = logprobs_buf.reshape(-1)
        b_actions = actions_buf.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values_buf.reshape(-1)
        b_valid = valid.reshape(-1)

        # Optimizing the policy and value network
        update_start = time.time()
        torch.set_num_threads(args.torch_threads or num_cores)
        b_inds = np.arange(args.batch_size)
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = torch.from_numpy(b_inds[start:end]).to(device)
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
                    clipfracs += [((((ratio - 1.0).abs() > clip_coef).float() * mb_valid).sum() / num_valid).item()]

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
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break
        update_time = time.time() - update_start

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # evaluation and checkpoints (small batches: acting threads, the other cores run the emulators)
        eval_start = time.time()
        torch.set_num_threads(args.rollout_threads)
        if global_step >= next_eval or iteration == args.num_iterations:
            eval_returns = evaluate_now()
            next_eval = (global_step // args.eval_freq + 1) * args.eval_freq
            last_eval = eval_returns.mean()
            progress.write(f"global_step={global_step}, eval mean_return={eval_returns.mean():.2f} +- {eval_returns.std():.2f}")
        if args.save_model and (global_step >= next_save or iteration == args.num_iterations):
            checkpoint_path = checkpoint_now(iteration)
            next_save = (global_step // args.save_freq + 1) * args.save_freq
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
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
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
            print(f"global_step={global_step}/{args.num_iterations * args.batch_size}, SPS={sps}, ETA={eta / 60:.1f} min, episodic_return={last_return:.1f}", flush=True)

    progress.close()
    if args.save_model:
        print(f"checkpoint: {checkpoint_path}")
    if args.save_attention:
        attention_path = os.path.join(run_dir, f"attention_step_{global_step:09d}.png")
        save_attention_grid(agent, game, args.seed + 3_000_000, device, autocast, attention_path)
        print(f"attention grid: {attention_path}")
        if args.track:
            wandb.log({"eval/attention": wandb.Image(attention_path), "global_step": global_step})
    for envs in env_groups + [eval_envs]:
        envs.close()
    writer.close()
    if args.track:
        wandb.finish()
