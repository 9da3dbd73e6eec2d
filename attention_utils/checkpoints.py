"""Load a checkpoint of any training script: the script and its settings are read from the checkpoint,
the script is imported as a module (never run), and its own `make_agent` rebuilds the network.

Also what every tool needs from an agent, feed-forward or recurrent (`is_recurrent`): its policy and value
(`policy_and_value`, a recurrent one's at the state its `Memory` holds), its attention as an 84x84 map
(`input_saliency`, at a given state; `sequence_saliency`, along a game in order) and a rendered game played
with the memory a recurrent agent needs (`PlayedGame`)."""

import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional

import numpy as np
import torch

from attention_utils.ale import RenderedAtari, observation_shape, rendered_game
from attention_utils.runs import find_checkpoint

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


def num_actions_of(game: str) -> int:
    """The size of the game's minimal action set, as the training envs have it."""
    env = RenderedAtari(game, seed=0)
    try:
        return len(env.action_set)
    finally:
        env.env.close()


def load_agent(path: str, device: str = "cpu") -> LoadedAgent:
    """Rebuild the agent of a `.cleanrl_model` checkpoint (or of a run folder's latest loadable one); exits with one
    line if it cannot."""
    path, checkpoint = find_checkpoint(path, "checkpoint")
    script_name = checkpoint["script"]
    if script_name == "ppo_atari_topdown.py" and checkpoint["args"].get("arch") in ("adaptive", "spatiotemporal"):
        script_name = "ppo_atari_temporal.py"  # the thesis's agents, written when ppo_atari_topdown.py still held them
    script = import_script(script_name)
    fields = {f.name for f in dataclasses.fields(script.Args)}
    args = script.Args(**{k: v for k, v in checkpoint["args"].items() if k in fields})
    game = script.parse_game(args.env_id)
    agent = script.make_agent(args, num_actions_of(game))
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # e.g. another game's action count, or weights from another version of the network
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        sys.exit(
            f"error: {path}: its weights do not fit {script_name}'s {script.variant_name(args)} agent for {game} ({first})"
        )
    agent.to(device).eval()
    return LoadedAgent(agent, script, args, game, script.variant_name(args), checkpoint.get("global_step", 0))


def require_grey_frames(loaded: LoadedAgent, tool: str) -> None:
    """Exits with one line for an agent that sees one RGB frame per step: `tool` works on stacks of grey frames."""
    if observation_shape(loaded.agent)[0] != 4:
        sys.exit(
            f"error: {tool} works on agents that see 4 grey frames; this {loaded.variant} agent was trained with "
            "--frame-input rgb (one RGB frame per step)"
        )


def is_recurrent(agent: torch.nn.Module) -> bool:
    """Recurrent agents (ppo_atari_topdown.py) carry a state from step to step: what they do and where they
    look depend on it and on the previous action, clipped reward and episode end, which the script's
    `Memory` keeps for them. Feed-forward agents see each stacked observation on its own."""
    return hasattr(agent, "initial_state")


def agent_device(agent: torch.nn.Module) -> torch.device:
    return next(agent.parameters()).device


