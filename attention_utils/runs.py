"""Run bookkeeping for the training scripts, imported only when a feature needs it: `--resume` (a checkpoint or a
run folder's latest loadable one, settings, refusals, evaluations logged past the checkpoint), `--eval-only` (the
long evaluation of a checkpoint) and the closest valid names for a misspelt game. Also what every tool uses to read
a checkpoint (`read_checkpoint`, `find_checkpoint`), to write a file (`write_atomically`) and to count the cores it
may use (`available_cores`)."""

import csv
import dataclasses
import difflib
import io
import os
import re
import signal
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

# Fields that may differ from a checkpoint's when resuming: they control where and how the run is shown,
# not what is learned.
RUN_CONTROL_FIELDS = (
    "resume", "track", "wandb_project_name", "wandb_entity", "capture_video", "save_attention",
    "cuda", "compile", "torch_threads", "rollout_threads", "env_threads", "eval_only", "eval_env_id", "eval_dir", "nan_policy",
)  # fmt: skip
# with --eval-only, these also come from the command line
EVAL_ONLY_FIELDS = ("eval_episodes", "eval_deterministic", "precision")
CHECKPOINT_NAME = re.compile(r"step_(\d+)\.cleanrl_model")
CHECKPOINT_KEYS = {"model", "args", "script", "global_step"}
EVALS_HEADER = ["global_step", "mean_return", "std_return", "episode_returns"]
UNFINISHED_WRITE = re.compile(r"\..+\.\d+\.tmp")  # what `write_atomically` leaves behind when killed mid-write


