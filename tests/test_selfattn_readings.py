"""attention_utils.selfattn_readings: the attention weights along each block's axes, the variance shares by hand, and
the command on hand-built checkpoints."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, describe, hand_built_checkpoint, script_env

from attention_utils.checkpoints import import_script
from attention_utils.selfattn_readings import axis_shares, received_weights

SELFATTN = import_script("ppo_atari_selfattn.py")


def one_loud_key(kind):
    """A block whose every query is the same vector and whose keys are the features themselves, and features that are
    zero except at (row 5, column 12): every query that may attend to that position puts (almost) all its weight on it."""
    block = SELFATTN.SelfAttention(16, kind)
    with torch.no_grad():
        block.query.weight.zero_()
        block.query.bias.fill_(1.0)
        block.key.weight.copy_(torch.eye(16)[:, :, None, None])
        block.key.bias.zero_()
    h = torch.zeros(1, 16, 20, 20)
    h[0, :, 5, 12] = 10.0
    return block, h


@pytest.mark.quick
@pytest.mark.parametrize("kind", ["CWCA", "CWRA", "CWRCA", "SWA"])
def test_weights_are_received_along_the_blocks_axes(kind):
    block, h = one_loud_key(kind)
    with torch.no_grad():
        received = received_weights(block, h)[0]  # (20, 20)
    assert received.shape == (20, 20)
    # every query's weights sum to 1, so the received weights sum to the number of queries
    queries = {"CWCA": 400, "CWRA": 400, "CWRCA": 800, "SWA": 400}[kind]  # SWA: 20 rows, the same in 20 columns
    assert float(received.sum()) == pytest.approx(queries, rel=1e-5)
    if kind == "CWCA":  # the 20 queries of row 5 all attend to column 12; other rows are uniform
        assert float(received[5, 12]) == pytest.approx(20, rel=1e-3) and float(received[4, 3]) == pytest.approx(1)
    if kind == "CWRA":  # the 20 queries of column 12 all attend to row 5
        assert float(received[5, 12]) == pytest.approx(20, rel=1e-3) and float(received[3, 4]) == pytest.approx(1)
    if kind == "CWRCA":
        assert float(received[5, 12]) == pytest.approx(40, rel=1e-3)
    if kind == "SWA":  # rows attend to rows (columns as features): row 5 receives, the same in every column
        assert torch.allclose(received, received[:, :1].expand(20, 20))
        assert float(received[5, 0]) > 5 * float(received[4, 0])  # softmax(10 / sqrt(20)) against 19 zeros


@pytest.mark.quick
def test_axis_shares_by_hand():
    rows = np.arange(20.0)[:, None] * np.ones((1, 20))  # constant along each row: horizontal bands
    assert axis_shares(rows) == pytest.approx((1.0, 0.0))
    assert axis_shares(rows.T) == pytest.approx((0.0, 1.0))
    assert axis_shares(np.ones((20, 20))) == (None, None)
    checker = (np.indices((20, 20)).sum(0) % 2).astype(float)  # no band at all
    assert axis_shares(checker) == pytest.approx((0.0, 0.0))


def run(args, timeout=600):
    command = [sys.executable, "-m", "attention_utils.selfattn_readings", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=timeout)


def test_cli_scores_every_reading_and_the_claims(tmp_path):
    checkpoint = hand_built_checkpoint(tmp_path / "cwca.cleanrl_model", "ppo_atari_selfattn.py", "Pong", 6, self_attn="CWCA")
    proc = run(["--checkpoint", checkpoint, "--frames", 6, "--negatives", 2, "--out", tmp_path / "out"])
    assert proc.returncode == 0, describe(proc)
    table = (tmp_path / "out" / "Pong_readings.md").read_text()
    for label in (
        "signed term, channel mean (the default)",
        "signed term negated",
        "|term|, channel mean",
        "block output h + term",
        "attention weights received",
        "best channel of the term",
        "single channels of the term",
        "H1 channel vs its attention term",
        "share of the signed map's variance between rows",
    ):
        assert f"| {label}" in table, label
    with open(tmp_path / "out" / "Pong_readings.csv") as f:
        maps = {row["map"] for row in csv.DictReader(f)}
    assert {"signed", "signed_randomised", "weights", "channel_0", "channel_15_randomised", "motion"} <= maps
    assert "NSS on all objects: signed " in proc.stdout


def test_agents_without_a_block_are_refused(tmp_path):
    na = hand_built_checkpoint(tmp_path / "na.cleanrl_model", "ppo_atari_selfattn.py", "Pong", 6, self_attn="NA")
    proc = run(["--checkpoint", na, "--out", tmp_path / "out"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {na}: a NA agent of ppo_atari_selfattn.py; the readings are of ppo_atari_selfattn.py's self-attention "
        "block: give an SWA, CWRA, CWCA or CWRCA checkpoint"
    )
    assert not (tmp_path / "out").exists()
    proc = run(["--checkpoint", na, "--frames", 3])
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --frames 3: must be at least 4"
