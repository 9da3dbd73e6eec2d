"""Pictures of ppo_atari_selfattn.py's agents: the attention term on the c1 grid, brought to the input by c1's
receptive field and drawn in jet colours over the frame, min-max scaled per frame (the term is signed)."""

import numpy as np
import torch
import torch.nn.functional as F

from attention_utils.pictures import capture_states, jet_overlay, min_max
from attention_utils.runs import save_figure


def heat_on_screen(script, attention: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) attention on the c1 grid -> (210, 160) on the screen, scaled to [0, 1]."""
    heat = script.upsample_to_input(attention[None].float())  # (1, 84, 84)
    return min_max(F.interpolate(heat[None], size=size, mode="bilinear")[0, 0].float().cpu())  # (210, 160)


def video_frame(script, agent, rgb: np.ndarray, obs: torch.Tensor) -> np.ndarray:
    """The RGB frame | the same frame under the attention map (NA: the frame twice). obs: (4, 84, 84) uint8."""
    maps = agent.attention_maps(obs[None])
    overlay = jet_overlay(rgb, heat_on_screen(script, maps["attention"][0], rgb.shape[:2]).numpy()) if maps else rgb
    return np.concatenate([rgb, overlay], axis=1)  # (210, 320, 3)


def save_attention_grid(script, agent, game, seed, device, autocast, path, num_states=4, spacing=40):
    """PNG grid, one row per evaluation state: RGB frame | attention overlay | mean c1 feature map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = capture_states(agent, game, seed, device, autocast, num_states, spacing)
    batch = torch.stack([o for _, o in states]).to(device)  # (K, 4, 84, 84)
    with torch.no_grad():
        maps = agent.attention_maps(batch)
        features = agent.c1_features(batch).mean(1).float().cpu()  # (K, 20, 20)
    titles = ["frame", "attention overlay" if maps else "attention overlay (NA: no attention)", "c1 feature map (mean)"]
    fig, axes = plt.subplots(len(states), 3, figsize=(9, 3.6 * len(states)), squeeze=False)
    for row, (rgb, _) in enumerate(states):
        axes[row, 0].imshow(rgb)
        axes[row, 1].imshow(rgb)
        if maps:
            axes[row, 1].imshow(heat_on_screen(script, maps["attention"][row], rgb.shape[:2]), cmap="jet", alpha=0.5)
        feature_map = F.interpolate(features[row][None, None], size=rgb.shape[:2], mode="nearest")[0, 0]  # (210, 160)
        axes[row, 2].imshow(feature_map, cmap="viridis")
        for col in range(3):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(titles[col], fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
