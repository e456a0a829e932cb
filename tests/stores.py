"""Real storage back ends for tests: an S3-compatible server, tiny and read-only file systems.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["stores"]``.

Why a real server and not a mock of the client: what can go wrong with object
storage happens on the wire and between processes -- a `batchscore`
subprocess that only has environment variables to find the store, a
conditional PUT (``If-None-Match: *``) refused with HTTP 412, a multipart
upload left pending when the writer is SIGKILLed, listings that must not show
half-written objects.  A patched client (``moto.mock_aws``, ``unittest.mock``)
lives inside the test process: it cannot be reached by a subprocess, dies with
whatever the test kills, and answers whatever the mock was told to.  So
``s3_server`` runs moto's S3 server as a separate process on 127.0.0.1 and
everything -- s3fs, boto3, polars, the CLI -- talks HTTP to it.

Likewise ``small_fs`` / ``readonly_fs`` are real kernel mounts (tmpfs), so
ENOSPC and EROFS come from the kernel; as root, chmod cannot make a folder
unwritable, a read-only mount can.

Fixtures
--------
s3_server   (session) S3Server: .endpoint, .env, .subprocess_env(), .client()
s3_bucket   (function) name of a fresh, empty bucket on that server
s3_fs       (function) s3fs.S3FileSystem on that server, no listings cache
mount_tmpfs (function) factory: mount_tmpfs(size="2m", readonly=False, files=None) -> Path
small_fs    (function) Path of a 2 MiB tmpfs; size via indirect parametrization
readonly_fs (function) Path of a read-only tmpfs
Helpers: s3fs_for(server), pending_uploads(server, bucket)
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["S3Server", "s3fs_for", "pending_uploads"]

REGION = "us-east-1"
KEY_ID = "testing"
SECRET = "testing"
# Credentials / profiles from the developer's machine must not leak into tests.
_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL_S3",
)


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server (moto, separate process)."""

    endpoint: str  # http://127.0.0.1:PORT
    env: dict = field(repr=False)  # env vars that point s3fs / boto3 / polars at it
    pid: int = 0
    log: Path | None = None
    unset: tuple = _UNSET  # env vars removed for the session

    def subprocess_env(self, base: dict | None = None, **extra: str) -> dict:
        """`base` (default os.environ) + self.env + extra, minus the unset names; for subprocess.run(env=...)."""
        env = dict(os.environ if base is None else base)
        for name in self.unset:
            env.pop(name, None)
        env.update(self.env)
        env.update(extra)
        return env

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=REGION
        )


