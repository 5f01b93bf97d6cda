"""One running site for end-to-end tests: a gateway, a simulator registered to it (catalog synced) and an HTTP
client of its API, torn down in reverse order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gw_util import running_gateway
from test_api import Http
from test_streams import started

from gateway.app import Gateway
from gateway.config import Config
from gateway.sim import Simulator


@asynccontextmanager
async def site(config: Config, **sim: Any) -> AsyncIterator[tuple[Gateway, Simulator, Http]]:
    """``async with site(config, channels=1) as (gw, sim, http)``: ``sim`` keyword arguments go to ``SimConfig``
    (see ``test_streams.started``)."""
    async with running_gateway(config) as gw:
        simulator = await started(gw, **sim)
        http = Http(gw.http.port)
        try:
            yield gw, simulator, http
        finally:
            await http.close()
            await simulator.stop()
