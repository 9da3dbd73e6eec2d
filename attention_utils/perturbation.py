"""Perturbation saliency (Greydanus et al. 2018, "Visualizing and Understanding Atari Agents", as used
by Mott et al., "Towards Interpretable Reinforcement Learning Using Attention Augmented Agents", section 4.7):
blur a Gaussian patch of the observation at every location of a grid and measure how much the policy and
the value move:

    X'(i, j) = X * (1 - M(i, j)) + blur(X) * M(i, j)        M: Gaussian mask of `sigma` pixels at (i, j)
    S_pi(i, j) = 1/2 || pi(X') - pi(X) ||^2                 S_V(i, j) = 1/2 (V(X') - V(X))^2

with pi the softmaxed policy, the action probabilities, as section 4.7 has it (`--policy logits`: the raw
logits, as Greydanus et al.'s own code does). As in section 4.7, the agent first plays more than 200
unperturbed steps (`--warmup 201`), then its states are explained every `--spacing` steps.

All perturbed observations of a frame go through the network in large batches, so a full 84x84 map
(stride 1: 7,056 forward passes) takes seconds on a CPU for the feed-forward agents. A recurrent agent
(ppo_atari_topdown.py) is explained at a given state: the episode is played with the script's `Memory`,
and at each explained frame every perturbed observation is seen for one step from the state, previous
action, reward and done flag the agent had before that frame (`checkpoints.policy_and_value(agent, memory)`),
all in one batch as for the feed-forward agents.

    python -m attention_utils.perturbation --checkpoint runs/.../step_000500000.cleanrl_model --frames 4
"""

import os
import sys
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from attention_utils.cli_checks import beside_checkpoint, check_at_least, check_played_states, free_path
from attention_utils.runs import save_figure

PolicyAndValue = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
PolicyOutput = Literal["probs", "logits"]


