"""Typed keys for what handlers share through the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from scheduler.scheduler import Scheduler
from server.settings import Settings
from store.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
SCHEDULER = web.AppKey("scheduler", Scheduler)
