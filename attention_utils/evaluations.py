"""The evaluation tables of *Free-Lunch Saliency via Attention in Atari Agents* (Tables 3 and 5) and its episode
length vs reward scatterplots (appendix, Figs. 8-14), from the `--eval-only` results of many trained models.

`python -m attention_utils.results --runs DIR... --out DIR` reads every `eval_only_*.csv` under --runs and writes
these outputs next to its other tables (attention_utils.results.main); the functions here do the work.

Input: `eval_only_<Game>_step_<step>_<N>ep.csv` (a `-2`, `-3` ... suffix for a repeated evaluation), written beside
a checkpoint by `--eval-only` (attention_utils.runs.eval_only): one row per episode, columns episode,env,return,length
(length in agent steps). <Game> is the game played (BreakoutInfinite for a Breakout agent evaluated with
`--eval-env-id BreakoutInfinite`). The model is named from the folder's args.json, or, without one (a checkpoint copied
out of its run to be evaluated), from the settings inside the checkpoint step_<step>.cleanrl_model beside the file:
the variant_name of the script that trained it, as attention_utils.results names runs.

Outputs:
- eval_only.md / eval_only.csv: a row per model (variant), a column per game played. Each cell: the mean return over
  every episode of every trained model (seed) of the cell ± the standard deviation over those episodes (ddof=0). The
  paper's Table 3 gives "5 models x 8192 episodes, with results aggregated across models", and its Table 5's spreads
  on Breakout (171-302 around means of 484-689) are the size of single episodes' spread, not of 5 models' means
  (tens) nor of a standard error over 40,960 episodes (about 1.3). The CSV also gives the spread of the models' own
  means (std, ddof=1, and standard error) for a comparison across seeds. A modified game (BreakoutInfinite) also
  shows the change of its mean against the same model's mean on the original game (Table 5's "(+5.4%)").
- length_vs_return_<Game>.png: a panel per model, a point per episode (all its seeds), episode length against
  return, coloured by the number of episodes in the point's cell of a 40 x 40 grid over the panel (the paper's
  "colour is proportional to density").

Rules (a note is printed whenever a file is not used):
- One evaluation per (experiment, game, variant, seed): the latest checkpoint step, then the most episodes, then the
  first copy (no suffix before -2); the others are named and not used. A cell whose models were evaluated at
  different steps, or on different numbers of episodes, is noted (its mean weighs each model by its episodes).
- Files whose model's script cannot be told from its settings are skipped with a note, as runs are in results.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from attention_utils.game_tables import markdown_table
from attention_utils.result_plots import _pyplot
from attention_utils.run_files import (
    ARGS_FILE,
    EVAL_ONLY_GLOB,
    ResultsError,
    _finite_float,
    _positive_int,
    check_runs_paths,
    read_args_json,
    read_csv_columns,
)
from attention_utils.run_naming import UnknownScriptError, game_name, name_shared_variants, ordered_variants, variant_name
from attention_utils.runs import atomic_open, save_figure, write_text

# attention_utils.runs.eval_only writes f"eval_only_{game}_step_{step:09d}_{episodes}ep.csv", then -2, -3 ...
EVAL_ONLY_NAME = re.compile(r"eval_only_(?P<game>.+)_step_(?P<step>\d+)_(?P<episodes>\d+)ep(?:-(?P<copy>\d+))?\.csv")
EVAL_ONLY_HEADER = "episode,env,return,length"
# a game the paper modified -> the game it modified (Table 5: BreakoutInfinite's mean against Breakout's)
MODIFIED_GAMES = {"BreakoutInfinite": "Breakout"}
DENSITY_BINS = 40


@dataclass
class Evaluation:
    """One trained model's long evaluation (`--eval-only`): every episode's return and length."""

    game: str  # the game played, from the file name
    variant: str
    seed: int
    exp_name: str
    step: int  # the checkpoint's global_step
    copy: int  # 1 for the first evaluation of this checkpoint on this game and number of episodes, 2 for -2, ...
    returns: np.ndarray  # (num_episodes,)
    lengths: np.ndarray  # (num_episodes,) agent steps
    source: str  # the CSV file


@dataclass
class EvalCell:
    """A (variant, game) cell of the table: the episodes of all its models pooled."""

    mean: float  # mean return over all episodes of all models
    std: float  # standard deviation over those episodes (ddof=0): the table's spread
    num_models: int
    num_episodes: int
    model_means_std: float  # std (ddof=1) of the models' own mean returns; nan with one model
    model_means_se: float  # that std / sqrt(num_models)
    seeds: list[int]
    steps: list[int]  # each model's checkpoint step, in seed order
    change: Optional[float] = None  # % change of the mean against the original game's (MODIFIED_GAMES)


def find_eval_only_files(paths) -> list[Path]:
    """Every `eval_only_*.csv` at or under each path (a folder, checked as --runs is). A file named eval_only_* that
    is not the name --eval-only writes is noted and not read; a folder with such a name is an error."""
    check_runs_paths(paths)
    files = set()
    for path in map(Path, paths):
        for candidate in sorted(path.rglob(EVAL_ONLY_GLOB)):
            if not candidate.is_file():
                raise ResultsError(
                    f"{candidate} is a folder, not a file; --eval-only writes eval_only_<Game>_step_<step>_<N>ep.csv files"
                )
            if EVAL_ONLY_NAME.fullmatch(candidate.name) is None:
                print(
                    f"note: {candidate}: not named as --eval-only names its results "
                    f"(eval_only_<Game>_step_<step>_<N>ep.csv); not read"
                )
                continue
            files.add(candidate)
    return sorted(files)


def model_settings(csv_path: Path, step: str) -> dict:
    """The settings of the model an eval_only CSV evaluated: the folder's args.json, else the `args` saved in the
    checkpoint step_<step>.cleanrl_model beside it. ResultsError when neither can be read."""
    folder = csv_path.parent
    if (folder / ARGS_FILE).exists():
        if not (folder / ARGS_FILE).is_file():
            raise ResultsError(f"{folder / ARGS_FILE} is a folder, not a file; args.json holds the run's settings")
        return read_args_json(folder / ARGS_FILE)
    checkpoint_path = folder / f"step_{step}.cleanrl_model"
    if not checkpoint_path.is_file():
        raise ResultsError(
            f"{csv_path}: no {ARGS_FILE} and no checkpoint {checkpoint_path.name} beside it to name the model; "
            f"keep eval_only files in the folder of the run or checkpoint they evaluated"
        )
    import torch

    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file: one line, not a traceback
        raise ResultsError(
            f"{checkpoint_path}: not a readable checkpoint ({type(e).__name__}); needed to name {csv_path.name}'s model"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("args"), dict):
        raise ResultsError(f"{checkpoint_path}: no settings (args) in it; a training script's checkpoint holds them")
    return checkpoint["args"]


def read_eval_only(path) -> Evaluation:
    """An Evaluation from an eval_only CSV and its model's settings (model_settings). ResultsError naming the file and
    line of a malformed row, or for a file without episodes; UnknownScriptError when the settings name no script."""
    path = Path(path)
    match = EVAL_ONLY_NAME.fullmatch(path.name)
    if match is None:
        raise ResultsError(f"{path}: not named eval_only_<Game>_step_<step>_<N>ep.csv, as --eval-only names its results")
    columns = read_csv_columns(path, {"return": _finite_float, "length": _positive_int}, EVAL_ONLY_HEADER)
    if not columns["return"]:
        raise ResultsError(f"{path}: no episodes (only a header); --eval-only writes one row per episode")
    config = model_settings(path, match["step"])
    if config.get("seed") is None or isinstance(config["seed"], bool) or not isinstance(config["seed"], int):
        raise ResultsError(f"{path}: its model's settings have no whole-number seed ({config.get('seed')!r})")
    try:
        variant = variant_name(config)
    except ResultsError as e:
        raise type(e)(f"{path}: {e}") from None
    return Evaluation(
        game=game_name(match["game"]),
        variant=variant,
        seed=config["seed"],
        exp_name=str(config.get("exp_name") or ""),
        step=int(match["step"]),
        copy=int(match["copy"] or 1),
        returns=np.asarray(columns["return"], dtype=np.float64),
        lengths=np.asarray(columns["length"], dtype=np.int64),
        source=str(path),
    )


def read_eval_only_files(paths) -> list[Evaluation]:
    """The Evaluations of every eval_only CSV at or under each path; models of no known training script are skipped
    with a note."""
    evaluations = []
    for path in find_eval_only_files(paths):
        try:
            evaluations.append(read_eval_only(path))
        except UnknownScriptError as e:
            print(f"note: {e}; skipped")
    return evaluations


def select_evaluations(evaluations: list[Evaluation]) -> list[Evaluation]:
    """One evaluation per (experiment, game, variant, seed): the latest checkpoint step, then the most episodes, then
    the first copy; the others are noted. A variant name shared by several experiments becomes "variant (exp_name)"."""
    groups = defaultdict(list)
    for evaluation in evaluations:
        groups[evaluation.exp_name, evaluation.game, evaluation.variant, evaluation.seed].append(evaluation)
    kept = []
    for (_, game, variant, seed), group in groups.items():
        group.sort(key=lambda e: (-e.step, -len(e.returns), e.copy, e.source))
        kept.append(group[0])
        if len(group) > 1:
            print(
                f"note: {len(group)} evaluations of {variant}/seed {seed} on {game}; using {group[0].source} (step "
                f"{group[0].step:,}, {len(group[0].returns)} episodes), not {', '.join(e.source for e in group[1:])}"
            )
    return name_shared_variants(sorted(kept, key=lambda e: (e.game, e.variant, e.seed)))


def ordered_games(games) -> list[str]:
    """Games by name, each modified game (MODIFIED_GAMES) right after the game it modifies."""
    games = set(games)
    order = []
    for game in sorted(g for g in games if MODIFIED_GAMES.get(g) not in games):
        order.append(game)
        order += sorted(modified for modified, original in MODIFIED_GAMES.items() if original == game and modified in games)
    return order


def eval_only_summary(evaluations: list[Evaluation]) -> dict[tuple[str, str], EvalCell]:
    """{(variant, game): EvalCell} of selected evaluations (select_evaluations): every episode of the cell's models
    pooled; the change against the original game where the table has the same variant on it. Prints a note for each
    cell whose models were evaluated at different steps or on different numbers of episodes."""
    groups = defaultdict(list)
    for evaluation in evaluations:
        groups[evaluation.variant, evaluation.game].append(evaluation)
    cells = {}
    for (variant, game), group in sorted(groups.items()):
        group.sort(key=lambda e: e.seed)
        returns = np.concatenate([e.returns for e in group])  # (all episodes of all models,)
        model_means = np.array([e.returns.mean() for e in group])
        spread = float(np.std(model_means, ddof=1)) if len(group) > 1 else math.nan
        steps = [e.step for e in group]
        if len(set(steps)) > 1:
            print(f"note: {variant} on {game}: models evaluated at different steps ({min(steps):,} to {max(steps):,})")
        episodes = sorted({len(e.returns) for e in group})
        if len(episodes) > 1:
            print(
                f"note: {variant} on {game}: models evaluated on {episodes[0]} to {episodes[-1]} episodes; "
                f"the pooled mean weighs each model by its episodes"
            )
        cells[variant, game] = EvalCell(
            mean=float(returns.mean()),
            std=float(returns.std()),
            num_models=len(group),
            num_episodes=len(returns),
            model_means_std=spread,
            model_means_se=spread / math.sqrt(len(group)),
            seeds=[e.seed for e in group],
            steps=steps,
        )
    for (variant, game), cell in cells.items():
        original = cells.get((variant, MODIFIED_GAMES.get(game)))
        if original is not None and original.mean != 0:
            cell.change = 100 * (cell.mean - original.mean) / abs(original.mean)
    return cells


def _format_eval_cell(cell: Optional[EvalCell]) -> str:
    if cell is None:
        return "–"
    text = f"{cell.mean:.1f} ± {cell.std:.1f}"
    return text if cell.change is None else f"{text} ({cell.change:+.1f}%)"


def eval_only_markdown(cells: dict[tuple[str, str], EvalCell]) -> str:
    """Tables 3 and 5 in one: a row per variant, a column per game; mean ± std over all episodes of the cell's
    models, a modified game's change against the original in brackets."""
    variants = ordered_variants(variant for variant, _ in cells)
    games = ordered_games(game for _, game in cells)
    rows = [[variant] + [_format_eval_cell(cells.get((variant, game))) for game in games] for variant in variants]
    models = sorted({cell.num_models for cell in cells.values()})
    episodes = sorted({cell.num_episodes for cell in cells.values()})

    def span(values):
        return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,} to {values[-1]:,}"

    note = (
        f"\nMean return over every evaluation episode of the cell's trained models ± the standard deviation over those "
        f"episodes (the Free-Lunch Saliency paper's Tables 3 and 5: models evaluated with --eval-only, results "
        f"aggregated across models). {span(models)} model(s) and {span(episodes)} episodes per cell; eval_only.csv "
        f"gives each cell's counts, seeds, checkpoint steps and the spread of the models' own means."
    )
    modified = [game for game in games if game in MODIFIED_GAMES]
    if modified:
        note += " " + "; ".join(
            f"{game}: in brackets, the change of the mean against the same model's {MODIFIED_GAMES[game]} mean (Table 5)"
            for game in modified
        )
        note += "."
    return markdown_table(["Model", *games], rows) + note + "\n"


