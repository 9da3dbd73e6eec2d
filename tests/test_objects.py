"""attention_utils.ram_layouts and attention_utils.objects.

Each RAM layout is checked against the frames ale-py renders: a few hundred steps of random play per game, and at
every step each object class's boxes (read from the RAM) are compared with the pixels of the class's colour on the
screen. The CLI runs through its entry point on a checkpoint trained for 32 steps here and on hand-built ones."""

import csv
import subprocess
import sys
from dataclasses import dataclass

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import hand_built_checkpoint, script_env

from attention_utils.ale import RenderedAtari
from attention_utils.objects import (
    BASELINES,
    EXPLANATIONS,
    RamRecorder,
    grid_masks,
    mass_share,
    observation_boxes,
    rank_correlation,
)
from attention_utils.ram_layouts import LAYOUTS, SCREEN, clip, object_boxes

TOLERANCE = 2  # pixels, every edge
STEPS = 300  # agent steps of random play per game (4 emulator frames each)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The rendered games' preprocessing works on single frames: on a busy machine, torch's thread pool makes each
    of those tiny operations hundreds of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class ColourCheck:
    """Where one object class can be told apart on the screen by its colour."""

    kind: str
    colours: tuple[tuple[int, int, int], ...]
    region: tuple[int, int, int, int]
    """(top, left, bottom, right): where only this class draws these colours"""
    masked_rows: tuple[tuple[int, int], ...] = ()
    """row bands where the background has the colour too (Breakout's red bricks); frames whose box reaches into
    one are skipped"""
    unless: tuple[str, ...] = ()
    """classes of the same colour: frames where one of them is inside the region are skipped"""
    static: bool = False
    """leave out pixels that have the colour in at least 90% of the frames (Tennis's court lines, drawn in the
    players' colours)"""


RED, WHITE = (200, 72, 72), (236, 236, 236)
FREEWAY_LANES = [
    (167, 26, 26),
    (180, 231, 117),
    (105, 105, 15),
    (228, 111, 111),
    (24, 26, 167),
    (162, 98, 33),
    (84, 92, 214),
    (184, 50, 50),
    (135, 183, 84),
    (210, 210, 64),
]
CHECKS = {
    "Breakout": [
        # inside the wall (rows 57-92) the ball takes each brick row's colour; the paddle's rows are red too
        ColourCheck("ball", (RED,), (32, 8, 196, 152), masked_rows=((57, 93), (189, 196))),
        ColourCheck("player", (RED,), (189, 8, 194, 152), unless=("ball",)),
    ],
    "Pong": [
        ColourCheck("player", ((92, 186, 92),), (34, 0, 194, 160)),
        ColourCheck("enemy", ((213, 130, 74),), (34, 0, 194, 160)),
        ColourCheck("ball", (WHITE,), (34, 0, 194, 160)),
    ],
    "Freeway": [ColourCheck("player", ((252, 252, 84),), (16, 40, 196, 56), masked_rows=((102, 105),))]
    + [ColourCheck("car", (colour,), (26 + 16 * lane, 8, 38 + 16 * lane, 160)) for lane, colour in enumerate(FREEWAY_LANES)],
    "Bowling": [
        ColourCheck("player", ((198, 89, 179), (84, 92, 214), (66, 72, 200), (0, 0, 0)), (104, 0, 172, 110)),
        ColourCheck("ball", ((45, 50, 184),), (104, 0, 172, 110)),  # left of the pins, which share its colour
    ],
    "MsPacman": [ColourCheck("player", ((210, 164, 74),), (0, 0, 172, 160))],
    "Gopher": [
        ColourCheck("player", ((72, 160, 72), (84, 92, 214), (183, 194, 95), (214, 92, 92)), (0, 0, 210, 160)),
        ColourCheck("enemy", ((72, 44, 0),), (0, 0, 210, 160)),
    ],
    "SpaceInvaders": [ColourCheck("player", ((50, 132, 50),), (180, 0, 195, 160))],
    "Tennis": [
        ColourCheck("player", ((240, 128, 128),), (14, 0, 190, 160), static=True),
        ColourCheck("enemy", ((117, 128, 240),), (14, 0, 190, 160), static=True),
        ColourCheck("ball", (WHITE,), (14, 0, 190, 160)),
        ColourCheck("ball shadow", ((74, 74, 74),), (14, 0, 190, 160)),
    ],
}
# drawings in front of the objects: a box there may show no pixels (Tennis: the net and the two baselines)
OCCLUDERS = {"Tennis": [(99, 0, 113, 160), (48, 0, 50, 160), (177, 0, 180, 160)]}


