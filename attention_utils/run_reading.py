"""Runs (a training run's game, variant, seed and evaluation curve) read from run folders (args.json + evals.csv)
and from a wandb project, and the checks and groupings every table of attention_utils.results starts from."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attention_utils.run_files import (
    ARGS_FILE,
    EVALS_FILE,
    ResultsError,
    _finite_float,
    _non_negative_int,
    find_run_dirs,
    read_args_json,
    read_csv_columns,
)
from attention_utils.run_naming import UnknownScriptError, game_name, name_shared_variants, variant_name


@dataclass
class Run:
    """One training run: what it is and its evaluation curve."""

    game: str
    variant: str
    seed: int
    exp_name: str
    steps: np.ndarray  # global_step of each evaluation, increasing
    scores: np.ndarray  # mean evaluation return at each of those steps
    source: str  # run folder or wandb run path

    @property
    def mean_score(self) -> float:
        """The mean evaluation score over the whole evaluation period."""
        return float(np.mean(self.scores))


def run_from_config(config: dict, steps, scores, source: str) -> Run:
    """A Run from a run's args (args.json or wandb config) and its evaluation curve, sorted by step."""
    missing = [key for key in ("env_id", "seed") if config.get(key) is None]
    if missing:
        raise ResultsError(f"{source}: no {', '.join(missing)} in the run's args")
    if not isinstance(config["env_id"], str) or isinstance(config["seed"], bool) or not isinstance(config["seed"], int):
        raise ResultsError(
            f"{source}: env_id {config['env_id']!r} / seed {config['seed']!r} in the run's args; "
            f"env_id is a game name (a string), seed a whole number"
        )
    try:
        variant = variant_name(config)
    except ResultsError as e:
        raise type(e)(f"{source}: {e}") from None
    steps, scores = np.asarray(steps, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    return Run(
        game=game_name(str(config["env_id"])),
        variant=variant,
        seed=int(config["seed"]),
        exp_name=str(config.get("exp_name") or ""),
        steps=steps[order],
        scores=scores[order],
        source=source,
    )


EVALS_HEADER = "global_step,mean_return,std_return,episode_returns"


def read_run_dir(run_dir) -> Run:
    """A Run from a run folder's args.json and evals.csv (other CSV files in the folder are not read). ResultsError
    naming the file and line of a malformed one."""
    run_dir = Path(run_dir)
    config = read_args_json(run_dir / ARGS_FILE)
    columns = read_csv_columns(
        run_dir / EVALS_FILE, {"global_step": _non_negative_int, "mean_return": _finite_float}, EVALS_HEADER
    )
    return run_from_config(config, columns["global_step"], columns["mean_return"], str(run_dir))


def read_run_dirs(paths, eval_only_allowed: bool = False) -> list[Run]:
    """The Runs of the run folders at or under each path (find_run_dirs); runs of no known training script are
    skipped with a note."""
    return read_known_runs(find_run_dirs(paths, eval_only_allowed))


def read_known_runs(run_dirs) -> list[Run]:
    """The Runs of these run folders; runs of no known training script are skipped with a note."""
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(read_run_dir(run_dir))
        except UnknownScriptError as e:
            print(f"note: {e}; skipped")
    return runs


def _unwrap_config(config) -> dict:
    """wandb configs may hold {"value": v} entries (older API / raw config files): plain values."""
    return {
        key: value["value"] if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value else value
        for key, value in dict(config).items()
    }


def wandb_runs(project: str, api=None) -> list[Run]:
    """Runs of a wandb project ("entity/project") through the public API: each run's config (the args.json keys)
    and the full history (scan_history, unsampled) of eval/mean_return against global_step. `api`: a
    wandb.Api()-like object (for tests); by default wandb.Api(). Runs without evaluations, without env_id / seed in their
    config, or of no known training script, are skipped with a note."""
    if api is None:
        import wandb

        api = wandb.Api()
    runs = []
    try:
        project_runs = list(api.runs(project))
    except Exception as e:  # network, authentication, unknown project: one line, not a traceback
        raise ResultsError(f"wandb project {project}: {type(e).__name__}: {e}") from None
    for wandb_run in project_runs:
        source = f"wandb:{project}/{getattr(wandb_run, 'id', None) or getattr(wandb_run, 'name', '?')}"
        rows = [
            row
            for row in wandb_run.scan_history(keys=["global_step", "eval/mean_return"])
            if row.get("eval/mean_return") is not None and row.get("global_step") is not None
        ]
        if not rows:
            print(f"note: {source} has no eval/mean_return; skipped")
            continue
        try:
            runs.append(
                run_from_config(
                    _unwrap_config(wandb_run.config),
                    [row["global_step"] for row in rows],
                    [row["eval/mean_return"] for row in rows],
                    source,
                )
            )
        except ResultsError as e:  # a project may also hold runs of other scripts
            print(f"note: {e}; skipped")
    return runs


def prepare_runs(runs: list[Run]) -> list[Run]:
    """Drop runs without evaluations and duplicates of (exp_name, game, variant, seed) (keeping the run with most
    evaluations), and rename a variant name shared by several experiments to "variant (exp_name)". Prints notes."""
    kept = {}
    for run in runs:
        if len(run.scores) == 0:
            print(f"note: {run.source} has no evaluations yet; skipped")
            continue
        key = (run.exp_name, run.game, run.variant, run.seed)
        if key in kept:
            other = kept[key]
            better = run if len(run.scores) > len(other.scores) else other
            print(
                f"note: {other.source} and {run.source} are both {run.game}/{run.variant}/seed {run.seed}; "
                f"keeping {better.source} ({len(better.scores)} evaluations)"
            )
            kept[key] = better
        else:
            kept[key] = run
    return name_shared_variants(list(kept.values()))


def note_unequal_periods(runs: list[Run]) -> list[str]:
    """Print a note for each game whose runs' last evaluations are at different steps (an unfinished run, another
    --total-timesteps): each run's mean covers its own evaluation period, so their means are not comparable as they
    stand. Returns those games."""
    last_steps = defaultdict(list)
    for run in runs:
        last_steps[run.game].append(int(run.steps[-1]))
    games = sorted(game for game, steps in last_steps.items() if len(set(steps)) > 1)
    for game in games:
        print(
            f"note: runs on {game} end at different steps ({min(last_steps[game]):,} to {max(last_steps[game]):,}); "
            f"each run's mean covers its own evaluation period"
        )
    return games


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """{(game, variant): runs sorted by seed}."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.game, run.variant].append(run)
    return {key: sorted(group, key=lambda run: run.seed) for key, group in sorted(groups.items())}
