"""Argument checks shared by the `python -m attention_utils.<tool>` commands: each bad value ends the command
before any work with one line, `error: <what is wrong>; <what is valid>`, and exit status 1 (`sys.exit`)."""

import os
import sys


def check_at_least(flag: str, value: float, minimum: float = 1) -> None:
    """`--episodes 0` and the like: counts and sizes below `minimum`."""
    if value < minimum:
        sys.exit(f"error: {flag} {value}: must be at least {minimum}")


def check_checkpoint_exists(path: str, flag: str = "--checkpoint") -> None:
    """A checkpoint argument must name an existing file or run folder (`checkpoints.load_agent` reads either)."""
    if not os.path.exists(path):
        sys.exit(f"error: {flag} {path}: no such file or folder; give a .cleanrl_model checkpoint or a run folder")


def check_output_folder(path: str, flag: str = "--out") -> None:
    """An output folder may exist (files are added to it) but must not be a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        sys.exit(f"error: {flag} {path} is a file; give a folder (new or existing)")


def check_output_file(path: str, flag: str = "--out") -> None:
    """An output file name must not be an existing folder, and its folder must not be a file."""
    if os.path.isdir(path):
        sys.exit(f"error: {flag} {path} is a folder; give a file name (e.g. {os.path.join(path, 'out.png')})")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        sys.exit(f"error: {flag} {path}: {parent} is a file, not a folder; give a file name in a folder")


def free_path(path: str, extensions: tuple[str, ...] = ("",)) -> str:
    """`path` if none of `path + ext` exists, else the first of `path-2`, `path-3`, ... (inserted before an extension
    that is part of `path`) of which none exists: nothing written earlier is overwritten."""
    stem, suffix = os.path.splitext(path) if extensions == ("",) else (path, "")
    candidate, copy = path, 1
    while any(os.path.exists(candidate + ext) for ext in extensions):
        copy += 1
        candidate = f"{stem}-{copy}{suffix}"
    return candidate


def beside_checkpoint(checkpoint: str) -> str:
    """The folder a tool writes into by default: the checkpoint's own, or the run folder given instead of one."""
    return checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))


def check_checkpoints(checkpoints, out, missing: str = "give at least one .cleanrl_model checkpoint or run folder") -> None:
    """The checkpoints of a tool that takes several: at least one, each existing; `--out` a folder if given."""
    if not checkpoints:
        sys.exit(f"error: --checkpoint: {missing}")
    for checkpoint in checkpoints:
        check_checkpoint_exists(checkpoint)
    if out is not None:
        check_output_folder(out)


def check_played_states(frames: int, spacing: int, warmup: int, checkpoint: str, out) -> None:
    """The states of one played episode a tool explains (`perturbation`, `gradcam`): counts, the checkpoint, `--out`
    a file if given."""
    check_at_least("--frames", frames)
    check_at_least("--spacing", spacing)
    check_at_least("--warmup", warmup, 0)
    check_checkpoint_exists(checkpoint)
    if out is not None:
        check_output_file(out)