def play(game: str, steps: int, seed: int):
    """Random play (each action held for 4 steps): per step, the rendered frame, the RAM after its last two
    emulator frames and the boxes the layout gives for the last one (the frame shown)."""
    env = RenderedAtari(game, seed)
    recorder = RamRecorder(env.ale)
    env.ale = recorder
    env.reset()
    rng = np.random.default_rng(seed)
    frames = []
    for step in range(steps):
        if step % 4 == 0:
            action = int(rng.integers(len(env.action_set)))
        _, _, done = env.step(action)
        previous, ram = recorder.rams[1], recorder.rams[2]
        frames.append((env.rgb(), ram, object_boxes(game, ram, previous)))
        if done:
            env.reset()
    env.env.close()
    return frames


def colour_box(rgb, check: ColourCheck, exclude=None):
    """The bounding box of the check's colours inside its region (masked rows and `exclude` left out), or None."""
    top, left, bottom, right = check.region
    area = rgb[top:bottom, left:right]
    mask = np.zeros(area.shape[:2], dtype=bool)
    for colour in check.colours:
        mask |= np.all(area == np.array(colour, dtype=np.uint8), axis=-1)
    for start, stop in check.masked_rows:
        mask[max(start - top, 0) : max(stop - top, 0)] = False
    if exclude is not None:
        mask &= ~exclude[top:bottom, left:right]
    rows, cols = np.where(mask.any(1))[0], np.where(mask.any(0))[0]
    if not len(rows):
        return None
    return top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1


def union(boxes):
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def near(box, area, margin=TOLERANCE):
    return clip(box, (area[0] - margin, area[1] - margin, area[2] + margin, area[3] + margin)) is not None


def at_edge(box, areas):
    """A box at most 2 px thick that touches an edge of one of `areas`: an object leaving or entering there is
    within the tolerance of being off screen."""
    thin = min(box[2] - box[0], box[3] - box[1]) <= TOLERANCE
    return thin and any(box[0] == a[0] or box[1] == a[1] or box[2] == a[2] or box[3] == a[3] for a in areas)


@pytest.mark.quick
@pytest.mark.parametrize("game", sorted(CHECKS))
def test_layout_matches_the_rendered_frames(game):
    """Over a few hundred steps of play, for each checked class: wherever its colour shows inside its region, the
    union of its RAM boxes (cut to the region) has every edge within 2 px of those pixels' bounding box; wherever
    the RAM places it, its colour shows (unless something is drawn in front of it). Enough frames are checked,
    with the object at enough different places, that the test says something."""
    layout = LAYOUTS[game]
    frames = play(game, STEPS, seed=4)
    static = {}
    for check in CHECKS[game]:
        if check.static:
            for group in {int(ram[80]) for _, ram, _ in frames}:  # Tennis: per court orientation
                shown = [
                    np.any([np.all(rgb == c, -1) for c in check.colours], 0) for rgb, ram, _ in frames if ram[80] == group
                ]
                static[check, group] = np.mean(shown, axis=0) >= 0.9
    for check in CHECKS[game]:
        objects = [o for o in layout.objects if o.kind == check.kind]
        checked, rows, cols, problems = 0, set(), set(), []
        for step, (rgb, ram, boxes) in enumerate(frames):
            if any(kind in check.unless and clip(box, check.region) for kind, box in boxes):
                continue
            mine = [clip(box, check.region) for kind, box in boxes if kind == check.kind]
            mine = [box for box in mine if box is not None]
            predicted = union(mine) if mine else None
            if predicted and any(predicted[0] < stop and predicted[2] > start for start, stop in check.masked_rows):
                continue
            pixels = colour_box(rgb, check, static.get((check, int(ram[80]))) if check.static else None)
            areas = (check.region, layout.playfield)
            if pixels is None and predicted is None:
                continue
            if pixels is None:
                others = [box for kind, box in boxes if kind != check.kind]
                hidden = any(near(predicted, o) for o in OCCLUDERS.get(game, []) + others)
                if not (hidden or at_edge(predicted, areas)):
                    problems.append((step, "the RAM places it here but nothing is drawn", predicted))
                continue
            if predicted is None:
                if not at_edge(pixels, areas):
                    problems.append((step, "drawn here but the RAM places it nowhere", pixels))
                continue
            checked += 1
            rows.add(predicted[0])
            cols.add(predicted[1])
            if max(abs(int(a) - int(b)) for a, b in zip(pixels, predicted)) > TOLERANCE:
                problems.append((step, f"drawn at {tuple(map(int, pixels))}, RAM box", predicted))
        assert not problems, f"{game} {check.kind} {check.colours[0]}: {len(problems)} frames, first {problems[:3]}"
        assert checked >= 30, f"{game} {check.kind}: only {checked} frames checked"
        # every position the RAM drives was seen at several values (a fixed axis is checked all the same)
        if any(o.x is not None for o in objects):
            assert len(cols) >= 3, f"{game} {check.kind}: seen at only {len(cols)} columns"
        if any(o.y is not None for o in objects):
            assert len(rows) >= 3, f"{game} {check.kind}: seen at only {len(rows)} rows"


