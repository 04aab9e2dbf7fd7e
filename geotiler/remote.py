"""Rasters over HTTP(S) and S3: GDAL paths, one-line errors, and a source's identity.

Why: imagery is published as cloud-optimized GeoTIFFs over HTTPS (OpenAerialMap, most
providers) or kept in S3-compatible object stores. GDAL reads them in place through
``/vsicurl/`` and ``/vsis3/``, fetching only the byte ranges of the blocks (or overview
blocks) a window needs, so tiling or predicting on a remote COG never downloads it whole.

How: ``https://``/``http://`` URLs become ``/vsicurl/URL`` and ``s3://bucket/key`` becomes
``/vsis3/bucket/key`` (:func:`gdal_path`); paths already in either form are kept. GDAL is
configured the GDAL way, by environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``,
``GDAL_HTTP_TIMEOUT``, ... see the README), which every worker process inherits.
GDAL's error for a failed request is turned into one line naming the URL, the HTTP status
and the fix (:func:`remote_error`). A remote source is identified in ``dataset.json`` by its
URL, size and ETag from one ``HEAD`` request (:func:`stat_remote`; S3 requests are signed
with AWS Signature V4 from the same variables), never by hashing its bytes.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import hmac
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from geotiler.errors import InputError

URL_SCHEMES = ("http://", "https://", "s3://")
VSI_PREFIXES = ("/vsicurl/", "/vsis3/")
DEFAULT_HTTP_TIMEOUT_S = 30.0  # HEAD requests, when GDAL_HTTP_TIMEOUT is not set


def is_remote(path: Path | str) -> bool:
    """Whether ``path`` is a URL (http, https, s3) or a GDAL ``/vsicurl/``/``/vsis3/`` path."""
    return isinstance(path, str) and path.startswith(URL_SCHEMES + VSI_PREFIXES)


def gdal_path(path: str) -> str:
    """The GDAL path of a remote raster: ``/vsicurl/https://...`` or ``/vsis3/bucket/key``.

    Raises InputError for an ``s3://`` URL without a key.
    """
    if path.startswith(VSI_PREFIXES):
        return path
    if path.startswith("s3://"):
        bucket, _, key = path[len("s3://"):].partition("/")
        if not bucket or not key:
            raise InputError(f"{path}: give s3://BUCKET/KEY")
        return f"/vsis3/{bucket}/{key}"
    return f"/vsicurl/{path}"


def url_of(path: str) -> str:
    """The URL a user would write for a remote GDAL path (inverse of :func:`gdal_path`)."""
    if path.startswith("/vsis3/"):
        return "s3://" + path[len("/vsis3/"):]
    if path.startswith("/vsicurl/"):
        return path[len("/vsicurl/"):]
    return path


def remote_stem(path: str) -> str:
    """The file name's stem of a remote path (``.../scene.tif?x=1`` -> ``scene``)."""
    name = PurePosixPath(urllib.parse.urlsplit(url_of(path)).path).name
    return name.split(".")[0] if name else "remote"


def remote_error(path: str, message: str) -> InputError:
    """GDAL's message about a failed remote read as one line with the status and the fix."""
    url = url_of(path)
    text = message.strip().splitlines()[0] if message.strip() else "unknown error"
    lower = text.lower()
    if "403" in text or "signature" in lower or "access denied" in lower:
        hint = ("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_NO_SIGN_REQUEST=YES "
                "for a public bucket)" if path.startswith(("s3://", "/vsis3/"))
                else "the server refuses access; check the URL's token or GDAL_HTTP_HEADERS")
        return InputError(f"raster {url}: access denied (HTTP 403); {hint}")
    if "404" in text or "does not exist" in lower or "no such" in lower:
        status = "HTTP 404" if "404" in text else text
        return InputError(f"raster {url}: not found ({status}); check the URL")
    if "timed out" in lower or "timeout" in lower:
        return InputError(f"raster {url}: timed out ({text}); raise GDAL_HTTP_TIMEOUT "
                          "(seconds) or check the network")
    if "curl error" in lower or "could not resolve" in lower or "connect" in lower:
        return InputError(f"raster {url}: cannot connect ({text})")
    return InputError(f"raster {url} cannot be read: {text}")


