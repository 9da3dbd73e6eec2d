"""Where a game's moving objects are, read from the Atari 2600's 128 bytes of RAM (ale-py `ale.getRAM()`).

Each game's layout lists its objects: the RAM byte holding the object's horizontal and vertical position (or
a fixed screen position where the game never moves it along that axis), the offset that turns the byte into
the screen column or row of the object's top-left pixel on the 210x160 frame, and the box's size in
screen pixels. Boxes are clipped to the game's playfield, the part of the screen the objects are drawn in;
a box left empty by the clipping (an object off screen) is not returned.

Where the bytes come from. Each layout's `source` names the table that first published its RAM bytes: the
AtariARI benchmark (Anand et al. 2019, "Unsupervised State Representation Learning in Atari", NeurIPS 2019, its
RAM annotations per game) or OCAtari (Delfosse et al., "OCAtari: Object-Centric Atari 2600 Reinforcement Learning
Environments"); the tables here were written from those facts, and bytes found here are marked as such in the
comments. The offsets, sizes, playfields and visibility rules were measured against the frames ale-py renders,
and `tests/test_objects.py` checks every object class of every layout against the rendered RGB frame over a few
hundred steps of random play (where its colour shows, the box is within 2 px of those pixels; where the layout
says an object is drawn, its colour shows unless something is in front of it).

    boxes = object_boxes("Breakout", ram, previous_ram)  # [("ball", (top, left, bottom, right)), ("player", (...))]
"""

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

SCREEN = (210, 160)  # rows, columns of the rendered frame
Box = tuple[int, int, int, int]  # (top, left, bottom, right) in screen pixels, bottom and right exclusive


@dataclass(frozen=True)
class RamObject:
    kind: str
    """the object's class: objects of one class are scored together (`ball`, `player`, `enemy`, `car`, ...)"""
    x: Optional[int]
    """RAM byte of the horizontal position: left column = left + x_scale * ram[x]; None: the column is `left` always"""
    y: Optional[int]
    """RAM byte of the vertical position: top row = top + y_scale * ram[y]; None: the row is `top` always"""
    left: int
    top: int
    width: int
    """box size in screen pixels"""
    height: int
    x_scale: int = 1
    """screen pixels per unit of the byte; negative where the byte counts from the right"""
    y_scale: int = 1
    """screen pixels per unit of the byte (Bowling counts rows in pairs); negative where it counts upwards"""
    x_previous: bool = False
    """the game draws the column from the RAM as the previous frame left it (it moves the object after drawing
    it), so a frame's column comes from the RAM read one frame earlier"""
    y_previous: bool = False
    """the same for the row"""
    x_wrap: bool = False
    """the column wraps around the 160-pixel line: an object leaving on one side re-enters on the other"""
    sprite: Optional[Callable[[np.ndarray, np.ndarray], tuple[int, int, int, int]]] = None
    """for an object whose sprite changes with its state (a figure mirrored, a racket swung): (left, top, width,
    height) as a function of (ram, previous_ram), in place of the four fixed values"""
    shown: Optional[Callable[[np.ndarray, np.ndarray], bool]] = None
    """a condition on (ram, previous_ram) for the object to be drawn at all (None: whenever its box is on the
    playfield); also how one object with two sprites of different sizes is described (two entries)"""

    def boxes(self, ram: np.ndarray, previous_ram: np.ndarray) -> list[Box]:
        """The object's box on the screen of a frame (two where a wrapping object straddles the screen's edge),
        unclipped: `ram` is the RAM after the frame, `previous_ram` the RAM after the frame before."""
        x_ram, y_ram = previous_ram if self.x_previous else ram, previous_ram if self.y_previous else ram
        left, top, width, height = (
            (self.left, self.top, self.width, self.height) if self.sprite is None else self.sprite(ram, previous_ram)
        )
        column = left + (0 if self.x is None else self.x_scale * int(x_ram[self.x]))
        row = top + (0 if self.y is None else self.y_scale * int(y_ram[self.y]))
        if not self.x_wrap:
            return [(row, column, row + height, column + width)]
        column %= SCREEN[1]
        boxes = [(row, column, row + height, column + width)]
        if column + width > SCREEN[1]:  # the part past the right edge is drawn at the left
            boxes.append((row, column - SCREEN[1], row + height, column + width - SCREEN[1]))
        return boxes


@dataclass(frozen=True)
class GameLayout:
    objects: tuple[RamObject, ...]
    playfield: Box
    """the part of the screen objects are drawn in (walls, score and the black left margin excluded)"""
    source: str
    """where the RAM bytes were first published"""

    @property
    def kinds(self) -> list[str]:
        """the object classes, in the order of the table"""
        return list(dict.fromkeys(o.kind for o in self.objects))


