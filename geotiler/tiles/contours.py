"""Contour enhancement: building outlines drawn back onto the mask.

The seed method draws the outline of every building (found with ``cv2.findContours``) as a
line of a few pixels, so the model gets a separate signal for shapes and edges. Outlines are
traced per building from a label image, not from the merged mask, so the wall between two
touching houses gets a line too; that line later splits them into two polygons.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def draw_contours(labels: np.ndarray, width: int) -> np.ndarray:
    """uint8 image (0/255) of every labelled region's outline drawn ``width`` px thick.

    ``labels`` is an int image with 0 as background and one id per building. One
    ``cv2.findContours`` call in ``RETR_FLOODFILL`` mode traces each region of equal label
    on its own (outer border and the borders of its holes), exactly as tracing each
    building's binary mask would, without a Python loop over buildings. Regions of label 0
    (background, holes) are traced too and dropped. Every boundary step is kept
    (``CHAIN_APPROX_NONE``): simplified runs draw ~25% faster but make the thick line depend
    on where tracing starts, so a tile cut alone would differ from one cut in a strip. The
    line is centred on the region's boundary pixels (half inside, half outside).
    """
    canvas = np.zeros(labels.shape, dtype=np.uint8)
    if width <= 0 or not labels.any():
        return canvas
    contours, _ = cv2.findContours(
        labels.astype(np.int32, copy=False), cv2.RETR_FLOODFILL, cv2.CHAIN_APPROX_NONE
    )
    if not contours:
        return canvas
    # a border pixel of each region; those of background regions may lie just outside
    x, y = np.array([contour[0, 0] for contour in contours]).T
    height, width_px = labels.shape
    on_image = (x >= 0) & (y >= 0) & (x < width_px) & (y < height)
    inside = np.zeros(len(contours), dtype=bool)
    inside[on_image] = labels[y[on_image], x[on_image]] != 0
    cv2.drawContours(canvas, [c for c, keep in zip(contours, inside, strict=True) if keep], -1,
                     255, thickness=width)
    return canvas


def seed_rgb_target(footprint: np.ndarray, contour: np.ndarray, blur: int) -> np.ndarray:
    """The seed method's target: buildings white, outlines green, added, then blurred.

    Returns (3, H, W) uint8 (red, green, blue). The addition saturates, so outlines show
    green outside the roof and white inside it, as in the seed's images.
    """
    white = np.repeat(footprint[:, :, None], 3, axis=2)
    green = np.zeros_like(white)
    green[:, :, 1] = contour
    rgb = cv2.add(white, green)
    if blur:
        rgb = cv2.GaussianBlur(rgb, (blur, blur), 0)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


SEED_RGB_CHANNELS: tuple[str, str, str] = ("red", "green", "blue")


def seed_rgb_planes(red: Any, green: Any, blue: Any) -> tuple[Any, Any]:
    """The one reading of the seed's RGB target: its footprint and contour planes.

    The target (:func:`seed_rgb_target`) is white (255, 255, 255) on buildings and green
    (0, 255, 0) on outlines outside the roof, then blurred; so red and blue carry the
    footprint alone and green carries footprint or outline. Hence
    ``footprint = (red + blue) / 2`` and ``contour = max(green - footprint, 0)``.
    A pixel is "building" where the footprint is above half of full scale (127.5 for uint8
    values, 0.5 for probabilities): tile statistics (:mod:`geotiler.tiles.task`), validation
    (:mod:`trainer.metrics`), predict's polygons and masks (:mod:`geotiler.polygons`) all use
    this function, so the same pixels count as building everywhere.

    Takes float numpy arrays or torch tensors of one shape (any scale: 0..255 or 0..1);
    returns (footprint, contour) of that shape and type. Integer inputs must be cast first
    (uint8 sums overflow).
    """
    footprint = (red + blue) / 2
    return footprint, (green - footprint).clip(min=0)
