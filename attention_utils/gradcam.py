"""Grad-CAM and Grad-CAM++ of any agent with a convolutional feature map, for the action it takes: the
post-hoc saliency the self-attention paper's interpretability study drew beside its attention maps.

    Grad-CAM (Selvaraju et al. 2017, eqs. 1-2):   w_k = mean_ij dy/dA_k(i, j),   L = ReLU(sum_k w_k A_k)
    Grad-CAM++ (Chattopadhay et al. 2018, eq. 19, with y's exponential so that only first derivatives appear):
        alpha_k(i, j) = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3),  g = dy/dA_k(i, j)
        w_k = sum_ij alpha_k(i, j) ReLU(g),                    L = ReLU(sum_k w_k A_k)

y is the logit of the action (the score before the softmax, as both papers take the class score) and A the
feature map of the layer below; the coarse map is brought to 84x84 bilinearly, as Grad-CAM does. captum computes
both from the library's layer hooks: `LayerGradCam` for Grad-CAM, `LayerActivation` and the layer gradient
(`LayerGradientXActivation` without the multiplication) for Grad-CAM++'s weights.

The layer (`LAYERS`): the last convolution of each network's visual trunk, the deepest features that keep a
spatial grid, which is Grad-CAM's own choice of layer:
- `ppo_atari_selfattn.py`: `c2` (32 x 9 x 9), after the self-attention block, so it sees what the attention did;
- `ppo_atari_fls.py`: `convs.2` (64 x 7 x 7, the Nature CNN's third convolution), the features the FLS block
  weighs; the gradient flows through the attention's product as well as the features;
- `ppo_atari_topdown.py` and `ppo_atari_temporal.py --arch spatiotemporal`: `conv3` (64 x 17 x 17), the last
  convolution before the ConvLSTM, on the grid the attention reads. The ConvLSTM's output would mix this frame with
  the recurrent state; at `conv3` the gradient is this frame's, taken at the state the agent has;
- `ppo_atari_temporal.py --arch adaptive`: `stages.2`, the last IMPALA stage (32 x 11 x 11).
`ppo_atari_timesformer.py` has no such map (its only convolution embeds each frame's patches on their own), so
it is refused.

    python -m attention_utils.gradcam --checkpoint zoo/Pong__ppo_atari_selfattn__CWCA/step_005505024.cleanrl_model
"""

import os
import sys
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
import tyro

from attention_utils.cli_checks import beside_checkpoint, check_played_states, free_path
from attention_utils.runs import save_figure

Method = Literal["gradcam", "gradcam++"]
METHODS: tuple[Method, ...] = ("gradcam", "gradcam++")
LAYERS = {  # script -> the layer's name, the first of these the agent has (see the module's docstring for why)
    "ppo_atari_selfattn": ("c2",),
    "ppo_atari_fls": ("convs.2",),
    "ppo_atari_topdown": ("conv3",),
    "ppo_atari_temporal": ("conv3", "stages.2"),
}
GRID = 84


def gradcam_layer(loaded) -> Optional[tuple[str, torch.nn.Module]]:
    """(name, module) of the layer Grad-CAM reads in this agent, or None for an agent without one."""
    modules = dict(loaded.agent.named_modules())
    script = loaded.script.__name__.rsplit(".", 1)[-1]
    for name in LAYERS.get(script, ()):
        if name in modules:
            return name, modules[name]
    return None


