"""An operator's extra packages: a requirements file the image build turns into wheels on the
host and installs offline, in an image of its own tag, built by the real build script."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import docker
import pytest

from actioncage import create_app
from tests.conftest import SESSION, make_settings, sandbox_subject

pytestmark = [pytest.mark.docker, sandbox_subject]

REPO = Path(__file__).resolve().parents[2]


def _wheel(where: Path) -> Path:
    """A tiny pure-Python wheel, built here: no index is needed to install it."""
    files = {
        "greetpkg/__init__.py": "def greet(name):\n    return 'hello ' + name\n",
        "greetpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greetpkg\nVersion: 1.0\n",
        "greetpkg-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("greetpkg-1.0.dist-info/RECORD,,")
    path = where / "greetpkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("greetpkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_extra_requirements_are_installed_offline_and_change_the_digest(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    requirements = tmp_path / "extra-requirements.txt"
    requirements.write_text(f"# the operator's packages\n{_wheel(tmp_path)}\n")
    tag = f"actioncage-sandbox:test-extra-{SESSION}"
    digest_file = REPO / "var" / "sandbox-image.digest"
    recorded = digest_file.read_text() if digest_file.exists() else None
    env = {
        **os.environ,
        "ACTIONCAGE_SANDBOX_IMAGE": tag,
        "ACTIONCAGE_SANDBOX_REQUIREMENTS": str(requirements),
    }
    try:
        out = subprocess.run(
            ["bash", str(REPO / "sandbox-image" / "build.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr
        built = out.stdout.strip().splitlines()[-1]
        labels = docker_client.images.get(tag).labels
        want = hashlib.sha256(requirements.read_bytes()).hexdigest()
        assert labels["io.actioncage.extra-requirements-sha256"] == want
        assert built != docker_client.images.get("actioncage-sandbox:latest").id

        app = create_app(make_settings(tmp_path, sandbox_image=tag))
        try:
            client = app.test_client()
            headers = {"Authorization": "Bearer test-key-org-default"}
            code = (
                "import greetpkg\ndef execute_action(context):\n    return greetpkg.greet('Ada')\n"
            )
            made = client.post("/v1/actions", json={"name": "g", "code": code}, headers=headers)
            run = client.post("/v1/actions/g/execute", json={}, headers=headers).get_json()
            assert made.status_code == 201 and run["status"] == "ok", run
            assert run["output"] == "hello Ada" and run["imageDigest"] == built
        finally:
            app.extensions["actioncage"].close()
    finally:
        if recorded is not None:
            digest_file.write_text(recorded)
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)
