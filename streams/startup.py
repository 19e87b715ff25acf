"""Settings and arguments checked before a command starts: one clear line and exit 2, never a
traceback, and never a server that runs but does nothing (an engine that cannot place a slot in an
unknown zone, a tenant whose URL or topics cannot exist, a port another process holds).

Each check raises `BadSetting` with the line to print; `streams/cli.py` prints it as
`anpi <command>: <line>` and exits 2.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable

from schemas.tenant import ID as _TENANT
from schemas.tenant import ID_RULE
from streams.codec import known_zone

SQLITE_MAGIC = b"SQLite format 3\x00"
# a tenant id is a URL path segment (/webhook/<id>), a Kafka topic prefix and a Redis key part


class BadSetting(ValueError):
    """`str(error)` is the one line to show."""


def tenant_id(value: str, name: str = "ANPI_TENANT") -> str:
    if not _TENANT.fullmatch(value):
        raise BadSetting(f"{name}={value!r}: a tenant id is {ID_RULE} (it is part of URLs, topic names "
                         "and keys)")
    return value


def zone(value: str, name: str = "ANPI_TIMEZONE") -> str:
    if not known_zone(value):
        raise BadSetting(f"{name}={value!r}: not a time zone of the tz database (e.g. Asia/Tokyo)")
    return value


def port(value: int, name: str = "--port", host: str | None = None) -> int:
    """A TCP port in range, and (with `host`) one nobody is listening on yet."""
    if not 0 <= value <= 65535:
        raise BadSetting(f"{name} {value}: a port is from 0 to 65535")
    if host is not None and value != 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is free
            try:
                s.bind((host, value))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise BadSetting(f"{name} {value}: another process is listening on {host}:{value}") from None
                raise BadSetting(f"{name} {value}: cannot listen on {host}:{value} ({e.strerror})") from None
    return value


def sqlite_file(path: str, name: str = "--db") -> str:
    """A path where an SQLite file is or can be made: not a directory, not some other kind of file."""
    if os.path.isdir(path):
        raise BadSetting(f"{name} {path}: is a directory, not an SQLite file")
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise BadSetting(f"{name} {path}: cannot be read ({e.strerror})") from None
        if head and head != SQLITE_MAGIC:
            raise BadSetting(f"{name} {path}: not an SQLite database")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise BadSetting(f"{name} {path}: {parent} is not a directory")
    return path


def metrics_port(env, name: str, host: str) -> int:
    """A process's /metrics port from `env` (ANPI_*_METRICS_PORT): 0, off, unless set; else in range
    and free on `host`."""
    return port(number(env, name, 0, low=0), name, host)


def ingress_processes(env, processes: int | None, host: str) -> tuple[int, int]:
    """(servers on the webhook's port, the first one's /metrics port or 0): --processes, else
    ANPI_INGRESS_PROCESSES (default 1); server i serves its metrics on ANPI_INGRESS_METRICS_PORT + i,
    each checked free on `host`."""
    if processes is None:
        processes = number(env, "ANPI_INGRESS_PROCESSES", 1, low=1)
    elif processes < 1:
        raise BadSetting(f"--processes {processes}: expected at least 1")
    first = metrics_port(env, "ANPI_INGRESS_METRICS_PORT", host)
    for extra in range(1, processes if first else 0):
        port(first + extra, f"ANPI_INGRESS_METRICS_PORT + {extra}", host)
    return processes, first


def number(env, name: str, default, kind=int, low=None):
    """An ANPI_* number from `env` (default when unset), at least `low`."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadSetting(f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if low is not None and value < low:
        raise BadSetting(f"{name}={raw!r}: must be at least {low}")
    return value


def guarded(command: str, main: Callable[[], int]) -> int:
    """Run a command's `main`; a `BadSetting` (or data keys that cannot be used) becomes its one line
    on stderr and exit 2."""
    from streams.sealed import SealError
    try:
        return main()
    except (BadSetting, SealError) as e:
        print(f"anpi {command}: {e}", file=sys.stderr)
        return 2


KEYED = {"serve", "demo", "worker", "ingress", "sender", "readside", "admin", "tenant", "quarantine"}


def data_keys(command: str) -> None:
    """The data keys (streams/sealed.py), read before a command that opens the store starts: a bad
    ANPI_DATA_KEYS is one line and exit 2 at the start, not an error at the first record."""
    if command in KEYED:
        from streams.sealed import keyring
        keyring()
