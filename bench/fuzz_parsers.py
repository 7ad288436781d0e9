#!/usr/bin/env python3
"""The long fuzzing run over every parser of outside input (tests/fuzz/targets.py).

With atheris installed (``pip install atheris``) each target runs under coverage-guided
libFuzzer in its own process, starting from the target's valid seed; otherwise hypothesis runs
random and mutated inputs for the same time. Every crash is written to
tests/fuzz/crashes/<target>-<sha>.hex, which tests/fuzz/test_parsers.py replays in CI: fix the
parser, keep the file.

    python bench/fuzz_parsers.py                     # 60 s per target, every target
    python bench/fuzz_parsers.py --seconds 600 certificate ocsp_response
    python bench/fuzz_parsers.py --engine hypothesis

Prints one line per target: engine, executions, executions/s, crashes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CRASHES = REPO / "tests" / "fuzz" / "crashes"
sys.path.insert(0, str(REPO))


def save_crash(name: str, data: bytes) -> Path:
    CRASHES.mkdir(parents=True, exist_ok=True)
    path = CRASHES / f"{name}-{hashlib.sha256(data).hexdigest()[:12]}.hex"
    path.write_text(data.hex() + "\n")
    return path


# --------------------------------------------------------------------------- atheris

def atheris_child(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["broker"]):
        from tests.fuzz import targets
    target = targets.TARGETS[name]
    atheris.Setup([sys.argv[0], *libfuzzer_args], lambda data: target(bytes(data)))
    atheris.Fuzz()


def run_atheris(name: str, seconds: int) -> tuple[int, int]:
    """(executions, crashes) of one libFuzzer run in a child process."""
    from tests.fuzz import targets

    with tempfile.TemporaryDirectory() as tmp:
        corpus, artifacts = Path(tmp) / "corpus", Path(tmp) / "artifacts"
        corpus.mkdir()
        artifacts.mkdir()
        (corpus / "seed").write_bytes(targets.seeds()[name])
        proc = subprocess.run(
            [sys.executable, __file__, "--atheris-child", name, f"-max_total_time={seconds}",
             f"-artifact_prefix={artifacts}/", "-max_len=8192", "-print_final_stats=1",
             str(corpus)], capture_output=True, text=True, timeout=seconds + 120)
        execs = 0
        for line in proc.stderr.splitlines():
            if line.startswith("stat::number_of_executed_units:"):
                execs = int(line.split(":")[-1])
        crashes = 0
        for artifact in artifacts.iterdir():
            crashes += 1
            data = artifact.read_bytes()
            print(f"  crash in {name}: {save_crash(name, data)}")
            try:  # replay it here for a readable traceback
                targets.run(name, data)
                print("  (does not reproduce outside libFuzzer)")
            except Exception:
                traceback.print_exc(limit=-4)
        if proc.returncode != 0 and not crashes:
            print(f"  libFuzzer exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        return execs, crashes


# --------------------------------------------------------------------------- hypothesis

def run_hypothesis(name: str, seconds: int) -> tuple[int, int]:
    from hypothesis import HealthCheck, given, settings

    from tests.fuzz import targets
    from tests.fuzz.test_parsers import inputs

    execs = 0
    failing: list[bytes] = []

    def checked(data: bytes) -> None:
        nonlocal execs
        execs += 1
        try:
            targets.run(name, data)
        except Exception:
            failing.append(data)
            raise

    @settings(max_examples=500, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs(name))
    def batch(data: bytes) -> None:
        checked(data)

    deadline = time.monotonic() + seconds
    crashes = 0
    while time.monotonic() < deadline and crashes < 5:
        try:
            batch()
        except Exception:
            crashes += 1
            where = save_crash(name, failing[-1])
            print(f"  crash in {name}: {where}")
            traceback.print_exc(limit=-4)
            failing.clear()
    return execs, crashes


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--atheris-child":
        atheris_child(sys.argv[2], sys.argv[3:])
        return 0
    from tests.fuzz import targets

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(targets.TARGETS)}")
    ap.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    ap.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    args = ap.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    names = args.targets or list(targets.TARGETS)
    unknown = set(names) - set(targets.TARGETS)
    if unknown:
        ap.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    total = 0
    print(f"fuzzing {len(names)} target(s), {args.seconds} s each, engine {engine} "
          f"(pid {os.getpid()})")
    for name in names:
        started = time.monotonic()
        execs, crashes = (run_atheris if engine == "atheris" else run_hypothesis)(
            name, args.seconds)
        took = time.monotonic() - started
        total += crashes
        print(f"{name:30s} {engine:10s} {execs:9d} execs {execs / took:8.0f}/s "
              f"{crashes} crash(es)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
