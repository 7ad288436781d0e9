"""``python run_as_user.py UID GID ARGS…``: load broker-client as root, drop to UID:GID for
good, then run ``broker-client ARGS`` (see tests/support/users.py)."""

import difflib  # noqa: F401
import encodings.idna  # noqa: F401
import http.client  # noqa: F401
import importlib.metadata  # noqa: F401
import json  # noqa: F401
import os
import platform  # noqa: F401
import ssl  # noqa: F401
import sys
import syslog  # noqa: F401
import tempfile  # noqa: F401
import urllib.parse  # noqa: F401

# Everything the client may import lazily, loaded while the interpreter's own files are still
# readable; after the switch the process is the user and nothing else.
import broker.client.access  # noqa: F401
import broker.client.cli
import broker.client.flow  # noqa: F401
import broker.client.pam  # noqa: F401
import broker.client.session_file  # noqa: F401
import broker.client.transport  # noqa: F401
import broker.private_files  # noqa: F401

uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
assert os.geteuid() == uid and os.getuid() == uid
sys.argv = ["broker-client", *sys.argv[3:]]
broker.client.cli.main()
