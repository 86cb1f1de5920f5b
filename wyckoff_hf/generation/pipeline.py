"""``pipeline("crystal-generation", model=...)``: the generator as a transformers pipeline task.

    generator = pipeline("crystal-generation", model="path/or/hub-id")  # default: the shipped checkpoint
    generator(8, space_group=225, temperature=1.0, seed=0)  # → 8 dicts

Each output is ``{"representation": WyckoffRepresentation, "text": "Fm-3m (225): Na 4a, Cl 4b",
"space_group": 225, "sites": [["Na", "a"], ["Cl", "b"]], "score": -3.2}``, ``score`` being the sample's
log-probability under the distribution it was drawn from (``generate()``'s ``sequences_scores``; with a prompt,
of the completion given the prompt), as text-generation pipelines give their sequences a score. The input is the
number of crystals to sample (or a dict of ``generate`` keywords with ``num_samples``), since sampling starts from
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Pipeline

from ..tokenization import WyckoffTokenizer
from .jobs import DEFAULT_MODEL

TASK = "crystal-generation"
TASK_DEFAULTS = {"model": (str(DEFAULT_MODEL), None)}  # pipeline(TASK) without a model: the shipped checkpoint
GENERATE_KEYWORDS = ("space_group", "temperature", "seed", "allowed_elements", "required_elements", "max_sites",
                     "prompt", "composition", "max_atoms", "condition", "guidance_scale", "num_elements_range",
                     "stop_logit_bias", "field_temperatures")


class WyckoffPipeline(Pipeline):
    """A pipeline over a WyckoffTransformer checkpoint: its ``WyckoffTokenizer`` is kept apart from the
    ``Pipeline`` machinery (which would try to tokenize text with it), loaded from the model's folder if not given."""

    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, model: Any, tokenizer: WyckoffTokenizer | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, tokenizer=None, **kwargs)
        self.wyckoff_tokenizer = tokenizer or WyckoffTokenizer.from_pretrained(model.name_or_path)


class CrystalGenerationPipeline(WyckoffPipeline):
    """Samples crystals (Wyckoff representations) from a ``WyckoffTransformerForCrystalGeneration``."""

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        forward = {k: kwargs[k] for k in GENERATE_KEYWORDS if k in kwargs}
        if kwargs.get("generate_batch_size") is not None:
            forward["batch_size"] = kwargs["generate_batch_size"]
        return {}, forward, {}

    def __call__(self, inputs: int | dict | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        # ``batch_size`` is generate()'s (samples per batch), not the Pipeline's batching of inputs, which would
        # otherwise consume it
        kwargs["generate_batch_size"] = kwargs.pop("batch_size", None)
        return super().__call__(1 if inputs is None else inputs, **kwargs)

    def preprocess(self, inputs: int | dict) -> dict[str, Any]:
        request = dict(inputs) if isinstance(inputs, dict) else {"num_samples": inputs}
        if not isinstance(request.get("num_samples"), int) or request["num_samples"] < 1:
            raise ValueError(f"crystal-generation expects a positive number of samples, got {inputs!r}")
        return request

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:
        request = {**generate_kwargs, **model_inputs}
        if request.get("prompt") is not None and not isinstance(request["prompt"], Mapping):
            request["prompt"] = self.wyckoff_tokenizer(request["prompt"])  # representations → ids, as generate takes
        generated = self.model.generate(**request)  # ids, so that the scores come back too
        return {"representations": self.wyckoff_tokenizer.decode(generated),
                "scores": generated.sequences_scores.tolist()}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"representation": rep, "text": str(rep), **rep.to_dict(), "score": score}
                for rep, score in zip(model_outputs["representations"], model_outputs["scores"], strict=True)]
