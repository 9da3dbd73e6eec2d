"""Which reading of a self-attention agent's attention is on the game's objects? The readings of
`ppo_atari_selfattn.py`'s attention block a researcher would try, each scored by the object benchmark of
`attention_utils.objects` on the same frames, beside the same reading of the randomised copy; and the
self-attention paper's state-representation claims as numbers.

The block sees the rectified c1 features h (the paper's H1, 16 x 20 x 20) and adds the attention term
a = softmax(q k^T / sqrt(d)) v (eq. 1 of the paper, along the axes of SWA / CWRA / CWCA / CWRCA) to them. Readings,
each on the 20 x 20 c1 grid, brought to 84 x 84 by the script's `upsample_to_input` and min-max scaled, as the
tools' default map:
- `signed`: the channel mean of a (what `attention_maps` returns and every tool draws by default);
- `negated`: minus that, i.e. the cold regions of the default map;
- `magnitude`: the channel mean of |a|;
- `output`: the channel mean of the block's output h + a (what c2 sees);
- `weights`: the attention each position receives, sum over queries of softmax(q k^T / sqrt(d)) (CWCA: over the
  columns of its row; CWRA: over the rows of its column; SWA: over rows, the same for every column; CWRCA: both);
- `channel`: each channel of a on its own: `best channel` is the channel with the highest NSS on all objects over
  the even frames, scored on the odd frames (chosen and scored on different frames, so the choice does not flatter
  it), `channel mean` the mean of the 16 channels' scores on the odd frames.

State representation (the paper's interpretability section), per frame:
- "cold regions in the rectified feature maps at H1 correspond to hot regions in the attention maps": the Spearman
  correlation, over the 400 positions, between channel c of h and channel c of a, averaged over channels and frames
  (negative if the claim holds), against the same for the randomised copy;
- "attention blocks oriented in a certain axis": the share of the signed map's variance that lies between rows
  (Var of the row means / Var of the map: 1 = horizontal bands, constant along each row) and between columns
  (1 = vertical bands); CWCA's blocks are horizontal, CWRA's vertical.

Writes `{game}_readings.md` and `{game}_readings.csv` (one row per agent, reading, frame and object class) into
`--out` (default: `readings/` beside the first checkpoint); files already there are kept (`-2`, ...).

    python -m attention_utils.selfattn_readings --checkpoint zoo/Pong__ppo_atari_selfattn__CWCA/step_005505024.cleanrl_model
"""

import csv
import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

from attention_utils.cli_checks import beside_checkpoint, check_at_least, check_checkpoints, free_path
from attention_utils.metrics import mean_defined
from attention_utils.objects import BASELINES, METRICS, _cell, rank_correlation
from attention_utils.runs import atomic_open, available_cores, write_text

READINGS = ("signed", "negated", "magnitude", "output", "weights")
READING_NAMES = {
    "signed": "signed term, channel mean (the default)",
    "negated": "signed term negated (its cold regions)",
    "magnitude": "|term|, channel mean",
    "output": "block output h + term, channel mean",
    "weights": "attention weights received",
    "best channel": "best channel of the term (chosen on even frames)",
    "channel mean": "single channels of the term, mean score",
}


@dataclass
class Args:
    checkpoint: tuple[str, ...]
    """`.cleanrl_model` files written by ppo_atari_selfattn.py with a self-attention block (not NA)"""
    frames: int = 300
    """agent steps recorded per agent (the game restarts when it ends)"""
    negatives: int = 32
    """other frames whose object pixels are the shuffled AUC's negatives"""
    seed: int = 8_000_000
    """seed of the played game (the same as `attention_utils.objects`', so both see the same frames)"""
    out: Optional[str] = None
    """folder for the table and CSV (default: `readings/` beside the first checkpoint)"""
    threads: int = 0
    """torch threads; 0 = one per core this process may use"""


def received_weights(block, h: torch.Tensor) -> torch.Tensor:
    """(N, 16, 20, 20) c1 features -> (N, 20, 20): the attention each position receives, summed over the queries of
    the block's softmax(q k^T / sqrt(d)) (the weights of `SelfAttention._attend`, along the block's axes)."""
    q, k = block.query(h), block.key(h)  # (N, C, H, W)

    def weights(q, k):  # (..., L, d) -> (..., L, L)
        return torch.softmax(q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5), dim=-1)

    received = torch.zeros(h.shape[0], h.shape[2], h.shape[3], dtype=h.dtype, device=h.device)
    if block.kind == "SWA":  # per channel, rows attend to rows (the W columns as features): (N, C, H, H)
        received = received + weights(q, k).sum(-2).mean(1)[:, :, None]  # (N, H) -> (N, H, 1), the same in every column
    if block.kind in ("CWRA", "CWRCA"):  # within each column, rows attend to rows: (N, W, H, H)
        qr, kr = (t.permute(0, 3, 2, 1) for t in (q, k))  # (N, W, H, C)
        received = received + weights(qr, kr).sum(-2).transpose(1, 2)  # (N, W, H) -> (N, H, W)
    if block.kind in ("CWCA", "CWRCA"):  # within each row, columns attend to columns: (N, H, W, W)
        qc, kc = (t.permute(0, 2, 3, 1) for t in (q, k))  # (N, H, W, C)
        received = received + weights(qc, kc).sum(-2)  # (N, H, W)
    return received


