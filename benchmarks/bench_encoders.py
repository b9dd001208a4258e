"""CPU timing of the light encoder against WRN-38, side by side (part of make bench).

    python benchmarks/bench_encoders.py [--size 256] [--threads 2]

Each network runs in the layout it is fastest in (WRN-38: NCHW; light: channels-last, chosen
inside its forward). Prints median milliseconds per 11-band tile and the speed ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ternaus_backend.models import create_model


def time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 11, args.size, args.size)
    variants = {  # name: (encoder, num_filters)
        "wrn38": ("wrn38", None),
        "resnet_light": ("resnet_light", None),
        "resnet_light nf=8": ("resnet_light", 8),
        "resnet_light_deep": ("resnet_light_deep", None),
    }
    models = {
        name: create_model(encoder, in_channels=11, num_filters=nf).eval()
        for name, (encoder, nf) in variants.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up
        for _ in range(args.rounds):  # interleaved, so a busy machine slows all alike
            for name, model in models.items():
                times[name].append(time_once(model, x))
    reference = statistics.median(times["wrn38"])
    print(f"{args.size}x{args.size} px, 11 bands, {args.threads} threads, {args.rounds} rounds")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        median = statistics.median(times[name])
        print(
            f"{name:18s} {params / 1e6:6.2f} M params {1e3 * median:8.1f} ms"
            f"  {reference / median:5.1f}x"
        )


if __name__ == "__main__":
    main()
