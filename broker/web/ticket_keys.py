"""TLS session-ticket keys shared by every worker of one broker and rotated on a fixed clock.

**Opt-in, and not the supported route.** This module reaches into cryptography's private Rust
extension (an unexported symbol found in its ELF symbol table, called through ctypes on
pyOpenSSL's private ``_context``): a differently built or newer wheel can make it fail, and a
wrong offset is a crash, not an exception. So it runs only with ``server.tls_shared_ticket_keys
= true`` and several workers; the supervisor first runs :func:`probe` (this module as a child
process, ``python -m broker.web.ticket_keys``) and hands the workers a secret only when the child
came back healthy — a crash there is a warning, and each worker keeps OpenSSL's own key. It
refuses cryptography releases outside :data:`CRYPTOGRAPHY_TESTED` (the ``tls`` extra pins the
same range). For resumption across workers and nodes, terminate TLS at HAProxy
(``tls-ticket-keys``) instead (README, "TLS session resumption").

A session ticket is the server's own state, encrypted and authenticated under the context's
ticket key and handed to the client, which offers it on its next connection. For a ticket to
resume on any worker, every worker must hold the same key. OpenSSL sets one with
``SSL_CTX_set_tlsext_ticket_keys`` (a macro over ``SSL_CTX_ctrl``), but pyOpenSSL offers no such
call and the OpenSSL it drives is linked into cryptography's Rust extension, where
``SSL_CTX_ctrl`` is present but not exported. So :func:`ticket_key_setter` finds that function
by name in the extension's ELF symbol table (sections found with pyelftools), places it by an
exported symbol of the same file, calls it through ctypes on pyOpenSSL's own ``SSL_CTX``, and
reads the key back with ``SSL_CTRL_GET_TLSEXT_TICKET_KEYS`` to check. When any step fails (a
stripped build, another platform, another layout), it says why once and the broker keeps
OpenSSL's per-context random key: resumption then works only on the worker that issued the
ticket, as before.

The keys: the supervisor draws one 32-byte secret at start (:func:`new_secret`) and hands it to
each worker through an inherited pipe (never argv, environment or disk); a single process draws
its own. Each worker derives the key of the current period with HKDF-SHA256 from the secret and
the period's number (``floor(unix time / rotation_s)``), so all workers change key at the same
moment without talking to each other, and a key is never reused across periods or restarts.
A ticket from an earlier period (or an earlier start) falls back to a full handshake.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("broker.tls")

#: OpenSSL's ticket key: 16-byte name, 32-byte HMAC key, 32-byte AES key (ssl.h, ``SSL_CTRL_*``).
KEY_LENGTH = 80
SECRET_LENGTH = 32
_SSL_CTRL_GET_TLSEXT_TICKET_KEYS = 58
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_STT_FUNC = 2
_INFO = b"smartcard-broker TLS session ticket key, period "


#: cryptography majors this lookup was tested with: ``low <= major < high`` (setup.cfg's ``tls``
#: extra says the same; a test keeps the two equal).
CRYPTOGRAPHY_TESTED = (42, 51)
#: Test hook, read only by the probe's child process: ``segv`` makes it crash as a wrong symbol
#: offset would (the broker must survive that and warn).
PROBE_FAULT_ENV = "SMARTCARD_BROKER_TICKET_PROBE_FAULT"


class TicketKeysUnavailable(Exception):
    """This OpenSSL build's ticket keys cannot be set from Python (the reason is the text)."""


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_LENGTH)


def period_of(now: float, rotation_s: float) -> int:
    return int(now // rotation_s)


def derive_key(secret: bytes, period: int, listener: str = "client") -> bytes:
    """The 80-byte ticket key of ``listener`` for ``period`` (the same in every worker holding
    ``secret``; another listener's differs, so its tickets do not resume there)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LENGTH, salt=None,
                info=_INFO + period.to_bytes(8, "big", signed=True) + b" listener "
                + listener.encode()).derive(secret)


def read_secret(fd: int) -> bytes:
    """The secret a supervisor wrote to the pipe ``fd`` (closed after reading)."""
    data = b""
    try:
        while len(data) < SECRET_LENGTH:
            chunk = os.read(fd, SECRET_LENGTH - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) != SECRET_LENGTH:
        raise ValueError("the supervisor's TLS ticket secret is incomplete")
    return data


def secret_pipe(secret: bytes) -> int:
    """A pipe holding ``secret`` for one worker to read: returns the read end (the caller
    passes it to the worker and closes it after spawning)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, secret)  # 32 bytes fit any pipe buffer: never blocks
    finally:
        os.close(write_end)
    return read_end


_Ctrl = Callable[[int, int, int, Any], int]
_setter: _Ctrl | None = None
_problem: str | None = None


