"""The rliable aggregates of attention_utils.results: human-normalised IQM, median, mean and optimality gap with
stratified-bootstrap CIs, performance profiles, probabilities of improvement, and the sample-efficiency curves."""

from __future__ import annotations

import contextlib
import csv
import functools

import numpy as np

from attention_utils.atari_scores import RANDOM_HUMAN_SCORES, human_normalised_score
from attention_utils.atari_scores import SOURCE as REFERENCE_SOURCE
from attention_utils.game_tables import markdown_table
from attention_utils.run_reading import Run, group_runs
from attention_utils.runs import atomic_open

METRIC_NAMES = ("IQM", "Median", "Mean", "Optimality gap")
EFFICIENCY_METRICS = ("IQM", "Median", "Mean")  # the aggregates a sample-efficiency curve can show


# ---------------------------------------------------------------------------------------------------------------
# aggregates (rliable)


def aggregate_selection(runs: list[Run], variants) -> tuple[dict[str, list[list[Run]]], list[str]]:
    """({variant: for each game, the runs the aggregates use}, games) for rliable, which needs the same number of runs
    on every game for a variant. Games without reference scores or without runs of every variant are left out; each
    variant keeps its n lowest seeds on every game, n its smallest seed count. Prints a note for everything left out."""
    groups = group_runs(runs)
    games = sorted({run.game for run in runs})
    no_reference = [game for game in games if game not in RANDOM_HUMAN_SCORES]
    if no_reference:
        print(f"note: no human/random reference scores for {', '.join(no_reference)}; left out of the normalised aggregates")
    incomplete = [game for game in games if game in RANDOM_HUMAN_SCORES and any((game, v) not in groups for v in variants)]
    if incomplete:
        print(f"note: not every variant has runs on {', '.join(incomplete)}; left out of the normalised aggregates")
    games = [game for game in games if game not in no_reference and game not in incomplete]
    selection = {}
    for variant in variants if games else []:
        num_runs = min(len(groups[game, variant]) for game in games)
        if any(len(groups[game, variant]) > num_runs for game in games):
            print(
                f"note: {variant} has {num_runs} seed(s) on some game; "
                f"the aggregates use its {num_runs} lowest seed(s) on every game"
            )
        selection[variant] = [groups[game, variant][:num_runs] for game in games]
    return selection, games


def score_matrices(selection: dict[str, list[list[Run]]], games) -> dict[str, np.ndarray]:
    """{variant: human-normalised mean scores of its selected runs, shape (num_runs, num_games)}."""
    return {
        variant: np.array(
            [[human_normalised_score(game, run.mean_score) for run in game_runs] for game, game_runs in zip(games, per_game)]
        ).T
        for variant, per_game in selection.items()
    }


