"""Learning curves of a few runs beside their anchors: one picture and one table of evaluation returns per step, as
the docs show every curve.

    python -m attention_utils.curves --runs runs/A runs/B --labels "NA, paper settings" "NA, CleanRL's settings" \\
        --anchors docs/anchors.csv --out docs/images/learning_breakout_comparison.png

Each run's `evals.csv` (the periodic evaluations) gives a line, mean ± std over its games; the anchors of the runs'
game (a CSV of game, source, global_step, mean_return, such as `docs/anchors.csv`: published curves and the papers'
numbers) are drawn dashed with their points marked. The table (printed, and written beside the picture as `.md`)
has a row per evaluation step, rounded to 0.1M so that runs with other batch sizes share rows, and a column per run
and anchor; an anchor shows where it has a point at that step.
"""

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

from attention_utils.cli_checks import check_output_file, free_path
from attention_utils.runs import EVALS_HEADER, save_figure, write_text

ANCHORS_HEADER = ["game", "source", "global_step", "mean_return"]


def read_evals(path: Path, step: Optional[int] = None) -> list[list[str]]:
    """The rows of a run's evals.csv (up to `step`, if given), header first."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != EVALS_HEADER:
        sys.exit(f"error: {path}: not an evals.csv ({','.join(EVALS_HEADER)})")
    return [rows[0]] + [r for r in rows[1:] if step is None or int(r[0]) <= step]


def read_anchors(path: str, game: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{source: (steps, mean returns)} of `game` in an anchors CSV."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ANCHORS_HEADER:
            sys.exit(f"error: --anchors {path}: its header must be {','.join(ANCHORS_HEADER)}")
        curves = {}
        for line, row in enumerate(reader, start=2):
            try:
                row_game, source, step, value = row[0], row[1], int(row[2]), float(row[3])
            except (IndexError, ValueError):
                sys.exit(f"error: --anchors {path}, line {line}: expected game,source,global_step,mean_return")
            if row_game == game:
                curves.setdefault(source, []).append((step, value))
    return {source: tuple(np.array(v) for v in zip(*sorted(points))) for source, points in curves.items()}


def plot_curves(curves: dict[str, list[list[str]]], anchors: dict, title: str, path, until: Optional[int] = None) -> None:
    """Each curve's evaluation mean ± std against steps (millions); the anchors dashed, their points marked (only
    those up to `until` steps, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for i, (label, evals) in enumerate(curves.items()):
        steps = np.array([int(r[0]) for r in evals[1:]]) / 1e6
        means, stds = np.array([float(r[1]) for r in evals[1:]]), np.array([float(r[2]) for r in evals[1:]])
        ax.plot(steps, means, color=f"C{i}", label=label)
        ax.fill_between(steps, means - stds, means + stds, color=f"C{i}", alpha=0.15, linewidth=0)
    for i, (source, (anchor_steps, anchor_means)) in enumerate(sorted(anchors.items()), start=len(curves)):
        keep = anchor_steps <= until if until is not None else np.ones(len(anchor_steps), bool)
        ax.plot(anchor_steps[keep] / 1e6, anchor_means[keep], "--o", markersize=3, color=f"C{i}", label=source)
    ax.set_xlabel("agent steps (millions)")
    ax.set_ylabel("return (full game)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def table(curves: dict[str, list[list[str]]], anchors: dict) -> str:
    """Markdown: a row per evaluation step (rounded to 0.1M), a column per curve (mean over its games) and anchor."""
    rows: dict[float, dict[str, str]] = {}
    for label, evals in curves.items():
        for r in evals[1:]:
            rows.setdefault(round(int(r[0]) / 1e6, 1), {})[label] = f"{float(r[1]):.1f}"
    steps = sorted(rows)
    for source, (anchor_steps, anchor_means) in anchors.items():
        for step, mean in zip(anchor_steps, anchor_means):
            if round(step / 1e6, 1) in rows:
                rows[round(step / 1e6, 1)][source] = f"{mean:g}"
    columns = list(curves) + list(anchors)
    lines = ["| steps | " + " | ".join(columns) + " |", "|---" * (1 + len(columns)) + "|"]
    lines += [f"| {step:.1f}M | " + " | ".join(rows[step].get(c, "") for c in columns) + " |" for step in steps]
    return "\n".join(lines) + "\n"


@dataclass
class Args:
    runs: tuple[str, ...]
    """run folders (each with its `evals.csv` and `args.json`), all of one game"""
    out: str
    """the picture (PNG); the table goes beside it as `.md`; existing files are kept (`-2`, ...)"""
    labels: tuple[str, ...] = ()
    """a label per run (default: the run folder's name)"""
    anchors: Optional[str] = None
    """a CSV of reference curves (game, source, global_step, mean_return); the rows of the runs' game are drawn"""
    title: Optional[str] = None
    """the picture's title (default: the game)"""


def main(args: Args) -> Path:
    import json

    if not args.runs:
        sys.exit("error: --runs: give at least one run folder")
    if args.labels and len(args.labels) != len(args.runs):
        sys.exit(f"error: --labels: {len(args.labels)} labels for {len(args.runs)} runs; give one per run, or none")
    check_output_file(args.out)
    games = {}
    for run in args.runs:
        if not (Path(run) / "evals.csv").is_file() or not (Path(run) / "args.json").is_file():
            sys.exit(f"error: --runs {run}: no evals.csv and args.json there; give run folders of the training scripts")
        games[run] = json.loads((Path(run) / "args.json").read_text())["env_id"]
    if len(set(games.values())) > 1:
        sys.exit(f"error: --runs are of several games ({', '.join(sorted(set(games.values())))}); give runs of one game")
    game = games[args.runs[0]]
    labels = args.labels or tuple(Path(run).name for run in args.runs)
    curves = {label: read_evals(Path(run) / "evals.csv") for label, run in zip(labels, args.runs)}
    anchors = read_anchors(args.anchors, game) if args.anchors else {}
    last = max(int(r[0]) for evals in curves.values() for r in evals[1:]) if any(len(e) > 1 for e in curves.values()) else 0
    stem, suffix = str(Path(args.out).with_suffix("")), Path(args.out).suffix or ".png"
    out = Path(free_path(stem, (suffix, ".md")) + suffix)  # neither the picture nor the table is overwritten
    plot_curves(curves, anchors, args.title or game, out, until=round(last, -5) or None)
    text = table(curves, anchors)
    write_text(out.with_suffix(".md"), text)
    print(text, end="")
    print(f"{out}, {out.with_suffix('.md')}")
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
