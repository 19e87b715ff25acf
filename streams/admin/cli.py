"""`anpi admin create-user`: the first administrator of a tenant (later ones are added on the screen).

The password comes from ANPI_ADMIN_PASSWORD or stdin, never from argv (argv shows in `ps` and in
shell history), and is never printed or logged.
"""
from __future__ import annotations

import getpass
import os
import sys
import time

from streams.admin import accounts
from streams.embedded.store import Store


def create_user(db: str, tenant: str, login: str, role: str, stdin=None, err=None) -> int:
    stdin, err = stdin or sys.stdin, err or sys.stderr
    password = os.environ.get("ANPI_ADMIN_PASSWORD")
    if password is None:
        if stdin.isatty():
            password = getpass.getpass("パスワード: ")
            if getpass.getpass("もう一度: ") != password:
                print("anpi admin: the two passwords differ", file=err)
                return 2
        else:
            password = stdin.readline().rstrip("\r\n")
    try:
        accounts.check_new(login, role, password)
    except accounts.AccountError as e:
        print(f"anpi admin: {e}", file=err)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    store = Store(db)
    try:
        accounts.install(store.db)
        with store.transaction():
            accounts.create_user(store.db, tenant, login, role, password, int(time.time() * 1000))
            accounts.audit(store.db, tenant, int(time.time() * 1000), "(anpi admin)", "user.create", login, role)
    except accounts.AccountError as e:
        print(f"anpi admin: {e}", file=err)
        return 2
    finally:
        store.close()
    print(f"anpi admin: {role} {login!r} created for tenant {tenant!r} in {db}", file=err)
    return 0
