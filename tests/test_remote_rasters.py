"""Remote rasters over HTTP and S3, against real servers started here on loopback.

An HTTP server that honours Range requests and counts the bytes it sends
(``tests/range_server.py``, its own process) and an S3-compatible server (``moto`` in server
mode, with request signatures checked) serve cloud-optimized GeoTIFFs written in code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.predict.config import ModelInfo, PredictConfig
from geotiler.predict.job import prepare
from geotiler.remote import stat_remote
from pipelines.predict import run_job

from conftest import pixel_box, write_footprints, write_raster

REPO = Path(__file__).resolve().parents[1]
SIDE = 4096  # px of the big COG, 0.5 m


def _cog(path: Path, side: int, seed: int) -> Path:
    """An RGB COG (512 px blocks, overviews down to one block) with bright roofs."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, size=(3, side, side), dtype=np.uint8)
    for r in range(40, side - 60, 250):
        data[:, r:r + 30, 40:side - 40:7] = 230
    plain = write_raster(path.with_name(path.stem + "_plain.tif"), data)
    rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE",
                         LEVEL=1, OVERVIEW_RESAMPLING="AVERAGE")
    plain.unlink()
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder, footprints): scene.tif (4096² COG, ~50 MB) and small.tif (512² COG)."""
    folder = tmp_path_factory.mktemp("served")
    _cog(folder / "scene.tif", SIDE, 0)
    _cog(folder / "small.tif", 512, 1)
    boxes = [pixel_box(c, r, c + 24, r + 30) for r in range(40, 480, 250)
             for c in range(40, 480, 70)]
    footprints = write_footprints(folder.parent / "footprints.gpkg", boxes, "EPSG:32633")
    return folder, footprints


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


@pytest.fixture(scope="module")
def http_url(served):
    """Base URL of a Range-honouring HTTP server over ``served``'s folder."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "range_server.py"),
                             str(served[0])], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def _served_bytes(base: str, reset: bool = False) -> int:
    request = urllib.request.Request(f"{base}/__served__", method="POST" if reset else "GET",
                                     data=b"" if reset else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.read())


def _geotiler(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``geotiler ARGS`` in a subprocess; stderr is a pipe (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "geotiler", *args], cwd=REPO, text=True,
                          capture_output=True, env=env, timeout=600)


def test_tiling_a_remote_cog_at_a_coarse_gsd_fetches_only_its_overview(served, http_url,
                                                                       tmp_path):
    folder, footprints = served
    size = (folder / "scene.tif").stat().st_size
    url = f"{http_url}/scene.tif"
    _served_bytes(http_url, reset=True)
    out = tmp_path / "tiles"
    # 4096 px at 0.5 m tiled at 4 m: 512 x 512 px, which GDAL reads (--overviews) from the
    # COG's 8x overview by range requests; the full-resolution blocks are never fetched.
    result = _geotiler("tile", url, "-f", str(footprints), "-o", str(out), "--gsd", "4",
                       "--size", "256", "--split", "1,0,0", "--keep-empty", "1", "--overviews")
    assert result.returncode == 0, result.stderr
    fetched = _served_bytes(http_url)
    assert 0 < fetched < size / 20, f"fetched {fetched} of {size} bytes"
    assert "\r" not in result.stderr
    info = json.loads((out / "dataset.json").read_text())
    source = info["sources"][0]
    assert source["path"] == url and source["name"] == "scene"
    assert source["size_bytes"] == size and source["sha256"] is None
    assert source["etag"] and len(source["etag"]) == 32
    assert info["counts"]["train"] == 4 and abs(info["gsd"] - 4.0) < 1e-6
    # rerunning the same command resumes: the same URL, size and ETag
    again = _geotiler("tile", url, "-f", str(footprints), "-o", str(out), "--gsd", "4",
                      "--size", "256", "--split", "1,0,0", "--keep-empty", "1", "--overviews")
    assert again.returncode == 0, again.stderr
    assert "1 reused" in again.stdout


