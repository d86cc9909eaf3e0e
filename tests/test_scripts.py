"""The Lua registry, key layout and packaging: headers, hash tags, the wheel carries lua/."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from redis.crc import key_slot

import streamq
from streamq import JobOptions, Queue
from streamq.keys import QueueKeys
from streamq.scripts import FLOW_SHARED, SCRIPT_NAMES, SHARED, load_scripts, lua_dir

ROOT = Path(__file__).resolve().parents[1]


def test_every_lua_file_is_registered_and_has_its_header_contract() -> None:
    files = sorted(p.stem for p in (ROOT / "lua").glob("*.lua"))
    assert files == sorted([*SCRIPT_NAMES, SHARED, FLOW_SHARED])
    for name, script in load_scripts().items():
        src = script.text
        assert re.search(r"KEYS\[1", src), name
        header = src.split("]]", 1)[0]
        assert "Returns" in header, name
        # every KEYS[i] the body uses is documented in the header
        used = {int(m) for m in re.findall(r"KEYS\[(\d+)\]", src.split("]]", 1)[1])}
        documented = set()
        for a, b in re.findall(r"KEYS\[(\d+)(?:\.\.(\d+))?\]", header):
            documented.update(range(int(a), int(b or a) + 1))
        assert used <= documented | {1}, (name, used - documented)


def test_scripts_that_free_memory_run_under_oom_and_adds_do_not() -> None:
    s = load_scripts()
    for name in ("complete", "dead_letter", "retry", "defer", "release", "extend", "reclaim", "claim",
                 "cancel", "resume"):
        assert "allow-oom" in s[name].flags, name
    for name in ("enqueue", "replay"):
        assert "allow-oom" not in s[name].flags, name
    for name in ("get_job", "counts"):
        assert "no-writes" in s[name].flags, name


def test_no_script_builds_key_names_itself() -> None:
    for name, script in load_scripts().items():
        body = script.text.split("]]", 1)[1]
        assert "streamq:" not in body, name
        # the key argument of a command is never a string built in Lua
        assert not re.search(r"redis\.p?call\('\w+', [^,)]*\.\.", body), name


async def test_all_keys_of_a_queue_share_one_cluster_slot(
    redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    slots = {key_slot(k.encode()) for k in [*keys.all_fixed(), keys.job("abc")]}
    assert len(slots) == 1
    async with Queue(queue_name, redis_url=redis_url) as q:
        await q.add({"a": 1}, JobOptions(job_id="k1"))
        await q.add({"a": 1}, JobOptions(delay=60))
        await q.cancel("k1")
        found = [k async for k in q.redis.scan_iter(match=f"streamq:{{{queue_name}}}:*")]
        assert found and {key_slot(k) for k in found} == slots


def test_public_api_is_complete_and_sorted() -> None:
    assert streamq.__all__ == sorted(streamq.__all__)
    for name in ("Queue", "Worker", "Job", "JobOptions", "JobRef", "JobState",
                 "PermanentError"):
        assert name in streamq.__all__
    for name in streamq.__all__:
        assert getattr(streamq, name) is not None


@pytest.mark.timeout(300)
def test_built_wheel_carries_and_finds_the_lua_scripts(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("streamq-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    for name in [*SCRIPT_NAMES, SHARED, FLOW_SHARED]:
        assert f"streamq/lua/{name}.lua" in names
    assert "streamq/py.typed" in names
    for name in ("app.js", "style.css"):  # the dashboard's files, served from the package
        assert f"streamq/dashboard/static/{name}" in names
    # the installed package finds its scripts inside itself, not in a source tree
    out = subprocess.run(
        [sys.executable, "-c",
         "from streamq.scripts import lua_dir, load_scripts; load_scripts(); print(lua_dir())"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, text=True,
    )
    assert out.stdout.strip() == str(tmp_path / "site" / "streamq" / "lua")
    assert lua_dir().is_dir()