def write_eval_only_csv(cells: dict[tuple[str, str], EvalCell], path) -> None:
    """eval_only.csv: variant, game, mean, std_episodes, num_models, num_episodes, std_of_model_means,
    se_of_model_means, change_vs_original_pct, original_game, seeds, steps (";"-separated); empty: undefined."""

    def number(value):
        return "" if value is None or math.isnan(value) else repr(float(value))

    variants = ordered_variants(variant for variant, _ in cells)
    games = ordered_games(game for _, game in cells)
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["variant", "game", "mean", "std_episodes", "num_models", "num_episodes", "std_of_model_means",
             "se_of_model_means", "change_vs_original_pct", "original_game", "seeds", "steps"]
        )  # fmt: skip
        for variant in variants:
            for game in games:
                cell = cells.get((variant, game))
                if cell is None:
                    continue
                writer.writerow(
                    [variant, game, number(cell.mean), number(cell.std), cell.num_models, cell.num_episodes,
                     number(cell.model_means_std), number(cell.model_means_se), number(cell.change),
                     MODIFIED_GAMES.get(game, "") if cell.change is not None else "",
                     ";".join(map(str, cell.seeds)), ";".join(map(str, cell.steps))]
                )  # fmt: skip


def episode_density(lengths, returns, bins: int = DENSITY_BINS) -> np.ndarray:
    """For each episode, the number of episodes in its cell of a bins x bins grid spanning the points' range
    (np.histogram2d; a point on the upper edge counts in the last cell, as histogram2d counts it)."""
    lengths, returns = np.asarray(lengths, dtype=np.float64), np.asarray(returns, dtype=np.float64)
    counts, length_edges, return_edges = np.histogram2d(lengths, returns, bins=bins)  # (bins, bins)
    length_cell = np.clip(np.searchsorted(length_edges, lengths, side="right") - 1, 0, bins - 1)
    return_cell = np.clip(np.searchsorted(return_edges, returns, side="right") - 1, 0, bins - 1)
    return counts[length_cell, return_cell]


