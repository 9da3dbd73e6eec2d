"""Atari on ale-py with the training protocol applied by hand, keeping the rendered RGB frames.

envpool renders nothing and cannot write the emulator's RAM, so this is what the scripts use for videos and
attention pictures (`RenderedAtari`), and, pooled behind envpool's interface (`AlePool`), for
`BreakoutInfinite`: Breakout whose bricks respawn forever (Free-Lunch Saliency, section 6.2)."""

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F


class RenderedAtari:
    """One ALE game (gymnasium + ale-py) with the protocol of the scripts' `make_env` applied by hand, keeping the RGB
    frames: used for videos and attention pictures (envpool renders nothing) and, pooled in `AlePool`, for
    `BreakoutInfinite`, Breakout whose bricks respawn forever (Free-Lunch Saliency, section 6.2), which needs the
    emulator's RAM written and so cannot run in envpool.

    Observations are the last 4 grey 84x84 frames (4, 84, 84), or with `rgb` the last frame in colour (3, 84, 84),
    as envpool's `gray_scale=False, stack_num=1` makes them."""

    def __init__(self, game: str, seed: int, rgb: bool = False):
        gym.register_envs(ale_py)
        self.infinite = game == "BreakoutInfinite"
        self.env = gym.make(
            f"ALE/{'Breakout' if self.infinite else game}-v5",
            frameskip=1,
            repeat_action_probability=0.0,
            full_action_space=False,
            render_mode="rgb_array",
            max_num_frames_per_episode=108_000,
        )
        self.ale = self.env.unwrapped.ale
        self.action_set = self.ale.getMinimalActionSet()
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.fire_on_reset = "FIRE" in self.env.unwrapped.get_action_meanings()
        self.game_over = self.truncated = False
        self.elapsed_step = 0  # agent steps since the game started (after its no-ops)
        self.score_rewritten = False
        self.rgb_input = rgb
        self.observation_shape = (3, 84, 84) if rgb else (4, 84, 84)

    def _frame(self) -> torch.Tensor:
        """The screen as floats: (1, 210, 160) grey, or (3, 210, 160) RGB."""
        if self.rgb_input:
            screen = torch.from_numpy(self.ale.getScreenRGB().astype(np.float32))  # (210, 160, 3)
            return screen.permute(2, 0, 1)  # (3, 210, 160)
        return torch.from_numpy(self.ale.getScreenGrayscale().astype(np.float32))[None]  # (1, 210, 160)

    def _respawn_bricks(self, reward: float) -> float:
        """BreakoutInfinite's rule, after every emulator frame: once the score (BCD in RAM bytes 76-77) reaches
        864, write it back down by 432, which makes the game lay a new wall. The emulator then reports the
        432 drop as a reward of -432 on the next frame; it is added back, so the agent never sees it and the
        summed rewards stay the true total."""
        if self.score_rewritten:
            reward += 432.0
            self.score_rewritten = False
        ram = self.ale.getRAM()
        score = 100 * int(ram[76] & 0x0F) + 10 * int(ram[77] >> 4) + int(ram[77] & 0x0F)
        if score >= 864:
            score -= 432
            self.ale.setRAM(76, (int(ram[76]) & 0xF0) | score // 100)
            self.ale.setRAM(77, ((score // 10 % 10) << 4) | score % 10)
            self.score_rewritten = True
        return reward

    def _act(self, action: int) -> float:
        """Four emulator frames, max-pool of the last two; returns the (unclipped) reward."""
        reward, frames = 0.0, []
        for i in range(4):
            frame_reward = self.ale.act(self.action_set[action])
            reward += self._respawn_bricks(frame_reward) if self.infinite else frame_reward
            if i >= 2:
                frames.append(self._frame())
            if self.ale.game_over(with_truncation=False):
                break
        pooled = torch.stack(frames or [self._frame()]).amax(0)  # (C, 210, 160), C = 1 grey or 3 RGB
        small = F.interpolate(pooled[None], size=(84, 84), mode="area")[0]  # (C, 84, 84), like cv2 INTER_AREA
        small = small.round().to(torch.uint8)
        self.stack = small if self.rgb_input else torch.cat([self.stack[1:], small])  # (3, 84, 84) or (4, 84, 84)
        return reward

    def reset(self) -> torch.Tensor:
        self.env.reset(seed=int(self.rng.integers(2**31)))
        self.stack = torch.zeros(self.observation_shape, dtype=torch.uint8)
        self.score_rewritten = False
        for _ in range(int(self.rng.integers(1, 31))):  # noop_max 30
            self._act(0)
        if self.fire_on_reset:
            self._act(1)
        self.game_over = self.truncated = False
        self.elapsed_step = 0
        return self.stack.clone()

    def step(self, action: int) -> tuple[torch.Tensor, float, bool]:
        """One agent step; returns (observation, unclipped reward, game over or time limit)."""
        reward = self._act(action)
        self.elapsed_step += 1
        self.game_over = self.ale.game_over(with_truncation=False)
        self.truncated = not self.game_over and self.elapsed_step >= 27_000  # 108k frames, as envpool's limit
        return self.stack.clone(), reward, self.game_over or self.truncated

    def rgb(self) -> np.ndarray:
        return self.env.render()  # (210, 160, 3) uint8


def observation_shape(agent) -> tuple[int, int, int]:
    """The observation the agent takes: (4, 84, 84), 4 grey frames, or (3, 84, 84), one RGB frame, for an agent
    trained with `--frame-input rgb` (its `in_channels` is 3)."""
    return (getattr(agent, "in_channels", 4), 84, 84)


def rendered_game(agent, game: str, seed: int) -> RenderedAtari:
    """A `RenderedAtari` game that gives the observations `agent` takes (`observation_shape`)."""
    return RenderedAtari(game, seed, rgb=observation_shape(agent)[0] == 3)


class AlePool:
    """`num_envs` RenderedAtari games behind the part of envpool's interface the loop uses (`reset`, `send`,
    `recv`, `step`, `action_space`, `close`) and with its protocol: for training, a life loss ends the
    episode and rewards are clipped to their sign (info["reward"] stays unclipped, info["terminated"] marks
    game over); the step after an episode end is a reset step whose action is ignored (after a life loss:
    FIRE, or a no-op, to serve the next ball). The games run one after another in this process."""

    def __init__(self, game: str, num_envs: int, seed: int, training: bool, rgb: bool = False):
        self.games = [RenderedAtari(game, seed + i, rgb) for i in range(num_envs)]
        self.training = training
        self.action_space = gym.spaces.Discrete(len(self.games[0].action_set))
        self.observation_space = gym.spaces.Box(0, 255, self.games[0].observation_shape, np.uint8)
        self.needs_reset = np.zeros(num_envs, dtype=bool)
        self.actions = np.zeros(num_envs, dtype=np.int64)

    def reset(self):
        obs = torch.stack([g.reset() for g in self.games]).numpy()  # (N, C, 84, 84)
        self.needs_reset[:] = False
        return obs, {}

    def send(self, actions: np.ndarray):
        self.actions = np.asarray(actions)

    def recv(self):
        num_envs = len(self.games)
        obs = np.zeros((num_envs, *self.observation_space.shape), dtype=np.uint8)
        reward, terminated, truncated = np.zeros(num_envs), np.zeros(num_envs, dtype=bool), np.zeros(num_envs, dtype=bool)
        info = {
            "reward": np.zeros(num_envs),
            "terminated": np.zeros(num_envs, dtype=bool),
            "lives": np.zeros(num_envs, dtype=np.int32),
            "elapsed_step": np.zeros(num_envs, dtype=np.int32),
        }
        for i, game in enumerate(self.games):
            if self.needs_reset[i]:  # reset step: no reward for the agent, the action is ignored
                if game.game_over or game.truncated:
                    observation = game.reset()
                else:  # a life was lost: the game goes on
                    observation, info["reward"][i], _ = game.step(1 if game.fire_on_reset else 0)
                self.needs_reset[i] = False
            else:
                lives = game.ale.lives()
                observation, info["reward"][i], _ = game.step(int(self.actions[i]))
                life_lost = game.ale.lives() < lives
                reward[i] = np.sign(info["reward"][i]) if self.training else info["reward"][i]
                terminated[i] = game.game_over or (self.training and life_lost)
                truncated[i] = game.truncated
                info["terminated"][i] = game.game_over
                self.needs_reset[i] = terminated[i] or truncated[i]
            obs[i] = observation.numpy()
            info["lives"][i], info["elapsed_step"][i] = game.ale.lives(), game.elapsed_step
        return obs, reward, terminated, truncated, info

    def step(self, actions: np.ndarray):
        self.send(actions)
        return self.recv()

    def close(self):
        for game in self.games:
            game.env.close()
