"""Generation as a job: find and load a checkpoint (with one-line errors for the usual mistakes), choose
torch's threads, and sample in chunks behind a progress bar. Files are ``output.py``'s, 3D structures
``realisation.py``'s."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

from ..utils.devices import check_device

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"  # the shipped checkpoints
DEFAULT_MODEL = PRETRAINED / "mp20-biternary"  # the data's likelihood: csp, scoring, the pipeline's default


class DefaultSampler(NamedTuple):
    """What ``wyckoff-hf generate`` samples without ``--model``: a reward-tuned generator whose draws a surrogate
    trained on CHGNet labels screens (README, "Fine-tuned and filtered")."""

    generator: Path
    stability_filter: Path


DEFAULT_SAMPLER = DefaultSampler(generator=PRETRAINED / "mp20-biternary-reward",
                                 stability_filter=PRETRAINED / "mp20-biternary-stability-surrogate")
SAMPLING_CHUNK = 2048  # samples per generate() call: one model batch, and one step of the progress bar
HUB_PROBE_SECONDS = 3.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_model_source(model: str | os.PathLike | None) -> str:
    """The local checkpoint folder or Hub id that ``--model`` names; ``ValueError`` / ``FileNotFoundError``
    with what to pass instead for a missing folder, a training output folder or a training checkpoint."""
    if model is None:
        return str(DEFAULT_MODEL)
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path)
        if (path / "trainer_state.json").is_file():
            raise ValueError(f"{path} is a training checkpoint (optimizer state for --resume-from-checkpoint), "
                             f"not a model: pass the run's output folder, which holds its best model, "
                             f"--model {path.parent}")
        if any(path.glob("checkpoint-*/trainer_state.json")):
            raise ValueError(f"{path} is a training output folder without a saved model yet: the best model is "
                             "written there after the first epoch")
        raise ValueError(f"{path} has no config.json: not a model folder saved with save_pretrained")
    if path.exists():
        raise ValueError(f"{path} is a file: --model takes a model folder or a Hub id")
    text = str(model)
    if not _HUB_ID.match(text) or text.startswith((".", "~")) or ".." in text or text.endswith("/"):
        raise FileNotFoundError(f"no model folder at {text}")
    return text


def hub_unavailable_reason() -> str | None:
    """Why the Hub cannot be asked right now (offline mode, or its endpoint unreachable), or ``None``.

    Probing the endpoint with a short TCP connect turns minutes of transport retries into one line."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as err:
        return f"{constants.ENDPOINT} cannot be reached ({err.strerror or err})"
    return None


def set_threads(threads: int | None, device: str) -> int:
    """Set torch's intra-op threads: ``threads``, or 1 on CPU by default.

    Sampling runs small matrix products step by step; on a loaded machine torch's default (one thread
    per core) made it 10-20× slower than one thread, and one thread is never far from the best."""
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    if threads is None:
        threads = 1 if device == "cpu" else torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


def load_generator(model: str | os.PathLike | None = None, device: str | None = None):
    """``(model, tokenizer)`` from a local folder or a Hub id; the shipped checkpoint by default.

    A Hub id is only looked up in the local cache when the Hub is offline or unreachable; a property predictor is
    refused in one line before its weights load."""
    from ..modeling import WyckoffTransformerForCrystalGeneration
    from ..utils.model_kind import GENERATOR, check_model_kind

    check_model_kind(resolve_model_source(model), GENERATOR, model)
    return load_checkpoint(WyckoffTransformerForCrystalGeneration, model, device)


def load_checkpoint(model_class: Any, model: str | os.PathLike | None = None, device: str | None = None):
    """``(model, tokenizer)``: ``model_class.from_pretrained`` (a generator, a property predictor, an Auto class)
    and its tokenizer, in eval mode on ``device``, with ``load_generator``'s one-line errors."""
    from ..tokenization import WyckoffTokenizer

    source = resolve_model_source(model)
    device = check_device(device)
    local = Path(source).is_dir()
    reason = None if local else hub_unavailable_reason()
    try:
        loaded = model_class.from_pretrained(source, local_files_only=reason is not None)
        tokenizer = WyckoffTokenizer.from_pretrained(source, local_files_only=reason is not None)
    except OSError as err:
        if reason is not None:
            raise OSError(f"model {source!r} is not a local folder and not in the Hub cache, and the Hub cannot "
                          f"be asked: {reason}") from None
        raise OSError(f"cannot load model {source!r}: {str(err).strip().splitlines()[0]}") from None
    return loaded.to(device).eval(), tokenizer


