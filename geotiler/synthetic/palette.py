"""The scene's palette: ground materials and their texture, the order things are painted in,
and the colours of grass, trees, shadows and cars (RGB, 0-255; textures are relative
amplitudes)."""

from __future__ import annotations

import numpy as np

# Ground materials: texture amplitudes (mid-frequency, fine, low-frequency) per material.
M_GROUND, M_SOIL, M_CONCRETE, M_ASPHALT, M_PAVING = 0, 1, 2, 3, 4
M_MARK, M_WATER, M_CAR, M_GRAVEL, M_CLAY, M_HEDGE = 5, 6, 7, 8, 9, 10
TEXTURE = np.array(
    [
        (0.00, 0.00, 0.00),  # ground: has its own texture
        (0.08, 0.07, 0.10),  # soil
        (0.025, 0.035, 0.05),  # concrete
        (0.05, 0.07, 0.07),  # asphalt
        (0.06, 0.05, 0.04),  # paving
        (0.03, 0.04, 0.00),  # markings
        (0.03, 0.015, 0.05),  # water
        (0.00, 0.015, 0.00),  # car
        (0.06, 0.09, 0.05),  # gravel
        (0.04, 0.05, 0.04),  # clay court
        (0.30, 0.16, 0.06),  # hedge
    ],
    dtype=np.float32,
)
# Painting order (lower first). From Z_RAISED on, paint goes on after the shadows, so
# that things standing above the ground are not darkened by their own shadow.
Z_SOIL, Z_PAD, Z_LOT, Z_DRIVE, Z_WALK, Z_ROAD = 0, 1, 2, 3, 4, 5
Z_MARK, Z_WATER, Z_RAISED, Z_CAR, Z_GLASS, Z_HEDGE = 6, 7, 8, 8, 9, 10

GRASS = np.array((86.0, 108.0, 56.0), dtype=np.float32)
DRY = np.array((138.0, 136.0, 92.0), dtype=np.float32)
LUSH = np.array((62.0, 88.0, 48.0), dtype=np.float32)
BARE = np.array((132.0, 114.0, 88.0), dtype=np.float32)
TREE_TONES = np.array(
    [(46, 70, 36), (58, 82, 40), (40, 60, 44), (66, 88, 46), (52, 66, 34)], dtype=np.float32
)
SHADOW_RGB = np.array((0.36, 0.40, 0.50), dtype=np.float32)
CAR_COLOURS = (
    (215, 215, 212), (30, 32, 36), (150, 152, 156), (110, 112, 118), (150, 30, 30),
    (40, 60, 120), (200, 200, 190), (70, 80, 70),
)
