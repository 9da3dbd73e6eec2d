"""Pictures and videos of the recurrent agents of ppo_atari_topdown.py (the top-down attention agent of "Towards
Interpretable Reinforcement Learning Using Attention Augmented Agents") and ppo_atari_temporal.py (the Transformer-XL
agents of "Neural architecture impact on identifying temporally extended Reinforcement Learning tasks").

What is drawn follows the keys of the agent's `attention_maps`: "attention" (spatial heads, (N, heads, 17, 17), drawn
bright where attended, as the first paper draws them), "what_where" (its section 4.6: the share of each logit from
the content part of the query) and "temporal" (a Transformer-XL core's weights over the previous steps); the
top-down script's ResNet baselines have none, and their videos show the game alone. The games
are played with the script's `Memory`, which carries the recurrent state as in training."""

import imageio
import numpy as np
import torch
import torch.nn.functional as F

from attention_utils.ale import rendered_game
from attention_utils.runs import atomic_path, save_figure

NOTED_WITHOUT_MAPS = set()  # the agent classes whose videos were said to show the game alone (said once per process)


def heat_on_screen(script, attention: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A head's map (17, 17) -> (210, 160) on the screen, in [0, 1] scaled by its maximum."""
    heat = script.upsample_to_input(attention[None].float())  # (1, 84, 84)
    heat = F.interpolate(heat[None], size=size, mode="bilinear")[0, 0].float().cpu()  # (210, 160), fp32 under autocast too
    return heat / heat.max().clamp(min=1e-12)


def head_overlay(script, rgb: np.ndarray, attention: torch.Tensor) -> np.ndarray:
    """A head's map (17, 17) alpha-blended on the RGB frame (210, 160, 3): bright = attended, as the paper draws it;
    the map is scaled by its maximum so each head uses the full range."""
    alpha = heat_on_screen(script, attention, rgb.shape[:2]).numpy()[..., None]  # (210, 160, 1)
    return (rgb.astype(np.float32) * (0.15 + 0.85 * alpha)).astype(np.uint8)


def what_where_image(script, rgb: np.ndarray, attention: torch.Tensor, share: torch.Tensor) -> np.ndarray:
    """Section 4.6's colouring of one head: red = the logit comes from the content ("what") part of the query,
    blue = from the spatial-basis ("where") part, white = balanced; brightness = attention. (210, 160, 3)."""
    import matplotlib

    size = rgb.shape[:2]
    share = F.interpolate(share[None, None].float(), size=size, mode="nearest")[0, 0].cpu().numpy()  # (210, 160)
    colours = matplotlib.colormaps["bwr"](share)[..., :3]  # (210, 160, 3): 0 blue, 0.5 white, 1 red
    alpha = heat_on_screen(script, attention, size).numpy()[..., None]
    return (255.0 * colours * alpha).astype(np.uint8)


def play_and_capture(script, agent, game, seed, device, autocast, num_states=4, spacing=40):
    """Plays one rendered game and keeps `num_states` captures, `spacing` steps apart: (rgb, obs, state before obs,
    previous action, previous reward, the RGB frames of the previous memory_len steps and this one, oldest first and
    None before the game's start; empty for agents without "temporal" maps)."""
    env = rendered_game(agent, game, seed)
    obs, memory, captured, lives = env.reset(), script.Memory(agent, 1, device), [], env.ale.lives()
    with torch.no_grad():
        maps = agent.attention_maps(obs[None].to(device), memory.state)
    history_len = maps["temporal"].shape[-1] if "temporal" in maps else 0  # memory_len + 1
    history = [None] * history_len
    for step in range(num_states * spacing):
        if history_len:
            history = history[1:] + [env.rgb()]
        if step % spacing == spacing - 1:
            captured.append((env.rgb(), obs.clone(), memory.state, memory.prev_action, memory.prev_reward, list(history)))
        with torch.no_grad(), autocast():
            action = memory.act(agent, obs[None].to(device))
        obs, reward, done = env.step(int(action))
        life_lost, lives = env.ale.lives() < lives, env.ale.lives()
        memory.observe(reward, done or life_lost)
        if done:
            obs, memory, lives = env.reset(), script.Memory(agent, 1, device), env.ale.lives()
            history = [None] * history_len
    env.env.close()
    return captured


def temporal_cells(weights: torch.Tensor, width: int, row_height: int = 8) -> np.ndarray:
    """Temporal weights (heads, memory_len + 1), oldest step first, as coloured cells spread over `width` pixels:
    a row per head, viridis, each head scaled by its maximum (bright = attended). (heads x row_height, width, 3)."""
    import matplotlib

    weights = weights.float().cpu()
    scaled = (weights / weights.amax(-1, keepdim=True).clamp(min=1e-12)).numpy()  # (heads, M + 1)
    colours = (255 * matplotlib.colormaps["viridis"](scaled)[..., :3]).astype(np.uint8)  # (heads, M + 1, 3)
    columns = np.arange(width) * scaled.shape[1] // width  # the step each pixel column shows
    return np.repeat(colours[:, columns], row_height, 0)  # (heads, width, 3) -> (heads x row_height, width, 3)


def temporal_strip(history: list, weights: torch.Tensor, thumb_width: int = 32) -> np.ndarray:
    """The frames the temporal attention points to: thumbnails of the previous memory_len steps and the current
    one (oldest first, black before the game's start) with, under each, the weight every head gives it
    (`temporal_cells`). (thumbnail height + 2 + heads x 8, (memory_len + 1) x thumb_width, 3) uint8."""
    thumb_height = round(210 * thumb_width / 160)
    thumbs = []
    for rgb in history:
        if rgb is None:
            thumbs.append(np.zeros((thumb_height, thumb_width, 3), dtype=np.uint8))
            continue
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()  # (210, 160, 3) -> (1, 3, 210, 160)
        small = F.interpolate(image, size=(thumb_height, thumb_width), mode="area")[0].permute(1, 2, 0)  # (h, w, 3)
        thumbs.append(small.round().clamp(0, 255).to(torch.uint8).numpy())
    film = np.concatenate(thumbs, 1)  # (h, (M + 1) w, 3)
    separator = np.full((2, film.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([film, separator, temporal_cells(weights, film.shape[1])], 0)


def save_attention_grid(script, agent, game, seed, device, autocast, path, num_states=4, spacing=40):
    """PNG grid, one row per evaluation state: RGB frame | each spatial head's attention on it | each head's
    what/where (where the agent has spatial heads); with "temporal" maps, under it the strip of the frames of the
    previous memory_len steps with each temporal head's weight on them (`temporal_strip`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = play_and_capture(script, agent, game, seed, device, autocast, num_states, spacing)
    all_maps = []
    for _, obs, state, prev_action, prev_reward, _ in captured:
        with torch.no_grad():
            all_maps.append(agent.attention_maps(obs[None].to(device), state, prev_action, prev_reward))
    heads = all_maps[0]["attention"].shape[1] if "attention" in all_maps[0] else 0
    temporal = "temporal" in all_maps[0]
    titles = (
        ["frame"] + [f"head {n + 1}" for n in range(heads)] + [f"head {n + 1} what (red) / where (blue)" for n in range(heads)]
    )
    columns = 1 + 2 * heads
    if temporal:
        width = max(columns, 7)
        fig = plt.figure(figsize=(2.2 * width, 4.4 * len(captured)))
        layout = fig.add_gridspec(2 * len(captured), width, height_ratios=[3.0, 1.4] * len(captured))
        axes = [[fig.add_subplot(layout[2 * row, col]) for col in range(columns)] for row in range(len(captured))]
    else:
        fig, axes = plt.subplots(len(captured), columns, figsize=(2.2 * columns, 3.0 * len(captured)), squeeze=False)
    for row, ((rgb, _, _, _, _, history), maps) in enumerate(zip(captured, all_maps)):
        images = [rgb]
        if heads:
            attention, share = maps["attention"][0], maps["what_where"][0]  # (heads, 17, 17) each
            images += [head_overlay(script, rgb, attention[n]) for n in range(heads)]
            images += [what_where_image(script, rgb, attention[n], share[n]) for n in range(heads)]
        for col, image in enumerate(images):
            axes[row][col].imshow(image)
            axes[row][col].set_xticks([])
            axes[row][col].set_yticks([])
            if row == 0:
                axes[row][col].set_title(titles[col], fontsize=7)
        if temporal:
            strip_axis = fig.add_subplot(layout[2 * row + 1, :])
            strip_axis.imshow(temporal_strip(history, maps["temporal"][0]), aspect="auto")
            strip_axis.set_xticks([])
            strip_axis.set_yticks([])
            num_heads, window = maps["temporal"].shape[1:]
            strip_axis.set_title(
                f"temporal attention of the last layer's {num_heads} heads (a row each, scaled per head) over the "
                f"previous {window - 1} steps' frames, oldest left, current step right",
                fontsize=7,
            )
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)


def video_frame(script, agent, rgb: np.ndarray, obs: torch.Tensor, state, prev_action=None, prev_reward=None) -> np.ndarray:
    """One video frame: the RGB frame | each spatial head's attention on it, and with "temporal" maps a strip under
    them with each temporal head's weights over the previous memory_len steps and the current one (`temporal_cells`,
    oldest left). obs: (4, 84, 84) uint8, state: the recurrent state it is seen with, prev_action / prev_reward (1,)
    the step's. (210 [+ temporal heads x 8], 160 x (spatial heads + 1), 3)."""
    maps = agent.attention_maps(obs[None], state, prev_action, prev_reward)
    attention = maps.get("attention")
    heads = [] if attention is None else [head_overlay(script, rgb, attention[0, n]) for n in range(attention.shape[1])]
    frame = np.concatenate([rgb] + heads, axis=1)
    if "temporal" in maps:
        frame = np.concatenate([frame, temporal_cells(maps["temporal"][0], frame.shape[1])], axis=0)
    return frame


def record_video(script, agent, game, seed, device, autocast, path, deterministic=False) -> float:
    """One rendered full-game evaluation episode as mp4, the agent's attention drawn on every frame (`video_frame`),
    the state carried by the script's `Memory`; returns its (unclipped) return."""
    env = rendered_game(agent, game, seed)
    obs, done, episode_return = env.reset(), False, 0.0
    memory, lives = script.Memory(agent, 1, device), env.ale.lives()
    with torch.no_grad():
        has_maps = bool(agent.attention_maps(obs[None].to(device), memory.state))
    if not has_maps and type(agent).__name__ not in NOTED_WITHOUT_MAPS:  # once per agent class and process
        NOTED_WITHOUT_MAPS.add(type(agent).__name__)
        print(f"note: {type(agent).__name__} has no attention map (spatial or temporal): videos show the game alone")
    # streamed (long episodes stay out of memory) into a temporary file that takes the name once complete
    with atomic_path(path) as temporary, imageio.get_writer(temporary, fps=15, macro_block_size=1) as video:
        while not done:
            with torch.no_grad(), autocast():
                frame = video_frame(
                    script, agent, env.rgb(), obs.to(device), memory.state, memory.prev_action, memory.prev_reward
                )
                video.append_data(frame)
                action = memory.act(agent, obs[None].to(device), deterministic=deterministic)
            obs, reward, done = env.step(int(action))
            life_lost, lives = env.ale.lives() < lives, env.ale.lives()
            memory.observe(reward, done or life_lost)
            episode_return += reward
    env.env.close()
    return episode_return
