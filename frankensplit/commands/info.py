"""``frankensplit info MODEL``: sizes, split point and edge cost of a model."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from frankensplit.cli import check_model, teacher_weights
from frankensplit.models.zoo_index import MODELS, recorded_figures

if TYPE_CHECKING:
    from frankensplit.models.split import FrankenSplit

HELP = ("describe a model: parameters of each side, split point, latent shape, edge MACs and a "
        "variable-rate model's rates (index, lambda, recorded dev figures, the default rate)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model id, or a codec file written by `frankensplit train`")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--teacher-weights", default="auto", type=teacher_weights("random"),
                        help="auto | offline | online | PATH (None-like 'random' for no weights)")


def describe(model: FrankenSplit) -> dict[str, Any]:
    """The facts ``info`` prints, measured on the model (MACs counted by torch's flop counter:
    ``encoder_macs`` g_a's, ``edge_macs`` the edge's, which for a variable-rate model adds one
    multiply per latent element, its rate's gain); ``default_rate``: the rate index its edge
    codes at when none is named (`FrankenSplit.default_rate`; None without one)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from frankensplit.models.split import count_parameters

    spec = model.teacher.spec
    c, h, w = spec.input_size
    x = torch.zeros(1, c, h, w)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model.g_a(x)
    entry = MODELS.get(model.model_id) if model.model_id in MODELS else None
    trained = entry.trained if entry is not None else True
    rates = None
    if model.rates is not None:  # every rate: index, lambda and the dev figures recorded
        rates = [{"index": i, "lambda": lmbda,
                  **recorded_figures(entry.metrics if entry else {}, lmbda)}
                 for i, lmbda in enumerate(model.rates)]
    return {
        "model_id": model.model_id,
        "trained": trained,
        "teacher": model.teacher.name,
        "edge_params": count_parameters(model.edge),
        "server_params": count_parameters(model.server),
        "encoder_params": count_parameters(model.g_a),
        "entropy_params": count_parameters(model.entropy),
        "decoder_params": count_parameters(model.g_s),
        "tail_params": count_parameters(model.teacher.tail),
        "head_params_replaced": count_parameters(model.teacher.head),
        "input_size": list(spec.input_size),
        "latent_shape": list(y.shape[1:]),
        "split_point": {"module": spec.module, "channels": spec.channels,
                        "reduction": spec.reduction, "layout": spec.layout,
                        "feature_shape": list(spec.feature_shape)},
        "encoder_macs": (macs := counter.get_total_flops() // 2),
        "edge_macs": macs + (0 if model.rates is None else y[0].numel()),  # + the gain
        "rates": rates,
        "default_rate": model.default_rate,
    }


def run(args: argparse.Namespace) -> int:
    check_model(args.model)
    from frankensplit.models.zoo import create_model

    weights = None if args.teacher_weights == "random" else args.teacher_weights
    info = describe(create_model(args.model, teacher_weights=weights))
    if args.json:
        print(json.dumps(info))
    else:
        rates, default = info.pop("rates"), info.pop("default_rate")
        for k, v in info.items():
            print(f"{k:22s} {v}")
        for rate in rates or ():  # a variable-rate model: one line per rate
            figures = (f"top-1 {rate['top1']:.2f}%, {rate['bytes_per_image']:.0f} B/image"
                       if "top1" in rate else "no recorded dev figures")
            mark = " (default)" if rate["index"] == default else ""
            print(f"{'rate ' + str(rate['index']):22s} lambda {rate['lambda']:g}: {figures}{mark}")
    return 0
