"""One running site for end-to-end tests: a gateway, a simulator registered to it (catalog synced) and, with
``site``, an HTTP client of its API; torn down in reverse order."""

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
async def simulated(config: Config, **sim: Any) -> AsyncIterator[tuple[Gateway, Simulator]]:
    """``async with simulated(config, channels=1) as (gw, sim)``: ``sim`` keyword arguments go to ``SimConfig``
    (see ``test_streams.started``)."""
    async with running_gateway(config) as gw:
        simulator = await started(gw, **sim)
        try:
            yield gw, simulator
        finally:
            await simulator.stop()


@asynccontextmanager
async def site(config: Config, **sim: Any) -> AsyncIterator[tuple[Gateway, Simulator, Http]]:
    """``simulated`` with an HTTP client of the gateway's API: ``async with site(config) as (gw, sim, http)``."""
    async with simulated(config, **sim) as (gw, simulator):
        http = Http(gw.http.port)
        try:
            yield gw, simulator, http
        finally:
            await http.close()
