"""Pictures of ppo_atari_fls.py's agents, as the Free-Lunch Saliency paper draws them (its Figure 4): the
saliency brought to the 84x84 input by the module's receptive field (`agent.saliency`), drawn in white on the
raw RGB frame and in green on the newest preprocessed frame, scaled to [0, 1] per frame."""

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from attention_utils.pictures import capture_states
from attention_utils.runs import save_figure


def saliency_panels(rgb: np.ndarray, stacked: torch.Tensor, saliency: Optional[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of Figure 4 for one state: the RGB frame with the saliency in white, and the newest 84x84
    frame with the saliency in green. saliency: (84, 84), non-negative; None (`nature`) leaves both plain.
    Returns (210, 160, 3) and (84, 84, 3) uint8."""
    grey = stacked[-1].float().cpu().numpy()  # (84, 84), the newest frame
    top, bottom = rgb.astype(np.float32), np.stack([grey] * 3, -1)  # (210, 160, 3), (84, 84, 3)
    if saliency is not None:
        small = saliency.float().cpu()
        small = (small / small.max().clamp(min=1e-8)).numpy()
        large = F.interpolate(torch.from_numpy(small)[None, None], size=rgb.shape[:2], mode="bilinear")[0, 0].numpy()
        top = top * (1 - large[..., None]) + 255.0 * large[..., None]  # white, (210, 160, 3)
        bottom[..., 1] = np.maximum(bottom[..., 1], 255.0 * small)  # green
    return top.astype(np.uint8), bottom.astype(np.uint8)


def video_frame(script, agent, rgb: np.ndarray, obs: torch.Tensor) -> np.ndarray:
    """One video frame: Figure 4's two panels stacked, the 84x84 input scaled to the frame's width (nearest).
    obs: (4, 84, 84) uint8."""
    saliency = agent.saliency(obs[None])  # (1, 84, 84) or None
    top, bottom = saliency_panels(rgb, obs, None if saliency is None else saliency[0])
    width = rgb.shape[1]
    bottom = torch.from_numpy(bottom).permute(2, 0, 1)[None].float()  # (84, 84, 3) -> (1, 3, 84, 84)
    bottom = F.interpolate(bottom, size=(width, width), mode="nearest")[0].permute(1, 2, 0)  # (160, 160, 3)
    return np.concatenate([top, bottom.to(torch.uint8).numpy()], axis=0)  # (370, 160, 3)


def save_attention_grid(script, agent, game, seed, device, autocast, path, num_states=4, spacing=40):
    """Figure 4 for a few evaluation states, one column each: the RGB frame with the saliency in white (top)
    and the preprocessed 84x84 input with the saliency in green (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = capture_states(agent, game, seed, device, autocast, num_states, spacing)
    batch = torch.stack([o for _, o in states]).to(device)  # (K, 4, 84, 84)
    saliency = agent.saliency(batch)  # (K, 84, 84) or None
    fig, axes = plt.subplots(2, len(states), figsize=(2.6 * len(states), 6.2), squeeze=False)
    for col, (rgb, stacked) in enumerate(states):
        top, bottom = saliency_panels(rgb, stacked, None if saliency is None else saliency[col])
        axes[0, col].imshow(top)
        axes[1, col].imshow(bottom)
        for row in range(2):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    title = agent.arch if saliency is not None else f"{agent.arch}: no attention module"
    axes[0, 0].set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
