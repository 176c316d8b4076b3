"""The real MCP clients the tests connect with: the current ``mcp`` 2.x (this venv) and a 1.x
(the 2025-11-25 revision's client) in a venv of its own, made once and kept in a cache dir."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

MCP1_REQUIREMENT = "mcp>=1.23,<2"
MCP1_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "actioncage-tests"
    / "mcp1-venv"
)


@asynccontextmanager
async def mcp_client(base: str, key: str | None, mode: str = "auto") -> AsyncIterator[Client]:
    """A connected 2.x client of ``base``/mcp (``mode``: auto, legacy or a version)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    http = create_mcp_http_client(headers=headers)
    async with (
        http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode) as c,
    ):
        yield c


def mcp1_python() -> Path:
    """The interpreter of a venv holding a 1.x ``mcp``, made when missing (pip, once)."""
    python = MCP1_VENV / "bin" / "python"
    if python.exists():
        return python
    MCP1_VENV.parent.mkdir(parents=True, exist_ok=True)
    building = MCP1_VENV.with_name(MCP1_VENV.name + f".{os.getpid()}")
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    done = subprocess.run(
        [str(building / "bin" / "pip"), "install", "-q", MCP1_REQUIREMENT],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot install {MCP1_REQUIREMENT}: {done.stderr[-2000:]}")
    with contextlib.suppress(OSError):  # another session made it first
        building.rename(MCP1_VENV)
    return python


_MCP1_SCRIPT = """
import asyncio, json, sys
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

async def main(url, key, calls):
    out = {}
    headers = {"Authorization": "Bearer " + key}
    async with streamablehttp_client(url, headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["protocolVersion"] = init.protocolVersion
            out["serverName"] = init.serverInfo.name
            tools = await session.list_tools()
            out["tools"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True)
                            for t in tools.tools]
            out["calls"] = []
            for name, args in calls:
                try:
                    result = await session.call_tool(name, args)
                    out["calls"].append(result.model_dump(mode="json", by_alias=True,
                                                          exclude_none=True))
                except Exception as exc:
                    out["calls"].append({"exception": type(exc).__name__, "message": str(exc),
                                         "code": getattr(getattr(exc, "error", None), "code", None)})
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
"""


def mcp1_session(base: str, key: str, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Connect a 1.x client to ``base``/mcp: initialize, list tools, make ``calls``.
    Returns {protocolVersion, serverName, tools, calls: [CallToolResult or exception]}."""
    done = subprocess.run(
        [str(mcp1_python()), "-c", _MCP1_SCRIPT, f"{base}/mcp", key, json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout)
    return out
