"""The main axis of dynamics of 56 Atari games, as classified by the repository of "Revisiting Self-Attention in
Deep RL: A Dimensional Perspective" ("Game Classification"): the axis of interaction (conflict, combat,
competition, movement of key objects). Keys are envpool game names."""

HORIZONTAL = (
    "Bowling",
    "Boxing",
    "ChopperCommand",
    "Defender",
    "FishingDerby",
    "Frostbite",
    "KungFuMaster",
    "Pong",
    "RoadRunner",
    "Seaquest",
    "StarGunner",
    "YarsRevenge",
)
VERTICAL = (
    "Assault",
    "Atlantis",
    "Breakout",
    "Centipede",
    "CrazyClimber",
    "DemonAttack",
    "DoubleDunk",
    "Gopher",
    "IceHockey",
    "Jamesbond",
    "Kangaroo",
    "NameThisGame",
    "Phoenix",
    "Riverraid",
    "Skiing",
    "SpaceInvaders",
    "Tennis",
    "Zaxxon",
)
# "Other" has three kinds in the seed
OTHER_KINDS = {
    "no main axis": ("Hero", "Krull", "MontezumaRevenge", "Pitfall", "PrivateEye"),
    "far off horizontal/vertical": ("BattleZone", "BeamRider", "Enduro", "Robotank", "Solaris"),
    "multiple axes": (
        "Alien",
        "Amidar",
        "Asterix",
        "Asteroids",
        "BankHeist",
        "Berzerk",
        "Freeway",
        "Gravitar",
        "MsPacman",
        "Qbert",
        "TimePilot",
        "Tutankham",
        "UpNDown",
        "Venture",
        "VideoPinball",
        "WizardOfWor",
    ),
}
OTHER = tuple(sorted(game for games in OTHER_KINDS.values() for game in games))

AXIS_CLASSES = {"horizontal": HORIZONTAL, "vertical": VERTICAL, "other": OTHER}


def axis_class(game: str):
    """'horizontal', 'vertical' or 'other' for a classified game; None for a game the seed does not classify
    (Surround, BreakoutInfinite, ...)."""
    for name, games in AXIS_CLASSES.items():
        if game in games:
            return name
    return None


def other_kind(game: str):
    """The classification's sub-kind of an 'other' game, or None."""
    for name, games in OTHER_KINDS.items():
        if game in games:
            return name
    return None