ATARIARI = 'Anand et al. 2019, "Unsupervised State Representation Learning in Atari" (AtariARI), RAM annotations'

OCATARI = 'Delfosse et al. 2023, "OCAtari: Object-Centric Atari 2600 Reinforcement Learning Environments"'
R = RamObject

# Freeway's ten lanes, top to bottom: lane i is 8 rows tall from row 28 + 16 i, its car's column in byte 117 - i
# (the upper five lanes drive left, the lower five right); a car leaving one side re-enters on the other.
# The leftward cars are drawn 2 or 3 columns left of the byte (3 in most frames; lane 4 always 2).
FREEWAY_CARS = tuple(
    R("car", 117 - lane, None, -2 if lane == 4 else -3, 28 + 16 * lane, 8, 8, x_wrap=True) for lane in range(10)
)


def tennis_figure(facing: int, swing: int, top: int) -> Callable[[np.ndarray, np.ndarray], tuple[int, int, int, int]]:
    """A Tennis figure's box relative to its bytes (measured here): 12 columns beside the column byte, on the
    right of it when the figure faces left (byte `facing` 0) and mirrored when it faces right (255); while it
    swings (byte `swing` of the previous frame: phase 1, 2, 3) the racket reaches up to 4 columns further."""
    facing_left = {0: (-2, 12), 1: (-2, 15), 2: (-2, 16), 3: (-2, 13)}  # swing phase -> (left, width)
    facing_right = {0: (2, 12), 1: (-1, 15), 2: (-2, 16), 3: (1, 13)}

    def sprite(ram: np.ndarray, previous_ram: np.ndarray) -> tuple[int, int, int, int]:
        left, width = (facing_right if ram[facing] else facing_left)[int(previous_ram[swing]) & 3]
        return left, top, width, 23

    return sprite


TENNIS_FAR, TENNIS_NEAR = tennis_figure(56, 65, 166), tennis_figure(57, 66, 167)


def gopher_out(previous_ram: np.ndarray) -> bool:
    """Gopher: the gopher is on screen, unless byte 82 of the previous frame is 9 or 10 (from the moment it takes a
    carrot until the next round)."""
    return previous_ram[82] not in (9, 10)


