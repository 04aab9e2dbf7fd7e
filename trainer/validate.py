"""The validation pass: the generator's building-mask scores on the ``val`` split.

Each rank scores its share of the val tiles (:class:`~trainer.metrics.SegmentationMeter`
counts), the counts are summed over ranks, and every rank gets the same scores: pixel IoU,
precision, recall, F1 and boundary F-score. Outputs become probabilities exactly as at
inference (:func:`trainer.networks.probabilities`).
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.config import ModelConfig, TrainConfig
from trainer.distributed import Dist, all_reduce, autocast
from trainer.metrics import SegmentationMeter
from trainer.networks import probabilities


def validate(
    net: torch.nn.Module,
    loader: Any,
    model_config: ModelConfig,
    target: str,
    config: TrainConfig,
    ctx: Dist,
) -> tuple[dict[str, float], int]:
    """Scores of ``net`` (the unwrapped generator) on the val ``loader``, and tiles seen.

    ``target`` is the dataset's target kind (``masks`` or ``seed-rgb``), which says how a
    building mask is read from outputs and targets. Both are summed over all ranks. The
    network is put in eval mode for the pass and back in train mode after it.
    """
    meter = SegmentationMeter(target, config.threshold, config.boundary_tolerance)
    net.eval()
    with torch.inference_mode():
        for batch in loader:
            image = batch["image"].to(ctx.device, non_blocking=True)
            with autocast(ctx, ctx.precision):
                prob = probabilities(net(image), model_config)
            meter.update(prob, batch["target"], batch["valid"])
    net.train()
    meter.load_tensor(all_reduce(meter.to_tensor(), ctx))
    seen = int(all_reduce(torch.tensor([meter.images], dtype=torch.int64), ctx)[0])
    return meter.scores(), seen
