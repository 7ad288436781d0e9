"""The region catalogue (config/regions.toml) as typed, validated data. Pure: no I/O but the read.

A bad catalogue is one :class:`RegionCatalogueError` naming the file, the region and the key.
Invariant checked on load: smart cards (pre- or in-session) require WSP in that region.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.codes import Code
from broker.errors import BrokerError

PREFIX_RE = re.compile(r"^[A-Za-z]{2,12}$")
_BOOL_KEYS = ("wsp", "pcoip", "smart_card_pre_session", "smart_card_in_session")
_KEYS = ("name", "prefix", *_BOOL_KEYS)


class RegionCatalogueError(BrokerError):
    code = Code.CONFIG_INVALID


@dataclass(frozen=True)
class RegionEntry:
    id: str
    name: str
    prefix: str
    wsp: bool
    pcoip: bool
    smart_card_pre_session: bool
    smart_card_in_session: bool


class RegionCatalogue:
    """Regions by id and by registration-code prefix (case-insensitive)."""

    def __init__(self, entries: list[RegionEntry], source: str = "<catalogue>") -> None:
        self.source = source
        self._by_id = {e.id: e for e in entries}
        self._by_prefix: dict[str, RegionEntry] = {}
        for e in entries:
            key = e.prefix.lower()
            if key in self._by_prefix:
                raise RegionCatalogueError(
                    message=f"{source}: region {e.id!r} prefix {e.prefix!r} is already used by "
                            f"{self._by_prefix[key].id!r}", details={"region": e.id})
            self._by_prefix[key] = e

    @classmethod
    def load(cls, path: str | Path) -> RegionCatalogue:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegionCatalogueError(message=f"region catalogue not found: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RegionCatalogueError(message=f"cannot read region catalogue {p}: {exc}") \
                from None
        except tomllib.TOMLDecodeError as exc:
            raise RegionCatalogueError(message=f"{p}: not valid TOML: {exc}") from None
        return cls.from_dict(data, str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<catalogue>") -> RegionCatalogue:
        unknown = set(data) - {"region"}
        if unknown:
            raise RegionCatalogueError(message=f"{source}: unknown top-level key "
                                               f"{sorted(unknown)[0]!r} (expected [region.<id>])")
        regions = data.get("region")
        if not isinstance(regions, dict) or not regions:
            raise RegionCatalogueError(message=f"{source}: no [region.<id>] tables")
        entries = []
        for rid, table in regions.items():
            where = f"{source}: region {rid!r}"
            if not isinstance(table, dict):
                raise RegionCatalogueError(message=f"{where} must be a table")
            extra = set(table) - set(_KEYS)
            if extra:
                raise RegionCatalogueError(message=f"{where}: unknown key {sorted(extra)[0]!r}",
                                           details={"region": rid, "key": sorted(extra)[0]})
            for key in _KEYS:
                if key not in table:
                    raise RegionCatalogueError(message=f"{where}: missing key {key!r}",
                                               details={"region": rid, "key": key})
            for key in _BOOL_KEYS:
                if not isinstance(table[key], bool):
                    raise RegionCatalogueError(
                        message=f"{where} key {key!r} must be true or false",
                        details={"region": rid, "key": key})
            for key in ("name", "prefix"):
                if not isinstance(table[key], str) or not table[key].strip():
                    raise RegionCatalogueError(message=f"{where} key {key!r} must be a string",
                                               details={"region": rid, "key": key})
            if not PREFIX_RE.match(table["prefix"]):
                raise RegionCatalogueError(
                    message=f"{where} key 'prefix' must be 2-12 letters, not "
                            f"{table['prefix']!r}", details={"region": rid, "key": "prefix"})
            if (table["smart_card_pre_session"] or table["smart_card_in_session"]) \
                    and not table["wsp"]:
                raise RegionCatalogueError(
                    message=f"{where}: smart cards need WSP (wsp = false)",
                    details={"region": rid, "key": "wsp"})
            entries.append(RegionEntry(id=rid, **{k: table[k] for k in _KEYS}))
        return cls(entries, source)

    def get(self, region_id: str) -> RegionEntry:
        """The entry for ``region_id``; KeyError when the catalogue has no such region."""
        return self._by_id[region_id]

    def __contains__(self, region_id: object) -> bool:
        return region_id in self._by_id

    def by_prefix(self, prefix: str) -> RegionEntry | None:
        return self._by_prefix.get(prefix.lower())

    def region_ids(self) -> list[str]:
        return list(self._by_id)

    def __iter__(self) -> Iterator[RegionEntry]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
