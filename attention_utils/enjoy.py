"""Watch a trained agent: play evaluation episodes of its game on rendered ALE, print the mean and
standard deviation of the returns, and write each episode as an mp4 with the agent's attention drawn
on every frame (the training script's own picture, `attention_utils.pictures`: per-head panels for multi-head agents).

    python -m attention_utils.enjoy --checkpoint runs/.../step_000500000.cleanrl_model --episodes 3
"""

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

from attention_utils.cli_checks import beside_checkpoint, check_at_least, check_checkpoint_exists, check_output_folder


@dataclass
class Args:
    checkpoint: str
    """a `.cleanrl_model` file written by any training script"""
    episodes: int = 1
    """how many full games to play (each one is recorded)"""
    out: Optional[str] = None
    """folder for the videos (default: `enjoy/` beside the checkpoint); videos already there are kept (`-2`, ...)"""
    seed: int = 5_000_000
    """seed of the first episode (episode i uses seed + i; training and evaluation use other seeds)"""
    deterministic: bool = False
    """take the most probable action instead of sampling"""
    game: Optional[str] = None
    """play another game with the same actions (e.g. `BreakoutInfinite` for a Breakout agent)"""
    threads: int = 0
    """torch threads; 0 = one per core this process may use"""


def check_args(args: Args) -> None:
    """Everything that can be checked before the checkpoint is loaded."""
    check_at_least("--episodes", args.episodes)
    check_at_least("--threads", args.threads, 0)
    check_checkpoint_exists(args.checkpoint)
    if args.out is not None:
        check_output_folder(args.out)


def main(args: Args) -> list[float]:
    check_args(args)
    from attention_utils.checkpoints import load_agent
    from attention_utils.pictures import record_video
    from attention_utils.runs import available_cores

    torch.set_num_threads(args.threads or available_cores())
    loaded = load_agent(args.checkpoint)
    game = loaded.script.parse_game(args.game) if args.game else loaded.game
    out = args.out or os.path.join(beside_checkpoint(args.checkpoint), "enjoy")
    os.makedirs(out, exist_ok=True)
    stem = os.path.basename(args.checkpoint).removesuffix(".cleanrl_model")
    returns = []
    for episode in range(args.episodes):
        path, copy = os.path.join(out, f"{game}_{stem}_episode_{episode}.mp4"), 1
        while os.path.exists(path):  # earlier videos are kept
            copy += 1
            path = os.path.join(out, f"{game}_{stem}_episode_{episode}-{copy}.mp4")
        episode_return = record_video(
            loaded.script, loaded.agent, game, args.seed + episode, "cpu", nullcontext, path, args.deterministic
        )
        returns.append(float(episode_return))
        print(f"episode {episode}: return {episode_return:g}, video {path}", flush=True)
    print(
        f"{loaded.variant} ({loaded.script.__name__}, step {loaded.global_step:,}) on {game}: "
        f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over {len(returns)} episodes"
    )
    return returns


if __name__ == "__main__":
    main(tyro.cli(Args))
