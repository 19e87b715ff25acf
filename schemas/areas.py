"""A tenant's areas (地区 / 町丁目), and where the 気象庁 places each: what a roll-call names.

The tenant names its areas its own way; each maps to the JMA city (市町村等, 7 digits) and 細分区域
(3 digits) it lies in, so that a bulletin's 震度 per city or per region can reach it
(streams/jma/trigger.py). Members and groups carry an area's id (schemas/settings.py).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    name: str
    city: str | None = None     # JMA city (市町村等) code, 7 digits
    region: str | None = None   # JMA 細分区域 code, 3 digits

    def to_obj(self) -> list:
        return [self.id, self.name, self.city, self.region]

    @staticmethod
    def from_obj(obj: list) -> "Area":
        return Area(*obj)
