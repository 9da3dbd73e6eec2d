"""Export a trained agent to the zoo: one folder per agent, `zoo/{Game}__{script}__{variant}/`, that any tool and any
script takes as it is.

    python -m attention_utils.zoo --checkpoint runs/RUN/step_005000000.cleanrl_model \\
        --evaluation runs/RUN/eval_only_Pong_step_005000000_30ep.csv --anchors docs/anchors.csv

The folder holds:
- `step_{step}.cleanrl_model`: the checkpoint without its optimizer state (weights, args, step, iteration, RNG), a
  third of the size. `--eval-only --resume` and every `attention_utils` tool read it as they read any checkpoint;
  `--resume` trains on from it with a fresh Adam optimizer, in a new run folder, and says so in one line.
- `evals.csv` (the run's evaluations up to that step), `args.json`, the `--eval-only` CSV of the card's evaluation;
- `learning.png`: the evaluation returns against steps, with the anchors of the same game beside them;
- `README.md`, the card: the command that trained it, steps, training time and machine, the final evaluation
  (mean ± std over at least 30 games) and the curve; `card.json` holds the same facts for programs, and the check
  `tests/test_zoo.py` runs: a short fixed-seed `--eval-only` must score at least `check.min_mean`.
"""

import csv
import dataclasses
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro

from attention_utils.cli_checks import check_at_least, check_output_folder
from attention_utils.curves import plot_curves, read_anchors, read_evals
from attention_utils.runs import available_cores, read_checkpoint, write_atomically, write_text

MIN_CARD_EPISODES = 30
# settings the card's command leaves out: computed at run time, or how the run was shown and resumed
NOT_IN_COMMAND = {"exp_name", "batch_size", "minibatch_size", "num_iterations", "resume", "eval_only", "eval_env_id"}
NOT_IN_COMMAND |= {"eval_dir", "precision", "track", "wandb_project_name", "wandb_entity", "cuda", "compile"}
PERF_TAGS = ("perf/env_s", "perf/policy_s", "perf/update_s", "perf/eval_s", "perf/other_s")


@dataclass
class Args:
    checkpoint: str
    """the `.cleanrl_model` checkpoint to export (in its run folder: evals.csv, args.json and the events are read there)"""
    evaluation: str
    """the `--eval-only` CSV of this checkpoint that the card reports (at least 30 games)"""
    out: str = "zoo"
    """the zoo folder; the agent goes into `{out}/{Game}__{script}__{variant}/` (an existing one is refused)"""
    machine: Optional[str] = None
    """the machine that trained it, for the card (default: this machine's CPU model and core count)"""
    anchors: Optional[str] = None
    """a CSV of reference curves (game, source, global_step, mean_return); the rows of the agent's game are drawn"""
    check_episodes: int = 3
    """games of the zoo test's fixed-seed `--eval-only` (fp32)"""
    check_min_mean: Optional[float] = None
    """the mean return that test requires (default: the card's mean minus its standard deviation)"""
    notes: str = ""
    """a paragraph for the card (how the run was stopped, resumed, what it is for)"""
    continues: Optional[str] = None
    """the zoo folder (moved aside) whose exported checkpoint this run was resumed from: its evaluations, training time
    and machine come first in the new card"""


def describe_machine() -> str:
    """`AMD EPYC, 2 cores` from /proc/cpuinfo (the platform's name elsewhere)."""
    import platform

    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {available_cores()} cores"


