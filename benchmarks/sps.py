"""End-to-end training throughput of a training script at its default settings, per variant.

    python benchmarks/sps.py                      # ppo_atari_selfattn.py, 100 iterations per variant
    python benchmarks/sps.py --variants NA --iterations 20
    python benchmarks/sps.py --script ppo_atari_fls.py --variant-flag arch --variants sparse_fls nature
    python benchmarks/sps.py --script ppo_atari_topdown.py --variant-flag query-mode --variants topdown \
        --iterations 2 --warmup 1

Runs the real script (no evaluation until the end, no checkpoint) in a scratch folder and reads its
tensorboard log: SPS of the whole run (to the last iteration before the final evaluation), the mean time split of
the iterations after `--warmup` ones, and the SPS those iterations give (`iter SPS`: one batch over their mean time).
First it prints envpool's own speed (random actions, 16 envs): on a shared machine, compare tables
measured at similar envpool speeds.
"""

import glob
import importlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import envpool
import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    script: str = "ppo_atari_selfattn.py"
    """the training script"""
    variant_flag: str = "self-attn"
    """the script's architecture flag"""
    variants: tuple[str, ...] = ("NA", "SWA", "CWRA", "CWCA", "CWRCA")
    """variants to run"""
    game: str = "Breakout"
    """the Atari game"""
    iterations: int = 100
    """PPO iterations per run (num_envs x num_steps agent steps each)"""
    warmup: int = 2
    """first iterations left out of the time split (start-up, first allocations)"""
    extra: tuple[str, ...] = ()
    """extra arguments for the script, e.g. --extra --precision fp32"""


if __name__ == "__main__":
    args = tyro.cli(Args)
    if not 0 <= args.warmup < args.iterations:
        sys.exit(f"--warmup {args.warmup} must be at least 0 and below --iterations {args.iterations}")
    sys.path.insert(0, REPO)
    defaults = importlib.import_module(args.script.removesuffix(".py")).Args()
    batch_size = defaults.num_envs * defaults.num_steps
    envs = envpool.make(
        f"{args.game}-v5", env_type="gymnasium", num_envs=16, batch_size=16, num_threads=len(os.sched_getaffinity(0))
    )
    envs.reset()
    start = time.perf_counter()
    for _ in range(500):
        envs.step(np.random.randint(envs.action_space.n, size=16))
    print(f"envpool alone: {500 * 16 / (time.perf_counter() - start):,.0f} steps/s\n")
    envs.close()
    print("| variant | SPS | iter SPS | env s | policy s | update s | other s | other % |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as scratch:
            command = [
                sys.executable,
                os.path.join(REPO, args.script),
                f"--{args.variant_flag}",
                variant,
                "--env-id",
                args.game,
                "--total-timesteps",
                str(args.iterations * batch_size),
                "--eval-freq",
                str(10**12),
                "--eval-episodes",
                "1",
                "--no-save-model",
                *args.extra,
            ]
            subprocess.run(
                command, cwd=scratch, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"}
            )
            events = EventAccumulator(glob.glob(os.path.join(scratch, "runs", "*"))[0])
            events.Reload()
            split = {
                k: [e.value for e in events.Scalars(f"perf/{k}")[args.warmup :]]
                for k in ("env_s", "policy_s", "update_s", "other_s")
            }
            mean = {k: sum(v) / len(v) for k, v in split.items()}
            # the last iteration includes the final evaluation (its perf/eval_s is not in the split)
            sps = events.Scalars("charts/SPS")[-2 if args.iterations > 1 else -1].value
            iteration_sps = batch_size / sum(mean.values())
            share = 100 * mean["other_s"] / sum(mean.values())
            print(
                f"| {variant} | {sps:,.0f} | {iteration_sps:,.1f} | {mean['env_s']:.2f} | {mean['policy_s']:.2f} "
                f"| {mean['update_s']:.2f} "
                f"| {mean['other_s']:.3f} | {share:.1f} |",
                flush=True,
            )