def class_activation_maps(
    loaded, scores: Callable, observations: torch.Tensor, actions: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Grad-CAM and Grad-CAM++ of `actions` (B,) at `observations` (B, C, 84, 84) uint8: {method: (B, 84, 84)},
    non-negative, not scaled. `scores`: `checkpoints.policy_and_value(agent, memory, grad=True)`, which holds a
    recurrent agent's state (make it before the memory acts: the maps are then of the step the action was taken
    at; a 1-game memory serves a batch of observations)."""
    from captum.attr import LayerActivation, LayerAttribution, LayerGradCam, LayerGradientXActivation

    found = gradcam_layer(loaded)
    if found is None:
        raise ValueError(f"{loaded.variant} ({loaded.script.__name__}) has no convolutional feature map for Grad-CAM")
    layer = found[1]

    def logits(obs: torch.Tensor) -> torch.Tensor:  # (B, C, 84, 84) -> (B, A), in fp32 for exact gradients
        return scores(obs)[0]

    target = [int(a) for a in torch.as_tensor(actions).reshape(-1)]
    coarse = LayerGradCam(logits, layer).attribute(observations, target=target, relu_attributions=True)  # (B, 1, h, w)
    activations = LayerActivation(logits, layer).attribute(observations).detach().double()  # (B, K, h, w)
    gradients = (
        LayerGradientXActivation(logits, layer, multiply_by_inputs=False)
        .attribute(observations, target=target)
        .detach()
        .double()
    )  # (B, K, h, w)
    denominator = 2 * gradients**2 + activations.sum((2, 3), keepdim=True) * gradients**3
    alpha = torch.where(denominator != 0, gradients**2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    weights = (alpha * gradients.clamp(min=0)).sum((2, 3), keepdim=True)  # (B, K, 1, 1)
    plus_plus = (weights * activations).sum(1, keepdim=True).clamp(min=0).float()  # (B, 1, h, w)
    return {
        method: LayerAttribution.interpolate(coarse_map.detach().float(), (GRID, GRID), interpolate_mode="bilinear")[:, 0]
        for method, coarse_map in zip(METHODS, (coarse, plus_plus))
    }  # (B, 1, h, w) -> (B, 84, 84)


@dataclass
class Args:
    checkpoint: str
    """a `.cleanrl_model` file written by ppo_atari_selfattn.py, ppo_atari_fls.py, ppo_atari_topdown.py or
    ppo_atari_temporal.py (recurrent agents are explained at the state they had)"""
    frames: int = 4
    """how many states of one episode to explain"""
    warmup: int = 201
    """agent steps played before the first explained state (as `attention_utils.perturbation`)"""
    spacing: int = 40
    """agent steps between the explained states"""
    seed: int = 6_000_000
    """seed of the episode (the same as `attention_utils.perturbation`'s, so the two explain the same states)"""
    out: Optional[str] = None
    """output PNG (default: `gradcam_step_*.png` beside the checkpoint); an existing file is kept (`-2`, ...)"""


def main(args: Args) -> str:
    check_played_states(args.frames, args.spacing, args.warmup, args.checkpoint, args.out)  # before the slow imports
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attention_utils.checkpoints import PlayedGame, input_saliency, is_recurrent, load_agent, policy_and_value
    from attention_utils.perturbation import overlay

    loaded = load_agent(args.checkpoint)
    found = gradcam_layer(loaded)
    if found is None:
        sys.exit(
            f"error: {args.checkpoint}: {loaded.variant} ({loaded.script.__name__}.py) has no convolutional feature map "
            f"for Grad-CAM; agents with one: {', '.join(f'{script}.py' for script in LAYERS)}"
        )
    agent, recurrent = loaded.agent, is_recurrent(loaded.agent)
    own_map = input_saliency(loaded)
    game = PlayedGame(loaded, args.seed)
    explained_steps = [args.warmup + i * args.spacing for i in range(args.frames)]
    explained = []  # (step, RGB frame, action, {map name: (84, 84)})
    for step in range(explained_steps[-1] + 1):
        memory, obs = game.memories[0], game.obs[None]  # obs: (1, C, 84, 84)
        if step in explained_steps:  # the state before `act` moves it on
            scores, state = policy_and_value(agent, memory, grad=True), memory.state if recurrent else None
        with torch.no_grad():
            action = memory.act(agent, obs) if recurrent else agent.get_action_and_value(obs)[0]
        if step in explained_steps:
            maps = {name: m[0] for name, m in class_activation_maps(loaded, scores, obs, action).items()}
            if own_map is not None:
                maps["attention"] = (own_map(obs, state) if recurrent else own_map(obs))[0]
            explained.append((step, game.rgb(), int(action), maps))
        game.step(int(action))
    game.close()
    names = list(explained[0][3])
    titles = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "attention": "the agent's attention"}
    fig, axes = plt.subplots(len(explained), 1 + len(names), figsize=(2.5 * (1 + len(names)), 3.6 * len(explained)))
    axes = axes.reshape(len(explained), -1)
    for row, (step, rgb, action, maps) in enumerate(explained):
        axes[row, 0].imshow(rgb)
        axes[row, 0].set_title(f"step {step}, action {action}", fontsize=9)
        for col, name in enumerate(names, 1):
            axes[row, col].imshow(overlay(rgb, maps[name], 0 if name == "attention" else 2))
            axes[row, col].set_title(titles[name], fontsize=9)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{loaded.variant} on {loaded.game}, step {loaded.global_step:,}: Grad-CAM at {found[0]}", fontsize=9)
    fig.tight_layout()
    out = free_path(args.out or os.path.join(beside_checkpoint(args.checkpoint), f"gradcam_step_{loaded.global_step:09d}.png"))
    save_figure(fig, out, dpi=80)
    plt.close(fig)
    print(
        f"Grad-CAM and Grad-CAM++ of {loaded.variant} on {loaded.game} at {found[0]}, for the action taken, "
        f"at steps {', '.join(map(str, explained_steps))}: {out}"
    )
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