def _function_offsets(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """The offsets of the functions ``names`` in the ELF file ``path``'s symbol table (only
    those found). pyelftools finds the sections; the symbols are looked up by searching the
    section bytes, since decoding every one of the extension's ~36 000 symbols in Python took
    about two seconds at each start."""
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TicketKeysUnavailable(f"pyelftools is not installed ({exc})") from None
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if elf.elfclass != 64 or elf["e_machine"] not in ("EM_X86_64", "EM_AARCH64"):
            raise TicketKeysUnavailable("not a 64-bit x86-64 or arm64 build")
        symtab, strtab = elf.get_section_by_name(".symtab"), elf.get_section_by_name(".strtab")
        if symtab is None or strtab is None:
            raise TicketKeysUnavailable(f"{os.path.basename(path)} has no symbol table "
                                        "(a stripped build)")
        entry_size = symtab["sh_entsize"]
        symbols, strings = symtab.data(), strtab.data()
        order = "<" if elf.little_endian else ">"
    if entry_size != 24:
        raise TicketKeysUnavailable(f"unexpected ELF symbol size {entry_size}")
    found: dict[str, int] = {}
    for name in names:
        wanted = name.encode() + b"\0"
        at = strings.find(wanted)
        while at != -1 and name not in found:
            if at == 0 or strings[at - 1] == 0:  # the whole string, not another's tail
                key = struct.pack(order + "I", at)
                pos = symbols.find(key)
                while pos != -1:
                    if pos % entry_size == 0:
                        _, info, _, _, value, size = struct.unpack_from(
                            order + "IBBHQQ", symbols, pos)
                        if info & 0xF == _STT_FUNC and value and size:
                            found[name] = value
                            break
                    pos = symbols.find(key, pos + 1)
            at = strings.find(wanted, at + 1)
    return found


def check_cryptography_version(version: str | None = None) -> None:
    """TicketKeysUnavailable unless cryptography (``version``, default the installed one) is
    within :data:`CRYPTOGRAPHY_TESTED`."""
    if version is None:
        import cryptography

        version = cryptography.__version__
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise TicketKeysUnavailable(f"cannot read cryptography's version {version!r}") from None
    low, high = CRYPTOGRAPHY_TESTED
    if not low <= major < high:
        raise TicketKeysUnavailable(f"cryptography {version} is outside the tested range "
                                    f">={low},<{high}")


def _find_ssl_ctx_ctrl() -> _Ctrl:
    """``SSL_CTX_ctrl`` of the OpenSSL inside cryptography's Rust extension, callable."""
    check_cryptography_version()
    from cryptography.hazmat.bindings import _rust

    path = getattr(_rust, "__file__", None)
    if not path or not path.endswith(".so"):
        raise TicketKeysUnavailable(f"cryptography's extension is not an ELF file ({path})")
    found = _function_offsets(path, ("SSL_CTX_ctrl", "PyInit__rust"))
    if "SSL_CTX_ctrl" not in found:
        raise TicketKeysUnavailable("SSL_CTX_ctrl is not in the symbol table of "
                                    f"{os.path.basename(path)} (a stripped build)")
    if "PyInit__rust" not in found:
        raise TicketKeysUnavailable("PyInit__rust is not in the symbol table")
    lib = ctypes.CDLL(path)  # the module already loaded: dlopen hands back the same mapping
    exported = ctypes.cast(lib.PyInit__rust, ctypes.c_void_p).value
    if not exported:
        raise TicketKeysUnavailable("PyInit__rust has no address")
    base = exported - found["PyInit__rust"]
    proto = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                             ctypes.c_void_p)
    return proto(base + found["SSL_CTX_ctrl"])  # type: ignore[return-value]


def _context_pointer(context: Any) -> int:
    from OpenSSL._util import ffi

    return int(ffi.cast("uintptr_t", context._context))


def _set(ctrl: _Ctrl, context: Any, key: bytes) -> None:
    ptr = _context_pointer(context)
    buf = ctypes.create_string_buffer(key, KEY_LENGTH)
    if ctrl(ptr, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, KEY_LENGTH, buf) != 1:
        raise TicketKeysUnavailable("OpenSSL refused the ticket key")
    back = ctypes.create_string_buffer(KEY_LENGTH)
    if ctrl(ptr, _SSL_CTRL_GET_TLSEXT_TICKET_KEYS, KEY_LENGTH, back) != 1 \
            or back.raw != key:
        raise TicketKeysUnavailable("the ticket key read back differs from the one set")


def _load() -> _Ctrl:
    """Find ``SSL_CTX_ctrl`` and prove it on a throwaway context (TicketKeysUnavailable)."""
    from OpenSSL import SSL

    ctrl = _find_ssl_ctx_ctrl()
    try:
        _set(ctrl, SSL.Context(SSL.TLS_SERVER_METHOD), derive_key(new_secret(), 0))
    except (OSError, AttributeError, ValueError) as exc:
        raise TicketKeysUnavailable(str(exc)) from None
    return ctrl


def ticket_key_setter() -> Callable[[Any, bytes], None] | None:
    """A function that sets a pyOpenSSL Context's ticket key, or None (after one warning)
    when this build does not allow it. Probed once per process, on a throwaway context; call
    it only after :func:`probe` succeeded (a wrong offset would crash this process)."""
    global _setter, _problem
    if _setter is None and _problem is None:
        try:
            _setter = _load()
        except (TicketKeysUnavailable, OSError, AttributeError, ValueError) as exc:
            _problem = str(exc)
            log.warning("TLS ticket keys cannot be shared by workers with this OpenSSL build; "
                        "each worker keeps its own (a ticket resumes only where it was issued)",
                        extra={"reason": _problem})
    if _setter is None:
        return None
    ctrl = _setter
    return lambda context, key: _set(ctrl, context, key)



def probe(timeout_s: float = 60.0) -> str | None:
    """Try the whole lookup in a child process: None when it works, else why not (a crash of
    the child — a signal — is a reason like any other, never this process's end)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "broker.web.ticket_keys"],
                              capture_output=True, text=True, timeout=timeout_s,
                              env=dict(os.environ))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the probe process failed: {exc}"
    if proc.returncode == 0 and proc.stdout.strip() == "ok":
        return None
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        return f"the probe process crashed ({name})"
    lines = (proc.stdout.strip() or proc.stderr.strip() or "no output").splitlines()
    return lines[-1][:300]


def _probe_main() -> int:
    """The child of :func:`probe`: ``ok`` and exit 0 when the ticket key can be set."""
    if os.environ.get(PROBE_FAULT_ENV) == "segv":
        ctypes.string_at(0)  # a real SIGSEGV, as a wrong symbol offset would give
    try:
        _load()
    except TicketKeysUnavailable as exc:
        print(exc)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main())
