"""Device and link profiles and the end-to-end latency model of split computing vs offloading.

```
frankensplit profile   this machine --measure--> profile.json (compute time of every stage)
frankensplit simulate  profile.json + eval results.json (bytes at matched top-1) + links
                       --latency model--> latency per request, ratios codec / FrankenSplit, plot
benchmarks/shaped_link.py   the real client and server through a shaped link (Shaper), to check
                            the model against measurements
```

Modules: ``links`` (presets and custom links), ``latency`` (the model), ``profile`` (the profile
JSON, torch-free), ``measure`` (timing with torch), ``matching`` (bytes at matched accuracy from an
eval result), ``simulate`` (scenarios through the model), ``report`` (markdown, CSV, JSON, plot),
``shaper`` (an asyncio TCP proxy with a rate limit and delay; the codec-offloading baseline is
``frankensplit serve``'s ``/v1/classify-image``). This ``__init__`` imports only the light,
torch-free pieces.
"""

from frankensplit.sim.latency import (
    HTTP_REQUEST_HEAD_BYTES,
    HTTP_RESPONSE_BYTES,
    Breakdown,
    Cost,
    Wire,
    crossover_mbit_per_s,
    end_to_end,
)
from frankensplit.sim.links import LINKS, Link, parse_link, parse_links

__all__ = [
    "HTTP_REQUEST_HEAD_BYTES",
    "HTTP_RESPONSE_BYTES",
    "LINKS",
    "Breakdown",
    "Cost",
    "Link",
    "Wire",
    "crossover_mbit_per_s",
    "end_to_end",
    "parse_link",
    "parse_links",
]
