"""Dump everything a Redis holds, type by type, and read its AOF: for at-rest scans."""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def dump_all(r: Any) -> list[tuple[bytes, bytes]]:
    """(key, one value) pairs for every key of every type: SCAN, then a type-aware read of
    each key (stream entries with their fields, hash fields and values, zset members and
    scores, list items, set members, string values). Key names are included as values of
    their own, so a scan of the pairs sees them too."""
    out: list[tuple[bytes, bytes]] = []
    async for key in r.scan_iter(count=1000):
        out.append((key, key))
        kind = (await r.type(key)).decode()
        if kind == "string":
            out.append((key, await r.get(key) or b""))
        elif kind == "hash":
            for f, v in (await r.hgetall(key)).items():
                out += [(key, f), (key, v)]
        elif kind == "zset":
            for m, s in await r.zrange(key, 0, -1, withscores=True):
                out += [(key, m), (key, str(s).encode())]
        elif kind == "stream":
            for entry_id, fields in await r.xrange(key):
                out.append((key, entry_id))
                for f, v in fields.items():
                    out += [(key, f), (key, v)]
            for group in await r.xinfo_groups(key):
                out.append((key, group["name"]))
                for c in await r.xinfo_consumers(key, group["name"]):
                    out.append((key, c["name"]))
        elif kind == "list":
            out += [(key, v) for v in await r.lrange(key, 0, -1)]
        elif kind == "set":
            out += [(key, v) for v in await r.smembers(key)]
        elif kind == "none":
            continue  # expired or deleted since SCAN listed it (a lock, a TTL'd record)
        else:
            raise AssertionError(f"unexpected key type {kind} of {key!r}")
    return out


def aof_bytes(directory: Path) -> bytes:
    """Every byte of the AOF (Redis 7: the base and incremental files of appendonlydir)."""
    files = sorted(p for p in directory.rglob("*.aof*") if p.is_file())
    assert files, f"no AOF file under {directory}"
    return b"".join(p.read_bytes() for p in files)


def findings(haystacks: list[tuple[bytes, bytes]], needles: dict[str, bytes]) -> list[str]:
    """Where each needle appears: 'name in <key>'."""
    hits = []
    for key, value in haystacks:
        for name, needle in needles.items():
            if needle in value:
                hits.append(f"{name} in {key!r}")
    return hits
