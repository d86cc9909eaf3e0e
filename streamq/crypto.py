"""Payload encryption at rest: AES-256-GCM envelopes under a key ring, and blind-index tokens.

Keys come from ``STREAMQ_ENCRYPTION_KEYS="kid2:<base64 32 bytes>,kid1:<...>"``: the
first key is active (it seals new data), the others only open what they sealed. A
malformed variable is one :class:`~streamq.errors.ConfigError` naming the variable and
the entry, never a key.

An envelope is compact binary, so that it costs ~33 bytes a payload::

    0xC1  version(1)  len(kid)(1)  kid  nonce(12)  ciphertext+tag(16)

``0xC1`` is the one byte msgpack never uses, so an envelope is told apart from a clear
msgpack payload by its first byte (queues written before encryption was switched on
keep working). The nonce is random (96 bits) for every encryption; AES-GCM's bound for
random nonces is 2**32 encryptions per key, far above a queue's life between
rotations. The associated data binds the ciphertext to its header (version and key
id), its purpose (``payload``, ``result``), the queue name and the job id: a payload
copied into another job or another queue fails to open.

Blind index: ``token(kid, queue, term)`` is HMAC-SHA256 under a key derived with HKDF
from the key ``kid`` (never the encryption key itself), written with the letters a-p
so that key names holding it have no digit runs. See ``streamq/blind_index.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from .errors import ConfigError, DecryptError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS_ENV: Final = "STREAMQ_ENCRYPTION_KEYS"
MAGIC: Final = 0xC1
VERSION: Final = 1
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_BYTES: Final = 32
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_KID_BYTES_RE = re.compile(rb"^[A-Za-z0-9_-]{1,32}$")
_INDEX_INFO: Final = b"streamq blind index v1"
# token hex -> letters: a nibble a letter (a-p), 16 bytes = 128 bits = 32 letters
_HEX_TO_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_TOKEN_BYTES: Final = 16

PURPOSE_PAYLOAD: Final = "payload"
PURPOSE_RESULT: Final = "result"
PURPOSE_SCHEDULE: Final = "schedule"
"""A schedule's stored payload, bound to the schedule id (sealed again for each run)."""


def is_envelope(raw: bytes) -> bool:
    """True when ``raw`` is an encryption envelope (not a clear msgpack payload)."""
    return len(raw) > 0 and raw[0] == MAGIC


def envelope_kid(raw: bytes) -> str | None:
    """The key id an envelope was sealed with, or None if ``raw`` is not a readable envelope."""
    if not is_envelope(raw) or len(raw) < 3:
        return None
    n = raw[2]
    kid = raw[3 : 3 + n]
    if len(kid) != n or not _KID_BYTES_RE.match(kid):
        return None
    return kid.decode("ascii")


