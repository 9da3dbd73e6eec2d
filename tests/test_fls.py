"""ppo_atari_fls.py: Table-2 parameter counts, saliency upsampling, maps, and tiny end-to-end runs."""

import json
import math
import typing

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import REPO, describe, load_module, read_evals, run_script

SCRIPT = REPO / "ppo_atari_fls.py"
ARCHS = [
    "nature", "daqn", "rsppo", "rsppo_nopad", "sparse_fls", "sparse_fls_pool", "sparse_fls_norm", "sparse_fls_1x1",
    "sparse_fls_sp2", "sparse_fls_norelu", "sparse_fls_norelu_pool", "sparse_fls_h1", "sparse_fls_x3", "dense_fls",
    "dense_fls_norelu",
]  # fmt: skip
TINY = (
    "--env-id Breakout --num-envs 2 --num-steps 16 --num-minibatches 2 --update-epochs 1 "
    "--eval-episodes 1 --eval-freq 32 --save-freq 32 --torch-threads 1 --env-threads 1"
).split()

# The paper's Table 2 (Breakout, 4 actions).
TABLE_2 = {
    "nature": 1_686_693,
    "daqn": 130_726,
    "rsppo": 1_720_999,
    "sparse_fls": 1_836_710,
    "sparse_fls_pool": 263_846,
    "dense_fls": 280_358,
    "sparse_fls_h1": 1_762_982,
    "sparse_fls_x3": 2_063_016,
}
# Models the table leaves out, counted by hand.
HAND_COUNTS = {
    "rsppo_nopad": 1_720_999,  # the 1px padding has no parameters
    "sparse_fls_norm": 1_836_710,  # normalising the map adds none
    "sparse_fls_sp2": 1_836_710,  # base-2 SoftPlus adds none
    "sparse_fls_norelu": 1_836_710,  # dropping a ReLU removes none
    "sparse_fls_norelu_pool": 263_846,
    "dense_fls_norelu": 280_358,
    # Nature CNN + Conv(64->256, 1x1): 64*256 + 256 = 16,640, + Conv(256->1, 1x1): 256 + 1 = 257
    "sparse_fls_1x1": 1_686_693 + 16_640 + 257,
}


@pytest.fixture(scope="module")
def fls():
    return load_module(SCRIPT, "ppo_atari_fls")


@pytest.mark.quick
def test_every_arch_is_covered(fls):
    assert list(fls.ARCHS) == ARCHS
    assert list(typing.get_args(fls.Args.__annotations__["arch"])) == ARCHS  # --arch offers exactly the table's models
    assert set(TABLE_2) | set(HAND_COUNTS) == set(ARCHS)


@pytest.mark.quick
@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count(fls, arch):
    count = sum(p.numel() for p in fls.Agent(4, arch).parameters())
    assert count == {**TABLE_2, **HAND_COUNTS}[arch]


