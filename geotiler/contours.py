"""Contour enhancement: building outlines drawn back onto the mask.

The seed method draws the outline of every building (found with ``cv2.findContours``) as a
line of a few pixels, so the model gets a separate signal for shapes and edges. Outlines are
traced per building from a label image, not from the merged mask, so the wall between two
touching houses gets a line too; that line later splits them into two polygons.
"""

from __future__ import annotations

import cv2
import numpy as np


def draw_contours(labels: np.ndarray, width: int) -> np.ndarray:
    """uint8 image (0/255) of every labelled region's outline drawn ``width`` px thick.

    ``labels`` is an int image with 0 as background and one id per building. The line is
    centred on the region's boundary pixels (half inside, half outside).
    """
    canvas = np.zeros(labels.shape, dtype=np.uint8)
    if width <= 0:
        return canvas
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return canvas
    rows = np.any(labels > 0, axis=1)
    cols = np.any(labels > 0, axis=0)
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    crop = labels[r0 : r1 + 1, c0 : c1 + 1]
    for value in ids:
        region = (crop == value).astype(np.uint8)
        ys, xs = np.nonzero(region)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        contours, _ = cv2.findContours(
            np.ascontiguousarray(region[y0:y1, x0:x1]), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(
            canvas, contours, -1, 255, thickness=width,
            offset=(int(x0 + c0), int(y0 + r0)),
        )
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