class CycledGroups(Sequence):
    """``groups`` in turn over ``length`` samples, computed on access: several ``--space-group`` for any ``-n``
    without a list of ``-n`` entries."""

    def __init__(self, groups: Sequence[int], length: int) -> None:
        self.groups, self.length = tuple(int(g) for g in groups), length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):  # type: ignore[override]  # an int or a slice, as a list's
        if isinstance(index, slice):
            return [self.groups[i % len(self.groups)] for i in range(*index.indices(self.length))]
        return self.groups[range(self.length)[index] % len(self.groups)]


def spread_space_groups(space_groups: Sequence[int] | None, num_samples: int) -> int | Sequence[int] | None:
    """``generate``'s ``space_group`` for a list of groups: one group for all, or the groups in turn."""
    if not space_groups:
        return None
    if len(space_groups) == 1:
        return int(space_groups[0])
    return CycledGroups(space_groups, num_samples)


def effective_generation_settings(model, num_elements_range: Sequence[int] | None = None,
                                  max_atoms: int | None = None) -> dict[str, Any]:
    """The values ``generate`` uses for ``num_elements_range`` and ``max_atoms`` when not given: the checkpoint's
    ``generation_config`` ones (``max_atoms`` else 4 × ``config.max_sites``), for a manifest that records what was
    used rather than ``None``."""
    config = model.generation_config
    low_high = num_elements_range or getattr(config, "num_elements_range", None)
    return {"num_elements_range": list(low_high) if low_high else None,
            "max_atoms": max_atoms or getattr(config, "max_atoms", None) or 4 * model.config.max_sites}


def sample_chunks(model, tokenizer, num_samples: int, space_group: int | Sequence[int] | None = None,
                  seed: int | None = 0, chunk_size: int | None = None, progress: bool = True,
                  **generate_kwargs: Any) -> Iterator[tuple[list, list[float]]]:
    """``model.generate`` in chunks of ``chunk_size`` (default ``SAMPLING_CHUNK``) behind a progress bar: yields
    each chunk's representations and log-probabilities (``sequences_scores``) as it is made, so a caller writes
    them and any ``num_samples`` takes one chunk's memory.

    Each chunk continues the seed's stream (``generate(sample_offset=...)``): sample ``i`` depends on ``seed`` and
    ``i`` alone, whatever the chunk size or ``num_samples``; ``seed=None`` draws one seed for the whole job from
    torch's global RNG."""
    import torch
    from tqdm.auto import tqdm

    if num_samples < 1:
        raise ValueError(f"the number of samples must be at least 1, got {num_samples}")
    chunk_size = chunk_size or SAMPLING_CHUNK
    prompt = generate_kwargs.get("prompt")
    if prompt is not None and not isinstance(prompt, Mapping):  # representations → the ids generate() takes
        generate_kwargs["prompt"] = tokenizer(list(prompt) if isinstance(prompt, list | tuple) else [prompt])
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    with tqdm(total=num_samples, desc="sampling", disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for start in range(0, num_samples, chunk_size):
            count = min(chunk_size, num_samples - start)
            groups = space_group if space_group is None or isinstance(space_group, int) else \
                list(space_group[start:start + count])
            generated = model.generate(num_samples=count, space_group=groups, seed=seed, sample_offset=start,
                                       **generate_kwargs)
            yield tokenizer.decode(generated), generated.sequences_scores.tolist()
            bar.update(count)


def sample_crystals(model, tokenizer, num_samples: int, space_group: int | Sequence[int] | None = None,
                    seed: int | None = 0, chunk_size: int | None = None, progress: bool = True,
                    return_scores: bool = False, **generate_kwargs: Any) -> list | tuple[list, list[float]]:
    """``sample_chunks`` gathered: a list of representations, and with ``return_scores`` also each sample's
    log-probability (``sequences_scores``)."""
    samples: list = []
    scores: list[float] = []
    for chunk, chunk_scores in sample_chunks(model, tokenizer, num_samples, space_group, seed, chunk_size, progress,
                                             **generate_kwargs):
        samples += chunk
        scores += chunk_scores
    return (samples, scores) if return_scores else samples
