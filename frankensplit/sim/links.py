"""Network links for the latency model: named presets and ``NAME:MBITPS:RTT_MS`` custom links.

A link here is the *bottleneck* between the edge device and the server, reduced to the two numbers
the paper's latency model uses: a rate (Mbit/s, 1 Mbit = 10^6 bits, the same both ways) and a
round-trip time. What a request costs on it is computed in :mod:`frankensplit.sim.latency`.

The presets are round, representative *uplink* figures (the request, not the tiny response, is
what crosses the link in bulk), not measurements; the arguments behind each are in its ``note``.
Real links vary by an order of magnitude around them (coverage, load, radio generation), which is
why every command also takes custom links and why ``frankensplit simulate`` plots latency against
the whole bandwidth range rather than at the presets only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from frankensplit.registry import Registry

__all__ = ["LINKS", "Link", "parse_link", "parse_links"]


@dataclass(frozen=True)
class Link:
    """A bottleneck link.

    Attributes:
        name: label in tables and plots.
        mbit_per_s: rate in Mbit/s (10^6 bits per second), both directions.
        rtt_ms: round-trip time in milliseconds (propagation and fixed queueing, no transfer).
        note: where the figures come from.

    Raises:
        ValueError: a non-positive or non-finite rate, a negative or non-finite RTT, or an empty
            name.
    """

    name: str
    mbit_per_s: float
    rtt_ms: float
    note: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"link name must be a non-empty string, got {self.name!r}")
        if not (math.isfinite(self.mbit_per_s) and self.mbit_per_s > 0):
            raise ValueError(f"link {self.name!r}: rate must be > 0 Mbit/s, got {self.mbit_per_s!r}")
        if not (math.isfinite(self.rtt_ms) and self.rtt_ms >= 0):
            raise ValueError(f"link {self.name!r}: RTT must be >= 0 ms, got {self.rtt_ms!r}")

    def transfer_ms(self, num_bytes: float) -> float:
        """Time to push ``num_bytes`` through the link at its rate: bytes * 8 / rate."""
        if num_bytes < 0:
            raise ValueError(f"num_bytes must be >= 0, got {num_bytes!r}")
        return num_bytes * 8.0 / (self.mbit_per_s * 1e6) * 1000.0


#: Named link presets (uplink rate, RTT). ``frankensplit simulate --links ble,3g,...``.
LINKS: Registry[Link] = Registry("link preset")

for _link in (
    Link("ble", 0.25, 30.0,
         "Bluetooth Low Energy class: 1 Mbit/s LE PHY, of which GATT notifications carry a few "
         "hundred kbit/s in practice; 0.25 Mbit/s is the constrained case of the paper's "
         "motivation. RTT: two connection intervals of 7.5-15 ms plus the gateway"),
    Link("3g", 1.0, 100.0,
         "3G/HSPA uplink: a few Mbit/s peak (HSUPA), around 1 Mbit/s typical; RTT around 100 ms"),
    Link("4g", 10.0, 50.0,
         "LTE uplink: tens of Mbit/s peak, around 10 Mbit/s typical in crowd-sourced speed tests; "
         "RTT 30-60 ms"),
    Link("5g", 50.0, 20.0,
         "5G NR (sub-6 GHz) uplink: around 50 Mbit/s typical; RTT 10-30 ms"),
    Link("wifi", 100.0, 5.0,
         "Wi-Fi 5 (802.11ac) to an edge server on the same LAN: around 100 Mbit/s of TCP "
         "throughput, RTT a few ms"),
):
    LINKS.register(_link.name)(_link)


def parse_link(spec: str) -> Link:
    """A preset name (``4g``) or a custom link ``NAME:MBITPS:RTT_MS`` (``lab:2.5:40``).

    Raises:
        ValueError: an unknown preset (the message lists them) or a malformed custom link.
    """
    spec = spec.strip()
    if ":" not in spec:
        return LINKS.get(spec)
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"custom link must be NAME:MBITPS:RTT_MS, got {spec!r}")
    name, rate, rtt = parts
    try:
        return Link(name.strip(), float(rate), float(rtt), "custom")
    except ValueError as e:
        if "could not convert" in str(e):
            raise ValueError(f"custom link {spec!r}: rate and RTT must be numbers") from None
        raise


def parse_links(specs: Sequence[str]) -> list[Link]:
    """Links from comma-separated lists of presets and custom links, duplicates refused.

    Raises:
        ValueError: a bad spec, no link at all, or two links with the same name.
    """
    links = [parse_link(s) for text in specs for s in text.split(",") if s.strip()]
    if not links:
        raise ValueError("no link given")
    names = [link.name for link in links]
    if len(set(names)) != len(names):
        raise ValueError(f"link names must be distinct, got {names}")
    return links