@pytest.mark.quick
def test_every_layout_is_checked_and_names_its_source():
    assert sorted(CHECKS) == sorted(LAYOUTS) and len(LAYOUTS) >= 8
    assert {"Breakout", "Pong"} <= set(LAYOUTS)
    for game, layout in LAYOUTS.items():
        assert "et al." in layout.source, game
        assert set(layout.kinds) == {check.kind for check in CHECKS[game]}, game


# ---------------------------------------------------------------------------------------------------
# from boxes on the screen to the 84x84 observation, and the map scores


@pytest.mark.quick
@pytest.mark.parametrize("box", [(0, 0, 3, 2), (5, 7, 6, 8), (57, 30, 61, 32), (189, 99, 193, 115), (200, 150, 210, 160)])
def test_grid_mask_is_where_the_resized_box_shows(box):
    """The mask of a box is exactly the set of observation pixels that change when the box is drawn white on a
    black screen and the screen is resized to 84x84 as the agents see it (area averaging)."""
    screen = torch.zeros(1, 1, *SCREEN)
    screen[..., box[0] : box[2], box[1] : box[3]] = 255.0
    small = F.interpolate(screen, size=(84, 84), mode="area")[0, 0]
    masks = grid_masks([("ball", box)], ["ball", "player"])
    assert np.array_equal(masks["ball"], (small > 0).numpy())
    assert np.array_equal(masks["all"], masks["ball"]) and not masks["player"].any()


@pytest.mark.quick
def test_grid_mask_by_hand():
    """Rows: observation row i averages screen rows [floor(2.5 i), ceil(2.5 (i + 1))); columns: [floor(i 160/84),
    ceil((i + 1) 160/84)). Screen rows 0-2 reach observation rows 0 and 1 (row 1 averages rows 2-4); screen
    column 0 only observation column 0."""
    mask = grid_masks([("ball", (0, 0, 3, 1))], ["ball"])["ball"]
    assert sorted(zip(*np.where(mask))) == [(0, 0), (1, 0)]


@pytest.mark.quick
def test_observation_boxes_join_the_two_pooled_frames():
    """The observation's last image max-pools the step's last two emulator frames: the boxes of both count."""
    before, middle, after = (np.zeros(128, dtype=np.uint8) for _ in range(3))
    middle[99], middle[101] = 100, 100  # Breakout ball at column 51, row 109
    after[99], after[101] = 104, 110
    boxes = [box for kind, box in observation_boxes("Breakout", [before, middle, after]) if kind == "ball"]
    assert boxes == [(109, 51, 113, 53), (119, 55, 123, 57)]