def s3fs_for(server: S3Server, **kwargs):
    """A fresh s3fs.S3FileSystem on `server`: not the cached instance, no listings cache
    (a subprocess may have written since the last listing)."""
    import s3fs

    opts = dict(
        endpoint_url=server.endpoint,
        key=KEY_ID,
        secret=SECRET,
        client_kwargs={"region_name": REGION},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    opts.update(kwargs)
    return s3fs.S3FileSystem(**opts)


def pending_uploads(server: S3Server, bucket: str) -> list[str]:
    """Keys of multipart uploads started but neither completed nor aborted."""
    return [u["Key"] for u in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _clear_s3fs_cache() -> None:
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


def _start_moto(log: Path, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Run `python -m moto.server` on a kernel-chosen port; return (process, endpoint) once it answers."""
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    out = open(log, "wb")  # a file, not a pipe: werkzeug logs every request and a full pipe would stall it
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )  # own process group: killpg on a test's child spares it
    out.close()
    deadline = time.monotonic() + timeout
    endpoint = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if endpoint is None:
            m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            endpoint = m.group(1) if m else None
        if endpoint is not None:
            try:
                with urllib.request.urlopen(endpoint + "/", timeout=2) as resp:
                    if resp.status == 200:
                        return proc, endpoint
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"moto server did not answer within {timeout:.0f}s:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server in its own process; for the session, os.environ points s3fs/boto3 at it.

    In-process, ``fsspec.filesystem("s3")`` / ``url_to_fs("s3://...")`` reach it (via AWS_ENDPOINT_URL and
    fsspec's config); a subprocess gets the same through the inherited environment, or pass
    ``env=s3_server.subprocess_env()``.
    """
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        pytest.skip("moto[server] is not installed")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc, endpoint = _start_moto(log)
    env = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        # botocore >= 1.31 (so aiobotocore -> s3fs) and object_store (polars) read this:
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",  # object_store (polars) - plain http endpoint
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,  # ignore ~/.aws
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # fsspec config: S3FileSystem(endpoint_url=...) default; read at `import fsspec` (so: subprocesses)
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }
    server = S3Server(endpoint=endpoint, env=env, pid=proc.pid, log=log)

    saved = {name: os.environ.get(name) for name in (*env, *_UNSET)}
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(env)
    # fsspec read FSSPEC_* when it was imported, which may have been before now: set its config directly.
    try:
        import fsspec.config
    except ImportError:
        conf_s3 = None
    else:
        conf_s3 = fsspec.config.conf.get("s3")
        fsspec.config.conf["s3"] = {**(conf_s3 or {}), "endpoint_url": endpoint}
    _clear_s3fs_cache()  # an instance made earlier would talk to real AWS
    try:
        yield server
    finally:
        _clear_s3fs_cache()
        if "fsspec.config" in sys.modules:
            import fsspec.config

            if conf_s3 is None:
                fsspec.config.conf.pop("s3", None)
            else:
                fsspec.config.conf["s3"] = conf_s3
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _stop(proc)


@pytest.fixture
def s3_bucket(s3_server):
    """Name of a fresh, empty bucket ("b-<hex>"); emptied and deleted afterwards (best effort)."""
    name = f"b-{uuid.uuid4().hex[:20]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    _clear_s3fs_cache()  # no stale listings from a cached instance
    yield name
    try:
        for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)
    except Exception:  # the server is torn down at session end anyway
        pass


@pytest.fixture
def s3_fs(s3_server):
    """s3fs.S3FileSystem on the test server (fresh instance, no listings cache)."""
    pytest.importorskip("s3fs")
    return s3fs_for(s3_server)


# --------------------------------------------------------------------------- mounts


def _mount_skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts need Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not found"
    return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _umount(path: Path) -> None:
    if _run(["umount", str(path)]).returncode != 0:
        _run(["umount", "-l", str(path)])  # busy (a child still has it open): detach lazily


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Factory: ``mount_tmpfs(size="2m", readonly=False, files=None) -> Path`` mounts a tmpfs of `size`
    (bytes as int, or tmpfs syntax "512k", "2m") on a fresh folder under tmp_path; `files` ({relpath: bytes|str})
    is written before a read-only remount. All mounts are undone in teardown, even when the test fails.
    Skips the test when mounting is impossible (not root, no CAP_SYS_ADMIN, not Linux)."""
    mounted: list[Path] = []

    def mount(size="2m", readonly=False, files=None) -> Path:
        reason = _mount_skip_reason()
        if reason:
            pytest.skip(reason)
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        res = _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)])
        if res.returncode != 0:
            pytest.skip(f"cannot mount tmpfs: {(res.stderr or res.stdout).strip()}")
        mounted.append(point)
        for rel, data in (files or {}).items():
            target = point / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.encode() if isinstance(data, str) else data)
        if readonly:
            res = _run(["mount", "-o", "remount,ro", str(point)])
            if res.returncode != 0:
                pytest.skip(f"cannot remount tmpfs read-only: {(res.stderr or res.stdout).strip()}")
        return point

    yield mount
    for point in reversed(mounted):
        _umount(point)


@pytest.fixture
def small_fs(request, mount_tmpfs):
    """Path of a small tmpfs (2 MiB). Other sizes:
    ``@pytest.mark.parametrize("small_fs", ["512k"], indirect=True)``."""
    return mount_tmpfs(getattr(request, "param", "2m"))


@pytest.fixture
def readonly_fs(request, mount_tmpfs):
    """Path of a read-only tmpfs (writes fail with EROFS, also for root). Pre-populate with
    ``@pytest.mark.parametrize("readonly_fs", [{"in.csv": "text\\nhi\\n"}], indirect=True)``."""
    return mount_tmpfs("1m", readonly=True, files=getattr(request, "param", None))