@pytest.mark.quick
@pytest.mark.parametrize(
    "block,grid,size,stride,padding",
    [
        ("sparse", 7, 36, 8, 0),
        ("first_conv", 20, 8, 4, 0),
        ("dense", 84, 13, 1, 6),
        ("sparse_padded", 7, 36, 8, 1),
    ],
)
def test_hot_cell_lights_exactly_its_receptive_field(fls, block, grid, size, stride, padding):
    for i, j in [(0, 0), (grid // 2, grid - 1), (grid - 1, 1)]:
        saliency = torch.zeros(1, grid, grid)
        saliency[0, i, j] = 1.0
        lit = fls.upsample_to_input(saliency, block)[0]
        assert lit.shape == (84, 84)
        expected = torch.zeros(84, 84)
        top, left = i * stride - padding, j * stride - padding
        expected[max(top, 0) : top + size, max(left, 0) : left + size] = 1.0
        assert torch.equal(lit, expected), (block, i, j)


@pytest.mark.quick
@pytest.mark.parametrize("arch", ARCHS)
def test_maps_and_saliency(fls, arch):
    torch.manual_seed(0)
    agent = fls.Agent(4, arch)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    maps = agent.attention_maps(obs)
    saliency = agent.saliency(obs)
    if arch == "nature":
        assert maps == {} and saliency is None
        return
    grid = {"sparse_fls_h1": 20, "sparse_fls_x3": 20, "dense_fls": 84, "dense_fls_norelu": 84}.get(arch, 7)
    assert maps["attention"].shape == (3, grid, grid)
    assert saliency.shape == (3, 84, 84)
    assert (maps["attention"] >= 0).all() and (saliency >= 0).all() and saliency.sum() > 0
    if arch == "daqn":  # one spatial softmax
        torch.testing.assert_close(maps["attention"].sum((1, 2)), torch.ones(3))
    if arch.startswith("rsppo"):  # sum of two spatial softmaxes
        torch.testing.assert_close(maps["attention"].sum((1, 2)), torch.full((3,), 2.0))
    if arch == "sparse_fls_norm":
        torch.testing.assert_close(maps["attention"].sum((1, 2)), torch.ones(3))
    if arch == "sparse_fls_x3":
        assert {m.shape[1:] for k, m in maps.items() if k != "attention"} == {(20, 20), (9, 9), (7, 7)}


@pytest.mark.quick
def test_base2_softplus(fls):
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(fls.softplus2(x), torch.log2(1 + torch.pow(2.0, x)))


@pytest.mark.quick
def test_fls_output_multiplies_features(fls):
    """Sparse FLS: the value depends on the map; a module that outputs zeros zeroes the features."""
    agent = fls.Agent(4, "sparse_fls_pool")
    torch.nn.init.zeros_(agent.fls["2"].out.weight)
    torch.nn.init.constant_(agent.fls["2"].out.bias, -50.0)  # softplus(-50) ~ 0
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(agent.hidden(obs), torch.relu(agent.fc.bias).expand(2, -1), atol=1e-6, rtol=0)


@pytest.mark.quick
@pytest.mark.parametrize("arch", ["sparse_fls", "nature"])
def test_video_frame_directly(fls, arch):
    """Figure 4's two panels, stacked: the RGB frame over the 84x84 input scaled to the frame's width; the
    saliency turns the lower panel green (`nature`, without a map, stays grey)."""
    from attention_utils.pictures import fls as fls_pictures

    rgb = np.zeros((210, 160, 3), dtype=np.uint8)
    obs = torch.full((4, 84, 84), 60, dtype=torch.uint8)
    frame = fls_pictures.video_frame(fls, fls.Agent(4, arch), rgb, obs)
    assert frame.shape == (370, 160, 3) and frame.dtype == np.uint8
    lower = frame[210:].astype(int)
    assert ((lower[..., 1] - lower[..., 0]).max() > 100) == (arch != "nature")


def run_fls(args, cwd):
    return run_script(args, cwd, 300, SCRIPT)


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_trains_end_to_end(fls, arch, tmp_path):
    extra = ["--save-attention"] if arch in ("sparse_fls", "nature") else []
    # a small learning rate: the first Adam step on the dense models' 84x84x64-input layer can push the policy to one
    # action (dense_fls_norelu: RIGHT with p ~ 1), which never presses FIRE, and the evaluation game then runs to
    # its 27,000-step limit; this test checks the plumbing, not learning
    proc = run_fls([*TINY, "--arch", arch, "--total-timesteps", 64, "--learning-rate", "1e-5", *extra], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = list(tmp_path.glob(f"runs/Breakout__ppo_atari_fls__{arch}__1__*"))
    assert json.loads((run_dir / "args.json").read_text())["arch"] == arch
    header, rows = read_evals(run_dir)
    assert [int(r[0]) for r in rows] == [32, 64]
    for row in rows:
        assert math.isclose(float(row[1]), sum(map(float, row[3].split(";"))) / len(row[3].split(";")), abs_tol=1e-3)
    checkpoints = sorted(run_dir.glob("step_*.cleanrl_model"))
    assert [c.name for c in checkpoints] == ["step_000000032.cleanrl_model", "step_000000064.cleanrl_model"]
    checkpoint = torch.load(checkpoints[-1], weights_only=False)
    assert checkpoint["variant"] == arch and checkpoint["global_step"] == 64
    fls.Agent(4, arch).load_state_dict(checkpoint["model"])  # strict: same architecture
    if extra:
        (picture,) = list(run_dir.glob("attention_step_*.png"))
        image = matplotlib.image.imread(picture)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


@pytest.mark.quick
def test_bad_arch_is_refused(tmp_path):
    proc = run_fls([*TINY, "--arch", "sparse_flz"], tmp_path)
    assert proc.returncode != 0
    assert "sparse_fls_pool" in proc.stderr  # tyro lists the valid choices
    assert not (tmp_path / "runs").exists()


# OpenAI-baselines PPO2's Atari settings (ppo2/defaults.py `atari()` and `learn()`), the paper's trainer: the value
# loss is always clipped by the clip range; 5e7 "environment steps" are agent steps (8 envs x 128 steps =
# "1024 environment steps between agent updates", as the paper counts them).
PPO2_ATARI = dict(
    num_envs=8, num_steps=128, num_minibatches=4, update_epochs=4, learning_rate=2.5e-4, anneal_lr=True,
    clip_coef=0.1, anneal_clip=False, clip_vloss=True, ent_coef=0.01, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95,
    norm_adv=True, total_timesteps=50_000_000,
)  # fmt: skip


@pytest.mark.quick
def test_defaults_are_ppo2_atari(fls):
    args = fls.Args()
    assert {k: getattr(args, k) for k in PPO2_ATARI} == PPO2_ATARI
    assert args.vf_coef * 1.0 == 0.5 * 0.5  # PPO2: vf_coef 0.5 times half the squared error
