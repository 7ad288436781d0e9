"""Directories backed by LDAP / Active Directory (shared/DESIGN.md §11).

A directory with an ``ldap`` setting keeps its users in the organisation's directory: a login
maps the certificate to an entry with ONE search (every certmap rule's clause in one ``|``
filter, values escaped per RFC 4515, and with AD ``required_groups`` the nested-membership
condition too; the rules then decide in order on what came back), checks the account's
state (AD: ``userAccountControl`` disabled, ``accountExpires`` past; required groups with
nested membership via LDAP_MATCHING_RULE_IN_CHAIN) and answers the user's name by
``user_name_attribute``. The broker keeps only a name row per user (the anchor of its WorkSpaces
and tokens), never the user's identity or state.

Client: python-ldap (OpenLDAP's libldap). Every call blocks, so it runs in the thread pool
like database work (the login use cases already run there); the reactor never waits on LDAP.
A whole lookup (connect, TLS handshake, bind, searches, the retry on a dropped pooled
connection) shares one deadline of ``timeout_s``, and an unreachable or silent server is
``directory_unavailable`` (503, Retry-After). Per process: a small pool of bound connections
per directory, and a cache of answers (positive for ``cache_ttl_s``, negative for less).

The bind password is read from ``bind_password_file`` at bind time (refused when the file is
group- or world-readable, like ssh does for keys); it is never stored, exported, logged or
audited.

Modules: :mod:`.settings` (the ``ldap`` setting and its checks), :mod:`.certmap` (values,
filter clauses, answers and refusals), :mod:`.pool` (connections, bind, deadline),
:mod:`.service` (the per-process lookups and cache); test-lookup and the console's user
list are admin use cases (:mod:`broker.admin.ldap_users`). Everything is re-exported here.
"""

from broker.service.ldapdir.certmap import (
    LdapRefusal,
    LdapUser,
    _clause,
    _refuse,
    alt_security_identities,
    escape,
    rule_values,
    unavailable,
)
from broker.service.ldapdir.pool import Deadline, _Pool, read_bind_password
from broker.service.ldapdir.service import Health, LdapDirectories
from broker.service.ldapdir.settings import (
    BROWSE_LIMIT,
    DEFAULT_ATTRIBUTES,
    DEFAULT_NAME_ATTRIBUTE,
    DEFAULT_USER_FILTER,
    FLAVOURS,
    IN_CHAIN,
    LDAP_RULES,
    NEGATIVE_TTL_S,
    POOL_SIZE,
    LdapSettings,
    check_settings,
    parse_pairs,
    settings_of,
    warnings_of,
)

__all__ = [
    "BROWSE_LIMIT", "DEFAULT_ATTRIBUTES", "DEFAULT_NAME_ATTRIBUTE", "DEFAULT_USER_FILTER",
    "FLAVOURS", "IN_CHAIN", "LDAP_RULES", "NEGATIVE_TTL_S", "POOL_SIZE", "Deadline", "Health",
    "LdapDirectories", "LdapRefusal", "LdapSettings", "LdapUser", "_Pool", "_clause", "_refuse",
    "alt_security_identities", "check_settings", "escape", "parse_pairs",
    "read_bind_password", "rule_values", "settings_of", "unavailable",
    "warnings_of",
]
