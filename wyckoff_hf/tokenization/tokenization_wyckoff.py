"""``WyckoffTokenizer``: Wyckoff representations ↔ multi-field token ids, the Hugging Face face of the tables.

A crystal becomes a sequence of tokens, one per occupied Wyckoff site in canonical order, closed by a
STOP token. Every token is a tuple of fields, each with its own vocabulary:

- ``space_group``   the group (1-230); repeated on every token, the model's conditioning;
- ``element``       the chemical element (Z = 1..118);
- ``site_symmetry`` the oriented site-symmetry symbol (78 across the 230 groups);
- ``enumeration``   which of the group's positions with that site symmetry (0..7);

plus two derived integer features the model may use, ``multiplicity`` and ``dof``, which follow from the
other fields. Each vocabulary starts with the specials PAD = 0, STOP = 1, MASK = 2.

Why not ``PreTrainedTokenizerBase``: that base class (and transformers 5's ``TokenizersBackend`` /
``PythonBackend``) models *text*: strings, vocab.json merges, chat templates, offsets. None of it
applies to tuples of crystallographic fields, and half its API would silently do the wrong thing.
Like the feature extractors and image processors of non-text modalities, this class implements the
loading contract that ``AutoTokenizer`` relies on (``tokenizer_config.json`` with ``tokenizer_class`` and
``auto_map``, ``from_pretrained`` resolving a local folder or a Hub id through ``cached_file``,
``save_pretrained``, ``register_for_auto_class``) and inherits ``push_to_hub`` from ``PushToHubMixin``.

Remote code: ``save_pretrained`` copies this file, the sibling modules it imports (transformers follows the
relative imports) and the data files they read into the checkpoint, so that
``AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`` works where ``wyckoff_hf`` is not installed.
Hence this file imports only transformers, numpy and its siblings: transformers refuses to load a remote file
whose imports are not installed, and pymatgen / spglib / pyxtal are imported by ``representation`` only
where structures are read or realised, so ids decode to representations without them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from transformers import BatchEncoding
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import PushToHubMixin, cached_file

from .data_files import DATA_FILES, data_file, missing_data_files, use_checkpoint_files
from .element_descriptors import element_descriptor_table
from .errors import InvalidRepresentationError, WyckoffError
from .representation import StructureLike, WyckoffRepresentation, WyckoffSite, electronegativity_key
from .wyckoff_tables import (
    all_site_symmetries,
    all_space_group_tables,
    element_symbols,
    max_enumeration,
    space_group_table,
)

FIELDS = ("space_group", "element", "site_symmetry", "enumeration")
DERIVED_FEATURES = ("multiplicity", "dof")
SPECIAL_TOKENS = ("[PAD]", "[STOP]", "[MASK]")
PAD_ID, STOP_ID, MASK_ID = 0, 1, 2
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "wyckoff_vocab.json"
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


def _default_vocabularies() -> dict[str, list[str]]:
    return {
        "space_group": [*SPECIAL_TOKENS, *(str(n) for n in range(1, 231))],
        "element": [*SPECIAL_TOKENS, *element_symbols()],
        "site_symmetry": [*SPECIAL_TOKENS, *all_site_symmetries()],
        "enumeration": [*SPECIAL_TOKENS, *(str(i) for i in range(max_enumeration() + 1))],
    }


class WyckoffTokenizer(PushToHubMixin):
    """Maps crystals (structures or Wyckoff representations) to per-field token ids and back."""

    model_input_names: ClassVar[list[str]] = [f"{f}_ids" for f in FIELDS] + [*DERIVED_FEATURES, "attention_mask"]
    pad_token_id, stop_token_id, mask_token_id = PAD_ID, STOP_ID, MASK_ID
    _auto_class: ClassVar[str | None] = None

    def __init__(self, vocabularies: Mapping[str, Sequence[str]] | None = None, symprec: float = 0.1,
                 angle_tolerance: float = 5.0, max_sites: int | None = None) -> None:
        self.vocabularies = {f: list(v) for f, v in (vocabularies or _default_vocabularies()).items()}
        if tuple(self.vocabularies) != FIELDS:
            raise ValueError(f"vocabularies must have the fields {FIELDS}, got {tuple(self.vocabularies)}")
        for field, vocab in self.vocabularies.items():
            if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
                raise ValueError(f"vocabulary {field!r} must start with {SPECIAL_TOKENS}")
        self._token_to_id = {f: {tok: i for i, tok in enumerate(v)} for f, v in self.vocabularies.items()}
        self.symprec = symprec
        self.angle_tolerance = angle_tolerance
        self.max_sites = max_sites
        self.name_or_path = ""

    # ----------------------------------------------------------------------------------------- vocab

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {field: len(vocab) for field, vocab in self.vocabularies.items()}

    def __len__(self) -> int:
        """All tokens of all field vocabularies (each field counts its own specials)."""
        return sum(self.vocab_sizes.values())

    def token_id(self, field: str, token: str | int) -> int:
        try:
            return self._token_to_id[field][str(token)]
        except KeyError:
            raise InvalidRepresentationError(f"{token!r} is not in the {field} vocabulary") from None

    def wyckoff_position_ids(self) -> list[list[int]]:
        """Every Wyckoff position of every group as ids: [space_group, site_symmetry, enumeration,
        multiplicity, dof]. The model builds its masks of impossible positions from these rows."""
        return [
            [self.token_id("space_group", t.number), self.token_id("site_symmetry", p.site_symmetry),
             self.token_id("enumeration", p.enumeration), p.multiplicity, p.dof]
            for t in all_space_group_tables() for p in t.positions
        ]

    def lattice_points(self) -> list[int]:
        """Lattice points per conventional cell of every space-group id (0 for the special tokens): what turns a
        sample's atoms per conventional cell into atoms per primitive cell, for ``generate``'s atom range."""
        return [0 if token in SPECIAL_TOKENS else space_group_table(int(token)).lattice_points
                for token in self.vocabularies["space_group"]]

    def model_config_kwargs(self, element_descriptors: bool = False) -> dict[str, Any]:
        """What a ``WyckoffTransformerConfig`` needs to know of this tokenizer; with ``element_descriptors``, also
        the elements' chemical descriptors (from pymatgen, so only when asked)."""
        descriptors = {}
        if element_descriptors:
            descriptors["element_descriptor_table"] = element_descriptor_table(
                [None if token in SPECIAL_TOKENS else token for token in self.vocabularies["element"]])
        return {
            **{f"{field}_vocab_size": size for field, size in self.vocab_sizes.items()},
            "wyckoff_positions": self.wyckoff_position_ids(),
            "element_vocabulary": list(self.vocabularies["element"]),
            "element_canonical_order": sorted(  # the site order of canonical representations (electronegativity, Z)
                range(len(SPECIAL_TOKENS), len(self.vocabularies["element"])),
                key=lambda i: electronegativity_key(self.vocabularies["element"][i])),
            "pad_token_id": PAD_ID, "stop_token_id": STOP_ID, "mask_token_id": MASK_ID, **descriptors,
        }

    # ----------------------------------------------------------------------------------------- encode

    def to_representation(self, item: StructureLike | WyckoffRepresentation) -> WyckoffRepresentation:
        if isinstance(item, WyckoffRepresentation):
            return item
        return WyckoffRepresentation.from_structure(item, self.symprec, self.angle_tolerance)

    def encode(self, item: StructureLike | WyckoffRepresentation) -> dict[str, list[int]]:
        """Unpadded ids of one crystal: one token per site, then STOP."""
        rep = self.to_representation(item)
        if self.max_sites is not None and len(rep.sites) > self.max_sites:
            raise InvalidRepresentationError(f"{rep} has {len(rep.sites)} sites, more than max_sites={self.max_sites}")
        sg = self.token_id("space_group", rep.space_group)
        ids: dict[str, list[int]] = {
            "space_group_ids": [sg] * (len(rep.sites) + 1),
            "element_ids": [self.token_id("element", s.element) for s in rep.sites] + [STOP_ID],
            "site_symmetry_ids": [self.token_id("site_symmetry", s.site_symmetry) for s in rep.sites] + [STOP_ID],
            "enumeration_ids": [self.token_id("enumeration", s.enumeration) for s in rep.sites] + [STOP_ID],
            "multiplicity": [s.multiplicity for s in rep.sites] + [0],
            "dof": [s.dof for s in rep.sites] + [0],
        }
        ids["attention_mask"] = [1] * len(ids["element_ids"])
        return ids

    def pad(self, encodings: Sequence[Mapping[str, Sequence[int]]], max_length: int | None = None,
            return_tensors: str | None = None) -> BatchEncoding:
        """Right-pad unpadded encodings to ``max_length`` (default: the longest) with PAD / 0.

        ``return_tensors``: None (lists, as HF tokenizers), "pt" or "np"; a ``DataLoader`` collates with
        ``functools.partial(tokenizer.pad, return_tensors="pt")``.
        """
        longest = max((len(e["attention_mask"]) for e in encodings), default=0)
        length = longest if max_length is None else max_length
        if longest > length:
            raise ValueError(f"a sequence has {longest} tokens, more than max_length={length}")
        batch = {
            key: [list(e[key]) + [PAD_ID] * (length - len(e[key])) for e in encodings]
            for key in self.model_input_names
        }
        if return_tensors == "np":
            return BatchEncoding({k: np.asarray(v, dtype=np.int64) for k, v in batch.items()})
        return BatchEncoding(batch, tensor_type=return_tensors)

    def __call__(self, items: StructureLike | WyckoffRepresentation | Sequence[Any], padding: bool | str = True,
                 max_length: int | None = None, return_tensors: str | None = None) -> BatchEncoding:
        """Encode one crystal or a list / tuple of them (structures, CIFs, paths or representations).

        ``return_tensors``: None (lists, as HF tokenizers), "pt" or "np". A crystal that cannot be
        converted raises a ``WyckoffError`` naming its index in the batch; use
        ``wyckoff_hf.tokenization.representations_from_structures`` to report and skip instead.
        """
        # only a list or tuple is a batch: a pymatgen Structure is itself a Sequence (of sites)
        single = not isinstance(items, list | tuple)
        batch = [items] if single else list(items)
        encodings = []
        for index, item in enumerate(batch):
            try:
                encodings.append(self.encode(item))
            except WyckoffError as err:
                raise type(err)(f"item {index}: {err}") from err
        if not padding:
            if return_tensors is not None and len({len(e["attention_mask"]) for e in encodings}) > 1:
                raise ValueError("sequences of different lengths need padding=True to become tensors")
            return BatchEncoding(encodings[0] if single else _transpose(encodings), tensor_type=return_tensors)
        pad_to = max_length if padding == "max_length" else None
        return self.pad(encodings, max_length=pad_to, return_tensors=return_tensors)

    # ----------------------------------------------------------------------------------------- decode

    def decode_sequence(self, ids: Mapping[str, Sequence[int]]) -> WyckoffRepresentation:
        """One unbatched sequence of ids → its representation; reads tokens until STOP or PAD."""
        elements, site_symmetries, enumerations = ids["element_ids"], ids["site_symmetry_ids"], ids["enumeration_ids"]
        space_groups = ids["space_group_ids"]
        if len(space_groups) == 0 or int(space_groups[0]) < len(SPECIAL_TOKENS):
            raise InvalidRepresentationError("the sequence has no space group token")
        space_group = int(self.vocabularies["space_group"][int(space_groups[0])])
        table = space_group_table(space_group)
        sites = []
        for i in range(len(elements)):
            if int(elements[i]) in (PAD_ID, STOP_ID):
                break
            tokens = [int(elements[i]), int(site_symmetries[i]), int(enumerations[i])]
            if min(tokens) < len(SPECIAL_TOKENS):
                raise InvalidRepresentationError(f"token {i} holds a special id in {tokens}")
            element = self.vocabularies["element"][tokens[0]]
            site_symmetry = self.vocabularies["site_symmetry"][tokens[1]]
            enumeration = int(self.vocabularies["enumeration"][tokens[2]])
            try:
                position = table.by_site_symmetry(site_symmetry, enumeration)
            except KeyError as err:
                raise InvalidRepresentationError(f"token {i}: {err.args[0]}") from None
            sites.append(WyckoffSite.from_position(element, position))
        return WyckoffRepresentation(space_group, tuple(sites))

    def decode(self, batch: Mapping[str, Any]) -> list[WyckoffRepresentation]:
        """A batch of ids (``BatchEncoding``, ``generate()`` output, dict of tensors/arrays/lists) → representations.

        One unbatched sequence (1-D ids, as ``encode`` returns) gives a list of one representation, so the result
        is a list whatever the input (``decode_sequence`` returns the bare representation). An impossible
        combination (say, a site symmetry the row's space group lacks) raises an ``InvalidRepresentationError``
        naming the row, never returns junk.
        """
        columns = {key: np.asarray(_to_numpy(batch[key])) for key in (f"{f}_ids" for f in FIELDS)}
        if columns["element_ids"].ndim == 1:
            columns = {key: value[None] for key, value in columns.items()}
        rows = range(len(columns["element_ids"]))
        return self._decode_rows([{key: value[row] for key, value in columns.items()} for row in rows])

    def batch_decode(self, sequences: Mapping[str, Any] | Sequence[Mapping[str, Sequence[int]]]
                     ) -> list[WyckoffRepresentation]:
        """transformers' name for decoding many sequences, so code written for text tokenizers works: a padded batch
        (anything ``decode`` takes) or a list of single sequences (dicts of 1-D ids, as ``encode`` returns) → one
        representation per sequence, errors naming the row as ``decode``'s do."""
        if isinstance(sequences, Mapping):
            return self.decode(sequences)
        return self._decode_rows(list(sequences))

    def _decode_rows(self, rows: Sequence[Mapping[str, Sequence[int]]]) -> list[WyckoffRepresentation]:
        representations = []
        for row, ids in enumerate(rows):
            try:
                representations.append(self.decode_sequence(ids))
            except WyckoffError as err:
                raise InvalidRepresentationError(f"row {row}: {err}") from err
        return representations

    # ----------------------------------------------------------------------------------------- persistence

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoTokenizer") -> None:
        """Have ``save_pretrained`` copy this code into checkpoints and map ``auto_class`` to it (``auto_map``)."""
        cls._auto_class = auto_class

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False,
                        **kwargs: Any) -> tuple[str, ...]:
        """Write ``tokenizer_config.json`` and ``wyckoff_vocab.json`` (human-readable JSON).

        Registered for an auto class (``wyckoff_hf`` does that on import), also the code of this tokenizer
        and its data files, with ``auto_map`` in ``tokenizer_config.json``: the folder then loads with
        ``AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`` without ``wyckoff_hf``.
        """
        os.makedirs(save_directory, exist_ok=True)
        config = {"tokenizer_class": type(self).__name__, "symprec": self.symprec,
                  "angle_tolerance": self.angle_tolerance, "max_sites": self.max_sites}
        files = []
        if self._auto_class is not None:
            # custom_object_save names a module once per importer: keep each file once
            files += dict.fromkeys(str(path) for path in custom_object_save(self, save_directory, config=config))
            for name in DATA_FILES:
                files.append(shutil.copyfile(data_file(name), os.path.join(save_directory, name)))
        config_path = os.path.join(save_directory, TOKENIZER_CONFIG_FILE)
        vocab_path = os.path.join(save_directory, VOCAB_FILE)
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)
        with open(vocab_path, "w") as f:
            json.dump(self.vocabularies, f, indent=1)
        if push_to_hub:
            self.push_to_hub(kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory))), **kwargs)
        return config_path, vocab_path, *files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any,
                        **kwargs: Any) -> WyckoffTokenizer:
        """Load from a local folder or a Hub repo id (resolved by ``transformers.utils.cached_file``).

        A copy of this code without data files of its own (remote code) reads the checkpoint's.
        """
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        config_file = cached_file(pretrained_model_name_or_path, TOKENIZER_CONFIG_FILE, **hub_kwargs)
        vocab_file = cached_file(pretrained_model_name_or_path, VOCAB_FILE, **hub_kwargs)
        use_checkpoint_files({name: cached_file(pretrained_model_name_or_path, name, **hub_kwargs)
                              for name in missing_data_files()})
        with open(config_file) as f:
            config = json.load(f)
        with open(vocab_file) as f:
            vocabularies = json.load(f)
        options = {k: config[k] for k in ("symprec", "angle_tolerance", "max_sites") if k in config}
        options.update({k: kwargs[k] for k in ("symprec", "angle_tolerance", "max_sites") if k in kwargs})
        tokenizer = cls(vocabularies, **options)
        tokenizer.name_or_path = str(pretrained_model_name_or_path)
        return tokenizer


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def _transpose(encodings: Iterable[Mapping[str, list[int]]]) -> dict[str, list[list[int]]]:
    encodings = list(encodings)
    return {key: [e[key] for e in encodings] for key in encodings[0]}