def available_cores() -> int:
    """The cores this process may run on (its affinity: a container's or `taskset`'s share, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextmanager
def atomic_open(path, mode: str = "w", **open_kwargs):
    """`open(path, mode)` for writing, through a hidden temporary file beside `path` that is flushed to disk and renamed
    over `path` when the block ends: a kill or a full disk mid-write leaves the previous file (or none) under the
    name, never a truncated one. A missing folder is made; a write that fails exits with one line."""
    path = os.fspath(path)
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(temporary, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        sys.exit(f"error: cannot write {path} ({error.strerror}); files written before are intact")
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextmanager
def atomic_path(path):
    """A hidden temporary path beside `path`, with its extension, for writers that take a file name (video
    encoders); renamed over `path` when the block ends, removed if it fails."""
    path = os.fspath(path)
    stem, extension = os.path.splitext(os.path.basename(path))
    temporary = os.path.join(os.path.dirname(path), f".{stem}.{os.getpid()}.tmp{extension}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_atomically(path, write) -> None:
    """`write(f)` on a binary file that appears under `path` only once complete (the scripts' own `write_atomically`)."""
    with atomic_open(path, "wb") as f:
        write(f)


def write_text(path, text: str) -> None:
    """`Path(path).write_text(text)`, written atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def save_figure(fig, path, **savefig_kwargs) -> None:
    """`fig.savefig(path)`, written atomically."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(os.fspath(path))[1][1:], **savefig_kwargs)


def write_csv(path: str, rows: list) -> None:
    """A CSV file written atomically."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def read_checkpoint(path: str) -> tuple[Optional[dict], str]:
    """(the checkpoint, "") or (None, why it cannot be used): missing, empty, truncated, not a torch file, or not
    written by a training script."""
    if not os.path.exists(path):
        return None, "no such file"
    if os.path.isdir(path):
        return None, "a folder, not a checkpoint file"
    if os.path.getsize(path) == 0:
        return None, "an empty file"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated zip, pickle garbage, not a torch file at all
        return None, f"not a readable checkpoint, truncated or damaged ({type(error).__name__})"
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= set(checkpoint):
        return None, "not a checkpoint written by a training script (needs model, args, script and global_step)"
    return checkpoint, ""


def find_checkpoint(path: str, option: str, set_aside: bool = False) -> tuple[str, dict]:
    """The checkpoint `path` names, or a run folder's latest loadable one; exits with one line if there is none.

    In a folder, a checkpoint that does not load is reported and skipped; with `set_aside` (a training resume,
    which would write that step again) it is renamed `*.corrupt`, never deleted."""
    if not os.path.isdir(path):
        checkpoint, problem = read_checkpoint(path)
        if checkpoint is None:
            sys.exit(f"error: {option} {path}: {problem}; give a .cleanrl_model checkpoint or a run folder")
        return path, checkpoint
    names = sorted(
        (f for f in os.listdir(path) if CHECKPOINT_NAME.fullmatch(f)), key=lambda f: int(CHECKPOINT_NAME.fullmatch(f).group(1))
    )
    for name in reversed(names):
        candidate = os.path.join(path, name)
        checkpoint, problem = read_checkpoint(candidate)
        if checkpoint is not None:
            return candidate, checkpoint
        print(f"{option}: skipping {candidate}: {problem}", file=sys.stderr)
        if set_aside:
            os.replace(candidate, f"{candidate}.corrupt")
            print(f"{option}: renamed it {name}.corrupt (kept, not deleted)", file=sys.stderr)
    sys.exit(f"error: {option} {path}: the folder has no loadable step_*.cleanrl_model checkpoint")


def atari_games() -> list[str]:
    """The game names envpool can make, e.g. `Pong` (its `Pong-v5`)."""
    from envpool.registration import registry

    return sorted(k[: -len("-v5")] for k, spec in registry.specs.items() if spec[0] == "envpool.atari" and k.endswith("-v5"))


def unknown_game(env_id: str) -> str:
    """One line for a game envpool does not have, naming the closest valid ones."""
    name = re.sub(r"(NoFrameskip-v[04]|-v[045])$", "", env_id.removeprefix("ALE/"))
    games = atari_games() + ["BreakoutInfinite"]
    close = difflib.get_close_matches(name, games, n=3, cutoff=0.5)
    hint = f"closest valid games: {', '.join(close)}" if close else f"valid games: {', '.join(games)}"
    return f"error: unknown Atari game '{env_id}'; {hint} (forms: Pong, Pong-v5, PongNoFrameskip-v4, ALE/Pong-v5)"


def resume(args, script_name: str):
    """Load the `--resume` checkpoint and take the experiment's settings from it. Returns (args, checkpoint).

    Only run-control options (and, with `--eval-only`, the evaluation's own) keep their command-line value;
    other settings given on the command line are named and ignored. A training resume is refused for a
    finished run and for a checkpoint with later ones beside it (copy it into a new folder to branch from it);
    evaluations logged after the checkpoint are moved to `evals.superseded.csv`, as the resumed run logs them
    again."""
    option = "--eval-only --resume" if args.eval_only else "--resume"
    run_dir = args.resume if os.path.isdir(args.resume) else os.path.dirname(os.path.abspath(args.resume))
    not_writable = f"error: the run folder {run_dir} is not writable; fix its permissions (or copy the checkpoint elsewhere)"
    if not args.eval_only and os.path.isdir(args.resume) and not os.access(run_dir, os.W_OK):  # before anything is changed
        sys.exit(not_writable)
    path, checkpoint = find_checkpoint(args.resume, option, set_aside=not args.eval_only)
    # an exported agent (no optimizer state, e.g. zoo/) trains on in a new run folder: its own folder is left as it is
    exported = "optimizer" not in checkpoint
    if not args.eval_only and not exported and not os.access(run_dir, os.W_OK):
        sys.exit(not_writable)
    args = dataclasses.replace(args, resume=path)  # the run goes on in the checkpoint's folder
    if checkpoint["script"] != script_name:
        sys.exit(f"error: --resume {args.resume} was written by {checkpoint['script']}, not {script_name}")
    saved = checkpoint["args"]
    defaults = type(args)()
    kept = RUN_CONTROL_FIELDS + (EVAL_ONLY_FIELDS if args.eval_only else ())
    changed = [
        f for f in saved if f not in kept and f in vars(args) and getattr(args, f) not in (getattr(defaults, f), saved[f])
    ]  # fmt: skip
    # a setting the checkpoint predates takes its default (what the run was trained with), not the command line's
    predates = {f: getattr(defaults, f) for f in vars(args) if f not in saved and f not in kept}
    changed += [f for f, default in predates.items() if getattr(args, f) != default]
    if changed:
        print(f"resume: experiment settings come from the checkpoint; ignoring command-line {', '.join(changed)}")
    args = dataclasses.replace(args, **{k: v for k, v in saved.items() if k not in kept and k in vars(args)}, **predates)
    if args.eval_only:
        return args, checkpoint
    run_dir, step = os.path.dirname(os.path.abspath(args.resume)), checkpoint["global_step"]
    if checkpoint["iteration"] >= args.total_timesteps // (args.num_envs * args.num_steps):
        sys.exit(f"error: checkpoint is at step {step}, already at total_timesteps {args.total_timesteps}")
    if exported:
        return args, checkpoint
    for name in os.listdir(run_dir):  # a write killed before its rename left a hidden temporary file
        if UNFINISHED_WRITE.fullmatch(name):
            os.remove(os.path.join(run_dir, name))
            print(f"resume: removed {name}, the remains of a write that was interrupted")
    later = sorted(f for f in os.listdir(run_dir) if (m := CHECKPOINT_NAME.fullmatch(f)) and int(m.group(1)) > step)
    if later:
        sys.exit(
            f"error: {run_dir} has checkpoints past step {step} ({', '.join(later)}); "
            "copy the checkpoint into a new folder to branch from it"
        )
    evals_path = os.path.join(run_dir, "evals.csv")
    if os.path.exists(evals_path):  # evaluations logged after the checkpoint are superseded by the resumed run
        with open(evals_path) as f:
            rows = list(csv.reader(f))
        malformed = [i for i, r in enumerate(rows) if (r != EVALS_HEADER if i == 0 else len(r) != 4 or not r[0].isdigit())]
        if not rows or malformed:
            line = malformed[0] + 1 if malformed else 1
            sys.exit(
                f"error: {evals_path}, line {line}: not an evals.csv row ({','.join(EVALS_HEADER)}); fix or move the file"
            )
        stale = [r for r in rows[1:] if int(r[0]) > step]
        if stale:
            superseded_path = os.path.join(run_dir, "evals.superseded.csv")
            earlier = []
            if os.path.exists(superseded_path):
                with open(superseded_path) as f:
                    earlier = list(csv.reader(f))
            write_csv(superseded_path, earlier + stale)
            write_csv(evals_path, [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step])
    return args, checkpoint


class EvaluationStopped(Exception):
    """Ctrl-C or SIGTERM during `--eval-only`: the games finished so far are written, then the evaluation ends."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_evaluation_stopped(signum, frame) -> None:
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # a second one while the results are written stops at once
        signal.signal(stop_signal, signal.SIG_DFL)
    raise EvaluationStopped(signum)


def eval_only(script: ModuleType, args, checkpoint: dict, device: torch.device, autocast) -> None:
    """The long evaluation of a checkpoint (Free-Lunch Saliency: 8192 episodes on unseen seeds): `eval_episodes`
    full games, 8 envs per core in one envpool pool, each env playing a share of the games fixed in advance (so
    short episodes are not favoured). Every episode's return and length go to a CSV beside the checkpoint, or in
    `--eval-dir` (a second evaluation gets a `-2` suffix, nothing is overwritten); the summary is printed.

    The results folder is checked before any game is played. Ctrl-C or SIGTERM writes the games finished so far
    to `..._{n}of{N}ep_interrupted.csv` (kept apart from complete evaluations: short games finish first, so a
    partial mean is biased) and says how many in one line."""
    game = script.parse_game(args.env_id)
    eval_game = script.parse_game(args.eval_env_id) if args.eval_env_id is not None else game
    out_dir = getattr(args, "eval_dir", None) or os.path.dirname(os.path.abspath(args.resume))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        sys.exit(f"error: --eval-dir {out_dir} is a file, not a folder; name a folder for the results CSV")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        sys.exit(f"error: cannot create the results folder {out_dir} ({error.strerror}); name a writable one with --eval-dir")
    if not os.access(out_dir, os.W_OK):
        sys.exit(
            f"error: cannot write the results into {out_dir} (not writable); nothing was played: "
            "name a writable folder with --eval-dir DIR"
        )
    num_cores = available_cores()
    num_envs = min(args.eval_episodes, 8 * num_cores)
    rgb = getattr(args, "frame_input", "grey_stack") == "rgb"  # only the recurrent scripts have the setting
    eval_pool = script.make_env(eval_game, num_envs, args.seed + script.EVAL_ONLY_SEED_OFFSET, False, num_cores, rgb)
    agent = script.make_agent(args, eval_pool.action_space.n).to(device)
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError:
        sys.exit(
            f"error: the checkpoint's agent does not fit {eval_game} ({eval_pool.action_space.n} actions); "
            f"evaluate it on the game it was trained on ({game}) or one with the same actions"
        )
    agent.eval()
    variant, step = script.variant_name(args), checkpoint["global_step"]
    print(
        f"eval-only: {variant} at step {step:,} on {eval_game}, {args.eval_episodes} episodes, "
        f"{eval_pool.action_space.n} actions, precision {args.precision}",
        flush=True,
    )
    finished = []  # (env, return, length) of every game, in the order they end

    def on_episode(episode_return, length, env) -> None:
        finished.append((env, episode_return, length))
        progress.update(1)
        if progress.disable and (len(finished) == 1 or len(finished) % max(1, args.eval_episodes // 10) == 0):
            print(f"eval-only: {len(finished)}/{args.eval_episodes} games finished", flush=True)  # a log's progress

    stopped = None
    handlers = {s: signal.signal(s, raise_evaluation_stopped) for s in (signal.SIGINT, signal.SIGTERM)}
    with tqdm(total=args.eval_episodes, unit="episode", dynamic_ncols=True, disable=not sys.stderr.isatty()) as progress:
        try:
            script.evaluate(agent, eval_pool, args.eval_episodes, device, autocast, args.eval_deterministic, on_episode)
        except EvaluationStopped as stop:
            stopped = stop
        finally:
            for stop_signal, handler in handlers.items():
                signal.signal(stop_signal, handler)
    eval_pool.close()
    base = os.path.join(out_dir, f"eval_only_{eval_game}_step_{step:09d}_{args.eval_episodes}ep")
    if stopped is not None:
        base = os.path.join(out_dir, f"eval_only_{eval_game}_step_{step:09d}_{len(finished)}of{args.eval_episodes}ep")
        if not finished:
            print(f"eval-only: stopped by {stopped} before any game finished; nothing written", flush=True)
            sys.exit(128 + stopped.signum)
    results_path, copy = f"{base}{'_interrupted' if stopped else ''}.csv", 1
    while os.path.exists(results_path):  # an earlier evaluation is never overwritten
        copy += 1
        results_path = f"{base}-{copy}{'_interrupted' if stopped else ''}.csv"
    rows = [[i, e, f"{r:g}", n] for i, (e, r, n) in enumerate(finished)]
    write_csv(results_path, [["episode", "env", "return", "length"]] + rows)
    returns, lengths = np.array([r for _, r, _ in finished]), np.array([n for _, _, n in finished])
    if stopped is not None:
        print(
            f"eval-only: stopped by {stopped} after {len(finished)} of {args.eval_episodes} games; the finished ones "
            f"(mean {returns.mean():.2f}, biased to short games) are in {results_path}",
            flush=True,
        )
        sys.exit(128 + stopped.signum)
    standard_error = returns.std(ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else float("nan")
    print(
        f"eval-only: mean return {returns.mean():.2f} +- {returns.std():.2f} (standard error {standard_error:.2f}), "
        f"median {np.median(returns):g}, min {returns.min():g}, max {returns.max():g}, "
        f"mean length {lengths.mean():.0f} steps; episodes in {results_path}"
    )