@dataclass(frozen=True)
class RemoteStat:
    """What identifies a remote file without reading it: URL, size in bytes, ETag."""

    url: str
    size: int | None
    etag: str | None

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "size": self.size, "etag": self.etag}


def stat_remote(path: str) -> RemoteStat:
    """URL, size and ETag of a remote file from one ``HEAD`` request (nothing downloaded).

    S3 paths are signed (AWS Signature V4) with ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (or ``~/.aws/credentials``), sent to ``AWS_S3_ENDPOINT`` as GDAL would. Raises
    InputError (one line, :func:`remote_error`) when the server answers with an error or
    cannot be reached.
    """
    url = url_of(path)
    if url.startswith("s3://"):
        request = _s3_head_request(url)
    else:
        request = urllib.request.Request(url, method="HEAD")
    timeout = float(os.environ.get("GDAL_HTTP_TIMEOUT") or DEFAULT_HTTP_TIMEOUT_S)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            size = response.headers.get("Content-Length")
            etag = response.headers.get("ETag")
    except urllib.error.HTTPError as err:
        raise remote_error(path, f"HTTP response code: {err.code}") from None
    except TimeoutError as err:
        raise remote_error(path, f"timed out after {timeout:g} s ({err})") from None
    except (urllib.error.URLError, OSError) as err:
        raise remote_error(path, f"curl error: connect failed ({err})") from None
    return RemoteStat(url, int(size) if size is not None else None,
                      etag.strip('"') if etag else None)


def _s3_head_request(url: str) -> urllib.request.Request:
    """A signed HEAD request for ``s3://bucket/key``, addressed as GDAL's /vsis3/ would."""
    bucket, _, key = url[len("s3://"):].partition("/")
    endpoint = os.environ.get("AWS_S3_ENDPOINT", "s3.amazonaws.com")
    scheme = "http" if os.environ.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "OFF",
                                                                      "0") else "https"
    endpoint = endpoint.split("://", 1)[-1].rstrip("/")
    virtual = os.environ.get("AWS_VIRTUAL_HOSTING", "TRUE").upper() in ("TRUE", "YES", "ON",
                                                                        "1")
    quoted = urllib.parse.quote(key, safe="/-_.~")
    if virtual and "." not in bucket:
        host, path = f"{bucket}.{endpoint}", f"/{quoted}"
    else:
        host, path = endpoint, f"/{bucket}/{quoted}"
    headers = {"Host": host}
    if os.environ.get("AWS_NO_SIGN_REQUEST", "NO").upper() not in ("YES", "TRUE", "ON", "1"):
        key_id, secret, token = _credentials()
        if key_id and secret:
            region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                      or "us-east-1")
            headers.update(sign_v4("HEAD", host, path, region, key_id, secret, token))
    return urllib.request.Request(f"{scheme}://{host}{path}", method="HEAD", headers=headers)


def _credentials() -> tuple[str | None, str | None, str | None]:
    """AWS credentials from the environment, else from ``~/.aws/credentials`` (AWS_PROFILE)."""
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return key_id, secret, os.environ.get("AWS_SESSION_TOKEN")
    file = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE",
                               Path.home() / ".aws" / "credentials"))
    parser = configparser.ConfigParser()
    if file.is_file():
        parser.read(file)
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    if parser.has_section(profile):
        section = parser[profile]
        return (section.get("aws_access_key_id"), section.get("aws_secret_access_key"),
                section.get("aws_session_token"))
    return None, None, None


def sign_v4(method: str, host: str, path: str, region: str, key_id: str, secret: str,
            token: str | None = None, now: dt.datetime | None = None) -> dict[str, str]:
    """AWS Signature V4 headers of a body-less S3 request (``path`` already URL-quoted)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical = "\n".join([method, path, "", *(f"{n}:{headers[n]}" for n in names), "",
                           ";".join(names), payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = {k: v for k, v in headers.items() if k != "host"}
    result["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return result