@pytest.mark.quick
def test_mass_share_and_rank_correlation_by_hand():
    saliency = np.zeros((84, 84))
    saliency[10, 10], saliency[20, 20] = 3.0, 1.0
    inside = np.zeros((84, 84), dtype=bool)
    inside[10, 10] = True
    assert mass_share(saliency, inside) == 0.75
    assert mass_share(-saliency, inside) is None  # no positive mass
    ramp = np.arange(84 * 84, dtype=float).reshape(84, 84)
    assert rank_correlation(ramp, ramp**3) == pytest.approx(1.0)
    assert rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert rank_correlation(ramp, np.ones((84, 84))) is None


# ---------------------------------------------------------------------------------------------------
# the command


def run(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "attention_utils.objects", *map(str, args)],
        cwd=cwd,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def fls_checkpoint(tmp_path_factory):
    return hand_built_checkpoint(tmp_path_factory.mktemp("fls") / "fls.cleanrl_model", "ppo_atari_fls.py", arch="sparse_fls")


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def score_in_process(**settings):
    from attention_utils import objects

    return objects.main(objects.Args(threads=1, **settings))


MAPS = [name for e in EXPLANATIONS for name in (e, f"{e}_randomised")] + list(BASELINES)  # every map of an FLS agent


def test_cli_scores_an_agent_against_the_baselines(fls_checkpoint, tmp_path):
    frames = 12
    out = tmp_path / "out"
    proc = run(
        ["--checkpoint", fls_checkpoint, "--frames", frames, "--negatives", 4, "--figure-frames", 1, "--out", out]
        + ["--perturbation-stride", 12],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_rows(out / "Breakout_objects.csv")
    classes = ["ball", "player", "all"]
    assert len(rows) == frames * len(MAPS) * len(classes)
    assert {(r["map"], r["object_class"]) for r in rows} == {(m, c) for m in MAPS for c in classes}
    by = {(int(r["frame"]), r["map"], r["object_class"]): r for r in rows}
    for t in range(frames):
        for name in EXPLANATIONS:  # each trained map's rows carry its correlation with its randomised copy's
            assert by[t, name, "all"]["rank_corr_trained_randomised"] != "", name
            assert by[t, f"{name}_randomised", "all"]["rank_corr_trained_randomised"] == ""
        assert by[t, "intensity", "all"]["rank_corr_trained_randomised"] == ""
        # the paddle is on screen in every frame: its area share is that of its cells on the 84x84 grid
        assert 0 < float(by[t, "attention", "player"]["area_share"]) < 0.01
        assert by[t, "centre", "player"]["nss"] != ""
    # the randomised copy is another network: its maps differ from the agent's
    for name in EXPLANATIONS:
        assert any(by[t, name, "all"]["nss"] != by[t, f"{name}_randomised", "all"]["nss"] for t in range(frames)), name
    # the explanations are not one map under four names
    assert len({tuple(by[t, name, "all"]["nss"] for t in range(frames)) for name in EXPLANATIONS}) == len(EXPLANATIONS)
    table = (out / "Breakout_objects.md").read_text()
    for name in ("randomised weights", "last-frame intensity", "frame difference", "centre prior", "Rank correlation"):
        assert name in table
    assert "### sparse_fls, step 0" in table and "| NSS | ball | player | all |" in table
    for title in ("the agent's attention", "perturbation saliency", "Grad-CAM", "Grad-CAM++"):
        assert f"| {title} | " in table and f"| {title}, randomised weights | " in table
    picture = matplotlib.image.imread(out / "Breakout_objects.png")
    assert picture.shape[0] > 100 and picture.shape[1] > 300
    # a second run keeps the first one's files
    before = (out / "Breakout_objects.csv").read_bytes()
    (stem,) = score_in_process(checkpoint=(str(fls_checkpoint),), frames=2, negatives=1, figure_frames=1, out=str(out))
    assert stem == str(out / "Breakout_objects-2")
    assert (out / "Breakout_objects.csv").read_bytes() == before
    assert len(read_rows(out / "Breakout_objects-2.csv")) == 2 * len(MAPS) * len(classes)
    assert (out / "Breakout_objects-2.md").exists() and (out / "Breakout_objects-2.png").exists()


@pytest.mark.quick
def test_a_recurrent_agent_is_scored_at_its_own_state(tmp_path):
    checkpoint = hand_built_checkpoint(
        tmp_path / "topdown.cleanrl_model",
        "ppo_atari_topdown.py",
        conv_channels=16,
        value_channels=24,
        core_hidden=32,
        mlp_hidden=32,
        query_hidden=16,
    )
    score_in_process(checkpoint=(str(checkpoint),), frames=4, negatives=2, figure_frames=1, perturbation_stride=12)
    rows = read_rows(tmp_path / "objects" / "Breakout_objects.csv")  # default: objects/ beside the checkpoint
    assert len(rows) == 4 * len(MAPS) * 3 and {r["agent"] for r in rows} == {"topdown, step 0"}


@pytest.mark.quick
def test_maps_asked_for_are_the_maps_scored(fls_checkpoint, tmp_path):
    """`--maps` picks the explanations; an agent without attention (NA) is scored on the ones it has."""
    na = hand_built_checkpoint(tmp_path / "na.cleanrl_model", "ppo_atari_selfattn.py", self_attn="NA")
    score_in_process(checkpoint=(str(na),), frames=3, negatives=1, figure_frames=1, perturbation_stride=12)
    rows = read_rows(tmp_path / "objects" / "Breakout_objects.csv")
    expected = ["perturbation", "perturbation_randomised", "gradcam", "gradcam_randomised", "gradcam++"]
    assert {r["map"] for r in rows} == set(expected + ["gradcam++_randomised"] + list(BASELINES))
    (stem,) = score_in_process(checkpoint=(str(fls_checkpoint),), frames=3, negatives=1, maps=("gradcam",), out=str(tmp_path))
    assert {r["map"] for r in read_rows(f"{stem}.csv")} == {"gradcam", "gradcam_randomised", *BASELINES}


@pytest.mark.quick
def test_cli_refuses_a_game_without_layout_in_one_line(fls_checkpoint, tmp_path):
    proc = run(["--checkpoint", fls_checkpoint, "--game", "Asterix", "--out", tmp_path / "objects"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: no RAM layout for Asterix; games with one: {', '.join(sorted(LAYOUTS))}"
    )
    assert not (tmp_path / "objects").exists()


def refusal(tmp_path, **settings):
    with pytest.raises(SystemExit) as error:
        score_in_process(**settings)
    assert not (tmp_path / "objects").exists()  # nothing written, nothing played
    return str(error.value)


@pytest.mark.quick
def test_refusals_come_before_any_play(fls_checkpoint, tmp_path, monkeypatch):
    from attention_utils import objects

    def no_play(*args, **kwargs):
        raise AssertionError("played before refusing")

    monkeypatch.setattr(objects, "record", no_play)
    adaptive = hand_built_checkpoint(tmp_path / "adaptive.cleanrl_model", "ppo_atari_temporal.py", arch="adaptive")
    line = refusal(tmp_path, checkpoint=(str(adaptive),), maps=("attention", "gradcam"))
    assert line == f"error: {adaptive}: adaptive has no attention map; it has: perturbation, gradcam, gradcam++"
    line = refusal(tmp_path, checkpoint=(str(adaptive),), maps=("saliency",))
    assert line == "error: --maps saliency: unknown; valid: attention, perturbation, gradcam, gradcam++"
    line = refusal(tmp_path, checkpoint=(str(adaptive),), perturbation_stride=0)
    assert line == "error: --perturbation-stride 0: must be at least 1"
    damaged = tmp_path / "notes.cleanrl_model"
    damaged.write_text("not a checkpoint")
    line = refusal(tmp_path, checkpoint=(str(damaged),))
    assert line.startswith("error: ") and str(damaged) in line  # load_agent's own line
    missing = tmp_path / "missing.cleanrl_model"
    assert refusal(tmp_path, checkpoint=(str(missing),)).startswith(f"error: --checkpoint {missing}: no such file")
    assert refusal(tmp_path, checkpoint=(str(damaged),), frames=1) == "error: --frames 1: must be at least 2"
    # a second checkpoint that cannot be scored stops the command before the first one plays
    line = refusal(tmp_path, checkpoint=(str(fls_checkpoint), str(adaptive)), maps=("attention",))
    assert line == f"error: {adaptive}: adaptive has no attention map; it has: perturbation, gradcam, gradcam++"
