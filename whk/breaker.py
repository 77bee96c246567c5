"""The circuit breaker's settings: one shape for the global ``delivery.breaker`` setting
(whk_05_configuracoes) and a webhook's ``breaker_config`` override.

The breaker itself is SQL (whk.record_outcomes opens it, whk.claim_deliveries grants the half-open
probe); these are exactly the members it reads, with the bounds whk.breaker_config_problem enforces:

* ``failure_threshold``: consecutive failed requests that open the breaker;
* ``open_s``: the first open period, doubled per failed probe;
* ``open_max_s``: the cap of that doubling period.

A webhook's override is read member by member before the global setting, then the built-in default
(the values below, which the seed row also carries).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["BreakerConfig"]


class BreakerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Circuit breaker settings (the global 'delivery.breaker' or a webhook's breaker_config)."""

    failure_threshold: Annotated[int, Meta(ge=1, le=1000)] = 5
    open_s: Annotated[float, Meta(ge=0.001, le=86400)] = 60
    open_max_s: Annotated[float, Meta(ge=0.001, le=604800)] = 600
