"""Starting weights shipped with geotiler: ``geotiler train TILES --init synthetic``.

``synthetic`` is the default network (U-Net, small preset: RGB in, footprint + contour out)
trained for 10 minutes on eight scenes of our own generator (:mod:`geotiler.synthetic`,
rendered at 0.3-1 m and tiled at 1 m) by ``benchmarks/pretrain_synthetic.py``. It is made
from our code only, so it is ours to ship. Its weights are stored as float16 (8 MB instead of
16; the network trains in bf16 on CPU anyway) and become float32 when loaded.

Measured on the default Massachusetts tiling, two seeds each (README, "Pretraining on
our synthetic scenes"): with ``--epochs 150`` (1.5 minutes) fine-tuning from it reached val
pixel IoU 0.673 / 0.694, against 0.652 / 0.596 from random weights in the same time and
0.666 / 0.680 from random weights at the default 500 epochs; at 500 epochs both starts tie.
What it buys is time.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from geotiler.errors import ModelFileError

#: Names ``--init`` accepts besides a path, and their files in ``trainer/weights/``.
PRETRAINED: dict[str, str] = {"synthetic": "synthetic-unet-small-1m.pt"}


def pretrained_path(name: str) -> Path:
    """The shipped model file of a :data:`PRETRAINED` name (KeyError for other names)."""
    return Path(str(resources.files("trainer") / "weights" / PRETRAINED[name]))


def resolve_init(value: str | Path) -> Path:
    """``--init``'s value as a model file: a :data:`PRETRAINED` name, else the path given.

    Raises:
        ModelFileError: the value is neither a name nor an existing file but looks like a
            misspelled name (no folder, no suffix: ``synthetc``); the message lists the
            names.
    """
    if str(value) in PRETRAINED:
        return pretrained_path(str(value))
    path = Path(value)
    if (not path.exists() and path.parent == Path() and not path.suffix
            and str(value).strip()):
        raise ModelFileError(f"--init {value}: no such model file, and not a name of the "
                             f"shipped weights ({', '.join(sorted(PRETRAINED))})")
    return path


def write_half_precision(source: Path | str, target: Path | str) -> None:
    """Copy a model file with its floating-point weights in float16 (half the size), for
    shipping; the spec and integer buffers are kept as they are. Written atomically.

    Raises:
        ModelFileError: ``source`` is not a readable geotiler model file.
    """
    from trainer.modelfile import read_model_file, save_atomic

    read_model_file(source)  # checked: a model file, not a checkpoint
    payload = torch.load(source, map_location="cpu", weights_only=True)
    payload["state_dict"] = {
        name: tensor.half() if tensor.is_floating_point() else tensor
        for name, tensor in payload["state_dict"].items()
    }
    save_atomic(payload, Path(target))
