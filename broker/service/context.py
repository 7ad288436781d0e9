"""What every use case needs: settings, the store, the region catalogue, a clock.

Use cases are plain blocking functions (no Twisted): the web layer runs them in the thread pool
with :meth:`BrokerContext.call`, so the reactor thread never waits on the database, a CRL fetch
or a big certificate chain.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from broker.config import Settings
from broker.store.db import Database

if TYPE_CHECKING:
    from broker.pki.revocation import RevocationCache
    from broker.regions import RegionCatalogue
    from broker.service.ldapdir import LdapDirectories
    from broker.service.tickets import KeyRing
    from broker.service.trust import TrustCache

T = TypeVar("T")


def system_clock() -> datetime:
    return datetime.now(UTC)


class BrokerContext:
    def __init__(self, settings: Settings, *, database: Database | None = None,
                 clock: Callable[[], datetime] = system_clock) -> None:
        self.settings = settings
        self.db = database or Database(settings.database_url,
                                       pool_size=settings.database.pool_size,
                                       retries=settings.database.retries)
        self.clock = clock
        self.threadpool: Any = None
        #: Functions run periodically (in the thread pool) by the sweeper timer.
        self.sweepers: list[Callable[[], object]] = []

    @cached_property
    def catalogue(self) -> RegionCatalogue:
        from broker.regions import RegionCatalogue

        return RegionCatalogue.load(self.settings.catalogue_path)

    # Per-process services, built on first use and kept for the life of the process.
    @cached_property
    def trust(self) -> TrustCache:
        """Per-directory trust snapshots, issuers and stores, invalidated by version."""
        from broker.service.trust import TrustCache

        return TrustCache()

    @cached_property
    def ldap(self) -> LdapDirectories:
        """LDAP-backed directories: connection pools, the answer cache, each one's health."""
        from broker.service.ldapdir import LdapDirectories

        return LdapDirectories()

    @cached_property
    def revocation_cache(self) -> RevocationCache:
        """CRLs fetched from distribution points and OCSP answers, kept to nextUpdate."""
        from broker.pki.revocation import RevocationCache

        return RevocationCache()

    @cached_property
    def keyring(self) -> KeyRing:
        """The ticket and assertion signing key (one current key shared by all processes)."""
        from broker.service.tickets import KeyRing

        s = self.settings
        return KeyRing(timedelta(days=s.sessions.signing_key_rotation_days),
                       timedelta(seconds=max(s.login.ticket_ttl_s, 600)),
                       sealing_key=lambda: self.sealing_key,
                       recheck=timedelta(seconds=s.keys.ring_recheck_s))

    @cached_property
    def sealing_key(self) -> bytes:
        """The key sealing the signing keys at rest (made in the state folder when none is
        configured; see :mod:`broker.keys_at_rest`)."""
        from broker.keys_at_rest import load_key

        return load_key(self.settings)

    def now(self) -> datetime:
        return self.clock()

    def start_threadpool(self) -> None:
        """Create the pool blocking work runs in; stopped with the reactor."""
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        from twisted.python.threadpool import ThreadPool

        if self.threadpool is not None:
            return
        pool = ThreadPool(minthreads=1, maxthreads=self.settings.server.threadpool_size,
                          name="broker-blocking")
        pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        self.threadpool = pool

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Any:
        """Run blocking ``fn`` in the thread pool; returns a Deferred with its result."""
        from twisted.internet import reactor as _reactor
        from twisted.internet import threads

        reactor: Any = _reactor

        if self.threadpool is None:
            return threads.deferToThread(fn, *args, **kwargs)
        return threads.deferToThreadPool(reactor, self.threadpool, fn, *args, **kwargs)
