"""Contour enhancement: building outlines drawn back onto the mask.

The seed method draws the outline of every building (found with ``cv2.findContours``) as a
line of a few pixels, so the model gets a separate signal for shapes and edges. Outlines are
traced per building from a label image, not from the merged mask, so the wall between two
touching houses gets a line too; that line later splits them into two polygons.
"""

from __future__ import annotations

import cv2
import numpy as np


def draw_contours(
    labels: np.ndarray, width: int, boxes: np.ndarray | None = None
) -> np.ndarray:
    """uint8 image (0/255) of every labelled region's outline drawn ``width`` px thick.

    ``labels`` is an int image with 0 as background and one id per building. The line is
    centred on the region's boundary pixels (half inside, half outside). ``boxes`` may give
    each id's pixel bounding box as rows of (id, row0, row1, col0, col1), which saves a scan
    of the image per building; without it the boxes are found from the labels.
    """
    canvas = np.zeros(labels.shape, dtype=np.uint8)
    if width <= 0:
        return canvas
    if boxes is None:
        boxes = _label_boxes(labels)
    for value, r0, r1, c0, c1 in boxes:
        region = (labels[r0:r1, c0:c1] == value).astype(np.uint8)
        if not region.any():
            continue
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, 255, thickness=width, offset=(int(c0), int(r0)))
    return canvas


def _label_boxes(labels: np.ndarray) -> np.ndarray:
    """(id, row0, row1, col0, col1) of every non-zero id (half-open pixel ranges)."""
    rows = []
    for value in np.unique(labels[labels > 0]):
        ys, xs = np.nonzero(labels == value)
        rows.append((value, ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


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