def policy_and_value(
    agent: torch.nn.Module, memory=None, grad: bool = False
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A function (B, 4, 84, 84) uint8 -> (logits (B, A), values (B,)); with `grad`, differentiable (Grad-CAM).

    Feed-forward agents (`hidden`, `actor`, `critic`): `memory` must be None. Recurrent agents: one step from
    what `memory` (the script's `Memory`, of 1 or B games) holds now: its state, previous action, previous
    clipped reward and done flag, i.e. the observations are seen where the next `memory.act` would see them
    (these are read now; later steps of the memory do not change the function). A 1-game memory is
    expanded to the batch, so B variations of one observation are explained at one state in one pass."""
    if not is_recurrent(agent):
        if memory is not None:
            raise ValueError("a feed-forward agent has no memory: call policy_and_value(agent) without one")

        def feedforward(obs):
            with torch.set_grad_enabled(grad):
                hidden = agent.hidden(obs)
                return agent.actor(hidden).float(), agent.critic(hidden).float()[:, 0]

        return feedforward
    if memory is None:
        raise ValueError("a recurrent agent acts from a state: pass the script's Memory holding it")
    state, prev_action, prev_reward, done = memory.state, memory.prev_action, memory.prev_reward, memory.done

    def recurrent(obs):
        batch = obs.shape[0]
        states = tuple(s.expand(batch, *s.shape[1:]) for s in state)  # (1, ...) -> (B, ...); (B, ...) unchanged
        with torch.set_grad_enabled(grad):
            out, _ = agent.unroll(obs, states, prev_action.expand(batch), prev_reward.expand(batch), done.expand(batch))
            return agent.actor(out).float(), agent.critic(out).float()[:, 0]

    return recurrent


def attention_on_input(script: ModuleType, attention: torch.Tensor) -> torch.Tensor:
    """(N, h, w) or (N, heads, h, w) attention -> (N, 84, 84): heads summed, the script's `upsample_to_input`,
    min-max scaled per frame (signed maps such as the self-attention term become non-negative)."""
    attention = attention.float()
    if attention.dim() == 4:
        attention = attention.sum(1)
    large = script.upsample_to_input(attention)  # (N, 84, 84)
    low, high = large.amin((1, 2), keepdim=True), large.amax((1, 2), keepdim=True)
    return (large - low) / (high - low).clamp(min=1e-8)


Saliency = Callable[..., torch.Tensor]


def input_saliency(loaded: LoadedAgent) -> Optional[Saliency]:
    """The agent's attention as a non-negative 84x84 map per observation: a function
    `(observations (B, 4, 84, 84) uint8, state=None) -> (B, 84, 84)`.

    Feed-forward agents (no `state`): their own `saliency()` where they have one (FLS: transposed
    convolution), else their attention map brought to 84x84 by the script's `upsample_to_input`, heads
    summed, min-max scaled per frame. Recurrent agents: the same made of the maps of the observations seen
    with `state`, the recurrent state before them (batch B, as `agent.initial_state(B, device)` makes it),
    which is required; `sequence_saliency` computes it along a played game. None for agents without
    attention."""
    agent, script = loaded.agent, loaded.script
    recurrent = is_recurrent(agent)
    probe = torch.zeros(1, *observation_shape(agent), dtype=torch.uint8, device=agent_device(agent))
    with torch.no_grad():
        own_saliency = hasattr(agent, "saliency")
        if own_saliency and agent.saliency(probe) is None:
            return None
        # no spatial map: e.g. the top-down script's `adaptive` arch, whose attention is over past steps only
        if not own_saliency and "attention" not in (
            agent.attention_maps(probe, agent.initial_state(1, probe.device)) if recurrent else agent.attention_maps(probe)
        ):
            return None

    @torch.no_grad()
    def saliency(observations: torch.Tensor, state=None) -> torch.Tensor:
        if recurrent and state is None:
            raise ValueError(
                f"{loaded.variant} is recurrent: its attention depends on the state the observations are seen with; "
                "pass it (or use sequence_saliency)"
            )
        if not recurrent and state is not None:
            raise ValueError(f"{loaded.variant} is feed-forward: its attention has no state")
        if own_saliency:
            return agent.saliency(observations)
        attention = agent.attention_maps(observations, state) if recurrent else agent.attention_maps(observations)
        return attention_on_input(script, attention["attention"])

    return saliency


def sequence_saliency(loaded: LoadedAgent, batch_size: int = 64) -> Optional[Saliency]:
    """The agent's attention along one game, in the order it was played: a function
    `(observations (T, 4, 84, 84) uint8, rewards (T,) or None, episode_ends (T,) bool or None) -> (T, 84, 84)`,
    maps as `input_saliency` makes them. `rewards[t]` is the (unclipped) reward of the step from observation
    t to t + 1 and `episode_ends[t]` says that observation t is the last of its episode (or life); both
    default to none.

    A feed-forward agent ignores both and sees the observations in batches. A recurrent agent steps through
    them with the script's `Memory` from its initial state: observation t is seen with the state the earlier
    ones left; its previous action is the agent's own most probable action at observation t - 1 (frames
    recorded from someone else's play carry no action of the agent's own, and this one is always in its
    action set), its previous reward the sign of `rewards[t - 1]`, and after an episode end the state,
    action and reward start afresh as in training. None for agents without attention."""
    saliency = input_saliency(loaded)
    if saliency is None:
        return None
    agent, script = loaded.agent, loaded.script
    recurrent = is_recurrent(agent)

    @torch.no_grad()
    def along_game(observations: torch.Tensor, rewards=None, episode_ends=None) -> torch.Tensor:
        shape = observation_shape(agent)
        if observations.dim() != 4 or tuple(observations.shape[1:]) != shape or observations.dtype != torch.uint8:
            raise ValueError(
                f"observations must be (T, {', '.join(map(str, shape))}) uint8, got {tuple(observations.shape)} "
                f"{observations.dtype}"
            )
        steps = len(observations)
        rewards = np.zeros(steps) if rewards is None else np.asarray(rewards, dtype=np.float64).reshape(-1)
        episode_ends = (
            np.zeros(steps, dtype=bool) if episode_ends is None else np.asarray(episode_ends, dtype=bool).reshape(-1)
        )
        if len(rewards) != steps or len(episode_ends) != steps:
            raise ValueError(
                f"rewards ({len(rewards)}) and episode_ends ({len(episode_ends)}) "
                f"must have one entry per observation ({steps})"
            )
        maps = []
        memory = None
        if recurrent:
            memory = script.Memory(agent, 1, agent_device(agent))
            memory.done = torch.as_tensor(
                episode_ends[:1], dtype=torch.float32, device=agent_device(agent)
            )  # a first observation may end its episode too
        for start in range(0, steps, batch_size):
            batch = observations[start : start + batch_size]
            if not recurrent:
                maps.append(saliency(batch))
                continue
            states = []
            for t in range(start, start + len(batch)):
                memory.act(agent, observations[t : t + 1], deterministic=True)
                states.append(memory.state_before)
                if t + 1 < steps:  # the step to observation t + 1: its reward, and whether that one ends an episode
                    memory.observe(rewards[t : t + 1], episode_ends[t + 1 : t + 2])
            maps.append(saliency(batch, tuple(torch.cat(parts) for parts in zip(*states))))
        return torch.cat(maps) if maps else torch.zeros(0, 84, 84)

    return along_game


class PlayedGame:
    """One rendered game (`attention_utils.ale.RenderedAtari`) played by a loaded agent and restarted when it ends;
    `obs` is the current stacked observation. For a recurrent agent `memories` holds `copies` of the
    script's `Memory` (one game each; None for feed-forward agents), all told the action the game took, its
    reward and the episode ends, as the script's own videos do: a lost life or a finished game resets the
    state, as in training. Each copy carries its own state (novel_object: the agent and a counterfactual
    copy of it that sees other frames); copies fed the same frames stay bit-for-bit equal."""

    def __init__(self, loaded: LoadedAgent, seed: int, copies: int = 1):
        self.loaded, self.copies = loaded, copies
        self.env = rendered_game(loaded.agent, loaded.game, seed)
        self.start()

    def start(self) -> None:
        agent, script = self.loaded.agent, self.loaded.script
        self.obs = self.env.reset()  # (4, 84, 84) or, one RGB frame, (3, 84, 84) uint8
        self.lives = self.env.ale.lives()
        recurrent = is_recurrent(agent)
        self.memories = [script.Memory(agent, 1, agent_device(agent)) if recurrent else None for _ in range(self.copies)]

    def step(self, action: int) -> bool:
        """The game takes `action`; returns whether it ended (a new one has then started)."""
        obs, reward, done = self.env.step(action)
        lives = self.env.ale.lives()
        life_lost, self.lives = lives < self.lives, lives
        for memory in self.memories:
            if memory is None:
                continue
            memory.observe(np.array([reward]), np.array([done or life_lost]))
            none = self.loaded.agent.num_actions  # a memory that starts an episode keeps "no previous action"
            memory.prev_action = torch.where(
                memory.prev_action == none, memory.prev_action, torch.full_like(memory.prev_action, action)
            )
        if done:
            self.start()
        else:
            self.obs = obs
        return done

    def rgb(self) -> np.ndarray:
        return self.env.rgb()  # (210, 160, 3) of the current observation's last frame

    def close(self) -> None:
        self.env.env.close()
