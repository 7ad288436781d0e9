"""A directory's path-validation settings as ``verify_certificate`` keyword arguments.

Kept apart from service/login.py so the trust snapshot only carries them (one field) and the
columns can grow without touching the login flow.
"""

from __future__ import annotations

from typing import Any

from broker.admin.declarations import row_profile_options
from broker.pki.policies import PolicyInputs
from broker.store.models import Directory


def pki_settings(d: Directory) -> tuple[tuple[str, Any], ...]:
    """(name, value) pairs: hashable, so the frozen TrustSnapshot can hold them."""
    return (("max_depth", 6 if d.max_chain_depth is None else int(d.max_chain_depth)),
            ("policy", PolicyInputs.of(list(d.required_policies or []),
                                       explicit=bool(d.explicit_policy),
                                       mapping_inhibit=bool(d.policy_mapping_inhibit),
                                       any_policy_inhibit=bool(d.any_policy_inhibit))),
            ("aia_fetch", bool(d.aia_fetch)),
            ("profile_options", row_profile_options(d)))
