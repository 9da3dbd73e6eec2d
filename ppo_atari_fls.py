# PPO on Atari with Free-Lunch Saliency (FLS) and its baselines: Nature CNN, DAQN, RS-PPO.
# "Free-Lunch Saliency via Attention in Atari Agents" (architectures, Table 2); OpenAI-baselines PPO2
# Atari hyper-parameters; training loop in the shape of CleanRL's ppo_atari_envpool.py.
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
    """if toggled, the paper's Figure-4 picture (saliency on the RGB frame and on the 84x84 input) of a few evaluation states is written at the end"""

    # Algorithm specific arguments (OpenAI-baselines PPO2 Atari defaults)
    env_id: str = "Breakout"
    """the Atari game: `Pong`, `Pong-v5`, `PongNoFrameskip-v4` and `ALE/Pong-v5` all name the same game"""
    total_timesteps: int = 12_500_000
    """total agent steps (one step = 4 emulator frames) summed over all environments; the paper: 5e7 frames"""
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
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    clip_vloss: bool = False
    """toggles the use of a clipped loss for the value function (off in SB3)"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.25
    """coefficient of the value loss, a plain mean squared error (baselines' vf_coef 0.5 on half the squared error)"""
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
    arch: Literal[
        "nature", "daqn", "rsppo", "rsppo_nopad", "sparse_fls", "sparse_fls_pool", "sparse_fls_norm", "sparse_fls_1x1",
        "sparse_fls_sp2", "sparse_fls_norelu", "sparse_fls_norelu_pool", "sparse_fls_h1", "sparse_fls_x3", "dense_fls",
        "dense_fls_norelu",
    ] = "sparse_fls"
    """the model of the paper's Tables 2-3 (see the README)"""

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


ARCHS = (
    "nature", "daqn", "rsppo", "rsppo_nopad", "sparse_fls", "sparse_fls_pool", "sparse_fls_norm", "sparse_fls_1x1",
    "sparse_fls_sp2", "sparse_fls_norelu", "sparse_fls_norelu_pool", "sparse_fls_h1", "sparse_fls_x3", "dense_fls",
    "dense_fls_norelu",
)


def softplus2(x: torch.Tensor) -> torch.Tensor:
    """Base-2 SoftPlus, log2(1 + 2^x) = softplus(x ln 2) / ln 2."""
    return F.softplus(x * math.log(2.0)) / math.log(2.0)


class FLS(nn.Module):
    """Free-Lunch Saliency module (the paper's Fig. 1d): Conv(C->256, k, same) -> ReLU -> Conv(256->1, k,
    same) -> SoftPlus, giving a non-negative (N, 1, h, w) map; optionally base-2 SoftPlus or a map
    normalised to sum 1 over space."""

    def __init__(self, channels: int, kernel_size: int = 3, base2: bool = False, normalize: bool = False):
        super().__init__()
        self.hidden = layer_init(nn.Conv2d(channels, 256, kernel_size, padding=kernel_size // 2))
        self.out = layer_init(nn.Conv2d(256, 1, kernel_size, padding=kernel_size // 2))
        self.base2, self.normalize = base2, normalize

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.out(F.relu(self.hidden(features))).float()  # (N, 1, h, w)
        saliency = softplus2(logits) if self.base2 else F.softplus(logits)
        if self.normalize:
            saliency = saliency / saliency.sum((2, 3), keepdim=True).clamp(min=1e-8)
        return saliency


# receptive field, stride and padding of one cell of each block's output on the 84x84 input
RECEPTIVE_FIELDS = {"sparse": (36, 8, 0), "first_conv": (8, 4, 0), "dense": (13, 1, 6), "sparse_padded": (36, 8, 1)}


def upsample_to_input(saliency: torch.Tensor, block: str = "sparse") -> torch.Tensor:
    """(N, h, w) map on a block's output grid -> (N, 84, 84): transposed convolution with a ones kernel of
    the block's receptive field, stride and padding (the paper's visualisation), so a single hot cell
    lights exactly the input pixels it sees."""
    size, stride, padding = RECEPTIVE_FIELDS[block]
    ones = torch.ones(1, 1, size, size, dtype=saliency.dtype, device=saliency.device)
    full = F.conv_transpose2d(saliency[:, None], ones, stride=stride)[:, 0]  # (N, H', W'), from the padded input's corner
    upsampled = full[:, padding : padding + 84, padding : padding + 84]  # drop the padding: input coordinates
    missing = 84 - upsampled.shape[-1]  # input pixels past the last full stride are seen by no cell: zero
    return F.pad(upsampled, (0, missing, 0, missing)) if missing > 0 else upsampled


class Agent(nn.Module):
    """Nature-CNN agents with attention (the paper's Fig. 2 and Table 2); `arch` is one of ARCHS."""

    def __init__(self, num_actions: int, arch: str = "sparse_fls"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
        self.arch = arch
        dense = arch.startswith("dense")
        if dense:  # Dense block: stride 1, same padding, 84x84 output
            self.convs = nn.ModuleList([layer_init(nn.Conv2d(4, 32, 7, padding=3)), layer_init(nn.Conv2d(32, 64, 5, padding=2)), layer_init(nn.Conv2d(64, 64, 3, padding=1))])
        else:  # Sparse block (Nature CNN): 84 -> 20 -> 9 -> 7
            self.convs = nn.ModuleList([layer_init(nn.Conv2d(4, 32, 8, stride=4)), layer_init(nn.Conv2d(32, 64, 4, stride=2)), layer_init(nn.Conv2d(64, 64, 3, stride=1))])
        self.block = "dense" if dense else ("sparse_padded" if arch == "rsppo" else "sparse")
        self.relu_before_module = "norelu" not in arch
        self.pooled = arch.endswith("pool") or dense or arch == "daqn"
        self.fls = nn.ModuleDict()
        if "fls" in arch:
            kernel_size = 1 if arch.endswith("1x1") else 3
            positions = {"sparse_fls_h1": ["0"], "sparse_fls_x3": ["0", "1", "2"]}.get(arch, ["2"])
            for position in positions:  # after conv 0, 1 or 2
                channels = self.convs[int(position)].out_channels
                self.fls[position] = FLS(channels, kernel_size, base2=arch.endswith("sp2"), normalize=arch.endswith("norm"))
        if arch == "daqn":  # 1x1 64->256, tanh, 1x1 ->1, spatial softmax
            self.daqn_hidden = layer_init(nn.Conv2d(64, 256, 1))
            self.daqn_out = layer_init(nn.Conv2d(256, 1, 1))
        if arch.startswith("rsppo"):  # L2-normalised channels, 1x1 ->512, ELU, 1x1 ->2, spatial softmax per channel
            self.rs_hidden = layer_init(nn.Conv2d(64, 512, 1))
            self.rs_out = layer_init(nn.Conv2d(512, 2, 1))
        self.fc = layer_init(nn.Linear(64 if self.pooled else 64 * 7 * 7, 512))
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)

    def features_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The 512 features and the attention maps on their own grids, {"attention": (N, h, w)} (and for
        x3 each module's map as "attention_{i}")."""
        autocast_on = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast_on else torch.float32
        # (N, 4, 84, 84); 0..255 are exact in bf16, the 1/255 goes into the first kernel; channels-last makes
        # every conv (forward and backward) about 25% faster on CPU
        h = x.to(dtype=dtype, memory_format=torch.channels_last)
        if self.arch == "rsppo":
            h = F.pad(h, (1, 1, 1, 1))  # (N, 4, 86, 86)
        maps = {}
        for i, conv in enumerate(self.convs):
            weight = conv.weight / 255.0 if i == 0 else conv.weight
            h = F.conv2d(h, weight, conv.bias, stride=conv.stride, padding=conv.padding)
            last = i == len(self.convs) - 1
            if not (last and not self.relu_before_module):
                h = F.relu(h)
            if str(i) in self.fls:
                saliency = self.fls[str(i)](h)  # (N, 1, h, w)
                maps[f"attention_{i}"] = saliency[:, 0]
                h = h * saliency
        if self.arch == "daqn":
            logits = self.daqn_out(torch.tanh(self.daqn_hidden(h))).float()  # (N, 1, 7, 7)
            weights = torch.softmax(logits.flatten(2), -1).view_as(logits)  # spatial softmax
            maps["attention"] = weights[:, 0]
            h = h * weights
        elif self.arch.startswith("rsppo"):
            h = F.normalize(h.float(), dim=1)  # unit L2 norm over channels at each location
            logits = self.rs_out(F.elu(self.rs_hidden(h))).float()  # (N, 2, 7, 7)
            weights = torch.softmax(logits.flatten(2), -1).view_as(logits).sum(1, keepdim=True)  # (N, 1, 7, 7)
            maps["attention"] = weights[:, 0]
            h = h * weights
        if self.arch == "sparse_fls_x3":  # the three maps summed on the first module's grid (20x20)
            ones = torch.ones(1, 1, 8, 8, device=x.device)
            map_1 = F.conv_transpose2d(maps["attention_1"].float()[:, None], ones[..., :4, :4], stride=2)  # (N, 1, 9, 9) -> (N, 1, 20, 20)
            map_2 = F.conv_transpose2d(maps["attention_2"].float()[:, None], ones, stride=2)  # (N, 1, 7, 7) -> (N, 1, 20, 20)
            maps["attention"] = maps["attention_0"].float() + map_1[:, 0] + map_2[:, 0]
        elif self.fls:
            maps["attention"] = maps.pop(f"attention_{next(iter(self.fls))}")
        h = h.sum((2, 3)) if self.pooled else h.flatten(1)  # (N, 64) or (N, 3136)
        return F.relu(self.fc(h)), maps

    def hidden(self, x):
        return self.features_and_maps(x)[0]

    def get_value(self, x):
        return self.critic(self.hidden(x)).float()

    def get_action_and_value(self, x, action=None, deterministic=False):
        hidden = self.hidden(x)
        logits = self.actor(hidden).float()  # the distribution and losses stay in fp32 under autocast
        probs = Categorical(logits=logits)
        if action is None:
            action = logits.argmax(-1) if deterministic else probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden).float()

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (N, h, w)} on the module's own grid; `nature` has no attention module and
        returns {}."""
        maps = self.features_and_maps(x)[1]
        return {k: v.float() for k, v in maps.items()}

    @torch.no_grad()
    def saliency(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """(N, 84, 84) saliency on the input, or None for `nature`."""
        maps = self.attention_maps(x)
        if not maps:
            return None
        block = "first_conv" if self.arch in ("sparse_fls_h1", "sparse_fls_x3") else self.block
        return upsample_to_input(maps["attention"], block)


def make_agent(args: Args, num_actions: int) -> Agent:
    return Agent(num_actions, args.arch)


def variant_name(args: Args) -> str:
    """The architecture's name in run folders and checkpoints."""
    return args.arch


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


def saliency_panels(rgb: np.ndarray, stacked: torch.Tensor, saliency: Optional[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of the paper's Figure 4 for one state: the raw RGB frame with the saliency in white,
    and the newest preprocessed 84x84 frame with the saliency in green. saliency: (84, 84), non-negative,
    scaled to [0, 1] per frame; None (nature) leaves both plain. Returns (210, 160, 3) and (84, 84, 3) uint8."""
    grey = stacked[-1].float().cpu().numpy()  # (84, 84), the newest frame
    top, bottom = rgb.astype(np.float32), np.stack([grey] * 3, -1)  # (210, 160, 3), (84, 84, 3)
    if saliency is not None:
        small = saliency.float().cpu()
        small = (small / small.max().clamp(min=1e-8)).numpy()
        large = F.interpolate(torch.from_numpy(small)[None, None], size=rgb.shape[:2], mode="bilinear")[0, 0].float().numpy()  # (210, 160)
        top = top * (1 - large[..., None]) + 255.0 * large[..., None]  # white
        bottom[..., 1] = np.maximum(bottom[..., 1], 255.0 * small)  # green
    return top.astype(np.uint8), bottom.astype(np.uint8)


def video_frame(agent, rgb: np.ndarray, obs: torch.Tensor) -> np.ndarray:
    """One video frame: Figure 4's two panels stacked, the 84x84 input scaled to the frame's width
    (nearest). obs: (4, 84, 84) uint8."""
    saliency = agent.saliency(obs[None])  # (1, 84, 84) or None
    top, bottom = saliency_panels(rgb, obs, None if saliency is None else saliency[0])
    width = rgb.shape[1]
    bottom = F.interpolate(torch.from_numpy(bottom).permute(2, 0, 1)[None].float(), size=(width, width), mode="nearest")  # (1, 3, 160, 160)
    return np.concatenate([top, bottom[0].permute(1, 2, 0).to(torch.uint8).numpy()], axis=0)  # (370, 160, 3)


def save_attention_grid(agent, game, seed, device, autocast, path, num_states=4, spacing=40):
    """The paper's Figure-4 picture for a few evaluation states: the raw RGB frame with the saliency in
    white (top) and the preprocessed 84x84 input with the saliency in green (bottom)."""
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
    saliency = agent.saliency(batch)  # (K, 84, 84) or None
    fig, axes = plt.subplots(2, len(states), figsize=(2.6 * len(states), 6.2), squeeze=False)
    for col, (rgb, stacked) in enumerate(states):
        top, bottom = saliency_panels(rgb, stacked, None if saliency is None else saliency[col])
        axes[0, col].imshow(top)
        axes[1, col].imshow(bottom)
        for row in range(2):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].set_title(agent.arch if saliency is not None else f"{agent.arch}: no attention module", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


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
