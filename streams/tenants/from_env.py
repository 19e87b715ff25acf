"""A tenant's LINE channel from the environment: secrets stay out of argv, shell history and logs."""
from __future__ import annotations

import os
import sys

from schemas.tenant import Tenant
from streams import startup


def tenant_from_env(command: str, default_id: str) -> Tenant | None:
    """ANPI_TENANT, ANPI_CHANNEL_SECRET, ANPI_CHANNEL_ACCESS_TOKEN, ANPI_TIMEZONE; None (and why, on
    stderr) when the channel's secrets are missing; `startup.BadSetting` for a bad id or zone."""
    secret, token = os.environ.get("ANPI_CHANNEL_SECRET"), os.environ.get("ANPI_CHANNEL_ACCESS_TOKEN")
    if not secret or not token:
        print(f"anpi {command}: set ANPI_CHANNEL_SECRET and ANPI_CHANNEL_ACCESS_TOKEN (the LINE channel's)",
              file=sys.stderr)
        return None
    return Tenant(startup.tenant_id(os.environ.get("ANPI_TENANT", default_id)), secret, token,
                  startup.zone(os.environ.get("ANPI_TIMEZONE", "Asia/Tokyo")))