def _one_line_error(result, *words: str) -> str:
    assert result.exit_code == 1, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_remote_failures_are_one_line_errors(served, http_url, tmp_path, monkeypatch):
    _, footprints = served
    runner = CliRunner()

    def tile(url: str):
        return runner.invoke(main, ["-q", "tile", url, "-f", str(footprints), "-o",
                                    str(tmp_path / "t")])

    _one_line_error(tile(f"{http_url}/missing.tif"), "missing.tif", "not found (HTTP 404)")
    _one_line_error(tile(f"{http_url}/forbidden/scene.tif"), "access denied (HTTP 403)")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    # no directory listing first (its cached 404 would answer for the file)
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    started = time.monotonic()
    _one_line_error(tile(f"{http_url}/slow/scene.tif"), "timed out", "GDAL_HTTP_TIMEOUT")
    assert time.monotonic() - started < 5
    evaluate = runner.invoke(main, ["-q", "evaluate", str(footprints), str(footprints),
                                    "--raster", f"{http_url}/nothere.tif"])
    _one_line_error(evaluate, "not found (HTTP 404)")


class Brightness:
    """Per-pixel predictor: footprint = mean brightness, contour = 0."""

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        fp = image.astype(np.float32).mean(axis=1) / 255.0
        return np.stack([fp, np.zeros_like(fp)], axis=1)


def test_predict_and_evaluate_on_a_remote_raster(served, http_url, tmp_path):
    _, footprints = served
    url = f"{http_url}/small.tif"
    model = ModelInfo(bands=(1, 2, 3), band_names=("red", "green", "blue"), dtype="uint8",
                      tile_size=64, gsd=0.5, channels=("footprint", "contour"),
                      contour_width=3, name="synthetic")
    config = PredictConfig(block=256, halo=32, overlap=16, device="cpu", min_area=1.0)
    out = tmp_path / "b.gpkg"
    report = run_job(prepare(url, model, out, config), Brightness(), workers=2)
    assert report.buildings > 0 and out.exists()
    with rasterio.open(tmp_path / "b_mask.tif") as mask, rasterio.open(url) as src:
        assert mask.transform == src.transform and mask.shape == src.shape
    result = CliRunner().invoke(main, ["-q", "evaluate", str(out), str(footprints),
                                       "--raster", url, "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["grid"] == url and metrics["pixels"]["iou"] > 0


# --- S3 (moto in server mode, signatures checked) ------------------------------------------

@pytest.fixture(scope="module")
def s3(served):
    """An S3-compatible server with bucket ``scenes`` holding small.tif; yields the
    environment that points GDAL at it (key, secret, endpoint, path-style, plain HTTP)."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the first 4 requests (IAM user, policy, key, bucket) unsigned; every later one checked
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4"))
    try:
        _wait_for_port(port, proc)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="tiler")
        iam.put_user_policy(UserName="tiler", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="tiler")["AccessKey"]
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"])
        client.create_bucket(Bucket="scenes")
        client.upload_file(str(served[0] / "small.tif"), "scenes", "small.tif")
        head = client.head_object(Bucket="scenes", Key="small.tif")
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
               "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO",
               "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_REGION": "us-east-1",
               "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
        yield env, head
    finally:
        proc.kill()
        proc.wait()


def test_stat_of_an_s3_object_is_a_signed_head_request(s3, monkeypatch):
    env, head = s3
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stat = stat_remote("s3://scenes/small.tif")
    assert stat.etag == head["ETag"].strip('"') and stat.size == head["ContentLength"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(Exception, match=r"access denied \(HTTP 403\)"):
        stat_remote("s3://scenes/small.tif")


def test_tiling_from_s3_records_url_size_and_etag(s3, served, tmp_path):
    env, head = s3
    _, footprints = served
    out = tmp_path / "tiles"
    result = _geotiler("tile", "s3://scenes/small.tif", "-f", str(footprints), "-o", str(out),
                       "--size", "128", env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    source = json.loads((out / "dataset.json").read_text())["sources"][0]
    assert source["path"] == "s3://scenes/small.tif"
    assert source["etag"] == head["ETag"].strip('"')
    assert source["size_bytes"] == head["ContentLength"]
    denied = _geotiler("tile", "s3://scenes/small.tif", "-f", str(footprints), "-o",
                       str(tmp_path / "t2"), env={**os.environ, **env,
                                                   "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert denied.returncode == 1
    lines = [line for line in denied.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, denied.stderr
    assert "s3://scenes/small.tif: access denied (HTTP 403)" in lines[0]
    assert "AWS_SECRET_ACCESS_KEY" in lines[0]

