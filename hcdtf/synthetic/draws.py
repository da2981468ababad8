"""A patch's random stream: its scalar parameters drawn in blocks, and the stream itself."""

from __future__ import annotations

import itertools

import numpy as np


class Draws:
    """The random parameters of one patch, all from its own Generator.

    Scalars (positions, sizes, probabilities) come from uniforms drawn in blocks of 64: a
    Generator call costs about as much as a whole-patch array operation, and a patch has
    dozens of scalar parameters. Arrays of draws come from ``rng`` directly. The order of the
    calls is part of the output: reordering them changes every later patch value.
    """

    __slots__ = ("rng", "u")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        blocks = iter(lambda: rng.random(64).tolist(), None)  # endless
        self.u = itertools.chain.from_iterable(blocks).__next__  # the next uniform in [0, 1)

    def uni(self, lo: float, hi: float) -> float:
        """A uniform in [lo, hi)."""
        return lo + (hi - lo) * self.u()

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self.u() < p

    def index(self, n: int) -> int:
        """A uniform integer in 0 .. n-1."""
        return min(int(self.u() * n), n - 1)
