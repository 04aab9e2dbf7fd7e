"""The model file: round trip, inference helpers, and refusal of anything not ours."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from geotiler.errors import ModelFileError
from geotiler.tiles.schema import DatasetInfo
from trainer.config import ModelConfig
from trainer.modelfile import ModelSpec, load_model, read_model_file, save_model
from trainer.networks import build_generator

torch.set_num_threads(1)


def make_dataset() -> DatasetInfo:
    return DatasetInfo(
        bands=[1, 2, 3], band_names=["red", "green", "blue"], dtype="uint8",
        mean=[100.0, 110.0, 120.0], std=[20.0, 25.0, 30.0], tile_size=32, gsd=0.5,
        mask_channels=["footprint", "contour"], target="masks", counts={"train": 3},
        config={"size": 32, "target": "masks"}, extra={"created": "today"},
    )


def make_spec(arch: str = "unet") -> ModelSpec:
    return ModelSpec(
        dataset=make_dataset(),
        model=ModelConfig(arch=arch, ngf=4, num_downs=3),  # type: ignore[arg-type]
        training={"epochs": 1, "best_val_iou": 0.5},
    )


def test_spec_reads_the_dataset_schema_it_embeds() -> None:
    spec = make_spec()
    assert spec.bands == [1, 2, 3] and spec.band_names == ["red", "green", "blue"]
    assert spec.dtype == "uint8" and spec.mean == [100.0, 110.0, 120.0]
    assert spec.std == [20.0, 25.0, 30.0] and spec.tile_size == 32 and spec.gsd == 0.5
    assert spec.mask_channels == ["footprint", "contour"] and spec.target == "masks"
    assert spec.tiling == {"size": 32, "target": "masks"} and spec.model.ngf == 4
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["dataset"]["format"] == "geotiler-tiles"
    assert ModelSpec.from_dict(data) == spec


def test_inference_normalizes_as_the_loader_does(tmp_path: Path) -> None:
    from affine import Affine

    from geotiler.tiles.shards import Tile
    from trainer.data import prepare

    spec = make_spec()
    save_model(tmp_path / "m.pt", build_generator(spec.model), spec)
    model = load_model(tmp_path / "m.pt")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (3, 32, 32)).astype(np.uint8)
    valid = rng.random((32, 32)) > 0.2
    tile = Tile("k", image, np.zeros((2, 32, 32), np.uint8), valid, Affine.identity(), None,
                {})  # type: ignore[arg-type]
    loader_x = prepare(tile, spec.dataset)[0]
    np.testing.assert_array_equal(model.normalize(image, valid).numpy(), loader_x)


@pytest.mark.parametrize("arch", ["unet", "pix2pix"])
def test_round_trip_predicts_probabilities(tmp_path: Path, arch: str) -> None:
    spec = make_spec(arch)
    net = build_generator(spec.model).eval()
    path = tmp_path / "model.pt"
    save_model(path, net, spec)
    assert not list(tmp_path.glob("*.partial"))
    model = load_model(path)
    assert model.spec == spec
    assert not model.net.training
    image = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32)).astype(np.uint8)
    x = model.normalize(image)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32)
    expected = (image[0, 1].astype(np.float32) - 110) / 25
    np.testing.assert_allclose(x[0, 1].numpy(), expected, rtol=1e-5, atol=1e-5)
    prob = model.predict(x)
    assert prob.shape == (2, 2, 32, 32)
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    with torch.no_grad():
        raw = net(x)
    want = torch.sigmoid(raw) if arch == "unet" else (raw + 1) / 2
    torch.testing.assert_close(prob, want)
    single = model.normalize(image[0], valid=np.zeros((32, 32), bool))
    assert single.shape == (3, 32, 32) and float(single.abs().max()) == 0


def test_normalize_rejects_wrong_band_count(tmp_path: Path) -> None:
    spec = make_spec()
    save_model(tmp_path / "m.pt", build_generator(spec.model), spec)
    model = load_model(tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=r"takes 3 bands.*has 4"):
        model.normalize(np.zeros((4, 32, 32), np.uint8))


class Payload:
    """Runs a command when unpickled."""

    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_pickle_payload_is_refused_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "geotiler-model", "format_version": 1, "spec": "{}",
                "state_dict": {}, "x": Payload()}, path)
    with pytest.raises(ModelFileError, match="refused, not run"):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


def _rewrite(path: Path, **changes: object) -> None:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_bad_files_raise_model_file_error(tmp_path: Path) -> None:
    spec = make_spec()
    good = tmp_path / "good.pt"
    save_model(good, build_generator(spec.model), spec)

    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="not a readable geotiler model"):
        load_model(junk)
    text = tmp_path / "text.pt"  # torch's own words for it: KeyError '101'
    text.write_text("hello world\n")
    with pytest.raises(ModelFileError, match="corrupt or not a torch file"):
        load_model(text)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt") as caught:
        load_model(truncated)
    assert len(str(caught.value)) < 200
    checkpoint = tmp_path / "last.pt"  # the training checkpoint given instead
    torch.save({"format": "geotiler-checkpoint", "G": {}}, checkpoint)
    with pytest.raises(ModelFileError, match="training checkpoint, not a model file"):
        load_model(checkpoint)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelFileError, match="not a geotiler model"):
        load_model(other)

    newer = tmp_path / "newer.pt"
    newer.write_bytes(good.read_bytes())
    _rewrite(newer, format_version=99)
    with pytest.raises(ModelFileError, match="newer than this geotiler"):
        load_model(newer)

    bad_spec = tmp_path / "bad_spec.pt"
    bad_spec.write_bytes(good.read_bytes())
    data = spec.to_dict()
    del data["dataset"]["gsd"]
    _rewrite(bad_spec, spec=json.dumps(data))
    with pytest.raises(ModelFileError, match="dataset lacks gsd"):
        load_model(bad_spec)

    older = tmp_path / "older.pt"  # format 1: a flat spec, before it embedded the dataset
    older.write_bytes(good.read_bytes())
    flat = {**spec.to_dict()["dataset"], "model": spec.model.to_dict()}
    _rewrite(older, format_version=1, spec=json.dumps(flat))
    with pytest.raises(ModelFileError, match=r"version 1.*retrain") as info:
        load_model(older)
    assert "\n" not in str(info.value)

    wrong_weights = tmp_path / "wrong_weights.pt"
    wrong_weights.write_bytes(good.read_bytes())
    data = spec.to_dict()
    data["model"]["ngf"] = 8
    _rewrite(wrong_weights, spec=json.dumps(data))
    with pytest.raises(ModelFileError, match="weights do not fit"):
        load_model(wrong_weights)


def test_file_holds_only_tensors_and_json(tmp_path: Path) -> None:
    spec = make_spec()
    path = tmp_path / "m.pt"
    save_model(path, build_generator(spec.model), spec)
    read_spec, state = read_model_file(path)
    assert read_spec == spec
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    with zipfile.ZipFile(path) as zf:
        pickle_name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        text = zf.read(pickle_name)
    # the only globals referenced are torch's tensor rebuild helpers
    import pickletools

    ops = [arg for op, arg, _ in pickletools.genops(io.BytesIO(text)) if op.name == "GLOBAL"]
    assert ops and all(str(a).startswith(("torch", "collections OrderedDict")) for a in ops)


def test_weights_damaged_on_disk_are_refused(tmp_path: Path) -> None:
    """64 bytes of 0xff written over a weight tensor in the file (a damaged disk or
    download) make NaNs: the file loads, and a NaN network predicted "building" over the
    whole raster with exit 0. It must be refused by name instead."""
    spec = make_spec()
    path = tmp_path / "model.pt"
    save_model(path, build_generator(spec.model), spec)
    with zipfile.ZipFile(path) as archive:  # torch stores each tensor uncompressed
        entry = max((i for i in archive.infolist() if "/data/" in i.filename),
                    key=lambda i: i.file_size)
        raw = path.read_bytes()
        name_len, extra_len = np.frombuffer(raw[entry.header_offset + 26:
                                                entry.header_offset + 30], dtype="<u2")
        start = entry.header_offset + 30 + int(name_len) + int(extra_len)
    path.write_bytes(raw[:start] + b"\xff" * 64 + raw[start + 64:])
    with pytest.raises(ModelFileError, match=r"NaN or infinite values.*damaged"):
        load_model(path)


def test_a_checkpoint_is_due_at_first_last_and_improved_epochs_else_once_a_minute():
    """Short epochs once each paid for a 50 MB save (10-15 % of the default recipe's time);
    now ``last.pt`` is skipped between saves a minute apart, but never after a run's first
    epoch (resumable at once), its last, or an epoch whose model became the best (a best
    model newer than the checkpoint could be replaced by a worse epoch on resume)."""
    import time

    from trainer.checkpoint import CHECKPOINT_EVERY_S, checkpoint_due
    from trainer.distributed import Dist

    ctx, now = Dist(), time.perf_counter()
    assert checkpoint_due(None, improved=False, final=False, ctx=ctx)
    assert not checkpoint_due(now, improved=False, final=False, ctx=ctx)
    assert checkpoint_due(now, improved=True, final=False, ctx=ctx)
    assert checkpoint_due(now, improved=False, final=True, ctx=ctx)
    assert checkpoint_due(now - CHECKPOINT_EVERY_S - 1, improved=False, final=False, ctx=ctx)
