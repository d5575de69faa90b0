"""Each channel's estimated cost per message, for budget verdicts before anything is sent.

A provider chain's estimate is its first provider's: `cost_per_message` from the providers file, else
the adapter's own price (`cost_per_message`, or `cost_per_segment` for one segment). The actual cost is
what the provider's send reports, counted at send; the estimate only decides whether a send fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeGuard

from channels.accounts import AccountAwareChain
from channels.base import Channel
from channels.failover import ProviderChain
from channels.providers import ProviderSpec

_PRICES = ("cost_per_message", "cost_per_segment")


def estimated_costs(channels: Mapping[str, Channel]) -> dict[str, float]:
    """Channel name -> estimated cost of one message (0 where nothing states a price)."""
    return {name: estimated_cost(channel) for name, channel in channels.items()}


def estimated_cost(channel: Channel) -> float:
    # A chain over channel accounts too (channels/accounts.py) is priced by its providers file's first
    # route, else by its first account's as loaded at start.
    if isinstance(channel, ProviderChain | AccountAwareChain) and channel.routes:
        first = channel.routes[0]
        if first.cost_per_message is not None:
            return first.cost_per_message
        return estimated_cost(first.adapter)
    # Adapters keep their validated options privately; the price is the only field read here.
    options = getattr(channel, "_options", None)
    for name in _PRICES:
        price = getattr(options, name, None)
        if _is_price(price):
            return float(price)
    return 0.0


def costs_from_specs(specs: Sequence[ProviderSpec]) -> dict[str, float]:
    """The same estimates from the providers file alone (no adapter built, no secret needed)."""
    first: dict[str, ProviderSpec] = {}
    for spec in sorted(specs, key=lambda s: s.priority):
        first.setdefault(spec.channel, spec)
    costs: dict[str, float] = {}
    for channel, spec in first.items():
        stated = [spec.cost_per_message, *(getattr(spec.options, name, None) for name in _PRICES)]
        costs[channel] = next((float(p) for p in stated if _is_price(p)), 0.0)
    return costs


def _is_price(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