def _decode_key(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None when it is not base64."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class KeyRing:
    """Encryption keys by id; the first is active. Build it with :meth:`parse` or :meth:`from_env`."""

    __slots__ = ("_aead", "_by_header", "_header", "_index_keys", "_index_macs",
                 "_invalid_tag", "_keys", "active")

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigError(f"{KEYS_ENV} holds no key")
        self._keys: dict[str, bytes] = {}
        for kid, key in keys:
            if not _KID_RE.match(kid):
                raise ConfigError(f"{KEYS_ENV}: a key id is invalid: use 1-32 characters of "
                                  "A-Z a-z 0-9 _ -")
            if len(key) != KEY_BYTES:
                raise ConfigError(f"{KEYS_ENV}: key {kid} must be {KEY_BYTES} bytes "
                                  f"(base64 of 32 random bytes), got {len(key)}")
            if kid in self._keys:
                raise ConfigError(f"{KEYS_ENV}: key id {kid} appears twice")
            self._keys[kid] = key
        self.active: str = keys[0][0]
        """The id of the key that seals new data."""
        # the cryptography package is loaded with the first key ring: a process without
        # keys (every unencrypted queue) does not carry its modules, whose objects would
        # lengthen each of its garbage collections (measured: ~5 % of add_bulk's CPU)
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._invalid_tag: type[Exception] = InvalidTag
        self._aead: dict[str, AESGCM] = {kid: AESGCM(key) for kid, key in self._keys.items()}
        self._header = {kid: bytes([MAGIC, VERSION, len(kid)]) + kid.encode("ascii")
                        for kid in self._keys}
        self._by_header = {h: (kid, self._aead[kid]) for kid, h in self._header.items()}
        self._index_keys: dict[str, bytes] = {}
        self._index_macs: dict[str, hmac.HMAC] = {}

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse ``kid:base64key,kid:base64key`` (first = active). Errors never show a key."""
        keys: list[tuple[str, bytes]] = []
        for pos, entry in enumerate(text.split(","), 1):
            entry = entry.strip()
            if not entry:
                continue
            kid, sep, b64 = entry.partition(":")
            kid = kid.strip()
            if not sep or not b64.strip():
                raise ConfigError(f"{KEYS_ENV}: entry {pos} is not 'kid:base64key' "
                                  "(e.g. k1:$(openssl rand -base64 32))")
            if not _KID_RE.match(kid):
                raise ConfigError(f"{KEYS_ENV}: entry {pos} has an invalid key id: use 1-32 "
                                  "characters of A-Z a-z 0-9 _ -")
            key = _decode_key(b64)
            if key is None:
                raise ConfigError(f"{KEYS_ENV}: key {kid} is not valid base64")
            keys.append((kid, key))
        if not keys:
            raise ConfigError(f"{KEYS_ENV} is set but holds no key")
        return cls(keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyRing | None:
        """The ring of ``STREAMQ_ENCRYPTION_KEYS``, or None when it is unset or blank."""
        text = (os.environ if env is None else env).get(KEYS_ENV, "").strip()
        return _parse_cached(text) if text else None

    @staticmethod
    def generate_key() -> str:
        """A new random key, base64 (what goes after ``kid:`` in the variable)."""
        return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")

    @property
    def kids(self) -> tuple[str, ...]:
        """Key ids, active first."""
        return tuple(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __repr__(self) -> str:
        return f"KeyRing(active={self.active!r}, kids={self.kids!r})"

    # -- envelopes ------------------------------------------------------------------------
    @staticmethod
    def _aad(header: bytes, purpose: str, queue: str, job_id: str) -> bytes:
        return b"".join((header, b"\x00", purpose.encode(), b"\x00", queue.encode(), b"\x00",
                         job_id.encode()))

    def seal(self, plain: bytes, *, queue: str, job_id: str, purpose: str = PURPOSE_PAYLOAD,
             kid: str | None = None) -> bytes:
        """Encrypt ``plain`` for one job of one queue under the active key (or ``kid``)."""
        kid = kid or self.active
        header = self._header[kid]
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead[kid].encrypt(nonce, plain, self._aad(header, purpose, queue, job_id))
        return header + nonce + ct

    def open(self, raw: bytes, *, queue: str, job_id: str, purpose: str = PURPOSE_PAYLOAD) -> bytes:
        """Decrypt an envelope sealed for this job and queue; raises :class:`DecryptError`
        with a reason that never holds any of the payload."""
        return open_envelope(self, raw, queue=queue, job_id=job_id, purpose=purpose)

    # -- blind index ------------------------------------------------------------------------
    def index_key(self, kid: str) -> bytes:
        """The blind-index HMAC key of key ``kid`` (HKDF-SHA256; never the encryption key)."""
        key = self._index_keys.get(kid)
        if key is None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=_INDEX_INFO).derive(self._keys[kid])
            self._index_keys[kid] = key
        return key

    def token(self, kid: str, queue: str, term: str) -> str:
        """The blind-index token of ``term`` in ``queue`` under key ``kid``: 32 letters a-p."""
        base = self._index_macs.get(kid)
        if base is None:
            base = self._index_macs[kid] = hmac.new(self.index_key(kid), digestmod=hashlib.sha256)
        mac = base.copy()
        mac.update(b"%s\x00%s" % (queue.encode(), term.encode()))
        return mac.digest()[:_TOKEN_BYTES].hex().translate(_HEX_TO_LETTERS)


@lru_cache(maxsize=8)
def _parse_cached(text: str) -> KeyRing:
    return KeyRing.parse(text)


def open_envelope(ring: KeyRing | None, raw: bytes, *, queue: str, job_id: str,
                  purpose: str = PURPOSE_PAYLOAD) -> bytes:
    """Decrypt ``raw``; every failure is a :class:`DecryptError` with a fixed reason."""
    if ring is not None and len(raw) > 3:
        head = 3 + raw[2]
        known = ring._by_header.get(raw[:head])
        if known is not None and len(raw) >= head + NONCE_BYTES + TAG_BYTES:
            # the common case: a well-formed envelope under a key of the ring
            aad = KeyRing._aad(raw[:head], purpose, queue, job_id)
            try:
                return known[1].decrypt(raw[head : head + NONCE_BYTES], raw[head + NONCE_BYTES :],
                                        aad)
            except ring._invalid_tag:
                raise DecryptError("payload authentication failed") from None
    if len(raw) < 2 or raw[1] != VERSION:
        # 0xC1 is never msgpack: either garbage or an envelope this version cannot read
        version = raw[1] if len(raw) > 1 else "missing"
        raise DecryptError(f"decode: malformed payload (not msgpack; as an encryption "
                           f"envelope, version {version} is unknown)")
    if ring is None:
        raise DecryptError(f"payload is encrypted and no key is configured (set {KEYS_ENV})")
    kid = envelope_kid(raw)
    if kid is None:
        raise DecryptError("payload envelope has a malformed key id")
    if kid not in ring:
        raise DecryptError(f"unknown key id {kid}")
    head = 3 + raw[2]
    if len(raw) < head + NONCE_BYTES + TAG_BYTES:
        raise DecryptError("payload envelope is truncated")
    nonce = raw[head : head + NONCE_BYTES]
    aad = KeyRing._aad(raw[:head], purpose, queue, job_id)
    try:
        return ring._aead[kid].decrypt(nonce, raw[head + NONCE_BYTES :], aad)
    except ring._invalid_tag:
        raise DecryptError("payload authentication failed") from None


def sealed_label(raw: bytes, reason: str = "") -> str | None:
    """How a payload that stayed sealed is shown (dashboard, operator CLI): the key id and
    size, and why it was not opened, never its bytes. None when ``raw`` is not an envelope
    with a readable key id (garbage is shown as bytes that do not decode)."""
    kid = envelope_kid(raw)
    if kid is None:
        return None
    why = reason or "not opened here: no key for it, or it fails authentication"
    return f"<encrypted payload (key {kid}, {len(raw)} bytes): {why}>"


__all__ = [
    "KEYS_ENV",
    "PURPOSE_PAYLOAD",
    "PURPOSE_RESULT",
    "PURPOSE_SCHEDULE",
    "KeyRing",
    "envelope_kid",
    "is_envelope",
    "open_envelope",
    "sealed_label",
]
