"""Load a checkpoint of any training script: the script and its settings are read from the checkpoint,
the script is imported as a module (never run), and its own `make_agent` rebuilds the network."""
import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class LoadedAgent:
    agent: torch.nn.Module
    """the network, in eval mode, weights from the checkpoint"""
    script: ModuleType
    """the training script that wrote the checkpoint, imported as a module"""
    args: Any
    """its `Args`, as saved in the checkpoint"""
    game: str
    """the game it was trained on, e.g. `Breakout`"""
    variant: str
    """the variant name (run folders use it), e.g. `CWCA` or `sparse_fls`"""
    global_step: int


def import_script(name: str) -> ModuleType:
    """`ppo_atari_fls.py` -> the module, imported from the repository (importing has no side effects)."""
    module_name = os.path.basename(name).removesuffix(".py")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        sys.exit(f"error: the checkpoint was written by {name}, which is not in {REPO}")


def num_actions_of(script: ModuleType, game: str) -> int:
    """The size of the game's minimal action set, as the training envs have it."""
    env = script.RenderedAtari(game, seed=0)
    try:
        return len(env.action_set)
    finally:
        env.env.close()


def load_agent(path: str, device: str = "cpu") -> LoadedAgent:
    """Rebuild the agent of a `.cleanrl_model` checkpoint; exits with one line if it cannot."""
    if not os.path.isfile(path):
        sys.exit(f"error: {path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # not a torch file
        sys.exit(f"error: {path} is not a checkpoint written by a training script ({type(error).__name__})")
    if not isinstance(checkpoint, dict) or not {"model", "args", "script"} <= set(checkpoint):
        sys.exit(f"error: {path} is not a checkpoint written by a training script (needs model, args and script)")
    script = import_script(checkpoint["script"])
    fields = {f.name for f in dataclasses.fields(script.Args)}
    args = script.Args(**{k: v for k, v in checkpoint["args"].items() if k in fields})
    game = script.parse_game(args.env_id)
    agent = script.make_agent(args, num_actions_of(script, game))
    agent.load_state_dict(checkpoint["model"])
    agent.to(device).eval()
    return LoadedAgent(agent, script, args, game, script.variant_name(args), checkpoint.get("global_step", 0))


def input_saliency(loaded: LoadedAgent) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The agent's attention as a non-negative 84x84 map per observation, (B, 4, 84, 84) uint8 -> (B, 84, 84):
    its own `saliency()` where it has one (FLS: transposed convolution), else its attention map brought to
    84x84 by the script's `upsample_to_input`, heads summed, min-max scaled per frame (signed maps such as
    the self-attention term). None for agents without attention."""
    agent, script = loaded.agent, loaded.script
    probe = torch.zeros(1, 4, 84, 84, dtype=torch.uint8)
    with torch.no_grad():
        if hasattr(agent, "saliency"):
            return None if agent.saliency(probe) is None else agent.saliency
        if not agent.attention_maps(probe):
            return None

    @torch.no_grad()
    def upsampled(obs: torch.Tensor) -> torch.Tensor:
        attention = agent.attention_maps(obs)["attention"].float()
        if attention.dim() == 4:  # (N, heads, h, w): heads summed
            attention = attention.sum(1)
        large = script.upsample_to_input(attention)  # (N, 84, 84)
        low, high = large.amin((1, 2), keepdim=True), large.amax((1, 2), keepdim=True)
        return (large - low) / (high - low).clamp(min=1e-8)

    return upsampled
