"""Typed application state shared by the composition root and the routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from edge_runtime.api.admission import Admission
from edge_runtime.api.urlfetch import UrlPolicy
from edge_runtime.control import Controller
from edge_runtime.model_slot import ModelSlot
from edge_runtime.pipeline import Pipeline
from edge_runtime.settings import Settings


@dataclass(frozen=True, slots=True)
class Capacity:
    workers: int
    max_inflight: int


SETTINGS = web.AppKey("settings", Settings)
MODEL = web.AppKey("model", ModelSlot)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
CAPACITY = web.AppKey("capacity", Capacity)
URL_POLICY = web.AppKey("url_policy", UrlPolicy)
ADMISSION = web.AppKey("admission", Admission)


PIPELINE = web.AppKey("pipeline", Pipeline)
CONTROLLER = web.AppKey("controller", Controller)
