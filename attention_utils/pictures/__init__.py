"""Videos and attention pictures of a training script's agent, played on rendered ALE games.

A script imports this only when `--capture-video` or `--save-attention` is asked for, and passes itself (its
module): each script's agents have their own picture (one module here per script, named after it), while a
video of a feed-forward agent is the same loop for every script, its frames drawn by the script's module."""

import importlib
import os
from types import ModuleType

import imageio
import numpy as np
import torch

from attention_utils.ale import rendered_game
from attention_utils.runs import atomic_path

# the training script (ppo_atari_{name}.py) -> the module here that draws its agents
PICTURE_MODULES = {
    "selfattn": "selfattn",
    "fls": "fls",
    "timesformer": "timesformer",
    "topdown": "topdown",
    "temporal": "topdown",
}


def picture_module(script: ModuleType) -> ModuleType:
    """The module that draws `script`'s agents: `video_frame` and `save_attention_grid` (and `record_video`
    where the agent is recurrent)."""
    name = os.path.basename(script.__file__).removesuffix(".py").removeprefix("ppo_atari_")
    if name not in PICTURE_MODULES:
        raise ValueError(f"no pictures for {os.path.basename(script.__file__)}; known scripts: {', '.join(PICTURE_MODULES)}")
    return importlib.import_module(f"attention_utils.pictures.{PICTURE_MODULES[name]}")


def save_attention_grid(script: ModuleType, agent, game: str, seed: int, device, autocast, path: str, num_states=4) -> None:
    """The script's attention picture (a PNG) for `num_states` states of one rendered evaluation game."""
    picture_module(script).save_attention_grid(script, agent, game, seed, device, autocast, path, num_states=num_states)


def record_video(script: ModuleType, agent, game: str, seed: int, device, autocast, path: str, deterministic=False) -> float:
    """One rendered full-game episode as mp4, the agent's attention drawn on every frame by the script's
    `video_frame`; returns its (unclipped) return."""
    pictures = picture_module(script)
    if hasattr(pictures, "record_video"):  # recurrent agents carry a state through the game
        return pictures.record_video(script, agent, game, seed, device, autocast, path, deterministic)
    env = rendered_game(agent, game, seed)
    obs, done, episode_return = env.reset(), False, 0.0
    # streamed (long episodes stay out of memory) into a temporary file that takes the name once complete
    with atomic_path(path) as temporary, imageio.get_writer(temporary, fps=15, macro_block_size=1) as video:
        while not done:
            with torch.no_grad(), autocast():
                video.append_data(pictures.video_frame(script, agent, env.rgb(), obs.to(device)))
                action, _, _, _ = agent.get_action_and_value(obs[None].to(device), deterministic=deterministic)
            obs, reward, done = env.step(int(action))
            episode_return += reward
    env.env.close()
    return episode_return


def capture_states(agent, game: str, seed: int, device, autocast, num_states: int = 4, spacing: int = 40):
    """Play one rendered game with a feed-forward agent and keep every `spacing`-th state:
    a list of (RGB frame (210, 160, 3), stacked observation (4, 84, 84) uint8)."""
    env = rendered_game(agent, game, seed)
    obs, states = env.reset(), []
    for step in range(num_states * spacing):
        with torch.no_grad(), autocast():
            action, _, _, _ = agent.get_action_and_value(obs[None].to(device))
        if step % spacing == spacing - 1:
            states.append((env.rgb(), obs.clone()))
        obs, _, done = env.step(int(action))
        if done:
            obs = env.reset()
    env.env.close()
    return states


def min_max(heat: torch.Tensor) -> torch.Tensor:
    """A map scaled to [0, 1] (signed maps such as the self-attention term included)."""
    return (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)


def jet_overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The frame under a [0, 1] heat map of the same size in jet colours, half and half: (H, W, 3) uint8."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0  # (H, W, 3)
    return (0.5 * rgb.astype(np.float32) + 0.5 * colours).astype(np.uint8)
