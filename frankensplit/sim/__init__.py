"""Device and link profiles and the end-to-end latency model of split computing vs offloading.

```
frankensplit profile   this machine --measure--> profile.json (compute time of every stage, local
                       execution of the whole teacher, larger what-if teachers with random weights)
frankensplit simulate  profile.json + eval results.json (bytes at matched top-1) + links + device
                       slowdown --latency model--> latency per request, ratios to FrankenSplit,
                       crossover rates and device speeds, plots
benchmarks/shaped_link.py   the real client and server through a shaped link (Shaper), to check
                            the model against measurements
```

Modules: ``links`` (presets and custom links), ``latency`` (the model), ``profile`` (the profile
JSON, torch-free), ``timing`` (wall and CPU time of one stage), ``measure`` (timing with torch),
``measure_teachers`` (whole teachers: local execution, what-if teachers), ``matching`` (bytes at matched accuracy from an
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
    faster_rates,
    intersect,
    local_break_even_slowdown,
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
    "faster_rates",
    "intersect",
    "local_break_even_slowdown",
    "parse_link",
    "parse_links",
]
