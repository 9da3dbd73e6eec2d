"""The learning curves of attention_utils.results (debiased EMA of each seed, mean and 95% CI over seeds) and every
plot it draws (matplotlib with the Agg backend, rliable's plot_utils)."""

from __future__ import annotations

import math

import numpy as np

from attention_utils.aggregates import METRIC_NAMES
from attention_utils.run_reading import Run, group_runs
from attention_utils.runs import save_figure

EMA_WEIGHT = 0.98


# ---------------------------------------------------------------------------------------------------------------
# learning curves


def debiased_ema(values, weight: float = EMA_WEIGHT) -> np.ndarray:
    """s_t = weight * s_{t-1} + (1 - weight) * x_t with s_0 = 0, divided by (1 - weight**t) (TensorBoard's smoothing,
    Adam's bias correction); t = 1, 2, ... over the evaluations."""
    smoothed, state = np.empty(len(values)), 0.0
    for t, value in enumerate(np.asarray(values, dtype=np.float64), start=1):
        state = weight * state + (1 - weight) * value
        smoothed[t - 1] = state / (1 - weight**t) if weight != 1 else value
    return smoothed


def learning_curve(runs: list[Run], weight: float = EMA_WEIGHT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean over seeds, half-width of the 95% CI of that mean; nan with one seed) of the seeds' debiased-EMA
    curves, on the union of their evaluation steps inside the range every seed covers (linear interpolation between a
    seed's steps). CI: Student's t with n - 1 degrees of freedom times the standard error (n seeds; 4.30 for 3 seeds,
    2.78 for 5), not the normal 1.96, which is too narrow for a few seeds."""
    start, stop = max(run.steps[0] for run in runs), min(run.steps[-1] for run in runs)
    grid = np.unique(np.concatenate([run.steps for run in runs]))
    grid = grid[(grid >= start) & (grid <= stop)]
    curves = np.array([np.interp(grid, run.steps, debiased_ema(run.scores, weight)) for run in runs])
    mean = curves.mean(axis=0)
    if len(runs) == 1:
        return grid, mean, np.full(len(grid), np.nan)
    from scipy import stats

    t_quantile = float(stats.t.ppf(0.975, len(runs) - 1))
    return grid, mean, t_quantile * curves.std(axis=0, ddof=1) / math.sqrt(len(runs))


# ---------------------------------------------------------------------------------------------------------------
# plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def variant_colors(variants) -> dict:
    """{variant: color}: seaborn's colorblind palette in variant order, as rliable's plots use it."""
    import seaborn as sns

    return dict(zip(variants, sns.color_palette("colorblind", n_colors=len(variants))))


def plot_learning_curves(runs: list[Run], variants, path, weight: float = EMA_WEIGHT) -> None:
    """learning_curves.png: a grid with one panel per game, one line (mean of debiased EMAs) and 95% band per variant."""
    plt = _pyplot()
    groups = group_runs(runs)
    games = sorted({run.game for run in runs})
    columns = min(len(games), 6)
    rows = math.ceil(len(games) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.6), squeeze=False, layout="constrained")
    colors = variant_colors(variants)
    for ax, game in zip(axes.flat, games):
        for variant in variants:
            if (game, variant) not in groups:
                continue
            steps, mean, half_width = learning_curve(groups[game, variant], weight)
            ax.plot(steps, mean, color=colors[variant], label=variant, linewidth=1.2)
            if not np.all(np.isnan(half_width)):
                ax.fill_between(steps, mean - half_width, mean + half_width, color=colors[variant], alpha=0.2, linewidth=0)
        ax.set_title(game, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
    for ax in axes.flat[len(games) :]:
        ax.axis("off")
    fig.supxlabel("environment steps")
    fig.supylabel(f"evaluation return (debiased EMA {weight}, mean ± 95% CI over seeds)")
    handles = [plt.Line2D([], [], color=colors[v], label=v) for v in variants]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(variants), 8), frameon=False)
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def plot_aggregates(points, intervals, variants, path) -> None:
    """aggregates.png with rliable.plot_utils.plot_interval_estimates."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        metric_names=list(METRIC_NAMES),
        algorithms=list(variants),
        colors=variant_colors(variants),
        xlabel="Human-normalised score",
        max_ticks=3,
        xlabel_y_coordinate=0.11 - 1.62 / len(variants),
    )
    # rliable's figure is 0.37 in per variant high and puts the label at this figure fraction: about 0.6 in below
    # the axes, clear of the tick labels whatever the number of variants
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_performance_profiles(profiles, cis, tau_list, path) -> None:
    """performance_profiles.png with rliable.plot_utils.plot_performance_profiles."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles,
        tau_list,
        performance_profile_cis=cis,
        ax=ax,
        colors=variant_colors(list(profiles)),
        xlabel=r"Human-normalised score ($\tau$)",
        legend=True,
        legendsize="medium",
    )
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_sample_efficiency(efficiency, metric: str, variants, games, path) -> None:
    """sample_efficiency.png with rliable.plot_utils.plot_sample_efficiency_curve, one call per variant (each has its
    own steps) on one axis."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = variant_colors(variants)
    for variant in [v for v in variants if v in efficiency]:
        steps, values, interval = efficiency[variant]
        plot_utils.plot_sample_efficiency_curve(
            steps / 1e6,
            {variant: values},
            {variant: interval},
            algorithms=[variant],
            colors=colors,
            ax=ax,
            xlabel="environment steps (millions)",
            ylabel=f"{metric} human-normalised score",
            labelsize="large",
            ticklabelsize="medium",
            marker="",
            linewidth=1.5,
        )
    ax.legend(loc="best", frameon=False)
    named = ", ".join(games) if len(games) <= 6 else f"{len(games)} games"
    ax.set_title(f"{named}; 95% stratified-bootstrap CIs", fontsize="medium")
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_probability_of_improvement(points, intervals, path) -> None:
    """probability_of_improvement.png with rliable.plot_utils.plot_probability_of_improvement."""
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(4.5, 0.5 + 0.45 * len(points)))
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    plot_utils.plot_probability_of_improvement(points, intervals, pair_separator=",", ax=ax, xticks=ticks)
    for axis in fig.axes:  # the whole [0, 1] range, so that every pair shows (a zero-width CI at an edge otherwise vanishes)
        axis.set_xlim(-0.02, 1.02)
    save_figure(fig, path, dpi=150, bbox_inches="tight")
    plt.close(fig)
