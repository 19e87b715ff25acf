"""linesim: a LINE Messaging API simulator for anpi's tests, demos and benchmarks.

    from linesim import Channel, Config, Resident, run_linesim
    async with run_linesim(Config(channels=[Channel("city", access_token="t", secret="s")])) as sim:
        ...  # point line-bot-sdk at sim.base_url; read sim.state.deliveries / sim.state.stats()
"""
from .limits import LINE_RATES, ManualClock, Rate, ScaledClock, WallClock
from .residents import Group, Resident, group_id_for, sign, user_id_for, verify
from .server import Channel, Config, Delivery, Sim, SimState, create_app, run_linesim
from .spec import request_validator, webhook_validator

__all__ = [
    "Channel", "Config", "Delivery", "Group", "LINE_RATES", "ManualClock", "Rate", "Resident", "ScaledClock",
    "Sim", "SimState", "WallClock", "create_app", "group_id_for", "request_validator", "run_linesim", "sign",
    "user_id_for", "verify", "webhook_validator",
]