def gaussian_blur(obs: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) float -> the same blurred with a Gaussian of `sigma` pixels (reflect padding)."""
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = obs.shape[0]
    padded = F.pad(obs[None], (radius, radius, radius, radius), mode="reflect")  # (1, C, H + 2r, W + 2r)
    rows = F.conv2d(padded, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)[0]


@torch.no_grad()
def perturbation_saliency(
    policy_and_value: PolicyAndValue,
    obs: torch.Tensor,
    stride: int = 1,
    sigma: float = 5.0,
    blur_sigma: float = 3.0,
    batch_size: int = 256,
    policy: PolicyOutput = "probs",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy and value saliency of one observation (4, 84, 84) uint8: two (84, 84) maps. `policy_and_value`
    maps a batch (B, 4, 84, 84) uint8 to (logits (B, A), values (B,)), e.g. `checkpoints.policy_and_value`
    (a recurrent agent's closed over its state). `policy`: S_pi on the action probabilities ("probs",
    section 4.7) or on the logits ("logits", Greydanus et al.'s code). With stride > 1 the grid is coarser
    and the maps are brought back to 84x84 bilinearly."""
    if policy not in ("probs", "logits"):
        raise ValueError(f"policy must be 'probs' or 'logits', not {policy!r}")

    def policy_output(logits: torch.Tensor) -> torch.Tensor:  # (B, A) -> (B, A)
        return torch.softmax(logits.double(), -1) if policy == "probs" else logits.double()

    clean = obs.float()  # (4, 84, 84)
    height, width = clean.shape[1:]
    blurred = gaussian_blur(clean, blur_sigma)
    rows, cols = torch.arange(0, height, stride), torch.arange(0, width, stride)
    yy, xx = torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32)
    base_logits, base_value = policy_and_value(obs[None])
    base_policy = policy_output(base_logits)  # fp64: an untrained agent's probabilities move by ~1e-8
    policy_map, value_map = [], []
    centres = [(int(r), int(c)) for r in rows for c in cols]
    for start in range(0, len(centres), batch_size):
        chunk = torch.tensor(centres[start : start + batch_size], dtype=torch.float32)  # (B, 2)
        masks = torch.exp(
            -((yy[None, :, None] - chunk[:, 0, None, None]) ** 2 + (xx[None, None, :] - chunk[:, 1, None, None]) ** 2)
            / (2 * sigma**2)
        )  # (B, 84, 84)
        perturbed = clean[None] * (1 - masks[:, None]) + blurred[None] * masks[:, None]  # (B, 4, 84, 84)
        logits, values = policy_and_value(perturbed.round().to(torch.uint8))
        policy_map.append(0.5 * ((policy_output(logits) - base_policy) ** 2).sum(-1).float())
        value_map.append(0.5 * (values - base_value) ** 2)
    grid = (len(rows), len(cols))
    policy_map, value_map = torch.cat(policy_map).view(grid), torch.cat(value_map).view(grid)
    if stride > 1:
        policy_map = F.interpolate(policy_map[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        value_map = F.interpolate(value_map[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return policy_map, value_map


def overlay(rgb: np.ndarray, saliency: torch.Tensor, channel: int) -> np.ndarray:
    """The RGB frame with a (84, 84) non-negative map added to one colour channel (scaled to its max)."""
    large = F.interpolate(saliency[None, None].float(), size=rgb.shape[:2], mode="bilinear")[0, 0].numpy()  # (210, 160)
    peak = float(large.max())
    large = large / peak if peak > 0 else large  # an untrained agent's maps peak around 1e-14: scale them all the same
    image = rgb.astype(np.float32)
    image[..., channel] = np.clip(image[..., channel] + 255.0 * large, 0, 255)
    return image.astype(np.uint8)


@dataclass
class Args:
    checkpoint: str
    """a `.cleanrl_model` file written by any training script (recurrent agents are explained at the state they had)"""
    frames: int = 4
    """how many states of one evaluation episode to explain"""
    warmup: int = 201
    """unperturbed agent steps played before the first explained state (section 4.7: more than 200)"""
    spacing: int = 40
    """agent steps between the explained states"""
    policy: PolicyOutput = "probs"
    """S_pi on the softmaxed policy ("probs", section 4.7) or on the raw logits ("logits", Greydanus et al.'s code)"""
    stride: int = 1
    """grid step in 84x84 pixels (1 = every pixel)"""
    sigma: float = 5.0
    """width of the Gaussian perturbation mask, pixels"""
    seed: int = 6_000_000
    """seed of the episode"""
    out: Optional[str] = None
    """output PNG (default: `perturbation_step_*.png` beside the checkpoint); an existing file is kept (`-2`, ...)"""


def check_args(args: Args) -> None:
    check_at_least("--stride", args.stride)
    if not args.sigma > 0:
        sys.exit(f"error: --sigma {args.sigma}: must be positive")
    check_played_states(args.frames, args.spacing, args.warmup, args.checkpoint, args.out)


def main(args: Args) -> str:
    check_args(args)  # before the slow imports
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attention_utils.checkpoints import PlayedGame, is_recurrent, load_agent, policy_and_value

    loaded = load_agent(args.checkpoint)
    agent = loaded.agent
    recurrent = is_recurrent(agent)
    game = PlayedGame(loaded, args.seed)
    explained_steps = [args.warmup + i * args.spacing for i in range(args.frames)]
    explained = []  # (step, RGB frame, observation, the agent's policy and value at that point of the game)
    since_restart = 0  # steps since the agent last started afresh: an episode start (recurrent agents: also a lost life)
    for step in range(explained_steps[-1] + 1):
        if step in explained_steps:
            if since_restart < args.warmup:
                print(
                    f"note: the state at step {step} is {since_restart} steps after "
                    f"{'a restart of the agent' if recurrent else 'an episode start'}, fewer than --warmup {args.warmup}"
                )
            explained.append((step, game.rgb(), game.obs.clone(), policy_and_value(agent, game.memories[0])))
            if step == explained_steps[-1]:
                break
        with torch.no_grad():
            action = (
                game.memories[0].act(agent, game.obs[None]) if recurrent else agent.get_action_and_value(game.obs[None])[0]
            )
        lives = game.lives
        episode_over = game.step(int(action))
        since_restart = 0 if episode_over or (recurrent and game.lives < lives) else since_restart + 1
    game.close()
    print(f"explained states at steps {', '.join(map(str, explained_steps))}; S_pi on the {args.policy}", flush=True)
    fig, axes = plt.subplots(len(explained), 3, figsize=(7.5, 3.6 * len(explained)), squeeze=False)
    policy_name = "probabilities" if args.policy == "probs" else "logits"
    for row, (step, rgb, stacked, policy_and_value_here) in enumerate(explained):
        policy_map, value_map = perturbation_saliency(
            policy_and_value_here, stacked, args.stride, args.sigma, policy=args.policy
        )
        for col, (image, title) in enumerate(
            [
                (rgb, f"step {step}"),
                (overlay(rgb, policy_map, 2), f"policy saliency (blue, {policy_name})"),
                (overlay(rgb, value_map, 0), "value saliency (red)"),
            ]
        ):
            axes[row, col].imshow(image)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            axes[row, col].set_title(title, fontsize=9)
    fig.tight_layout()
    out = free_path(
        args.out or os.path.join(beside_checkpoint(args.checkpoint), f"perturbation_step_{loaded.global_step:09d}.png")
    )
    save_figure(fig, out, dpi=80)
    plt.close(fig)
    print(f"perturbation saliency of {loaded.variant} on {loaded.game}: {out}")
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
