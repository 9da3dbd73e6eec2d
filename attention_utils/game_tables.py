"""The per-game table of attention_utils.results (each variant's mean score over seeds ± SE per game, the winners, the
number of wins) and the alignment table (the share of each axis class's games won by each variant)."""

from __future__ import annotations

import csv
import math
from collections import defaultdict

import numpy as np

from attention_utils.game_axes import AXIS_CLASSES, OTHER_KINDS
from attention_utils.run_reading import Run, group_runs
from attention_utils.runs import atomic_open

# ---------------------------------------------------------------------------------------------------------------
# per-game table


def mean_and_standard_error(values) -> tuple[float, float]:
    """Sample mean and standard error (std with ddof=1 / sqrt(n)); the SE is nan for a single value."""
    values = np.asarray(values, dtype=np.float64)
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(np.mean(values)), se


def per_game_summary(runs: list[Run]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{game: {variant: (mean over seeds of the runs' mean scores, standard error, number of seeds)}}."""
    summary = defaultdict(dict)
    for (game, variant), group in group_runs(runs).items():
        summary[game][variant] = (*mean_and_standard_error([run.mean_score for run in group]), len(group))
    return dict(sorted(summary.items()))


def game_winners(summary) -> dict[str, list[str]]:
    """{game: variants with the highest mean} (several on an exact tie), for the games every variant of the table has
    runs on; a game that some variant lacks has no winner (it is not in the dict)."""
    variants = {variant for cells in summary.values() for variant in cells}
    winners = {}
    for game, cells in summary.items():
        if set(cells) == variants:
            best = max(mean for mean, _, _ in cells.values())
            winners[game] = [variant for variant, (mean, _, _) in cells.items() if mean == best]
    return winners


def win_counts(winners: dict[str, list[str]], variants) -> dict[str, float]:
    """Number of games won by each variant; a tie between k variants gives each 1/k."""
    counts = {variant: 0.0 for variant in variants}
    for tied in winners.values():
        for variant in tied:
            counts[variant] += 1 / len(tied)
    return counts


def _format_count(count: float) -> str:
    return str(int(count)) if float(count).is_integer() else f"{count:.2f}".rstrip("0")


def _format_cell(cell) -> str:
    if cell is None:
        return "–"
    mean, se, _ = cell
    return f"{mean:.2f} ± {'n/a' if math.isnan(se) else f'{se:.2f}'}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table with a left-aligned first column."""
    lines = ["| " + " | ".join(header) + " |", "|:--" + "|:-:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def per_game_markdown(summary, variants) -> str:
    """The paper's per-game table: mean ± SE per variant, winners in bold, "No. of wins" row."""
    winners = game_winners(summary)
    rows = []
    for game, cells in summary.items():
        row = [game]
        for variant in variants:
            text = _format_cell(cells.get(variant))
            row.append(f"**{text}**" if variant in winners.get(game, ()) else text)
        rows.append(row)
    wins = win_counts(winners, variants)
    rows.append(["**No. of wins**"] + [_format_count(wins[variant]) for variant in variants])
    seeds = sorted({n for cells in summary.values() for _, _, n in cells.values()})
    seeds_text = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    note = (
        f"\nMean evaluation score over the whole evaluation period, averaged over seeds ± standard error across "
        f"seeds ({seeds_text} seeds per cell). Bold: the highest mean of the game."
    )
    unjudged = [game for game in summary if game not in winners]
    if unjudged:
        note += f" No winner for {', '.join(unjudged)} (not every variant has runs there)."
    return markdown_table(["Game", *variants], rows) + note + "\n"


def write_per_game_csv(summary, variants, path) -> None:
    """per_game.csv: game, {variant}_mean, {variant}_se, {variant}_seeds ..., winner (";" on ties; empty for a game
    some variant lacks); a last row "No. of wins" holds the counts in the {variant}_mean columns. Empty cell: no runs,
    or SE with one seed."""
    winners = game_winners(summary)
    header = ["game"] + [f"{variant}_{field}" for variant in variants for field in ("mean", "se", "seeds")] + ["winner"]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for game, cells in summary.items():
            row = [game]
            for variant in variants:
                mean, se, seeds = cells.get(variant, (math.nan, math.nan, 0))
                row += ["" if math.isnan(mean) else repr(mean), "" if math.isnan(se) else repr(se), seeds]
            writer.writerow(row + [";".join(winners.get(game, []))])
        wins = win_counts(winners, variants)
        writer.writerow(["No. of wins"] + [value for variant in variants for value in (repr(wins[variant]), "", "")] + [""])


# ---------------------------------------------------------------------------------------------------------------
# alignment of biases


def alignment_shares(winners: dict[str, list[str]], variants) -> list[tuple[str, int, dict[str, float]]]:
    """[(axis class, number of its games in the results, {variant: share of those games won})] for horizontal,
    vertical, other, then the three kinds of other ("other: ..."); a tie between k variants gives each 1/k of the
    game. Classes without games are left out; unclassified games (not in the paper) are noted."""
    unclassified = [game for game in winners if not any(game in games for games in AXIS_CLASSES.values())]
    if unclassified:
        print(f"note: {', '.join(unclassified)} not in the paper's game classification; left out of the alignment table")
    classes = list(AXIS_CLASSES.items()) + [(f"other: {kind}", games) for kind, games in OTHER_KINDS.items()]
    table = []
    for name, class_games in classes:
        won = {game: tied for game, tied in winners.items() if game in class_games}
        if won:
            counts = win_counts(won, variants)
            table.append((name, len(won), {variant: counts[variant] / len(won) for variant in variants}))
    return table


def alignment_markdown(table, variants) -> str:
    """Share of each class's games won by each variant (highest share in bold)."""
    rows = []
    for name, num_games, shares in table:
        best = max(shares.values())
        rows.append(
            [name, str(num_games)] + [f"**{shares[v]:.2f}**" if shares[v] == best else f"{shares[v]:.2f}" for v in variants]
        )
    return markdown_table(["Axis of dynamics", "Games", *variants], rows)


def write_alignment_csv(table, variants, path) -> None:
    """alignment.csv: axis_class, num_games, one share column per variant."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["axis_class", "num_games", *variants])
        for name, num_games, shares in table:
            writer.writerow([name, num_games] + [repr(shares[v]) for v in variants])
