"""A directory's path-validation settings as one frozen value: what ``verify_certificate``
takes beyond the trust store (maximum depth, the RFC 5280 §6.1.1 policy inputs, AIA fetching,
the profile relaxations).

Read from anything with the directory's attributes (a database row or a directory file entry),
so the login path builds it without the admin declarations. Each
:class:`~broker.pki.profile.ProfileOptions` field is read from the directory setting of the
same name (a test checks the admin declares each one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from broker.pki.policies import PolicyInputs
from broker.pki.profile import STRICT, ProfileOptions

DEFAULT_MAX_DEPTH = 6


def profile_options(value_of: Callable[[str], Any]) -> ProfileOptions:
    """The directory's profile relaxations: every option read by ``value_of(name)``."""
    return ProfileOptions(**{f.name: bool(value_of(f.name)) for f in fields(ProfileOptions)})


def row_profile_options(row: Any) -> ProfileOptions:
    """The profile relaxations of a directory row (STRICT for no row)."""
    if row is None:
        return STRICT
    return profile_options(lambda name: getattr(row, name))


@dataclass(frozen=True)
class PkiSettings:
    """How one directory validates login certificates (hashable: trust snapshots hold it)."""

    max_depth: int = DEFAULT_MAX_DEPTH
    policy: PolicyInputs = PolicyInputs()
    aia_fetch: bool = False
    profile_options: ProfileOptions = STRICT

    @classmethod
    def of_directory(cls, d: Any) -> PkiSettings:
        """From a directory row (PkiError certificate_policy_mismatch for a bad OID)."""
        return cls(max_depth=DEFAULT_MAX_DEPTH if d.max_chain_depth is None
                   else int(d.max_chain_depth),
                   policy=PolicyInputs.of(list(d.required_policies or []),
                                          explicit=bool(d.explicit_policy),
                                          mapping_inhibit=bool(d.policy_mapping_inhibit),
                                          any_policy_inhibit=bool(d.any_policy_inhibit)),
                   aia_fetch=bool(d.aia_fetch), profile_options=row_profile_options(d))

    def verify_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``verify_certificate``."""
        return {"max_depth": self.max_depth, "policy": self.policy,
                "aia_fetch": self.aia_fetch, "profile_options": self.profile_options}