def training_command(script, saved_args: dict) -> str:
    """`python ppo_atari_selfattn.py --self-attn CWCA --env-id Pong`: the settings that differ from the script's
    defaults (the run-time and run-control ones left out)."""
    defaults = script.Args()
    flags = []
    for field in dataclasses.fields(script.Args):
        name = field.name
        if name in NOT_IN_COMMAND or name not in saved_args:
            continue
        if saved_args[name] == getattr(defaults, name) and name != "env_id":  # the game is always named
            continue
        value = saved_args[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            flags.append(f"{flag} {value}")
    return " ".join([f"python {os.path.basename(script.__file__)}"] + flags)


def training_seconds(run_dir: Path, step: int) -> Optional[float]:
    """The sum of the logged iteration times (perf/*) up to `step`: training, evaluations and checkpoints, without
    the start-up of each (resumed) process; None without tensorboard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    per_step = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = set(accumulator.Tags()["scalars"])
        for tag in PERF_TAGS:
            if tag in tags:
                for event in accumulator.Scalars(tag):  # a resumed run logs a step again: the last one counts
                    per_step.setdefault(event.step, {})[tag] = event.value
    if not per_step:
        return None
    return float(sum(sum(values.values()) for s, values in per_step.items() if s <= step))


def read_returns(path: str) -> np.ndarray:
    """The `return` column of an `--eval-only` CSV."""
    with open(path, newline="") as f:
        return np.array([float(row["return"]) for row in csv.DictReader(f)])


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown (no tensorboard events)"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def card_text(card: dict, evals: list[list[str]], notes: str) -> str:
    evaluation = card["evaluation"]
    table = "\n".join(f"| {int(r[0]):,} | {float(r[1]):.1f} ± {float(r[2]):.1f} |" for r in evals[1:])
    lines = [
        f"# {card['game']}: {card['script']} {card['variant']}",
        "",
        f"A {card['variant']} agent of `{card['script']}` trained on {card['game']} for {card['steps']:,} agent steps "
        f"(one seed). Final evaluation over {evaluation['episodes']} games on unseen seeds (`--eval-only`): "
        f"**{evaluation['mean']:.1f} ± {evaluation['std']:.1f}** (median {evaluation['median']:g}, "
        f"min {evaluation['min']:g}, max {evaluation['max']:g}).",
        "",
        "| | |",
        "|---|---|",
        f"| trained with | `{card['command']}` |",
        f"| steps | {card['steps']:,} (of the {card['schedule_steps']:,}-step schedule: learning rate and clip range annealed "
        "over the whole schedule) |",
        f"| precision | {card['precision']} |",
        f"| training time | {format_duration(card['training_seconds'])} (sum of the logged iteration times) |",
        f"| machine | {card['machine']} |",
        f"| checkpoint | `{card['checkpoint']}` (no optimizer state) |",
        "",
    ]
    if card.get("continued_from"):
        lines += [
            f"Trained to step {card['continued_from']:,}, exported, then resumed from that checkpoint with a fresh Adam "
            f"optimizer (`--resume`) to step {card['steps']:,}; the training time is the sum of both runs.",
            "",
        ]
    if notes:
        lines += [notes, ""]
    lines += [
        "![learning curve](learning.png)",
        "",
        "Use it:",
        "",
        "```bash",
        f"python {card['script']} --eval-only --resume zoo/{card['folder']}/{card['checkpoint']} --eval-episodes 30 "
        "--eval-dir /tmp/eval",
        f"python -m attention_utils.enjoy --checkpoint zoo/{card['folder']}/{card['checkpoint']} --out /tmp/enjoy",
        f"python {card['script']} --resume zoo/{card['folder']}/{card['checkpoint']}   # trains on, fresh optimizer",
        "```",
        "",
        f"Evaluations during training (the script's own, every {card['eval_freq']:,} steps, "
        f"{card['eval_episodes']} games each; mean ± std):",
        "",
        "| step | return |",
        "|---|---|",
        table,
        "",
    ]
    return "\n".join(lines)


def read_earlier_card(folder: str, checkpoint: dict, step: int) -> dict:
    """`--continues`: the earlier zoo folder's card and evaluations; exits with one line unless this checkpoint's run
    went on from it (the same script, variant settings and game, a later step)."""
    card_path, evals_path = os.path.join(folder, "card.json"), os.path.join(folder, "evals.csv")
    if not (os.path.isfile(card_path) and os.path.isfile(evals_path)):
        sys.exit(f"error: --continues {folder}: not a zoo folder (needs card.json and evals.csv)")
    with open(card_path) as f:
        earlier = json.load(f)
    earlier_checkpoint, problem = read_checkpoint(os.path.join(folder, earlier["checkpoint"]))
    if earlier_checkpoint is None:
        sys.exit(f"error: --continues {folder}: its checkpoint {earlier['checkpoint']}: {problem}")
    same = {k: v for k, v in earlier_checkpoint["args"].items() if k not in NOT_IN_COMMAND and "thread" not in k}
    if earlier["script"] != checkpoint["script"] or any(checkpoint["args"].get(k) != v for k, v in same.items()):
        sys.exit(f"error: --continues {folder}: its agent was trained with other settings than this checkpoint's")
    if earlier["steps"] >= step:
        sys.exit(f"error: --continues {folder}: it is at step {earlier['steps']:,}, not before this checkpoint's {step:,}")
    earlier["evals"] = read_evals(Path(evals_path), earlier["steps"])
    return earlier


def export(args: Args) -> Path:
    check_at_least("--check-episodes", args.check_episodes)
    check_output_folder(args.out)
    for flag, path in (("--checkpoint", args.checkpoint), ("--evaluation", args.evaluation), ("--anchors", args.anchors)):
        if path is not None and not os.path.isfile(path):
            sys.exit(f"error: {flag} {path}: no such file")
    checkpoint, problem = read_checkpoint(args.checkpoint)
    if checkpoint is None:
        sys.exit(f"error: --checkpoint {args.checkpoint}: {problem}")
    step, run_dir = checkpoint["global_step"], Path(args.checkpoint).resolve().parent
    from attention_utils.evaluations import EVAL_ONLY_NAME

    match = EVAL_ONLY_NAME.fullmatch(os.path.basename(args.evaluation))
    if match is None or int(match["step"]) != step:
        expected = f"eval_only_<Game>_step_{step:09d}_<N>ep.csv"
        sys.exit(f"error: --evaluation {args.evaluation}: not the --eval-only CSV of step {step} ({expected})")
    returns = read_returns(args.evaluation)
    if len(returns) < MIN_CARD_EPISODES:
        sys.exit(f"error: --evaluation {args.evaluation} has {len(returns)} games; a card needs at least {MIN_CARD_EPISODES}")
    from attention_utils.checkpoints import import_script

    script = import_script(checkpoint["script"])
    saved = checkpoint["args"]
    game = script.parse_game(saved["env_id"])
    if match["game"] != game:
        sys.exit(f"error: --evaluation {args.evaluation} played {match['game']}; the card's evaluation is on {game}")
    variant = script.variant_name(script.Args(**{k: v for k, v in saved.items() if k in script.Args.__dataclass_fields__}))
    folder_name = f"{game}__{checkpoint['script'].removesuffix('.py')}__{variant}"
    folder = Path(args.out) / folder_name
    if folder.exists():
        sys.exit(f"error: {folder} exists; move it away first (a zoo agent is never overwritten)")
    anchors = read_anchors(args.anchors, game) if args.anchors else {}
    evals = read_evals(run_dir / "evals.csv", step)
    earlier = read_earlier_card(args.continues, checkpoint, step) if args.continues else None
    if earlier is not None:  # the earlier run's evaluations up to its exported step, then this run's
        evals = [evals[0]] + earlier["evals"][1:] + [r for r in evals[1:] if int(r[0]) > earlier["steps"]]

    folder.mkdir(parents=True)
    exported = {k: v for k, v in checkpoint.items() if k != "optimizer"}
    checkpoint_name = f"step_{step:09d}.cleanrl_model"
    buffer = io.BytesIO()
    torch.save(exported, buffer)
    write_atomically(folder / checkpoint_name, lambda f: f.write(buffer.getbuffer()))
    write_text(folder / "evals.csv", "".join(",".join(r) + "\n" for r in evals))
    write_text(folder / "args.json", json.dumps(saved, indent=2))
    shutil.copyfile(args.evaluation, folder / os.path.basename(args.evaluation))
    title = f"{game}, {checkpoint['script']} {variant}"
    plot_curves({"this agent (evaluation mean)": evals}, anchors, title, folder / "learning.png")
    mean, std = float(returns.mean()), float(returns.std())
    card = {
        "folder": folder_name,
        "game": game,
        "script": checkpoint["script"],
        "variant": variant,
        "checkpoint": checkpoint_name,
        "steps": step,
        "schedule_steps": saved["num_iterations"] * saved["batch_size"],
        "command": training_command(script, saved),
        "precision": saved["precision"],
        "eval_freq": saved["eval_freq"],
        "eval_episodes": saved["eval_episodes"],
        "training_seconds": training_seconds(run_dir, step),
        "machine": args.machine or describe_machine(),
        "continued_from": None,
        "evaluation": {
            "file": os.path.basename(args.evaluation),
            "episodes": len(returns),
            "mean": mean,
            "std": std,
            "median": float(np.median(returns)),
            "min": float(returns.min()),
            "max": float(returns.max()),
        },
        "check": {
            "episodes": args.check_episodes,
            "min_mean": args.check_min_mean if args.check_min_mean is not None else float(np.floor(mean - std)),
            "precision": "fp32",
        },
    }
    if earlier is not None:
        seconds = [t for t in (earlier["training_seconds"], card["training_seconds"]) if t is not None]
        card["training_seconds"] = sum(seconds) if seconds else None
        if earlier["machine"] != card["machine"]:
            card["machine"] = f"{earlier['machine']} to step {earlier['steps']:,}, then {card['machine']}"
        card["continued_from"] = earlier["steps"]
    write_text(folder / "card.json", json.dumps(card, indent=2) + "\n")
    write_text(folder / "README.md", card_text(card, evals, args.notes))
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"zoo: {folder} ({size / 1e6:.1f} MB): {mean:.2f} +- {std:.2f} over {len(returns)} games at step {step:,}")
    return folder


if __name__ == "__main__":
    export(tyro.cli(Args))