LAYOUTS: dict[str, GameLayout] = {
    # ball 2x4 (byte 99 column, 101 row; row byte 0 = no ball in play), paddle 16x4 on rows 189-192
    "Breakout": GameLayout(
        (R("ball", 99, 101, -49, 9, 2, 4), R("player", 72, None, -47, 189, 16, 4)),
        playfield=(32, 8, 196, 152),
        source=ATARIARI,
    ),
    # the agent's paddle is the right one (columns 140-143), the computer's the left (16-19), both 4x16; ball 2x4
    "Pong": GameLayout(
        (R("player", None, 51, 140, -13, 4, 16), R("enemy", None, 50, 16, -15, 4, 16), R("ball", 49, 54, -49, -14, 2, 4)),
        playfield=(34, 0, 194, 160),
        source=ATARIARI,
    ),
    # the agent's chicken (columns 44-50, byte 14 counts its height above the bottom) and the ten cars
    "Freeway": GameLayout(
        (R("player", None, 14, 44, 193, 7, 8, y_scale=-1),) + FREEWAY_CARS,
        playfield=(16, 8, 196, 160),
        source=ATARIARI,
    ),
    # bowler 8x32 and ball 4x10; both rows count in pairs upwards; both drawn from the previous frame's RAM
    "Bowling": GameLayout(
        (
            R("player", 29, 40, 8, 141, 8, 32, y_scale=-2, x_previous=True, y_previous=True),
            R("ball", 30, 41, 7, 163, 4, 10, y_scale=-2, x_previous=True, y_previous=True),
        ),
        playfield=(104, 8, 172, 160),
        source=ATARIARI,
    ),
    # Ms. Pac-Man 8x10, drawn from the previous frame's RAM, wrapping through the side tunnels. The ghosts are
    # left out: they flicker (drawn on every second to fourth frame when they share rows), so a box from the
    # RAM would claim a ghost on frames that do not show it.
    "MsPacman": GameLayout(
        (R("player", 10, 16, -12, 1, 8, 10, x_previous=True, y_previous=True, x_wrap=True),),
        playfield=(0, 0, 172, 160),
        source=ATARIARI,
    ),
    # The farmer 13x47 walks along the surface (byte 31). The gopher (column byte 41) runs as a 14x10 sprite, in
    # its tunnels (top row 184) or, when byte 85 was 35, along the surface (row 149), and climbs as an 8x23 one
    # (row byte 43); byte 42 of the previous frame is 5 while it runs. Rows below 195 are the ground under the
    # tunnels; the gopher is gone while byte 82 was 9 or 10 (it has taken a carrot). Bytes 31, 41 and 85 and the two
    # running rows as OCAtari has them; 42, 43 and 82 measured here.
    "Gopher": GameLayout(
        (
            R("player", 31, None, -10, 96, 13, 47, x_previous=True),
            R(
                "enemy",
                41,
                None,
                -2,
                184,
                14,
                10,
                x_previous=True,
                shown=lambda ram, prev: gopher_out(prev) and prev[42] == 5 and prev[85] != 35,
            ),
            R(
                "enemy",
                41,
                None,
                -2,
                149,
                14,
                10,
                x_previous=True,
                shown=lambda ram, prev: gopher_out(prev) and prev[42] == 5 and prev[85] == 35,
            ),
            R(
                "enemy",
                41,
                43,
                -4,
                48,
                8,
                23,
                x_previous=True,
                y_previous=True,
                shown=lambda ram, prev: gopher_out(prev) and prev[42] != 5,
            ),
        ),
        playfield=(0, 0, 195, 160),
        source=OCATARI,
    ),
    # the laser base 8x10 on rows 185-194 (byte 28). At the start and after a lost life it blinks: while byte
    # 42's lowest bit is set it is hidden whenever bit 3 of byte 74 (a timer) is clear (both measured here). The
    # invaders are left out: which of them are still alive is a bitmap the table does not decode.
    "SpaceInvaders": GameLayout(
        (R("player", 28, None, -1, 185, 8, 10, shown=lambda ram, prev: not (ram[42] & 1 and not ram[74] & 8)),),
        playfield=(0, 8, 195, 160),
        source=ATARIARI,
    ),
    # Byte 80 says which half the agent (the pink player) is in: 0 the far half, whose figure is bytes 26/24,
    # 1 the near half, bytes 27/25 (rows count upwards). Ball 2x2 and its shadow 2x2 share the column byte 16
    # (no ball while it is <= 2); the ball is hidden while it is behind the net (its top on rows 100-110). The figures'
    # sprites are described by `tennis_figure`.
    "Tennis": GameLayout(
        (
            R("player", 26, 24, 0, 0, 0, 0, y_scale=-1, sprite=TENNIS_FAR, shown=lambda ram, prev: ram[80] == 0),
            R("player", 27, 25, 0, 0, 0, 0, y_scale=-1, sprite=TENNIS_NEAR, shown=lambda ram, prev: ram[80] == 1),
            R("enemy", 27, 25, 0, 0, 0, 0, y_scale=-1, sprite=TENNIS_NEAR, shown=lambda ram, prev: ram[80] == 0),
            R("enemy", 26, 24, 0, 0, 0, 0, y_scale=-1, sprite=TENNIS_FAR, shown=lambda ram, prev: ram[80] == 1),
            R(
                "ball",
                16,
                54,
                -2,
                189,
                2,
                2,
                y_scale=-1,
                shown=lambda ram, prev: ram[16] > 2 and not 100 <= 189 - ram[54] <= 110,
            ),
            R("ball shadow", 16, 55, -2, 189, 2, 2, y_scale=-1, shown=lambda ram, prev: ram[16] > 2),
        ),
        playfield=(18, 8, 190, 160),
        source=OCATARI,
    ),
}


def clip(box: Box, area: Box) -> Optional[Box]:
    """`box` cut to `area`, None if nothing is left."""
    top, left = max(box[0], area[0]), max(box[1], area[1])
    bottom, right = min(box[2], area[2]), min(box[3], area[3])
    return (top, left, bottom, right) if top < bottom and left < right else None


def object_boxes(game: str, ram: np.ndarray, previous_ram: np.ndarray) -> list[tuple[str, Box]]:
    """(kind, box) of every object the layout of `game` places on the playfield of one frame, in the table's
    order: `ram` is the RAM after the frame, `previous_ram` the RAM after the frame before it."""
    layout = LAYOUTS[layout_name(game)]
    boxes = []
    for obj in layout.objects:
        if obj.shown is not None and not obj.shown(ram, previous_ram):
            continue
        for box in obj.boxes(ram, previous_ram):
            box = clip(box, layout.playfield)
            if box is not None:
                boxes.append((obj.kind, box))
    return boxes


def layout_name(game: str) -> Optional[str]:
    """The layout a game uses (BreakoutInfinite is Breakout with its wall rewritten), None if it has none."""
    game = "Breakout" if game == "BreakoutInfinite" else game
    return game if game in LAYOUTS else None
