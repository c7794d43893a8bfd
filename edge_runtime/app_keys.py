"""The typed keys under which app.py hands the running parts to the routes (aiohttp AppKeys)."""

from __future__ import annotations

from aiohttp import web

from edge_runtime.api.body import BodyBudget
from edge_runtime.api.urlfetch import UrlPolicy
from edge_runtime.control import Controller
from edge_runtime.events.delivery import Delivery
from edge_runtime.inference.service import InferenceService
from edge_runtime.opcua.part import OpcUaPart
from edge_runtime.settings import Settings
from edge_runtime.sources.cameras import Cameras
from edge_runtime.stations.service import Stations
from edge_runtime.status import StatusBoard

SETTINGS = web.AppKey("settings", Settings)  # as started; the live configuration is the controller's
BOARD = web.AppKey("board", StatusBoard)
INFERENCE = web.AppKey("inference", InferenceService)
BODIES = web.AppKey("bodies", BodyBudget)  # request bodies held in memory, all clients together
URL_POLICY = web.AppKey("url_policy", UrlPolicy)
DELIVERY = web.AppKey("delivery", Delivery)
CAMERAS = web.AppKey("cameras", Cameras)
CONTROLLER = web.AppKey("controller", Controller)
STATIONS = web.AppKey("stations", Stations)
OPCUA = web.AppKey("opcua", OpcUaPart)  # its endpoint (the real port when opcua.port is 0)
