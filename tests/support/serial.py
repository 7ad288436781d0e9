"""Which tests share something machine-wide and so run one after another under pytest-xdist.

README.md and .ci/run run the suite with ``-n 2 --dist loadgroup``. Each of these groups goes
to one worker as one unit of work: the vpcd reader's fixed ports and pcscd (which the restart
tests stop and start) for every test marked ``pcsc``, and the session's slapd and Samba AD DC for
the LDAP tests (started once, by the one worker that runs them). Every other test file is a unit
of its own, so module-scoped fixtures are made once.

xdist's own ``loadgroup`` reads ``xdist_group`` marks through a node id suffix that pytest 9.2
no longer lets it set, and its controller never sees marks, so the groups are folders and files
here; tests/conftest.py fails the run when a ``pcsc`` test lives outside them.
"""

from __future__ import annotations

from typing import Any

#: path prefix (relative to the repository, "/" separated) -> group
GROUPS: dict[str, str] = {
    "tests/integration/card/": "pcsc",
    "tests/integration/pcsc/": "pcsc",
    "tests/integration/client/test_pcsc_client.py": "pcsc",
    "tests/integration/pam/": "pcsc",
    "tests/integration/ldap/": "ldap",
}
#: the group every test marked with the marker must be in
MARKER_GROUPS = {"pcsc": "pcsc"}


def group_of(nodeid: str) -> str | None:
    """The serial group of the test ``nodeid`` (relative to the repository), or None."""
    for prefix, group in GROUPS.items():
        if nodeid.startswith(prefix):
            return group
    return None


def misplaced(items: list[Any], root: str) -> list[str]:
    """Node ids of tests carrying a MARKER_GROUPS marker outside that marker's group."""
    bad = []
    for item in items:
        for marker, group in MARKER_GROUPS.items():
            if item.get_closest_marker(marker) is not None and group_of(_rel(item, root)) != group:
                bad.append(item.nodeid)
    return bad


def _rel(item: Any, root: str) -> str:
    path = str(item.path)
    return path[len(root) + 1:] if path.startswith(root + "/") else path


def make_scheduler(config: Any, log: Any) -> Any:
    return scheduler_class()(config, log)


def scheduler_class() -> Any:
    """xdist's load-scope scheduler with the groups above as scopes (serial groups first, as
    they are the long poles), each other test file its own scope."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an xdist_group mark, where it works
                return nodeid.split("@")[-1]
            group = group_of(nodeid)
            return f"group:{group}" if group else nodeid.split("::", 1)[0]

        def _assign_work_unit(self, node: Any) -> None:
            for scope in [s for s in self.workqueue if s.startswith("group:")]:
                self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return GroupScheduling
