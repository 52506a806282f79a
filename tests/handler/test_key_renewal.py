"""``python -m handler.client`` keeps working after the server's key expires, with no user action.

The ``project_server`` of tests/conftest.py is a real TorchServe started by ``handler.serve start``
(what `make serve` runs) with 1-minute keys. Once the key has expired (checked: the server
refuses it), the client gets TorchServe's ``InvalidKeyException``, makes a new inference key with
the key file's API key (``POST /token``), which TorchServe writes into the key file, and sends the
request again. The plug-in's side of the same test is tests/gimp/test_gimp_zero_config.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from handler.client import Client, ClientError
from tests.conftest import REPO, wait_for_key_expiry
from tests.handler import images

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def test_the_client_renews_an_expired_key_by_itself(project_server, tmp_path: Path) -> None:
    """Four photos through two threads after the key expired: all succeed, the key file holds a new key,
    and nothing the user sees mentions the key (two threads renewing at once would invalidate each
    other's new key: only one may make it)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        images.subject_photo(seed=i).save(photos / f"p{i}.png")
    expired = wait_for_key_expiry(project_server)
    # no --url/--model: the client reads them from server.json beside the key file
    proc = subprocess.run([sys.executable, "-m", "handler.client", str(photos), "--out", str(tmp_path / "out"),
                           "--mode", "mask", "--jobs", "2", "--key-file", str(project_server.key_file)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "4 done, 0 skipped, 0 failed" in proc.stderr
    assert "key" not in proc.stderr.lower(), proc.stderr
    for i in range(4):
        with Image.open(tmp_path / "out" / f"p{i}.png") as mask:
            assert mask.mode == "L" and mask.size == images.SUBJECT_SIZE
    assert project_server.inference_key != expired


def test_a_typed_key_is_not_renewed_and_the_message_says_how(project_server) -> None:
    key_file_before = project_server.key_file.read_bytes()
    client = Client(project_server.inference_url, key="not-the-key", key_file=None, timeout=120)
    with pytest.raises(ClientError) as failure:
        client.process(images.encode(images.subject_photo()), mode="mask")
    message = str(failure.value)
    assert failure.value.status == 400 and "Token Authorization failed" in message
    assert "leave --key out" in message and "handler.serve key" in message
    assert project_server.key_file.read_bytes() == key_file_before  # no renewal behind a typed key
