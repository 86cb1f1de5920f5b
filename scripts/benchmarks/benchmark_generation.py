"""Generation throughput of the WyckoffTransformer: crystals (Wyckoff representations) per second.

    python scripts/benchmarks/benchmark_generation.py [--model DIR] [--device cpu cuda] [--num-samples 10000]
        [--batch-size N] [--max-sites 20 6] [--threads 2]

Generation costs one encoder pass per cascade step over the prefix, so throughput falls with the number
of sites sampled. An untrained model (the default, randomly initialised) almost never samples STOP and
runs to ``max_sites``: that row is the worst case. A trained MP-20 model stops after a few sites (the
MP-20 binaries/ternaries have 4.2 sites on average), which ``--max-sites 6`` approximates from above (as a
mask: the cap stops every sample, as a trained model's STOP would). A checkpoint's default constraints (element
and atom ranges) are met by rejection, so its row counts accepted samples per second.
The table says the mean number of sites actually generated next to each figure, the encoder tokens each sample cost
(a pass over a prefix of L tokens costs L) and, on the CPU, the share of the time spent in the encoder. On the CPU
a last line gives the ceiling those tokens allow: a plain matrix product of the encoder's shapes at this machine's
rate, divided by the dense layers' 2 × parameters floating-point operations per token, is the most samples per
second any sampler of this network could reach here.
"""

from __future__ import annotations

import argparse
import time

import torch

from wyckoff_hf.modeling import (
    DEFAULT_GENERATION_BATCH_SIZE,
    WyckoffTransformerConfig,
    WyckoffTransformerForCrystalGeneration,
)
from wyckoff_hf.tokenization import WyckoffTokenizer


def load_model(path: str | None) -> WyckoffTransformerForCrystalGeneration:
    if path is not None:
        return WyckoffTransformerForCrystalGeneration.from_pretrained(path)
    torch.manual_seed(0)
    return WyckoffTransformerForCrystalGeneration(WyckoffTransformerConfig.from_tokenizer(WyckoffTokenizer()))


class EncoderTally:
    """The encoder's tokens and seconds while sampling, from forward hooks on ``model.model`` (the seconds are
    wall-clock between the hooks: meaningful on the CPU, not for asynchronous CUDA kernels)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.tokens, self.seconds, self._start = 0, 0.0, 0.0
        self._hooks = [encoder.register_forward_pre_hook(self._before, with_kwargs=True),
                       encoder.register_forward_hook(self._after, with_kwargs=True)]

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.tokens += kwargs["element_ids"].numel()
        self._start = time.perf_counter()

    def _after(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def measure(model: WyckoffTransformerForCrystalGeneration, device: str, num_samples: int,
            batch_size: int | None, max_sites: int) -> tuple[float, float, EncoderTally]:
    """Seconds for ``num_samples`` samples (after a small warm-up), the mean number of sites and the encoder's
    share of the work."""
    model.to(device)
    model.generate(min(num_samples, 256), seed=1, max_sites=max_sites, constraint_sampling="masked")
    tally = EncoderTally(model.model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(num_samples, seed=0, batch_size=batch_size, max_sites=max_sites,
                         constraint_sampling="masked")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tally.remove()
    return seconds, float(out.attention_mask.sum(1).float().mean()) - 1, tally


def matmul_rate(width: int, intermediate: int) -> float:
    """Floating-point operations per second of a plain CPU matrix product of the encoder's MLP shapes."""
    left, right = torch.randn(8192, width), torch.randn(width, intermediate)
    left @ right
    start = time.perf_counter()
    for _ in range(20):
        left @ right
    return 20 * 2 * 8192 * width * intermediate / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved WyckoffTransformerForCrystalGeneration (default: random init)")
    parser.add_argument("--device", nargs="+", default=["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: generate()'s default (2048)")
    parser.add_argument("--max-sites", type=int, nargs="+", default=None, help="default: the config's max_sites")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model or 'random init, default config'} (d_model {model.config.hidden_size}, "
          f"{model.config.num_hidden_layers} layers, {parameters / 1e6:.2f} M parameters); "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| device | max_sites | batch | samples | mean sites | encoder tokens per sample | encoder share of the time "
          "| seconds | crystals/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    batch = args.batch_size or DEFAULT_GENERATION_BATCH_SIZE
    for device in args.device:
        for max_sites in args.max_sites or [model.config.max_sites]:
            seconds, sites, tally = measure(model, device, args.num_samples, args.batch_size, max_sites)
            tokens = tally.tokens / args.num_samples
            share = f"{tally.seconds / seconds:.0%}" if device == "cpu" else "-"
            print(f"| {device} | {max_sites} | {batch} | {args.num_samples} | {sites:.2f} | {tokens:.1f} | {share} "
                  f"| {seconds:.2f} | {args.num_samples / seconds:,.0f} |")
            if device == "cpu":
                dense = sum(p.numel() for name, p in model.model.layers.named_parameters() if p.dim() == 2)
                rate = matmul_rate(model.config.hidden_size, model.config.intermediate_size)
                print(f"ceiling at max_sites {max_sites}: {rate / 1e9:.0f} GFLOP/s of plain matrix products / "
                      f"(2 × {dense:,} dense parameters × {tokens:.1f} tokens) = {rate / (2 * dense * tokens):,.0f} "
                      "samples/s")


if __name__ == "__main__":
    main()