def normalised_score_matrices(runs: list[Run], variants) -> tuple[dict[str, np.ndarray], list[str]]:
    """({variant: human-normalised scores, shape (num_runs, num_games)}, games) for rliable (aggregate_selection)."""
    selection, games = aggregate_selection(runs, variants)
    return score_matrices(selection, games), games


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """[IQM, median, mean, optimality gap] of a (num_runs, num_games) score matrix, with rliable.metrics."""
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(scores),
            metrics.aggregate_median(scores),
            metrics.aggregate_mean(scores),
            metrics.aggregate_optimality_gap(scores),
        ]
    )


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """Seed numpy's global random state for the block, then restore it. rliable's stratified bootstraps draw their
    indices with np.random.choice (the global state) whatever random_state they are given, so this is what makes
    its CIs reproducible."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregate_estimates(matrices: dict[str, np.ndarray], reps: int, seed: int = 0):
    """({variant: [IQM, median, mean, optimality gap]}, {variant: (2, 4) array of 95% CI bounds}) by rliable's
    stratified bootstrap, each variant seeded with `seed` so its CIs do not depend on the other variants."""
    from rliable import library as rly

    points, intervals = {}, {}
    for variant, scores in matrices.items():
        with seeded_numpy(seed):
            point, interval = rly.get_interval_estimates({variant: scores}, aggregate_metrics, reps=reps)
        points[variant], intervals[variant] = point[variant], interval[variant]
    return points, intervals


def performance_profiles(matrices: dict[str, np.ndarray], tau_list, reps: int, seed: int = 0):
    """({variant: fraction of runs with score > tau, for each tau}, {variant: (2, len(tau_list)) 95% CIs}) with
    rly.create_performance_profile (score distributions over all runs and games), each variant seeded with `seed`."""
    from rliable import library as rly

    profiles, cis = {}, {}
    for variant, scores in matrices.items():
        with seeded_numpy(seed):
            point, interval = rly.create_performance_profile(
                {variant: scores}, np.asarray(tau_list, dtype=np.float64), reps=reps
            )
        profiles[variant], cis[variant] = point[variant], interval[variant]
    return profiles, cis


def probabilities_of_improvement(matrices: dict[str, np.ndarray], reps: int, seed: int = 0):
    """({"X,Y": P(X > Y)}, {"X,Y": 95% CI}) for every pair of variants (X before Y; P(Y > X) = 1 - P(X > Y)),
    rliable.metrics.probability_of_improvement on the paired score matrices (same games, runs independent)."""
    from rliable import library as rly
    from rliable import metrics

    variants = list(matrices)
    points, intervals = {}, {}
    for i, x in enumerate(variants):
        for y in variants[i + 1 :]:
            pair = f"{x},{y}"
            with seeded_numpy(seed):
                point, interval = rly.get_interval_estimates(
                    {pair: [matrices[x], matrices[y]]}, metrics.probability_of_improvement, reps=reps
                )
            points[pair], intervals[pair] = float(point[pair]), np.asarray(interval[pair], dtype=np.float64).reshape(2)
    return points, intervals


def aggregates_markdown(points, intervals, games) -> str:
    """Table of the four aggregates with CIs, per variant."""
    rows = [
        [variant]
        + [
            f"{points[variant][m]:.3f} [{intervals[variant][0][m]:.3f}, {intervals[variant][1][m]:.3f}]"
            for m in range(len(METRIC_NAMES))
        ]
        for variant in points
    ]
    note = (
        f"\nHuman-normalised scores on {len(games)} games ({', '.join(games)}); point estimate [95% stratified-bootstrap CI]. "
        f"Reference scores: {REFERENCE_SOURCE}.\n"
    )
    return markdown_table(["Variant", *METRIC_NAMES], rows) + note


def write_aggregates_csv(points, intervals, matrices, games, path) -> None:
    """aggregates.csv: variant, num_games, num_runs (per game), then for each metric its point estimate and CI bounds."""
    slug = [name.lower().replace(" ", "_") for name in METRIC_NAMES]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["variant", "num_games", "num_runs"] + [f"{s}{part}" for s in slug for part in ("", "_ci_low", "_ci_high")]
        )
        for variant in points:
            values = [
                repr(float(v))
                for m in range(len(METRIC_NAMES))
                for v in (points[variant][m], intervals[variant][0][m], intervals[variant][1][m])
            ]
            writer.writerow([variant, len(games), matrices[variant].shape[0]] + values)


# ---------------------------------------------------------------------------------------------------------------
# sample efficiency: the aggregate normalised score against environment steps, over all games


def normalised_curves(selection: dict[str, list[list[Run]]], games) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{variant: (steps, human-normalised evaluation scores of shape (num_runs, num_games, num_steps))} of the runs
    the aggregates use (aggregate_selection). Steps: the union of the evaluation steps of the variant's runs inside
    the range all of them cover; each run's raw (unsmoothed) scores are linearly interpolated onto them (exact where
    the run evaluated). A variant whose runs cover no common range is left out with a note."""
    curves = {}
    for variant, per_game in selection.items():
        runs = [run for game_runs in per_game for run in game_runs]
        start, stop = max(run.steps[0] for run in runs), min(run.steps[-1] for run in runs)
        if start > stop:
            print(
                f"note: {variant}'s runs share no evaluated range of steps ({start:,} > {stop:,}); no sample-efficiency curve"
            )
            continue
        grid = np.unique(np.concatenate([run.steps for run in runs]))
        grid = grid[(grid >= start) & (grid <= stop)]
        scores = np.array(
            [
                [human_normalised_score(game, np.interp(grid, run.steps, run.scores)) for run in game_runs]
                for game, game_runs in zip(games, per_game)
            ]
        )  # (num_games, num_runs, num_steps)
        curves[variant] = grid, scores.transpose(1, 0, 2)  # (num_runs, num_games, num_steps), rliable's layout
    return curves


def per_step_aggregate(scores: np.ndarray, metric: str) -> np.ndarray:
    """rliable's aggregate `metric` of a (num_runs, num_games, num_steps) score array at every step: (num_steps,).
    IQM: the 25% trimmed mean over all runs and games (scipy's trim_mean, which rliable.metrics.aggregate_iqm calls);
    Median / Mean: of the per-game means over runs (aggregate_median / aggregate_mean). Vectorised over steps, as the
    bootstrap calls it thousands of times."""
    if metric == "IQM":
        from scipy import stats

        return stats.trim_mean(scores.reshape(-1, scores.shape[-1]), proportiontocut=0.25, axis=0)  # (runs * games, steps)
    game_means = scores.mean(axis=0)  # (num_games, num_steps)
    return np.median(game_means, axis=0) if metric == "Median" else game_means.mean(axis=0)


def sample_efficiency(curves, metric: str, reps: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{variant: (steps, aggregate `metric` at each step, (2, num_steps) 95% CI bounds)}: rliable's stratified
    bootstrap over the runs of each game (rly.get_interval_estimates on the 3-D score array), seeded per variant."""
    from rliable import library as rly

    efficiency = {}
    for variant, (steps, scores) in curves.items():
        with seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {variant: scores}, functools.partial(per_step_aggregate, metric=metric), reps=reps
            )
        efficiency[variant] = steps, np.asarray(point[variant]), np.asarray(interval[variant])
    return efficiency


def write_sample_efficiency_csv(efficiency, metric: str, curves, path) -> None:
    """sample_efficiency.csv: variant, global_step, metric, value, ci_low, ci_high, num_games, num_runs (per game)."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "global_step", "metric", "value", "ci_low", "ci_high", "num_games", "num_runs"])
        for variant, (steps, values, interval) in efficiency.items():
            num_runs, num_games, _ = curves[variant][1].shape
            for i, step in enumerate(steps):
                writer.writerow(
                    [variant, int(step), metric, repr(float(values[i])), repr(float(interval[0][i])),
                     repr(float(interval[1][i])), num_games, num_runs]
                )  # fmt: skip
