"""Pictures of ppo_atari_timesformer.py's agents: the last block's CLS attention on each of the 4 stacked frames
and the CLS row of the attention rollout ("Quantifying Attention Flow in Transformers"), each token's weight
lighting exactly its patch, drawn in jet colours over the frames and the screen."""

import numpy as np
import torch
import torch.nn.functional as F

from attention_utils.pictures import capture_states, jet_overlay, min_max
from attention_utils.runs import save_figure


def heat_on_screen(script, agent, heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(g, g) map on the patch grid -> (210, 160) on the screen (bilinear, fp32 also under autocast), scaled to [0, 1]."""
    lit = script.upsample_to_input(heat[None].float(), agent.patch_size)  # (1, 84, 84)
    return min_max(F.interpolate(lit[None].float(), size=size, mode="bilinear")[0, 0].cpu())  # (210, 160)


def video_frame(script, agent, rgb: np.ndarray, obs: torch.Tensor) -> np.ndarray:
    """The RGB screen | the screen under the CLS attention on the newest frame | the screen under the attention
    rollout summed over the 4 frames (jet colours, each min-max scaled). obs: (4, 84, 84) uint8."""
    maps = agent.attention_maps(obs[None])
    panels = [rgb]
    for heat in (maps["cls"][0, -1], maps["rollout"][0].sum(0)):  # (g, g) each
        panels.append(jet_overlay(rgb, heat_on_screen(script, agent, heat, rgb.shape[:2]).numpy()))
    return np.concatenate(panels, axis=1)  # (210, 480, 3)


def save_attention_grid(script, agent, game, seed, device, autocast, path, num_states=4, spacing=40):
    """PNG grid, one row per evaluation state: the 4 stacked input frames (oldest to newest), each under the
    last block's CLS attention on that frame | the RGB screen under the attention rollout summed over the 4
    frames. A state's CLS maps share one colour scale (0 to their largest weight), so the frames compare;
    the rollout is min-max scaled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = capture_states(agent, game, seed, device, autocast, num_states, spacing)
    batch = torch.stack([o for _, o in states]).to(device)  # (K, 4, 84, 84)
    maps = agent.attention_maps(batch)
    cls_heat = script.upsample_to_input(maps["cls"].float(), agent.patch_size).cpu()  # (K, 4, g, g) -> (K, 4, 84, 84)
    frames = agent.frames
    titles = [
        f"frame t-{frames - 1 - i}, CLS attention" if i < frames - 1 else "frame t, CLS attention" for i in range(frames)
    ]
    titles.append("screen, attention rollout")
    fig, axes = plt.subplots(len(states), frames + 1, figsize=(2.4 * (frames + 1), 2.8 * len(states)), squeeze=False)
    for row, (rgb, stacked) in enumerate(states):
        top = cls_heat[row].max().item() + 1e-8
        for col in range(frames):
            axes[row, col].imshow(stacked[col].numpy(), cmap="gray", vmin=0, vmax=255)
            axes[row, col].imshow(cls_heat[row, col].numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=top)
        axes[row, frames].imshow(rgb)
        rollout = maps["rollout"][row].sum(0)  # (4, g, g) -> (g, g)
        axes[row, frames].imshow(heat_on_screen(script, agent, rollout, rgb.shape[:2]).numpy(), cmap="jet", alpha=0.5)
    plt.setp(axes, xticks=[], yticks=[])
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