def length_vs_return_panels(evaluations: list[Evaluation], game: str, bins: int = DENSITY_BINS):
    """{variant: (lengths, returns, density)} of one game's selected evaluations, each model's episodes pooled, in
    variant order: what plot_length_vs_return draws."""
    by_variant = defaultdict(list)
    for evaluation in evaluations:
        if evaluation.game == game:
            by_variant[evaluation.variant].append(evaluation)
    panels = {}
    for variant in ordered_variants(by_variant):
        group = sorted(by_variant[variant], key=lambda e: e.seed)
        lengths = np.concatenate([e.lengths for e in group])
        returns = np.concatenate([e.returns for e in group])
        panels[variant] = lengths, returns, episode_density(lengths, returns, bins)
    return panels


def plot_length_vs_return(evaluations: list[Evaluation], game: str, path, bins: int = DENSITY_BINS) -> None:
    """length_vs_return_<game>.png: the appendix's scatterplots, a panel per model, each with its own axes (as the
    paper's, whose Seaquest panels differ in scale)."""
    plt = _pyplot()
    panels = length_vs_return_panels(evaluations, game, bins)
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows + 0.7), squeeze=False, layout="constrained")
    for ax, (variant, (lengths, returns, density)) in zip(axes.flat, panels.items()):
        order = np.argsort(density, kind="stable")  # dense points drawn last, on top
        ax.scatter(
            lengths[order], returns[order], c=density[order], cmap="viridis", s=6, alpha=0.7, linewidths=0, rasterized=True
        )
        models = len({e.seed for e in evaluations if e.game == game and e.variant == variant})
        ax.set_title(f"{variant} ({models} model(s), {len(lengths):,} episodes)", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.supxlabel("episode length (agent steps)")
    fig.supylabel("episode return")
    fig.suptitle(
        f"{game}: a point per evaluation episode; colour: episodes in its cell of a {bins} x {bins} grid (density)",
        fontsize=10,
    )
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def write_eval_only_results(evaluations: list[Evaluation], out) -> list[Path]:
    """eval_only.md, eval_only.csv and a length_vs_return_<game>.png per game in the folder `out`; returns the paths."""
    evaluations = select_evaluations(evaluations)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = eval_only_summary(evaluations)
    write_text(out / "eval_only.md", eval_only_markdown(cells))
    write_eval_only_csv(cells, out / "eval_only.csv")
    written = [out / "eval_only.md", out / "eval_only.csv"]
    for game in ordered_games({e.game for e in evaluations}):
        path = out / f"length_vs_return_{game}.png"
        plot_length_vs_return(evaluations, game, path)
        written.append(path)
    return written
