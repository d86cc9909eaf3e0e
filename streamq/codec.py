"""Payload encoding: msgspec msgpack with reused encoders/decoders and a size cap.

A queue built with ``job_type`` validates on ``add`` (encode, then decode with the
type's constraints) and decodes typed values in the worker; without one, any
msgpack-able value passes. The size is checked before decoding: msgspec has no cap
of its own, and a huge entry must not cost the worker its memory.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import PayloadError


def type_tag(data: Any) -> str:
    """A payload's type for events and metrics: its msgspec tag, else its Struct's name."""
    cfg = getattr(type(data), "__struct_config__", None)
    if cfg is None:
        return ""
    tag = cfg.tag if cfg.tag is not None else type(data).__name__
    return str(tag).replace("|", "/")


class Codec:
    __slots__ = ("_decoder", "_encoder", "job_type", "max_bytes")

    def __init__(self, job_type: Any = None, max_bytes: int = 64 * 1024) -> None:
        self.job_type = job_type
        self.max_bytes = max_bytes
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = (
            msgspec.msgpack.Decoder(job_type) if job_type is not None else msgspec.msgpack.Decoder()
        )

    def encode(self, data: Any) -> bytes:
        """Encode and validate one payload for ``add``; raises PayloadError with the reason."""
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
        return raw

    def decode(self, raw: bytes) -> Any:
        """Decode one payload in the worker; raises PayloadError (permanent) with the reason."""
        if len(raw) > self.max_bytes:
            raise PayloadError(f"payload {len(raw)} B exceeds limit {self.max_bytes} B")
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"decode: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PayloadError(f"decode: malformed payload ({exc})") from None
        except RecursionError:
            raise PayloadError("decode: payload nested too deeply") from None

    # -- values stored with a job (a handler's result) ----------------------------------------
    def encode_value(self, value: Any, job_id: str, purpose: str = "result", *,
                     max_bytes: int | None = None) -> bytes:
        """Encode a value stored with job ``job_id`` (a handler's result): plain msgpack,
        no job type, capped at ``max_bytes`` (default: the payload cap). The one place a
        stored value is encoded, so encryption at rest can seal it here for its job."""
        del job_id  # the associated data once stored values are encrypted
        cap = self.max_bytes if max_bytes is None else max_bytes
        try:
            raw = self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PayloadError(f"{purpose} cannot be encoded: {exc}") from None
        if len(raw) > cap:
            raise PayloadError(f"{purpose} {len(raw)} B exceeds limit {cap} B")
        return raw

    def decode_value(self, raw: bytes, job_id: str, purpose: str = "result") -> Any:
        """The inverse of :meth:`encode_value`."""
        del job_id
        try:
            return _PLAIN.decode(raw)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"decode {purpose}: malformed ({exc})") from None
        except RecursionError:
            raise PayloadError(f"decode {purpose}: nested too deeply") from None


_PLAIN: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
