"""Training the building segmentation networks on geotiler tile shards.

One module per job; imports flow down this list (a module imports only ones below it,
plus :mod:`geotiler`):

- :mod:`trainer.loop`: :func:`~trainer.loop.train`, the epoch loop (the one entry point).
- :mod:`trainer.checks`: what ``train`` checks of its tile datasets first (shards present,
  buildings present) and whether wall weights apply to them.
- :mod:`trainer.budget`: the ``--max-minutes`` plan (epochs that fit) and when a run stops.
- :mod:`trainer.checkpoint`: RNG states, ``last.pt`` save/resume, when a checkpoint is due.
- :mod:`trainer.rundir`: the run's folder: where it is, output checks, the staged best
  model, ``train_config.json``, ``metrics.csv``, the advice after a run stopped early.
- :mod:`trainer.validate`: the validation pass (scores summed over ranks).
- :mod:`trainer.steps`: networks + Adam optimizers (:class:`~trainer.steps.Models`), the
  per-epoch learning rate, the U-Net step, the pix2pix alternating D/G step, one epoch.
- :mod:`trainer.distributed`: device and ``torchrun``/DDP set-up, rank helpers, autocast.
- :mod:`trainer.modelfile`: the model file (:class:`~trainer.modelfile.ModelSpec` embeds
  the dataset's :class:`~geotiler.tiles.schema.DatasetInfo`), loading it for inference.
- :mod:`trainer.data`: tiles from shards as torch samples (splitting over workers and
  ranks, shuffling, normalization by ``DatasetInfo.normalize``, augmentation).
- :mod:`trainer.metrics`: validation metrics as counts (IoU, F1, boundary F).
- :mod:`trainer.losses`: GAN, L1, BCE + Dice losses, wall weights.
- :mod:`trainer.networks`: the U-Net generator (optionally with a full-resolution branch),
  the PatchGAN, and
  :func:`~trainer.networks.probabilities` (network output -> probabilities).
- :mod:`trainer.config`: :class:`~trainer.config.ModelConfig` and
  :class:`~trainer.config.TrainConfig`, the one home of every default.
"""
