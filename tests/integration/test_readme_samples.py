"""The README's "Operator's session" is run as written: every `$ broker …` line of the sample,
with /etc/smartcard-broker and /var/lib/smartcard-broker moved under a temporary folder, must
print what the README shows (dates, durations, ports and "…" match anything; runs of spaces are
one; revisions, counts and names must be exact).
So the README cannot drift from the CLI (it once showed migration head 0003 at 0007)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.support.server import REPO, free_port

ETC, VAR = "/etc/smartcard-broker", "/var/lib/smartcard-broker"


def operator_session() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of each `$ …` line of the README's console block."""
    text = (REPO / "README.md").read_text()
    block = text.split("### Operator's session", 1)[1].split("```console\n", 1)[1]
    block = block.split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


#: What may differ between the README and a run: dates and times, durations, ports.
VARIABLE = re.compile(r"(\d{4}-\d\d-\d\d(?: \d\d:\d\d(?::\d\d)?Z?)?|\d+(?:\.\d+)? "
                      r"(?:days|hours)|(?<=tcp:)\d+)")


def pattern(line: str) -> re.Pattern[str]:
    """The README line as a regex: "…" matches anything, VARIABLE parts their kind; the rest
    (revisions, counts, names) exactly, runs of spaces as one."""
    out = []
    for i, part in enumerate(VARIABLE.split(line.strip())):
        if i % 2:
            out.append(r".+?")
            continue
        for piece in re.split(r"(…|\s+)", part):
            if piece == "…":
                out.append(".*")
            elif piece.isspace():
                out.append(r"\s+")
            else:
                out.append(re.escape(piece))
    return re.compile("".join(out))


def write_pki(etc: Path) -> None:
    from broker.pki import issue

    now = datetime.now(UTC)
    root = issue.make_root("Corp Root CA", not_after=now + timedelta(days=1825))
    (etc / "pki").mkdir()
    (etc / "pki" / "root.pem").write_bytes(root.cert_pem())
    (etc / "pki" / "root.crl.pem").write_bytes(issue.make_crl(root, []).public_bytes(
        serialization.Encoding.PEM))
    tls = issue.make_intermediate(root, "broker.example", not_after=now + timedelta(days=365))
    (etc / "tls").mkdir()
    (etc / "tls" / "broker.pem").write_bytes(tls.cert_pem())
    (etc / "tls" / "broker.key").write_bytes(tls.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (etc / "tls" / "broker.key").chmod(0o600)  # as an operator installs it
    (etc / "directories.toml").write_text(
        '[[directory]]\nid = "corp"\nname = "Corp"\nregion = "us-gov-west-1"\n'
        'smart_card = { pre_session = true, in_session = true }\n'
        'revocation = { crl = true, ocsp = false, fail_mode = "soft" }\n'
        'trust_anchors = ["pki/root.pem"]\ncrls = ["pki/root.crl.pem"]\n')


def test_operator_session_prints_what_the_readme_shows(tmp_path: Path) -> None:
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir(mode=0o700)  # systemd's StateDirectoryMode is stricter still
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    # Plumbing the sample does not show: the state folder (/var/lib under a real /etc) and
    # ports nobody else uses.
    env.update(PYTHONPATH=str(REPO), BROKER_SERVER_STATE_DIR=str(var),
               BROKER_SERVER_LISTEN=f"tcp:{free_port()}",
               BROKER_SERVER_ADMIN_LISTEN=f"tcp:{free_port()}:interface=127.0.0.1")

    def here(text: str) -> str:
        return text.replace(ETC, str(etc)).replace(VAR, str(var))

    def there(text: str) -> str:
        return text.replace(str(etc), ETC).replace(str(var), VAR)

    ran = 0
    for command, expected in operator_session():
        words = shlex.split(command, comments=True)
        if words[0] == "export":
            name, value = words[1].split("=", 1)
            env[name] = here(value)
            continue
        if words[0] != "broker":
            continue  # systemctl, curl: a real host's part
        if words[1:3] == ["admin", "apply"]:
            write_pki(etc)
        proc = subprocess.run([sys.executable, "-m", "broker.cli", *map(here, words[1:])],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
        assert proc.stderr == "", f"$ {command}\n{proc.stderr}"
        actual = there(proc.stdout).splitlines()
        assert len(actual) == len(expected), \
            f"$ {command}: README shows\n" + "\n".join(expected) + "\nbut it prints\n" + \
            "\n".join(actual)
        for want, got in zip(expected, actual, strict=True):
            assert pattern(want).fullmatch(got.strip()), \
                f"$ {command}\nREADME: {want}\ngot:    {got}"
        if words[1] == "config":  # the sample's tls paths exist only under the test's etc/
            cfg = Path(env["BROKER_CONFIG"])
            cfg.write_text(here(cfg.read_text()))
        ran += 1
    assert ran >= 4, "the README's operator session lost its broker commands"
