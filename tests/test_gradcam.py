"""attention_utils.gradcam: the maps against Grad-CAM and Grad-CAM++ computed here by hand with autograd, and the
command on hand-built checkpoints."""

import subprocess
import sys

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, describe, hand_built_checkpoint, script_env

from attention_utils.checkpoints import is_recurrent, load_agent, policy_and_value
from attention_utils.gradcam import class_activation_maps, gradcam_layer

pytestmark = pytest.mark.quick  # units, hand-made data, argument checks: `pytest -m quick`


SMALL_TOPDOWN = dict(conv_channels=16, value_channels=24, core_hidden=32, mlp_hidden=32, query_hidden=16)


def by_hand(loaded, scores, obs, actions):
    """Grad-CAM (Selvaraju et al. eqs. 1-2) and Grad-CAM++ (Chattopadhay et al. eq. 19) from the layer's output and
    its gradient, taken here with a forward hook and torch.autograd.grad."""
    name, layer = gradcam_layer(loaded)
    seen = {}
    hook = layer.register_forward_hook(lambda module, inputs, output: seen.__setitem__("A", output))
    logits = scores(obs)[0]
    hook.remove()
    activations = seen["A"]  # (B, K, h, w)
    (gradients,) = torch.autograd.grad(logits[torch.arange(len(obs)), actions].sum(), activations)
    activations, gradients = activations.detach().double(), gradients.double()
    gradcam = (gradients.mean((2, 3), keepdim=True) * activations).sum(1, keepdim=True).clamp(min=0)
    denominator = 2 * gradients**2 + activations.sum((2, 3), keepdim=True) * gradients**3
    alpha = torch.where(denominator != 0, gradients**2 / denominator, torch.zeros_like(denominator))
    weights = (alpha * gradients.clamp(min=0)).sum((2, 3), keepdim=True)
    plus_plus = (weights * activations).sum(1, keepdim=True).clamp(min=0)
    return {
        method: F.interpolate(cam.float(), size=(84, 84), mode="bilinear", align_corners=False)[:, 0]
        for method, cam in (("gradcam", gradcam), ("gradcam++", plus_plus))
    }


@pytest.mark.parametrize(
    "script, settings, layer",
    [
        ("ppo_atari_selfattn.py", dict(self_attn="CWCA"), "c2"),
        ("ppo_atari_selfattn.py", dict(self_attn="NA"), "c2"),
        ("ppo_atari_fls.py", dict(arch="sparse_fls"), "convs.2"),
        ("ppo_atari_topdown.py", SMALL_TOPDOWN, "conv3"),
        ("ppo_atari_temporal.py", dict(arch="spatiotemporal", conv_channels=16, value_channels=24, mlp_hidden=32), "conv3"),
        ("ppo_atari_temporal.py", dict(arch="adaptive"), "stages.2"),
    ],
)
def test_maps_are_grad_cam_and_grad_cam_plus_plus(tmp_path, script, settings, layer):
    loaded = load_agent(str(hand_built_checkpoint(tmp_path / "agent.cleanrl_model", script, **settings)))
    assert gradcam_layer(loaded)[0] == layer
    generator = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8, generator=generator)
    actions = torch.tensor([0, 3, 1])
    memory = None
    if is_recurrent(loaded.agent):  # a state that is not the initial zeros: the agent has seen two frames
        memory = loaded.script.Memory(loaded.agent, 1, torch.device("cpu"))
        for t in range(2):
            with torch.no_grad():
                memory.act(loaded.agent, obs[t : t + 1])
    scores = policy_and_value(loaded.agent, memory, grad=True)
    maps = class_activation_maps(loaded, scores, obs, actions)
    expected = by_hand(loaded, scores, obs, actions)
    for method in ("gradcam", "gradcam++"):
        assert maps[method].shape == (3, 84, 84)
        torch.testing.assert_close(maps[method], expected[method], rtol=1e-4, atol=1e-6 * float(expected[method].max()))
    assert float(maps["gradcam"].max()) > 0  # not a comparison of two blank maps
    # another action is another explanation
    other = class_activation_maps(loaded, scores, obs, (actions + 1) % 4)["gradcam"]
    assert not torch.allclose(other, maps["gradcam"])


def test_an_agent_without_a_convolutional_map_is_refused(tmp_path):
    checkpoint = hand_built_checkpoint(tmp_path / "tf.cleanrl_model", "ppo_atari_timesformer.py")
    proc = subprocess.run(
        [sys.executable, "-m", "attention_utils.gradcam", "--checkpoint", checkpoint, "--out", tmp_path / "g.png"],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
    line = proc.stderr.strip().splitlines()[-1]  # after the emulator's banner
    assert line.startswith(f"error: {checkpoint}: d16_h1_l1_m2_p12 (ppo_atari_timesformer.py) ") and line.endswith(
        "has no convolutional feature map for Grad-CAM; agents with one: "
        "ppo_atari_selfattn.py, ppo_atari_fls.py, ppo_atari_topdown.py, ppo_atari_temporal.py"
    )
    assert not (tmp_path / "g.png").exists()


def test_cli_draws_the_maps_and_keeps_earlier_pictures(tmp_path):
    from attention_utils import gradcam

    checkpoint = hand_built_checkpoint(tmp_path / "fls.cleanrl_model", "ppo_atari_fls.py", arch="sparse_fls")
    command = [sys.executable, "-m", "attention_utils.gradcam", "--checkpoint", checkpoint, "--frames", 2]
    command += ["--warmup", 3, "--spacing", 4, "--out", tmp_path / "out" / "g.png"]
    proc = subprocess.run(list(map(str, command)), cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, describe(proc)
    assert "Grad-CAM and Grad-CAM++ of sparse_fls on Breakout at convs.2, for the action taken, at steps 3, 7:" in proc.stdout
    picture = matplotlib.image.imread(tmp_path / "out" / "g.png")
    assert picture.shape[0] > 400 and picture.shape[1] > 500  # 2 rows of frame | Grad-CAM | Grad-CAM++ | attention
    before = (tmp_path / "out" / "g.png").read_bytes()
    second = gradcam.main(gradcam.Args(checkpoint=str(checkpoint), frames=1, warmup=0, out=str(tmp_path / "out" / "g.png")))
    assert second == str(tmp_path / "out" / "g-2.png") and (tmp_path / "out" / "g.png").read_bytes() == before


def test_bad_arguments_are_refused_before_loading(tmp_path):
    from attention_utils import gradcam

    for settings, line in [
        (dict(frames=0), "error: --frames 0: must be at least 1"),
        (dict(warmup=-1), "error: --warmup -1: must be at least 0"),
        (dict(checkpoint=str(tmp_path / "missing")), f"error: --checkpoint {tmp_path / 'missing'}: no such file"),
        (dict(out=str(tmp_path)), f"error: --out {tmp_path} is a folder"),
    ]:
        with pytest.raises(SystemExit) as error:
            gradcam.main(gradcam.Args(**{"checkpoint": str(tmp_path), **settings}))
        assert str(error.value).startswith(line)
