"""Key rotation: re-encrypt a queue's stored payloads under the active key.

After a new key is put first in ``STREAMQ_ENCRYPTION_KEYS`` (the old ones stay listed,
so they keep decrypting), :func:`rotate_keys` walks every place a payload rests and
rewrites each one still sealed under an older key, one atomic transition per payload
(``lua/rotate_payload.lua``), compare-and-set on the exact bytes it read:

- delayed jobs and scheduled retries: rewritten in place (due time unchanged);
- waiting jobs: re-added at the tail of the same priority lane, with the same creation
  time, and the job's location updated in the same transition. Lanes are walked oldest
  first, so the rotated jobs keep their order among themselves; jobs added meanwhile
  (already under the new key) may come before them;
- dead letters: re-added at the end of the dead-letter stream, the failed record pointed
  at the new entry;
- schedules: each schedule's stored payload (sealed for the schedule, not a job) is
  rewritten in place; runs it fires meanwhile are sealed for their own ids anyway;
- flow parents waiting for their children: the payload kept in the flow hash is
  rewritten in place (found by a SCAN of the partition's flow hashes);
- job records hold no payload (state, counts, times, the redacted error): nothing to do.

A partitioned queue is walked partition by partition, place by place (every delayed set,
then every partition's lanes, then every dead-letter stream); each rewrite names the keys
of the one partition that holds the payload, so it stays a single-slot transition, and
the job's blind-index entries (kept in that partition too) move with it.

Active jobs (entries in a consumer's pending list) are never touched: their worker holds
them and a rewrite would orphan its claim. Each keeps its old-key payload until it
finishes (completed: the payload is deleted) or moves (a retry to the delayed set, a
failure to the dead letters, a shutdown or crash back to its lane), carrying the payload
as it is; a later run rotates it there. Remove an old key from the ring only once a
run reports nothing left under it.

When the queue has a blind index, the rotated job's index entries move to the active
key id in the same transition (the terms come from the payload just opened).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .blind_index import BlindIndex, Terms
from .connection import translate_redis_errors
from .crypto import PURPOSE_PAYLOAD, PURPOSE_SCHEDULE, envelope_kid, is_envelope
from .errors import ConfigError, DecryptError
from .keys import GROUP, QueueKeys
from .pipelines import Call
from .queue import Queue

Progress = Callable[[str, int, int], None]
"""Called as (place, payloads looked at, payloads there when the run started)."""

BATCH = 200
PLACES = ("delayed", "waiting", "dead", "schedules", "flows")


@dataclass
class RotationReport:
    """What a run did, by place, and what it left and why."""

    active_kid: str
    rotated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLACES, 0))
    current: int = 0
    """Payloads already under the active key."""
    reindexed: int = 0
    """Rotated jobs whose blind-index entries moved to the active key id."""
    left: dict[str, int] = field(default_factory=dict)
    """Payloads left as they are, by reason."""

    def leave(self, reason: str) -> None:
        self.left[reason] = self.left.get(reason, 0) + 1

    @property
    def total_rotated(self) -> int:
        return sum(self.rotated.values())


def _cmsgpack_first_two(packed: bytes) -> tuple[bytes, bytes] | None:
    """The first two elements (job id, payload) of a delayed entry packed by Lua's
    cmsgpack, as bytes: cmsgpack writes Lua strings as msgpack str, which may hold any
    bytes (an envelope is not UTF-8), so a normal decoder would refuse them."""
    try:
        pos = 0
        head = packed[pos]
        if 0x90 <= head <= 0x9F:
            pos = 1
        elif head == 0xDC:
            pos = 3
        elif head == 0xDD:
            pos = 5
        else:
            return None
        out: list[bytes] = []
        for _ in range(2):
            b = packed[pos]
            if 0xA0 <= b <= 0xBF:
                n, pos = b & 0x1F, pos + 1
            elif b in (0xD9, 0xC4):
                n, pos = packed[pos + 1], pos + 2
            elif b in (0xDA, 0xC5):
                n, pos = struct.unpack_from(">H", packed, pos + 1)[0], pos + 3
            elif b in (0xDB, 0xC6):
                n, pos = struct.unpack_from(">I", packed, pos + 1)[0], pos + 5
            else:
                return None
            if pos + n > len(packed):
                return None
            out.append(packed[pos : pos + n])
            pos += n
        return out[0], out[1]
    except (IndexError, struct.error):
        return None


class _Rotator:
    def __init__(self, queue: Queue, terms: Terms | None, include_plaintext: bool,
                 progress: Progress | None) -> None:
        ring = queue.codec.keyring
        if ring is None:
            raise ConfigError("rotate-keys needs the keys: set STREAMQ_ENCRYPTION_KEYS "
                              "(the new key first, the old ones after it)")
        self.q = queue
        self.ring = ring
        self.index: BlindIndex | None = None
        if terms is not None:
            self.index = BlindIndex(terms, ring, queue.name, 1.0)
        self.include_plaintext = include_plaintext
        self.progress = progress
        self.report = RotationReport(ring.active)
        self._plain: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()

    def replacement(self, job_id: str, payload: bytes, purpose: str = PURPOSE_PAYLOAD
                    ) -> tuple[bytes, bytes] | None:
        """(the encoded payload, its re-encryption under the active key), or None with the
        reason recorded when it stays as it is. ``job_id`` and ``purpose`` are what the
        envelope is bound to (a schedule's payload: its schedule id, ``schedule``)."""
        codec = self.q.codec
        if not is_envelope(payload):
            if not self.include_plaintext:
                self.report.leave("not encrypted (use --include-plaintext to encrypt it)")
                return None
            plain = payload
        else:
            kid = envelope_kid(payload)
            if kid == self.ring.active:
                self.report.current += 1
                return None
            try:
                plain = codec.open(payload, job_id, purpose)
            except DecryptError as exc:
                self.report.leave(str(exc))
                return None
        return plain, codec.seal(plain, job_id, purpose)

    def index_pairs(self, plain: bytes, k: QueueKeys) -> list[str]:
        """(old set, new set) pairs moving the job's index entries (in its partition ``k``)
        to the active key id."""
        index = self.index
        if index is None:
            return []
        try:
            data = self._plain.decode(plain)
            new = index.index_keys(data, k)
            pairs: list[str] = []
            for kid in self.ring.kids:
                if kid == self.ring.active:
                    continue
                for old_key, new_key in zip(index.index_keys(data, k, kid), new, strict=True):
                    pairs += [old_key, new_key]
            return pairs
        except (msgspec.DecodeError, ValueError, TypeError, KeyError):
            return []

    async def run_batch(self, k: QueueKeys,
                        items: Sequence[tuple[str, str, str, int, bytes]]) -> None:
        """Rewrite a batch of partition ``k`` in one pipeline: one transition per payload,
        applied in order (so re-added stream entries keep their order among themselves)."""
        calls: list[tuple[str, bool]] = []
        sends: list[Call] = []
        for place, job_id, entry_id, lane_no, payload in items:
            schedule = place == "schedules"  # job_id is the schedule's id
            got = self.replacement(job_id, payload,
                                   PURPOSE_SCHEDULE if schedule else PURPOSE_PAYLOAD)
            if got is None:
                continue
            plain, sealed = got
            # (schedules and flow jobs are not in the blind index)
            pairs = [] if place in ("schedules", "flows") else self.index_pairs(plain, k)
            where = {"waiting": "lane", "schedules": "schedule", "flows": "flow"}.get(place, place)
            held = (k.schedule(job_id) if schedule else k.flow(job_id) if place == "flows"
                    else k.delayed_data)
            sends.append((
                "rotate_payload",
                [k.lanes[lane_no], held, k.dead, k.moves, k.bucket(job_id), k.job(job_id),
                 *pairs],
                [where, job_id, entry_id, GROUP, lane_no, payload, sealed]))
            calls.append((place, bool(pairs)))
        if not calls:
            return
        # one pipeline (one slot, so one master on a cluster), in order; a call sent again
        # (NOSCRIPT, cluster trouble) is safe: it only replaces the bytes it was given
        results = await self.q.run_calls(sends, per_trip=None)
        for (place, moved), r in zip(calls, results, strict=True):
            if int(r) == 1:
                self.report.rotated[place] += 1
                self.report.reindexed += moved
            elif int(r) == -1:
                self.report.leave("active: held by a worker (rotated once it moves; a "
                                  "completed job's payload is deleted)")
            else:
                self.report.leave("changed meanwhile (the job moved or finished)")

    def tick(self, place: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(place, done, total)

    # -- the places ------------------------------------------------------------------------
    async def delayed(self, parts: Sequence[QueueKeys]) -> None:
        r: Any = self.q.redis  # untyped replies (decode_responses=False: bytes)
        total = sum([int(await r.hlen(k.delayed_data)) for k in parts])
        done = 0
        self.tick("delayed", done, total)
        for k in parts:
            cursor = 0
            while True:
                cursor, chunk = await r.hscan(k.delayed_data, cursor, count=BATCH)
                items: list[tuple[str, str, str, int, bytes]] = []
                for field_name, packed in chunk.items():
                    parsed = _cmsgpack_first_two(packed)
                    job_id = field_name.decode("utf-8", "replace")
                    if parsed is None or parsed[0] != field_name:
                        self.report.leave("unreadable delayed entry")
                        continue
                    items.append(("delayed", job_id, "", 1, parsed[1]))
                await self.run_batch(k, items)
                done += len(chunk)
                self.tick("delayed", done, total)
                if cursor == 0:
                    break

    async def streams(self, place: str,
                      streams: Sequence[tuple[QueueKeys, str, int]]) -> None:
        """Walk stream entries (partition, key, lane number), oldest first, each stream up
        to its newest entry at the start: rewritten entries are re-added after it."""
        r: Any = self.q.redis  # untyped replies (decode_responses=False: bytes)
        total = sum([int(await r.xlen(key)) for _, key, _ in streams])
        done = 0
        self.tick(place, done, total)
        for k, key, lane_no in streams:
            last = await r.xrevrange(key, count=1)
            if not last:
                continue
            end = last[0][0]
            after: bytes | str = "-"
            while entries := await r.xrange(key, min=after, max=end, count=BATCH):
                items: list[tuple[str, str, str, int, bytes]] = []
                for entry_id, fields in entries:
                    job_id, payload = fields.get(b"j"), fields.get(b"d")
                    if job_id is None or payload is None:
                        self.report.leave("malformed entry (no job id or payload)")
                        continue
                    items.append((place, job_id.decode("utf-8", "replace"), entry_id.decode(),
                                  lane_no, payload))
                await self.run_batch(k, items)
                done += len(entries)
                self.tick(place, done, total)
                after = b"(" + entries[-1][0]

    async def schedules(self, parts: Sequence[QueueKeys]) -> None:
        """Each schedule's stored payload (the field ``d`` of its hash)."""
        r: Any = self.q.redis  # untyped replies (decode_responses=False: bytes)
        ids = [(k, sid) for k in parts for sid in await r.zrange(k.schedules, 0, -1)]
        done = 0
        self.tick("schedules", done, len(ids))
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            pipe = r.pipeline(transaction=False)
            for k, sid in batch:
                pipe.hget(k.schedule(sid.decode()), "d")
            payloads = await pipe.execute()
            by_part: dict[int, list[tuple[str, str, str, int, bytes]]] = {}
            for (k, sid), d in zip(batch, payloads, strict=True):
                if d is not None:  # removed meanwhile
                    by_part.setdefault(k.partition, []).append(
                        ("schedules", sid.decode(), "", 1, d))
            for p, items in by_part.items():
                await self.run_batch(self.q.layout.keys(p), items)
            done += len(batch)
            self.tick("schedules", done, len(ids))

    async def flows(self, parts: Sequence[QueueKeys]) -> None:
        """The payloads flow parents keep while they wait for their children."""
        r: Any = self.q.redis  # untyped replies (decode_responses=False: bytes)
        found: list[tuple[QueueKeys, str]] = []
        for k in parts:
            start = len(k.flow(""))
            async for key in r.scan_iter(match=k.flow("*"), count=1000):
                found.append((k, key[start:].decode("utf-8", "replace")))
        done = 0
        self.tick("flows", done, len(found))
        for first in range(0, len(found), BATCH):
            batch = found[first : first + BATCH]
            pipe = r.pipeline(transaction=False)
            for k, job_id in batch:
                pipe.hget(k.flow(job_id), "d")
            payloads = await pipe.execute()
            by_part: dict[int, list[tuple[str, str, str, int, bytes]]] = {}
            for (k, job_id), d in zip(batch, payloads, strict=True):
                if d is not None:  # released (its payload is in a lane now) or finished
                    by_part.setdefault(k.partition, []).append(("flows", job_id, "", 1, d))
            for p, items in by_part.items():
                await self.run_batch(self.q.layout.keys(p), items)
            done += len(batch)
            self.tick("flows", done, len(found))

    async def run(self) -> RotationReport:
        # every partition (0, the home, first); a count only grows, so the partitions of
        # earlier counts are among them
        parts = self.q.layout.all_keys(await self.q.partition_count())
        await self.delayed(parts)
        await self.streams("waiting", [(k, lane, i) for k in parts
                                       for i, lane in enumerate(k.lanes)])
        await self.streams("dead", [(k, k.dead, 1) for k in parts])
        await self.schedules(parts)
        await self.flows(parts)
        return self.report


async def rotate_keys(queue: Queue, *, terms: Terms | None = None,
                      include_plaintext: bool = False,
                      progress: Progress | None = None) -> RotationReport:
    """Re-encrypt ``queue``'s stored payloads under the active key (see the module doc).

    ``terms``: the queue's blind-index terms function, to move rotated jobs' index entries
    to the active key id (default: the queue's own, when it has one).
    ``include_plaintext``: also encrypt payloads stored in clear (written before
    encryption was switched on). Safe to run while workers and producers run, and to
    run again: it only replaces a payload that is still exactly what it read."""
    if terms is None and queue.blind_index is not None:
        terms = queue.blind_index.terms
    rotator = _Rotator(queue, terms, include_plaintext, progress)
    with translate_redis_errors(queue.redis_url):
        return await rotator.run()


__all__ = ["RotationReport", "rotate_keys"]