@torch.no_grad()
def readings(loaded, obs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(B, 4, 84, 84) uint8 -> ({reading: (B, 84, 84) min-max scaled}, the term a (B, 16, 20, 20), h (B, 16, 20, 20)),
    with `channel_{c}` for each channel of a."""
    from attention_utils.checkpoints import attention_on_input

    agent, script = loaded.agent, loaded.script
    h = agent.c1_features(obs).float()  # (B, 16, 20, 20), rectified
    term = agent.attention.attention_term(h).float()  # (B, 16, 20, 20)
    coarse = {
        "signed": term.mean(1),
        "negated": -term.mean(1),
        "magnitude": term.abs().mean(1),
        "output": agent.attention(h).float().mean(1),
        "weights": received_weights(agent.attention, h),
    }
    coarse |= {f"channel_{c}": term[:, c] for c in range(term.shape[1])}
    return {name: attention_on_input(script, value) for name, value in coarse.items()}, term, h


def axis_shares(attention_map: np.ndarray) -> tuple[Optional[float], Optional[float]]:
    """(share of the map's variance between rows, between columns); None for a constant map."""
    total = attention_map.var()
    if total == 0:
        return None, None
    return float(attention_map.mean(1).var() / total), float(attention_map.mean(0).var() / total)


def cold_hot_correlation(term: np.ndarray, h: np.ndarray) -> Optional[float]:
    """Mean over channels of the Spearman correlation between channel c of h and of the term, (16, 20, 20) each."""
    return mean_defined([rank_correlation(h[c], term[c]) for c in range(h.shape[0])])


def check_inputs(args: Args) -> list:
    from attention_utils.checkpoints import load_agent

    check_at_least("--frames", args.frames, 4)  # even and odd frames, each with others for the shuffled AUC
    check_at_least("--negatives", args.negatives)
    check_at_least("--threads", args.threads, 0)
    check_checkpoints(
        args.checkpoint, args.out, "give at least one .cleanrl_model checkpoint written by ppo_atari_selfattn.py"
    )
    agents = []
    for checkpoint in args.checkpoint:
        loaded = load_agent(checkpoint)
        if loaded.script.__name__ != "ppo_atari_selfattn" or loaded.agent.attention is None:
            sys.exit(
                f"error: {checkpoint}: a {loaded.variant} agent of {loaded.script.__name__}.py; the readings are of "
                "ppo_atari_selfattn.py's self-attention block: give an SWA, CWRA, CWCA or CWRCA checkpoint"
            )
        from attention_utils.ram_layouts import LAYOUTS, layout_name

        if layout_name(loaded.game) is None:
            sys.exit(f"error: no RAM layout for {loaded.game}; games with one: {', '.join(sorted(LAYOUTS))}")
        agents.append((checkpoint, loaded))
    return agents


def measure(checkpoint: str, loaded, args: Args) -> tuple[list[dict], dict]:
    """Play, read, score: the CSV rows and {(reading, class, metric): mean} (trained and `..._randomised`), plus the
    state-representation statistics."""
    from attention_utils.objects import randomised_copy, record, score

    randomised = randomised_copy(loaded)
    rec = record(checkpoint, loaded, randomised, loaded.game, args.frames, args.seed, ["attention"], 1)
    obs = torch.as_tensor(np.stack(rec.obs))  # (T, 4, 84, 84)
    trained, term, h = readings(loaded, obs)
    copy, random_term, random_h = readings(randomised, obs)
    names = list(trained)
    baselines = {name: rec.maps[name] for name in BASELINES}  # recorded with the frames
    rec.explanations = names
    rec.maps = {name: list(trained[name].numpy()) for name in names}
    rec.maps |= {f"{name}_randomised": list(copy[name].numpy()) for name in names} | baselines
    rows = score(rec, args.negatives, args.seed)
    for row in rows:
        row["agent"] = rec.agent
    values: dict = {}
    for row in rows:
        half = "even" if row["frame"] % 2 == 0 else "odd"
        for metric, _ in METRICS:
            values.setdefault((row["map"], row["object_class"], metric, "all"), []).append(row[metric])
            values.setdefault((row["map"], row["object_class"], metric, half), []).append(row[metric])
    means = {key: mean_defined(column) for key, column in values.items()}
    channels = [name for name in names if name.startswith("channel_")]
    for suffix in ("", "_randomised"):
        best = max(channels, key=lambda c: means.get((c + suffix, "all", "nss", "even")) or -np.inf)
        means["best channel" + suffix, "channel"] = best
        for key in [k for k in means if k[0] == best + suffix and k[3] == "odd"]:
            means["best channel" + suffix, key[1], key[2], "all"] = means[key]
        for kind in rec.kinds + ["all"]:
            for metric, _ in METRICS:
                means["channel mean" + suffix, kind, metric, "all"] = mean_defined(
                    [means.get((c + suffix, kind, metric, "odd")) for c in channels]
                )
    signed = {"": trained["signed"].numpy(), "_randomised": copy["signed"].numpy()}
    coarse_signed = {"": term.mean(1).numpy(), "_randomised": random_term.mean(1).numpy()}
    for suffix, (t, hh) in {"": (term, h), "_randomised": (random_term, random_h)}.items():
        means["cold_hot" + suffix] = mean_defined([cold_hot_correlation(t[i].numpy(), hh[i].numpy()) for i in range(len(t))])
        shares = [axis_shares(m) for m in coarse_signed[suffix]]
        means["row_share" + suffix] = mean_defined([s[0] for s in shares])
        means["column_share" + suffix] = mean_defined([s[1] for s in shares])
    means["rank_corr"] = mean_defined([rank_correlation(a, b) for a, b in zip(signed[""], signed["_randomised"])])
    means["kinds"], means["agent"], means["game"] = rec.kinds, rec.agent, rec.game
    return rows, means


def _share(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def markdown(results: list[dict], frames: int) -> str:
    lines = []
    for means in results:
        kinds = means["kinds"] + ["all"]
        lines += [
            f"## {means['game']}: {means['agent']}",
            "",
            f"{frames} frames. Each reading of the trained agent, then the same reading of its randomised copy; the "
            "maps that know nothing about the agent last. Best channel: channel "
            f"{means['best channel', 'channel'].removeprefix('channel_')} (randomised copy: "
            f"{means['best channel_randomised', 'channel'].removeprefix('channel_')}).",
            "",
        ]
        for metric, metric_name in METRICS:
            lines += [f"| {metric_name} | " + " | ".join(kinds) + " |", "|---" * (1 + len(kinds)) + "|"]
            for reading in READINGS + ("best channel", "channel mean"):
                for suffix, label in (("", READING_NAMES[reading]), ("_randomised", "randomised weights")):
                    cells = [_cell(means.get((reading + suffix, kind, metric, "all")), metric) for kind in kinds]
                    lines.append(f"| {label} | " + " | ".join(cells) + " |")
            for name in BASELINES:
                cells = [_cell(means.get((name, kind, metric, "all")), metric) for kind in kinds]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [
            "| state representation | trained | randomised weights |",
            "|---|---|---|",
            f"| H1 channel vs its attention term, Spearman (cold H1 = hot attention if negative) | "
            f"{_cell(means['cold_hot'], 'r')} | {_cell(means['cold_hot_randomised'], 'r')} |",
            f"| share of the signed map's variance between rows (horizontal bands) | {_share(means['row_share'])} | "
            f"{_share(means['row_share_randomised'])} |",
            f"| share between columns (vertical bands) | {_share(means['column_share'])} | "
            f"{_share(means['column_share_randomised'])} |",
            f"| signed map, trained vs randomised (Spearman) | {_cell(means['rank_corr'], 'r')} | |",
            "",
        ]
    return "\n".join(lines)


def main(args: Args) -> list[str]:
    torch.set_num_threads(args.threads or available_cores())
    agents = check_inputs(args)
    out = args.out or os.path.join(beside_checkpoint(args.checkpoint[0]), "readings")
    results, all_rows = [], []
    for checkpoint, loaded in agents:
        rows, means = measure(checkpoint, loaded, args)
        results.append(means)
        all_rows += rows
        best = ", ".join(
            f"{reading} {_cell(means.get((reading, 'all', 'nss', 'all')), 'nss')}"
            for reading in READINGS + ("best channel", "channel mean")
        )
        print(
            f"{means['game']} {means['agent']}: NSS on all objects: {best}; H1-vs-term correlation "
            f"{_cell(means['cold_hot'], 'r')} (randomised {_cell(means['cold_hot_randomised'], 'r')}); "
            f"variance between rows {_share(means['row_share'])}, between columns {_share(means['column_share'])}",
            flush=True,
        )
    os.makedirs(out, exist_ok=True)
    games = {means["game"] for means in results}
    stem = free_path(os.path.join(out, f"{games.pop()}_readings" if len(games) == 1 else "readings"), (".csv", ".md"))
    with atomic_open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(all_rows[0]))
        writer.writeheader()
        writer.writerows(all_rows)
    write_text(f"{stem}.md", markdown(results, args.frames))
    print(f"readings: {stem}.md, {stem}.csv")
    return [stem]


if __name__ == "__main__":
    main(tyro.cli(Args))
