"""The training script's attention picture (what `--save-attention` writes at the end of a run) for any checkpoint:

python -m attention_utils.pictures --checkpoint zoo/Pong__ppo_atari_selfattn__CWCA/step_005000000.cleanrl_model
"""

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import tyro

from attention_utils.cli_checks import beside_checkpoint, check_at_least, check_checkpoint_exists, check_output_file, free_path


@dataclass
class Args:
    checkpoint: str
    """a `.cleanrl_model` file (or a run folder: its latest checkpoint) written by any training script"""
    out: Optional[str] = None
    """the PNG (default: `attention_step_*.png` beside the checkpoint); an existing file is kept (`-2`, ...)"""
    seed: int = 3_000_001
    """seed of the rendered game the states come from (a run with `--seed 1 --save-attention` uses 3,000,001)"""
    states: int = 4
    """how many states of the game (rows of the picture), 40 steps apart"""
    threads: int = 0
    """torch threads; 0 = one per core this process may use"""


def main(args: Args) -> str:
    check_checkpoint_exists(args.checkpoint)
    check_at_least("--threads", args.threads, 0)
    check_at_least("--states", args.states)
    if args.out is not None:
        check_output_file(args.out)
    import torch

    from attention_utils.checkpoints import load_agent
    from attention_utils.pictures import save_attention_grid
    from attention_utils.runs import available_cores

    torch.set_num_threads(args.threads or available_cores())
    loaded = load_agent(args.checkpoint)
    default = os.path.join(beside_checkpoint(args.checkpoint), f"attention_step_{loaded.global_step:09d}.png")
    path = free_path(args.out or default)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_attention_grid(loaded.script, loaded.agent, loaded.game, args.seed, "cpu", nullcontext, path, args.states)
    print(f"{loaded.variant} ({loaded.script.__name__}, step {loaded.global_step:,}) on {loaded.game}: {path}")
    return path


if __name__ == "__main__":
    main(tyro.cli(Args))
