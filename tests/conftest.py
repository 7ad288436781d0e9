"""Shared fixtures: databases of both kinds, a migrated store, a running broker."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import require
from tests.support.databases import database_url

# Hypothesis: the same examples on every run and no per-example deadline (a loaded 2-core CI
# machine is not a slow parser). HYPOTHESIS_PROFILE=dev explores with random seeds instead.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_required_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """A skip of a required component (BROKER_TEST_REQUIRE) fails the run."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    problem = require.skip_problem(_skip_reason(report))
    if problem:
        report.outcome = "failed"
        report.longrepr = problem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_required_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector
                               ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_required_skip(report)
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup``: the groups of tests/support/serial.py run one after another."""
    if config.getoption("dist") != "loadgroup":
        return None
    from tests.support.serial import make_scheduler

    return make_scheduler(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.support.serial import misplaced

    bad = misplaced(items, str(config.rootpath))
    if bad:
        raise pytest.UsageError(
            "these pcsc tests are outside tests/support/serial.py's pcsc folders, so "
            f"pytest-xdist could run them beside another card test: {', '.join(bad[:5])}")


@pytest.fixture(autouse=True, scope="session")
def _system_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In-process contexts built on built-in defaults use the system state folder (the key
    sealing the signing keys is made there): a folder of the test run's own, never the
    machine's /var/lib/smartcard-broker."""
    import broker.config

    mp = pytest.MonkeyPatch()
    mp.setattr(broker.config, "SYSTEM_STATE_DIR", tmp_path_factory.mktemp("system-state"))
    yield
    mp.undo()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test against SQLite and the real PostgreSQL (skipped when absent)."""
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per run; each test that wants a migrated SQLite
    database gets its own copy (the migrations cost ~0.2 s of CPU, the copy nothing)."""
    from tests.support.databases import migrated_sqlite_template

    return migrated_sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture
def migrated_url(db_url: str, request: pytest.FixtureRequest) -> str:
    from tests.support.databases import (
        clone_postgres_template,
        copy_sqlite_template,
        postgres_schema,
        sqlite_file,
    )

    target = sqlite_file(db_url)
    if target is not None and not target.exists():
        copy_sqlite_template(request.getfixturevalue("sqlite_template"), target)
    elif postgres_schema(db_url) is not None:
        clone_postgres_template(db_url)
    else:
        from broker.store import migrate

        migrate.upgrade(db_url)
    return db_url


@pytest.fixture
def database(migrated_url: str) -> Iterator[object]:
    from broker.store.db import Database

    db = Database(migrated_url)
    yield db
    db.dispose()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[object]:
    """Make (and always stop) broker processes: factory(db_url, extra_config="", **env)."""
    from tests.support.server import BrokerProcess, free_port

    made: list[BrokerProcess] = []

    def make(db_url: str, extra_config: str = "", workers: int = 1, start: bool = True,
             client_source: str | None = None, **env: str) -> BrokerProcess:
        base = tmp_path / f"broker{len(made)}"
        base.mkdir()
        bp = BrokerProcess(base, db_url, free_port(), free_port(), env=dict(env), workers=workers,
                           client_source=client_source)
        bp.write_config(extra_config)
        made.append(bp)
        if start:
            from broker.store import migrate

            migrate.upgrade(db_url)
            bp.start()
        return bp

    yield make
    for bp in made:
        bp.stop()


@pytest.fixture
def broker(broker_factory, migrated_url: str):  # type: ignore[no-untyped-def]
    """A running broker on the parametrised database (SQLite and PostgreSQL)."""
    return broker_factory(migrated_url)


@pytest.fixture
def world(broker, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The test world (PKI + directories) applied to the running ``broker``."""
    from tests.support.world import build_world

    return build_world(tmp_path / "world", broker)
