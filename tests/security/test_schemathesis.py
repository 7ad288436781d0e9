"""schemathesis against both OpenAPI documents of a running broker: no 5xx, every response
matches its documented status, content type and schema (a bounded number of examples)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import Secured

pytestmark = pytest.mark.slow

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
EXAMPLES = os.environ.get("BROKER_TEST_SCHEMATHESIS_EXAMPLES", "15")


def _st() -> str:
    exe = Path(sys.executable).with_name("st")
    if exe.exists():
        return str(exe)
    found = shutil.which("st")
    if found is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    return found


def _run(secured: Secured, url: str, token: str, tmp_path: Path) -> None:
    cmd = [_st(), "run", url, "--tls-verify", str(secured.broker.cafile),
           "--checks", CHECKS, "--max-examples", EXAMPLES, "--workers", "1",
           "--phases", "examples,coverage,fuzzing", "--generation-deterministic",
           "-H", f"Authorization: Bearer {token}", "--request-timeout", "20",
           "--suppress-health-check", "all"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    import re

    tested = re.search(r"Tested: (\d+)", out)
    generated = re.search(r"(\d+) generated", out)
    assert tested and int(tested.group(1)) >= 10, out[-3000:]
    assert generated and int(generated.group(1)) >= 100, out[-3000:]


def test_client_api_conforms_and_never_fails(secured: Secured, tmp_path: Path) -> None:
    from tests.support.softcard import SoftClient

    r = SoftClient(secured.client(), secured.world.codes["corp"]).login(
        secured.world.cards["bob"])
    assert r.status == 200, r.body
    url = f"https://127.0.0.1:{secured.broker.port}/v1/openapi.json"
    _run(secured, url, r.body["auth_token"], tmp_path)


def test_admin_api_conforms_and_never_fails(secured: Secured, tmp_path: Path) -> None:
    out = secured.broker.run_cli("admin", "token", "create", "--name", "fuzz", "--scope",
                                 "write", "--json")
    token = json.loads(out.stdout)["token"]
    url = f"https://127.0.0.1:{secured.broker.admin_port}/admin/v1/openapi.json"
    _run(secured, url, token, tmp_path)
