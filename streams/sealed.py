"""Personal data and secrets sealed where they rest: AES-256-GCM under a key from the environment.

A sealed value is text, `sealed:<key id>:<base64url of nonce ‖ ciphertext ‖ tag>`, so it goes where
the clear text went (a JSON field, a Redis hash, an SQLite column). Sealing is deterministic: the
nonce is an HMAC of the clear text under the key (a synthetic IV), so a state rewritten unchanged is
the same bytes and the engine's output stays a function of its input. All it shows is that two
records hold the same value.

Keys: `ANPI_DATA_KEYS` = `<id>:<base64 of 32 random bytes>[,<id>:<key>…]` (`anpi key new` prints
one). The first key seals; every key listed opens what it sealed, so a key is rotated by putting a
new one first and keeping the old while records sealed with it remain. Unset, the key is read from
`ANPI_DATA_KEY_FILE` (default `var/anpi-data.key`), made once with a fresh random key, mode 0600: for
a trial on one machine. A deployment gives every process the same `ANPI_DATA_KEYS` from its secret
store. The key is never in the store: a copy of the SQLite file, a topic or Redis is ciphertext
without it.

Text that does not start with `sealed:` is opened as itself: records written before sealing began
stay readable, and are sealed when next written.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS_ENV, KEY_FILE_ENV = "ANPI_DATA_KEYS", "ANPI_DATA_KEY_FILE"
DEFAULT_KEY_FILE = "var/anpi-data.key"
PREFIX = "sealed:"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class SealError(ValueError):
    """A key setting that cannot be used, or a value no key held opens. Never names the value."""


class Keyring:
    def __init__(self, keys: list[tuple[str, bytes]]):
        if not keys:
            raise SealError(f"{KEYS_ENV}: no key")
        self.sealing = keys[0][0]
        self._aead = {kid: AESGCM(key) for kid, key in keys}
        self._mac = {kid: hashlib.sha256(b"anpi synthetic iv\0" + key).digest() for kid, key in keys}
        self._blind = {kid: hashlib.sha256(b"anpi blind index\0" + key).digest() for kid, key in keys}

    def seal(self, text: str) -> str:
        kid = self.sealing
        data = text.encode()
        nonce = hmac.new(self._mac[kid], data, hashlib.sha256).digest()[:12]
        return f"{PREFIX}{kid}:" + base64.urlsafe_b64encode(nonce + self._aead[kid].encrypt(nonce, data, kid.encode())) \
            .decode().rstrip("=")

    def blind(self, text: str, kid: str | None = None) -> str:
        """An index entry for `text`: equal texts give equal entries, and nothing of the text shows
        (an HMAC under a key of its own, derived from the data key)."""
        kid = kid or self.sealing
        return kid + ":" + hmac.new(self._blind[kid], text.encode(), hashlib.sha256).hexdigest()[:32]

    def phone_blind(self, phone: str) -> str:
        """A phone number's index entry, however it was typed (streams/line/webhook_events.phone_number)."""
        return self.blind(_digits(phone))

    def phone_blinds(self, phone: str) -> list[str]:
        return self.blinds(_digits(phone))

    def blinds(self, text: str) -> list[str]:
        """`text`'s entry under every key held (an index written before a rotation still finds it)."""
        return [self.blind(text, kid) for kid in self._aead]

    def unseal(self, text: str) -> str:
        kid, _, body = text[len(PREFIX):].partition(":")
        aead = self._aead.get(kid)
        if aead is None:
            raise SealError(f"a value sealed with key {kid!r}, which {KEYS_ENV} does not hold")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return aead.decrypt(raw[:12], raw[12:], kid.encode()).decode()
        except Exception:   # InvalidTag, bad base64, bad UTF-8: all the same to the caller
            raise SealError(f"a value sealed with key {kid!r} that does not open (altered, or another key "
                            "of that name)") from None


def _digits(phone: str) -> str:
    from streams.line.webhook_events import phone_number
    return phone_number(phone) or re.sub(r"\D", "", phone)


def parse_keys(value: str, name: str = KEYS_ENV) -> list[tuple[str, bytes]]:
    keys = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        kid, colon, b64 = part.partition(":")
        if not colon or not _ID.fullmatch(kid):
            raise SealError(f"{name}: each key is <id>:<base64 of 32 bytes>, the id letters, digits, _ or - "
                            "(`anpi key new` prints one)")
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SealError(f"{name}: key {kid!r} is not the base64 of 32 bytes (`anpi key new` prints one)")
        keys.append((kid, key))
    if not keys:
        raise SealError(f"{name}: no key")
    return keys


def new_key_line(kid: str | None = None) -> str:
    kid = kid or "k" + secrets.token_hex(3)
    return f"{kid}:" + base64.b64encode(secrets.token_bytes(32)).decode()


def _key_file(path: str) -> str:
    """The key line in `path`, made first if there is none (two processes starting at once agree)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_key_line("local") + "\n")
    try:
        os.link(temporary, path)   # fails if another process made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    with open(path) as f:
        return f.read().strip()


@lru_cache(maxsize=1)
def keyring() -> Keyring:
    """This process's keys, from the environment (read once)."""
    value = os.environ.get(KEYS_ENV)
    if value:
        return Keyring(parse_keys(value))
    path = os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE
    return Keyring(parse_keys(_key_file(path), path))


def reset() -> None:
    """Read the keys again (after the environment changed: tests, `anpi key`)."""
    keyring.cache_clear()
    seal.cache_clear()
    unseal.cache_clear()


@lru_cache(maxsize=65_536)
def seal(text: str | None) -> str | None:
    """`text` sealed with the first key (None stays None; sealed text stays as it is)."""
    if text is None or text.startswith(PREFIX):
        return text
    return keyring().seal(text)


@lru_cache(maxsize=65_536)
def unseal(text: str | None) -> str | None:
    """The clear text of a sealed value (clear text and None as they are); SealError if no key opens it."""
    if text is None or not text.startswith(PREFIX):
        return text
    return keyring().unseal(text)
