"""Payload encoding: msgspec msgpack with reused encoders/decoders and a size cap.

A queue built with ``job_type`` validates on ``add`` (encode, then decode with the
type's constraints) and decodes typed values in the worker; without one, any
msgpack-able value passes. The size is checked before decoding: msgspec has no cap
of its own, and a huge entry must not cost the worker its memory.

Encryption at rest goes through this seam too (``streamq/crypto.py``): a codec with a
key ring opens envelopes wherever it decodes (worker, dead letters), and one built with
``encrypt=True`` seals every payload it encodes for its queue and job id. Without a key
ring nothing changes: a payload is plain msgpack, and the only extra work is a look at
its first byte.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .crypto import PURPOSE_PAYLOAD, PURPOSE_RESULT, KeyRing, open_envelope
from .errors import ConfigError, PayloadError
from .redact import mask_phone

_MAGIC = 0xC1  # crypto.MAGIC: the first byte of an envelope, never of msgpack
# the smallest payload value worth masking out of an error reason (an OTP code has 4+)
_MIN_SECRET_CHARS = 4


def type_tag(data: Any) -> str:
    """A payload's type for events and metrics: its msgspec tag, else its Struct's name."""
    cfg = getattr(type(data), "__struct_config__", None)
    if cfg is None:
        return ""
    tag = cfg.tag if cfg.tag is not None else type(data).__name__
    return str(tag).replace("|", "/")


class Codec:
    __slots__ = ("_decoder", "_encoder", "encrypt", "job_type", "keyring", "max_bytes",
                 "queue", "redact_errors")

    def __init__(
        self,
        job_type: Any = None,
        max_bytes: int = 64 * 1024,
        *,
        queue: str = "",
        keyring: KeyRing | None = None,
        encrypt: bool = False,
        redact_errors: bool = False,
    ) -> None:
        if encrypt and keyring is None:
            raise ConfigError(
                f"queue {queue!r} is opened with encrypt=True but no encryption key is "
                "configured: set STREAMQ_ENCRYPTION_KEYS='kid:<base64 of 32 random bytes>'"
            )
        self.job_type = job_type
        self.max_bytes = max_bytes
        self.queue = queue
        self.keyring = keyring
        """Keys that open envelopes (and, with ``encrypt``, seal new ones); None: no keys."""
        self.encrypt = encrypt
        """True: payloads (and results) are sealed before they reach Redis."""
        self.redact_errors = encrypt or redact_errors
        """True: a payload's own values are masked out of error reasons (``redact_error``)."""
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = (
            msgspec.msgpack.Decoder(job_type) if job_type is not None else msgspec.msgpack.Decoder()
        )

    def encode(self, data: Any, job_id: str = "") -> bytes:
        """Encode and validate one payload for ``add`` (sealed for ``job_id`` when the codec
        encrypts); raises PayloadError with the reason."""
        try:
            raw = self._encoder.encode(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PayloadError(f"payload cannot be encoded: {exc}") from None
        if len(raw) > self.max_bytes:
            raise PayloadError(f"payload {len(raw)} B exceeds limit {self.max_bytes} B")
        if self.job_type is not None:
            try:
                self._decoder.decode(raw)
            except msgspec.ValidationError as exc:
                raise PayloadError(f"payload does not validate: {exc}") from None
        if self.encrypt:
            raw = self.seal(raw, job_id)
            if len(raw) > self.max_bytes:
                raise PayloadError(
                    f"payload {len(raw)} B (encrypted) exceeds limit {self.max_bytes} B"
                )
        return raw

    def decode(self, raw: bytes, job_id: str = "") -> Any:
        """Decode one payload in the worker (opening its envelope for ``job_id``); raises
        PayloadError (permanent) with the reason, DecryptError when it cannot be opened."""
        if len(raw) > self.max_bytes:
            raise PayloadError(f"payload {len(raw)} B exceeds limit {self.max_bytes} B")
        if raw and raw[0] == _MAGIC:
            raw = open_envelope(self.keyring, raw, queue=self.queue, job_id=job_id)
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"decode: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PayloadError(f"decode: malformed payload ({exc})") from None
        except RecursionError:
            raise PayloadError("decode: payload nested too deeply") from None

    # -- the envelope, for rotation and stored values ---------------------------------------
    def seal(self, plain: bytes, job_id: str, purpose: str = PURPOSE_PAYLOAD) -> bytes:
        """Seal encoded bytes for one job of this queue under the active key."""
        if self.keyring is None:
            raise ConfigError("no encryption key is configured (STREAMQ_ENCRYPTION_KEYS)")
        return self.keyring.seal(plain, queue=self.queue, job_id=job_id, purpose=purpose)

    def open(self, raw: bytes, job_id: str, purpose: str = PURPOSE_PAYLOAD) -> bytes:
        """The encoded bytes inside ``raw`` (as is when it is not an envelope)."""
        if raw and raw[0] == _MAGIC:
            return open_envelope(self.keyring, raw, queue=self.queue, job_id=job_id,
                                 purpose=purpose)
        return raw

    def rebind(self, raw: bytes, from_id: str, to_id: str, *,
               from_purpose: str = PURPOSE_PAYLOAD, to_purpose: str = PURPOSE_PAYLOAD) -> bytes:
        """A stored payload moved to another binding: an envelope opened for
        (``from_id``, ``from_purpose``) and sealed again under the active key for
        (``to_id``, ``to_purpose``) (a schedule's payload becoming a run's); a clear payload
        as is, or sealed when this codec encrypts. Raises DecryptError when it cannot be
        opened here (no key, unknown key id, tampered)."""
        if raw and raw[0] == _MAGIC:
            plain = open_envelope(self.keyring, raw, queue=self.queue, job_id=from_id,
                                  purpose=from_purpose)
            return self.seal(plain, to_id, to_purpose)
        return self.seal(raw, to_id, to_purpose) if self.encrypt else raw

    # -- values stored with a job (a handler's result) ----------------------------------------
    def encode_value(self, value: Any, job_id: str, purpose: str = PURPOSE_RESULT, *,
                     max_bytes: int | None = None) -> bytes:
        """Encode a value stored with job ``job_id`` (a handler's result): plain msgpack,
        no job type, capped at ``max_bytes`` (default: the payload cap), and sealed when
        the codec encrypts. The sealed form is bound to the job, the queue and
        ``purpose``, so it cannot be passed off as the job's payload or another job's
        result."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        try:
            raw = self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PayloadError(f"{purpose} cannot be encoded: {exc}") from None
        if len(raw) > cap:
            raise PayloadError(f"{purpose} {len(raw)} B exceeds limit {cap} B")
        return self.seal(raw, job_id, purpose) if self.encrypt else raw

    def decode_value(self, raw: bytes, job_id: str, purpose: str = PURPOSE_RESULT, *,
                     queue: str | None = None) -> Any:
        """The inverse of :meth:`encode_value` (an envelope is opened for ``job_id`` of
        ``queue``, default this codec's: a flow parent reads its children's results, which
        may come from another queue; DecryptError when it cannot be)."""
        try:
            if raw and raw[0] == _MAGIC:
                raw = open_envelope(self.keyring, raw, queue=queue or self.queue,
                                    job_id=job_id, purpose=purpose)
            return _PLAIN.decode(raw)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"decode {purpose}: malformed ({exc})") from None
        except RecursionError:
            raise PayloadError(f"decode {purpose}: nested too deeply") from None

    # -- error reasons -------------------------------------------------------------------------
    def redact_error(self, text: str, data: Any) -> str:
        """Mask the payload's own values out of an error reason before it is stored.

        For an encrypting codec (its payloads are secret at rest) and one built with
        ``redact_errors`` (the SMS queue: its texts carry OTP codes, which the generic
        redaction of logs cannot tell from other words): a handler's or provider's
        exception that quotes the payload (``ValueError(f"bad code {code}")``) must not
        put it in clear into the dead letters, records, events and logs. Every text or number of
        4+ characters in the payload, and every word of 4+ characters of its texts, is
        replaced with ``***``, and so is the masked form (``7391****254``) that the
        generic redaction leaves of a long digit run; the type tag is kept."""
        if not self.redact_errors or not text:
            return text
        whole, words = _secrets_of(data)
        for value in sorted(whole, key=len, reverse=True):
            text = text.replace(value, "***")
        if words:
            pattern = r"\b(?:" + "|".join(map(re.escape, sorted(words, key=len,
                                                                 reverse=True))) + r")\b"
            text = re.sub(pattern, "***", text, flags=re.IGNORECASE)
        return text


def _secrets_of(data: Any) -> tuple[set[str], set[str]]:
    """Text and number leaves (4+ characters) of a payload, and the words of its texts."""
    try:
        tree = msgspec.to_builtins(data)
    except (TypeError, ValueError):
        return set(), set()
    tag = type_tag(data)
    whole: set[str] = set()
    words: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, str):
            if len(node) >= _MIN_SECRET_CHARS and node != tag:
                whole.add(node)
                if sum(c.isdigit() for c in node) >= 8:
                    whole.add(mask_phone(node))
                words.update(w for w in re.findall(r"\w+", node) if len(w) >= _MIN_SECRET_CHARS)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            value = str(node)
            if len(value) >= _MIN_SECRET_CHARS:
                whole.add(value)
                if len(value) >= 8:
                    whole.add(mask_phone(value))
    return whole, words


_PLAIN: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
