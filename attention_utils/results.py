"""The result tables and plots of "Results & Analysis" in *Revisiting Self-Attention in Deep RL: A Dimensional
Perspective*, from many runs, and (attention_utils.evaluations) the evaluation tables of *Free-Lunch Saliency via
Attention in Atari Agents* from their --eval-only results.

    python -m attention_utils.results --runs runs/ [more/ ...] --out results/ [--wandb-project entity/project]

Input: run folders of the training scripts, ppo_atari_*.py (`args.json` + `evals.csv`;
`--runs` takes run folders or folders holding them, searched recursively; `evals.superseded.csv` is ignored;
`eval_only_*.csv` go to attention_utils.evaluations) and/or the runs of a wandb project (`eval/mean_return` against
`global_step`, config = args.json). Runs are grouped by (game, variant) across seeds. Every input is read and
checked before anything is written: bad input ends the command with one `error: ...` line naming the file and line.

Outputs in --out:
- per_game.md / per_game.csv: per game and variant, the mean over seeds of each run's mean evaluation score over
  the whole evaluation period, ± standard error across seeds (ddof=1; "n/a" with one seed); winner in bold,
  "No. of wins" row.
- aggregates.md / .csv / .png: human-normalised IQM, median, mean and optimality gap with stratified-bootstrap
  95% CIs (rliable); performance_profiles.png / .csv; probability_of_improvement.csv / .png for every pair.
- sample_efficiency.png / .csv: the aggregate (IQM; --efficiency-metric) of the human-normalised evaluation scores
  of all runs and games at each evaluation step, 95% stratified-bootstrap CIs (rliable), a line per variant.
- learning_curves.png: per game, debiased EMA (weight 0.98) of each seed's curve, mean over seeds ± 95% CI
  (Student's t).
- eval_only.md / .csv, length_vs_return_<game>.png: see attention_utils.evaluations.
- alignment.md / .csv: per axis class of the paper's game classification, the share of its games won by each variant.

Rules (a note is printed whenever runs are dropped, merged or renamed or a game is left out):
- Variant: the variant_name of the script that wrote the run (each script's own run-folder name; script_of tells
  the script from the args). Runs of no training script found here are skipped. A variant name used by two
  experiments (exp_name) becomes "variant (exp_name)".
- Same (experiment, game, variant, seed) twice (e.g. local folder and wandb run): the run with more evaluations is kept.
- Seeds: every run found counts; cells may have different seed counts (per_game.csv gives each cell's count).
- Winners: only games every variant has runs on are judged (a game some variant lacks shows its numbers, no bold,
  no win). Exact ties for a game's best mean: all tied variants are bold; each gets 1/k of the win (No. of wins and
  alignment shares).
- Aggregates: the per-run score is the run's mean evaluation score over the whole evaluation period, human-normalised
  with attention_utils.atari_scores. Games without reference scores, and games that some variant lacks, are left out.
  rliable needs the same number of runs on every game for a variant: each variant keeps, on every game, its
  n lowest seeds, n = its smallest seed count over the games.
- Sample efficiency: the aggregates' games and seeds; each run's raw scores interpolated onto the union of its variant's
  evaluation steps inside the range all of them cover.
- Learning curves: each seed's curve is smoothed over its own evaluations, then the seeds are put on one step grid:
  the union of their steps inside the range all seeds cover, by linear interpolation (exact when all seeds evaluated
  at the same steps). Band: mean ± t(0.975, n-1) SE across the n seeds (none with one seed).
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

# The work is done in the modules below, by concern; this module holds the command. It imports every public name they
# took from it when it was split, so that `results.<name>` (tests, notebooks) goes on working.
from attention_utils.aggregates import (  # noqa: F401
    EFFICIENCY_METRICS,
    METRIC_NAMES,
    aggregate_estimates,
    aggregate_metrics,
    aggregate_selection,
    aggregates_markdown,
    normalised_curves,
    normalised_score_matrices,
    per_step_aggregate,
    performance_profiles,
    probabilities_of_improvement,
    sample_efficiency,
    score_matrices,
    seeded_numpy,
    write_aggregates_csv,
    write_sample_efficiency_csv,
)
from attention_utils.game_tables import (  # noqa: F401
    alignment_markdown,
    alignment_shares,
    game_winners,
    markdown_table,
    mean_and_standard_error,
    per_game_markdown,
    per_game_summary,
    win_counts,
    write_alignment_csv,
    write_per_game_csv,
)
from attention_utils.result_plots import (  # noqa: F401
    EMA_WEIGHT,
    debiased_ema,
    learning_curve,
    plot_aggregates,
    plot_learning_curves,
    plot_performance_profiles,
    plot_probability_of_improvement,
    plot_sample_efficiency,
    variant_colors,
)
from attention_utils.run_files import (  # noqa: F401
    ARGS_FILE,
    EVAL_ONLY_GLOB,
    EVALS_FILE,
    PARSER_NAMES,
    ResultsError,
    check_runs_paths,
    find_run_dirs,
    read_args_json,
    read_csv_columns,
)
from attention_utils.run_naming import (  # noqa: F401
    KNOWN_VARIANT_ORDER,
    LABEL_PREFIX,
    TrainingScript,
    UnknownScriptError,
    game_name,
    name_shared_variants,
    ordered_variants,
    script_of,
    training_scripts,
    variant_name,
)
from attention_utils.run_reading import (  # noqa: F401
    EVALS_HEADER,
    Run,
    group_runs,
    note_unequal_periods,
    prepare_runs,
    read_known_runs,
    read_run_dir,
    read_run_dirs,
    run_from_config,
    wandb_runs,
)
from attention_utils.runs import atomic_open, write_text

# ---------------------------------------------------------------------------------------------------------------
# everything


def write_results(
    runs: list[Run],
    out,
    bootstrap_reps: int = 2000,
    seed: int = 0,
    improvement_reps: Optional[int] = None,
    efficiency_metric: str = "IQM",
) -> list[Path]:
    """Write all tables and plots of `runs` to the folder `out`; returns the paths written. `improvement_reps`:
    bootstrap replications of the probabilities of improvement (default: bootstrap_reps); `efficiency_metric`: the
    aggregate of the sample-efficiency curve (EFFICIENCY_METRICS)."""
    runs = prepare_runs(runs)
    if not runs:
        raise ResultsError("no run has evaluations; evals.csv holds only its header until the first evaluation")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    variants = ordered_variants(run.variant for run in runs)
    note_unequal_periods(runs)
    written = []

    summary = per_game_summary(runs)
    write_text(out / "per_game.md", per_game_markdown(summary, variants))
    write_per_game_csv(summary, variants, out / "per_game.csv")
    written += [out / "per_game.md", out / "per_game.csv"]

    winners = game_winners(summary)
    unjudged = [game for game in summary if game not in winners]
    if unjudged:
        print(
            f"note: not every variant has runs on {', '.join(unjudged)}; no winner there (no bold, no win, not in alignment)"
        )
    table = alignment_shares(winners, variants)
    write_text(out / "alignment.md", alignment_markdown(table, variants))
    write_alignment_csv(table, variants, out / "alignment.csv")
    written += [out / "alignment.md", out / "alignment.csv"]

    plot_learning_curves(runs, variants, out / "learning_curves.png")
    written.append(out / "learning_curves.png")

    selection, games = aggregate_selection(runs, variants)
    if not games:
        print(
            "note: no game with reference scores and runs of every variant; "
            "no aggregates, sample efficiency, profiles or probabilities of improvement"
        )
        return written
    matrices = score_matrices(selection, games)
    points, intervals = aggregate_estimates(matrices, bootstrap_reps, seed)
    write_text(out / "aggregates.md", aggregates_markdown(points, intervals, games))
    write_aggregates_csv(points, intervals, matrices, games, out / "aggregates.csv")
    plot_aggregates(points, intervals, variants, out / "aggregates.png")
    written += [out / "aggregates.md", out / "aggregates.csv", out / "aggregates.png"]

    curves = normalised_curves(selection, games)
    if curves:
        efficiency = sample_efficiency(curves, efficiency_metric, bootstrap_reps, seed)
        write_sample_efficiency_csv(efficiency, efficiency_metric, curves, out / "sample_efficiency.csv")
        plot_sample_efficiency(efficiency, efficiency_metric, variants, games, out / "sample_efficiency.png")
        written += [out / "sample_efficiency.csv", out / "sample_efficiency.png"]

    highest = max(float(np.max(m)) for m in matrices.values())
    tau_list = np.linspace(0.0, min(max(highest, 1.0), 8.0), 81)
    profiles, profile_cis = performance_profiles(matrices, tau_list, bootstrap_reps, seed)
    with atomic_open(out / "performance_profiles.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "tau", "fraction_of_runs_above", "ci_low", "ci_high"])
        for variant, profile in profiles.items():
            for i, tau in enumerate(tau_list):
                writer.writerow(
                    [
                        variant,
                        repr(float(tau)),
                        repr(float(profile[i])),
                        repr(float(profile_cis[variant][0][i])),
                        repr(float(profile_cis[variant][1][i])),
                    ]
                )
    plot_performance_profiles(profiles, profile_cis, tau_list, out / "performance_profiles.png")
    written += [out / "performance_profiles.csv", out / "performance_profiles.png"]

    if len(matrices) > 1:
        improvement_reps = improvement_reps or bootstrap_reps
        num_pairs = len(matrices) * (len(matrices) - 1) // 2
        print(
            f"probability of improvement: {num_pairs} pair(s) x {len(games)} game(s) x {improvement_reps} bootstrap reps "
            f"(a scipy Mann-Whitney U test each, about 1.5 ms)",
            flush=True,
        )
        probabilities, probability_cis = probabilities_of_improvement(matrices, improvement_reps, seed)
        with atomic_open(out / "probability_of_improvement.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["x", "y", "p_x_better_than_y", "ci_low", "ci_high", "num_games"])
            for pair, probability in probabilities.items():
                x, y = pair.split(",", 1)
                writer.writerow(
                    [
                        x,
                        y,
                        repr(probability),
                        repr(float(probability_cis[pair][0])),
                        repr(float(probability_cis[pair][1])),
                        len(games),
                    ]
                )
        plot_probability_of_improvement(probabilities, probability_cis, out / "probability_of_improvement.png")
        written += [out / "probability_of_improvement.csv", out / "probability_of_improvement.png"]
    else:
        print("note: one variant only; no probability of improvement")
    return written


@dataclass
class Args:
    """The self-attention paper's result tables and plots (per-game table, rliable aggregates, sample efficiency,
    learning curves, alignment of biases) from the runs' evaluations, and the Free-Lunch Saliency paper's evaluation
    tables and episode length vs return plots from their --eval-only results."""

    out: Path
    """folder for the tables and plots (made if missing; outputs of an earlier call are replaced, with a note)"""
    runs: tuple[Path, ...] = ()
    """run folders, or folders holding run folders (searched recursively for args.json + evals.csv, and for the
    eval_only_*.csv files of --eval-only)"""
    wandb_project: Optional[str] = None
    """also read the runs of this wandb project ("entity/project") through the public API"""
    bootstrap_reps: int = 2000
    """stratified-bootstrap replications of the aggregate, sample-efficiency and performance-profile CIs"""
    improvement_reps: int = 500
    """bootstrap replications of the probability-of-improvement CIs (the slow part: pairs x games x reps Mann-Whitney
    U tests, about 7 min for 5 variants on 56 games at 500)"""
    seed: int = 0
    """random state of the bootstrap (same seed and reps, same CIs); 0 to 2**32 - 1"""
    efficiency_metric: Literal["IQM", "Median", "Mean"] = "IQM"
    """the aggregate of human-normalised scores the sample-efficiency curve shows at each step (rliable's)"""


# every file write_results and write_eval_only_results may write (and length_vs_return_<game>.png)
OUTPUT_NAMES = (
    "per_game.md", "per_game.csv", "alignment.md", "alignment.csv", "learning_curves.png", "aggregates.md",
    "aggregates.csv", "aggregates.png", "sample_efficiency.csv", "sample_efficiency.png", "performance_profiles.csv",
    "performance_profiles.png", "probability_of_improvement.csv", "probability_of_improvement.png", "eval_only.md",
    "eval_only.csv",
)  # fmt: skip


def check_options(args: Args) -> None:
    """The options that need no input read: ResultsError for the first bad one."""
    if not args.runs and args.wandb_project is None:
        raise ResultsError("give --runs DIR [DIR ...] and/or --wandb-project entity/project")
    for option in ("bootstrap_reps", "improvement_reps"):
        if getattr(args, option) < 1:
            raise ResultsError(f"--{option.replace('_', '-')} {getattr(args, option)}: give at least 1 replication")
    if not 0 <= args.seed < 2**32:
        raise ResultsError(f"--seed {args.seed}: numpy's random state takes 0 to 2**32 - 1")
    if args.efficiency_metric not in EFFICIENCY_METRICS:
        raise ResultsError(f"--efficiency-metric {args.efficiency_metric}: give one of {', '.join(EFFICIENCY_METRICS)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out}: a file, not a folder; give a folder for the tables and plots (made if missing)")
    existing = next(parent for parent in [out, *out.parents] if parent.exists())
    if not existing.is_dir():
        raise ResultsError(f"--out {out}: {existing} is a file, so the folder cannot be made; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ResultsError(f"--out {out}: {existing} is not writable; give a folder you can write to")
    check_runs_paths(args.runs)


def note_replaced_outputs(out) -> None:
    """A note naming the outputs of an earlier call in `out` (those this call writes are replaced)."""
    out = Path(out)
    if not out.is_dir():
        return
    earlier = sorted(path.name for path in out.iterdir() if path.name in OUTPUT_NAMES or path.match("length_vs_return_*.png"))
    if earlier:
        listed = ", ".join(earlier[:4]) + (" ..." if len(earlier) > 4 else "")
        print(
            f"note: {out} already holds {len(earlier)} result file(s) ({listed}); those written now replace them, "
            f"the others stay as they are"
        )


def main(args: Args) -> list[Path]:
    """Check the options, read and check every input, then write the outputs; bad input exits with one
    `error: ...` line before anything is written."""
    from attention_utils import evaluations as eval_only

    try:
        check_options(args)
        run_dirs = find_run_dirs(args.runs, eval_only_allowed=True)
        eval_only_files = eval_only.find_eval_only_files(args.runs)
        if args.runs and not run_dirs and not eval_only_files:
            raise ResultsError(
                f"no run folders (args.json + {EVALS_FILE}) and no eval_only_*.csv in {', '.join(map(str, args.runs))}; "
                f"give the folders the training scripts write (runs/ or a run folder)"
            )
        runs = read_known_runs(run_dirs)
        evaluations = []
        for path in eval_only_files:
            try:
                evaluations.append(eval_only.read_eval_only(path))
            except UnknownScriptError as e:
                print(f"note: {e}; skipped")
        if args.wandb_project is not None:
            runs += wandb_runs(args.wandb_project)
            if not runs and not evaluations:
                raise ResultsError(f"no runs with evaluations in wandb project {args.wandb_project}")
        if not runs and not evaluations:
            raise ResultsError("no run of a known training script (ppo_atari_*.py) in --runs")
        note_replaced_outputs(args.out)
        written = []
        if any(len(run.scores) for run in runs) or not evaluations:
            written += write_results(
                runs, args.out, args.bootstrap_reps, args.seed, args.improvement_reps, args.efficiency_metric
            )
        elif runs:
            print(f"note: no run has evaluations in its {EVALS_FILE} yet; only the --eval-only tables are written")
        if evaluations:
            written += eval_only.write_eval_only_results(evaluations, args.out)
    except ResultsError as e:
        sys.exit(f"error: {e}")
    print("wrote " + ", ".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
