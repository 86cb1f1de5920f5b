"""The ``wyckoff-hf`` command: ``generate`` crystals, predict the crystals of a composition (``csp``), ``realise``
them in 3D (or finish an interrupted job), ``evaluate`` a sample set, ``predict`` crystal properties, ``tokenize``
CIF files.

Heavy libraries (torch, transformers, pymatgen) are imported inside the subcommands, so ``--help``,
``--version`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence

from . import __version__
from .utils.arguments import (
    NameValues,
    add_field_temperature_option,
    add_hidden_alias,
    add_seed_option,
    name_value,
    non_negative_float,
    num_samples,
    positive_float,
    positive_int,
    rate,
    space_group_number,
)
from .utils.cluster import add_scheduler_option, connect, scheduler_address

DESCRIPTION = ("Generate crystals with a WyckoffTransformer, predict the crystals of a composition, realise them in "
               "3D, evaluate a sample set, predict crystal properties, tokenize CIF files. `wyckoff-hf COMMAND "
               "--help` explains each command.")
INTERRUPTED = 130  # the shell's status for a job ended by Ctrl-C
CSP_MAX_DISTINCT = 10_000  # distinct crystals csp keeps (the likeliest): its memory for any -n
CSP_CHUNK = 512  # csp's samples per chunk: scored as they come, and what a Ctrl-C can lose (a minute on one core)
REALISE_SETTINGS = {"format": "format", "max_attempts": "max_attempts", "realise_timeout": "timeout"}  # dest → field


def _add_realisation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-workers", type=positive_int, default=None,
                        help="processes realising structures (default: all cores)")
    add_hidden_alias(parser, "--workers", "num_workers", type=positive_int)
    add_scheduler_option(parser)
    parser.add_argument("--format", choices=("cif", "extxyz"), default="cif",
                        help="structure file format: symmetrised CIF (space group, Wyckoff sites) or ASE extxyz "
                             "(default: %(default)s)")
    parser.add_argument("--max-attempts", type=positive_int, default=10,
                        help="pyxtal attempts per sample, the deterministic limit (default: %(default)s)")
    parser.add_argument("--realise-timeout", type=positive_float, default=60.0,
                        help="seconds per sample, a safety net against pyxtal's unbounded attempts "
                             "(default: %(default)s)")


def _add_sampling_arguments(parser: argparse.ArgumentParser, default_model: str) -> None:
    """The options that ``generate`` and ``csp`` share: output folder, model, sampling, realisation."""
    parser.add_argument("--output-dir", default=None,
                        help="output folder: samples.jsonl, manifest.json, structures/ (new or empty; with "
                             "--overwrite, one holding only an earlier job's files)")
    add_hidden_alias(parser, "--out", "output_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files an earlier wyckoff-hf job wrote in OUTPUT_DIR (those its manifest.json "
                             "lists); a folder holding anything else is refused")
    parser.add_argument("--model", default=None,
                        help=f"saved model folder or Hub id (default: {default_model})")
    parser.add_argument("--temperature", type=positive_float, default=None,
                        help="sampling temperature of every field (default: the checkpoint's calibrated one)")
    add_field_temperature_option(parser)
    add_seed_option(parser, "random seed of sampling; structure i is realised with seed SEED + i")
    parser.add_argument("--device", default=None, help="torch device for sampling, e.g. cuda (default: cpu)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads for sampling (default: 1 on CPU, which is fastest on a shared machine)")
    parser.add_argument("--structures", action="store_true",
                        help="also realise 3D structures with pyxtal into OUTPUT_DIR/structures/")
    _add_realisation_arguments(parser)


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="sample crystals from a WyckoffTransformer checkpoint",
                                   description="Sample crystals (Wyckoff representations) into OUTPUT_DIR/"
                                               "samples.jsonl and, with --structures, their 3D structures.")
    parser.add_argument("-n", "--num-samples", type=num_samples, default=1000,
                        help="number of crystals to sample, written as they are made; Ctrl-C keeps those "
                             "(default: %(default)s)")
    parser.add_argument("--space-group", type=space_group_number, nargs="+", default=None, metavar="N",
                        help="space group number(s) 1-230; several are used in turn (default: the training prior)")
    parser.add_argument("--prompt-sites", nargs="+", default=None, metavar="EL:LETTER",
                        help="first sites of every crystal, e.g. Na:a Cl:b, in canonical order (needs one "
                             "--space-group); the model completes the rest")
    parser.add_argument("--allowed-elements", nargs="+", default=None, metavar="EL",
                        help="element symbols the sites may hold (default: all of the vocabulary)")
    parser.add_argument("--required-elements", nargs="+", default=None, metavar="EL",
                        help="element symbols every crystal must contain")
    parser.add_argument("--min-acceptance-rate", type=rate, default=None, metavar="RATE",
                        help="the lowest share of draws meeting the element and atom constraints before sampling "
                             "gives up (default: the checkpoint's generation_config, 0.01)")
    parser.add_argument("--constraint-sampling", choices=("exact", "smc", "masked"), default="exact",
                        help="exact (default): --allowed-elements and --num-elements-range keep the draws that meet "
                             "them, the model's own conditional; smc: sequential Monte Carlo, 32 masked particles "
                             "per sample weighted by p/q and resampled as they go, one kept by its weight (any "
                             "rarity, close to the conditional, 32 times the cost); "
                             "masked: every step drops the choices that break them and renormalises (fast, but not "
                             "the conditional: long samples pile up at the caps)")
    parser.add_argument("--num-elements-range", type=positive_int, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="numbers of distinct elements a crystal may have (default: the checkpoint's training "
                             "range, e.g. 2 3 for a binary/ternary model)")
    parser.add_argument("--condition", type=name_value, action=NameValues, default=None, metavar="NAME=VALUE",
                        help="a property a conditional generator samples for, e.g. band_gap=1.5 (repeatable)")
    parser.add_argument("--guidance-scale", type=non_negative_float, default=1.0,
                        help="classifier-free guidance with --condition: 1 samples the conditional, above 1 pushes "
                             "harder toward the condition (default: %(default)s)")
    parser.add_argument("--predict", action="append", default=None, metavar="MODEL",
                        help="property model folder or Hub id (repeatable): its predictions for every sample go into "
                             "OUTPUT_DIR/predictions.csv")
    parser.add_argument("--stability-filter", default=None, metavar="MODEL",
                        help="keep only samples this surrogate calls stable: a property model of e_above_hull, or of "
                             "formation_energy_per_atom placed on the proxy hull (the shipped "
                             "mp20-biternary-formation-energy); draws up to 20 × -n samples")
    parser.add_argument("--stability-threshold", type=float, default=0.08, metavar="EV",
                        help="with --stability-filter: the most predicted eV/atom above hull kept "
                             "(default: %(default)s)")
    parser.add_argument("--keep-template-novelty", default=None, metavar="DATASET",
                        help="with --stability-filter: structure types new to DATASET (a prepared dataset's train + "
                             "validation) pass as often as known ones, the surrogate's likeliest stable first, so "
                             "the filter keeps the sampler's template novelty")
    parser.add_argument("--no-stability-filter", action="store_true",
                        help="drop the default sampler's stability filter (it applies only without --model): its "
                             "generator's draws as they come")
    _add_sampling_arguments(parser, "the default sampler, the shipped mp20-biternary-reward generator behind "
                                    "--stability-filter mp20-biternary-stability-surrogate")
    parser.set_defaults(run=_run_generate)


def _add_csp(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "csp", help="crystal structure prediction: likeliest crystals of a composition",
        description="Find the likeliest crystals that hold exactly Z formula units of COMPOSITION (Z ≥ 1) under the "
                    "model, by best-first search over its cascade (or, with --sample, by sampling), and print them, "
                    "likeliest first; with --output-dir, also write them into OUTPUT_DIR/samples.jsonl (their "
                    "log-probabilities in manifest.json) and, with --structures, their 3D structures.")
    parser.add_argument("composition", help="chemical formula of the formula unit, e.g. SrTiO3")
    parser.add_argument("-n", "--num-samples", type=num_samples, default=None,
                        help=f"crystals to find (default: 10, at most {CSP_MAX_DISTINCT}); with --sample, crystals to "
                             f"sample, the distinct ones written, at most the {CSP_MAX_DISTINCT} likeliest; Ctrl-C "
                             "keeps those found (default: 100)")
    parser.add_argument("--sample", action="store_true",
                        help="sample (at the checkpoint's temperature) instead of searching: diverse crystals, not "
                             "the likeliest ones")
    parser.add_argument("--time-limit", type=positive_float, default=None,
                        help="seconds the exact search may take before it returns what it found, flagged as cut "
                             "and filled by a beam search (default: no limit; a node budget still applies)")
    parser.add_argument("--space-group", type=space_group_number, default=None, metavar="N",
                        help="space group number 1-230 (default: the training prior, restricted to the groups that "
                             "can hold the composition)")
    parser.add_argument("--max-atoms", type=positive_int, default=None,
                        help="most atoms per conventional cell (default: the checkpoint's, 80 for MP-20)")
    parser.add_argument("--relax", action="store_true",
                        help="rank the listed crystals a second time by CHGNet energy per atom after relaxation "
                             "(evaluate's screened protocol; about 10-20 s per crystal and process; needs the "
                             "stability extra)")
    _add_sampling_arguments(parser, "the shipped mp20-biternary checkpoint, trained by likelihood on the data")
    parser.set_defaults(run=_run_csp)


def _realise_and_report(out, num_workers: int | None, settings) -> int:
    """Realise a generated folder's pending samples; on Ctrl-C keep what is done and say how to resume. The
    manifest lists the structures and failures written, so --overwrite may replace them."""
    from .generation.output import FAILURES_FILE, STRUCTURES_DIR, record_files
    from .generation.realisation import realise_folder

    try:
        summary = realise_folder(out, num_workers, settings)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the samples and every finished structure are in {out}; "
              f"resume with: wyckoff-hf realise {out}", file=sys.stderr)
        return INTERRUPTED
    finally:
        record_files(out, STRUCTURES_DIR, FAILURES_FILE)
    failures = out / FAILURES_FILE
    print(f"realised {summary.realised}/{summary.total} structures in {out / STRUCTURES_DIR}; "
          + (f"{summary.failed} failures listed in {failures}" if failures.is_file() else "no failures"))
    return 0


def _warn(args: argparse.Namespace, warnings: Sequence[str]) -> None:
    """Print each warning as one line on stderr: the job goes on, the user knows what it is worth."""
    for warning in warnings:
        print(f"wyckoff-hf {args.command}: warning: {warning}", file=sys.stderr)


def _start_job(args: argparse.Namespace, output_optional: bool = False):
    """Check the output folder (before the model loads: fail in the first second), load the model, set threads;
    returns the model, tokenizer, realisation settings and the manifest's generation settings so far. With
    ``output_optional`` (csp, whose answer is the printed list), no folder is needed unless structures are asked."""
    from transformers.utils.logging import disable_progress_bar

    from .generation.jobs import load_generator, set_threads
    from .generation.output import check_output_dir
    from .generation.realisation import RealisationSettings

    if args.output_dir is None and args.structures:
        raise ValueError("--structures writes into a folder: pass --output-dir")
    if args.output_dir is None and not output_optional:
        raise ValueError("the following argument is required: --output-dir")
    if args.output_dir is not None:
        check_output_dir(args.output_dir, args.overwrite)
    disable_progress_bar()  # transformers' bar for loading 50 tensors is noise before ours
    settings = RealisationSettings(args.seed, args.max_attempts, args.realise_timeout, args.format)
    model, tokenizer = load_generator(args.model, args.device)
    threads = set_threads(args.threads, str(model.device.type))
    generation = {"model": args.model or "shipped default", "seed": args.seed, "num_samples": args.num_samples,
                  "temperature": model.sampling_temperatures(args.temperature, args.field_temperatures),
                  "space_group": args.space_group, "device": str(model.device), "threads": threads}
    return model, tokenizer, settings, generation


def _realisation_record(args: argparse.Namespace, settings) -> dict:
    """The manifest's realisation settings: those ``realise`` resumes with, ``None`` without --structures."""
    from dataclasses import asdict

    from .generation.realisation import REALISATION_KEY

    return {REALISATION_KEY: asdict(settings) if args.structures else None}


def _interrupted(out, made: int, requested: int) -> int:
    """Ctrl-C during sampling: say what was kept and where; the shell's status for an interrupted job."""
    print(f"\ninterrupted: kept the {made} of {requested} samples made before Ctrl-C in {out} (manifest.json "
          "records them)", file=sys.stderr)
    return INTERRUPTED


def _prompt(space_groups: list[int] | None, sites: list[str] | None):
    """``--prompt-sites Na:a Cl:b`` with one ``--space-group`` → the prompt representation (``None`` without)."""
    from .tokenization import WyckoffRepresentation

    if sites is None:
        return None
    if not space_groups or len(space_groups) != 1:
        raise ValueError("--prompt-sites needs exactly one --space-group")
    pairs = [tuple(site.split(":")) for site in sites]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--prompt-sites takes ELEMENT:LETTER pairs, e.g. Na:a, got {' '.join(sites)}")
    return WyckoffRepresentation.from_sites(space_groups[0], pairs, canonical=False)


def _sampling_error(err: ValueError, rate: float) -> ValueError:
    """The model's rejection-sampling error with the way out the CLI offers."""
    if "min_acceptance_rate" not in str(err):
        return err
    return ValueError(f"{err.args[0].split('; lower min_acceptance_rate')[0]}; to sample it anyway, pass a lower "
                      f"--min-acceptance-rate (now {rate:g}), --constraint-sampling smc (reweighted proposals) "
                      "or masked (not the conditional), or relax --required-elements / --allowed-elements / "
                      "--space-group")


def _run_generate(args: argparse.Namespace) -> int:
    from .generation.jobs import DEFAULT_SAMPLER, effective_generation_settings, sample_chunks, spread_space_groups
    from .generation.output import PREDICTIONS_FILE, SampleWriter, prepare_output_dir
    from .generation.support import check_condition_support
    from .prediction.cli import load_predictors, record_models, report_sample_predictions, write_sample_predictions

    prompt = _prompt(args.space_group, args.prompt_sites)
    if args.stability_filter and args.no_stability_filter:
        raise ValueError("--stability-filter and --no-stability-filter contradict each other: pass one")
    if args.model is None:  # the default sampler (README, "Fine-tuned and filtered": why it is the default)
        args.model = str(DEFAULT_SAMPLER.generator)
        if not args.no_stability_filter:
            args.stability_filter = args.stability_filter or str(DEFAULT_SAMPLER.stability_filter)
    if args.keep_template_novelty and not args.stability_filter:
        raise ValueError("--keep-template-novelty balances what --stability-filter keeps: it needs --stability-filter")
    condition = args.condition
    if args.guidance_scale != 1.0 and condition is None:
        raise ValueError("--guidance-scale needs --condition")
    model, tokenizer, settings, generation = _start_job(args)
    if args.min_acceptance_rate is not None:
        model.generation_config.min_acceptance_rate = args.min_acceptance_rate
    min_rate = float(getattr(model.generation_config, "min_acceptance_rate", 0.01))
    if condition is not None:
        _warn(args, check_condition_support(model, condition))
    predictors = load_predictors(args.predict or [], args.device)
    screen = None
    if args.stability_filter:
        from .prediction import PropertyPredictor
        from .rewards import SurrogateStability
        from .rewards.screening import MAX_DRAWS_PER_SAMPLE, StabilityFilter

        screen = StabilityFilter(SurrogateStability(PropertyPredictor.from_pretrained(args.stability_filter,
                                                                                      args.device)),
                                 args.stability_threshold, args.keep_template_novelty)
    draws = args.num_samples * (MAX_DRAWS_PER_SAMPLE if screen else 1)
    space_group = None if prompt is not None else spread_space_groups(args.space_group, draws)
    chunks = sample_chunks(
        model, tokenizer, draws, space_group, seed=args.seed, temperature=args.temperature,
        chunk_size=screen.chunk_size(args.num_samples) if screen else None,
        field_temperatures=args.field_temperatures, allowed_elements=args.allowed_elements,
        required_elements=args.required_elements, prompt=prompt, condition=condition,
        guidance_scale=args.guidance_scale, num_elements_range=args.num_elements_range,
        constraint_sampling=args.constraint_sampling)
    generation.update(allowed_elements=args.allowed_elements, required_elements=args.required_elements,
                      min_acceptance_rate=min_rate,
                      prompt_sites=args.prompt_sites, condition=condition, guidance_scale=args.guidance_scale,
                      num_elements_range=effective_generation_settings(model, args.num_elements_range)[
                          "num_elements_range"], constraint_sampling=args.constraint_sampling,
                      num_atoms_range=getattr(model.generation_config, "num_atoms_range", None),
                      predict=args.predict)
    if screen:
        chunks = screen.keep(chunks, args.num_samples)
        generation["stability_filter"] = screen.record()
    try:
        first = next(chunks)  # an impossible request fails here, before the output folder is touched
    except ValueError as err:
        raise _sampling_error(err, min_rate) from None
    writer = SampleWriter(prepare_output_dir(args.output_dir, args.overwrite), with_scores=True)
    out, preview, total, stopped = writer.out, [f"  {rep}" for rep in first[0][:10]], 0.0, None
    try:
        for representations, scores in itertools.chain([first], chunks):
            writer.write(representations, scores)
            if predictors:
                write_sample_predictions(out, representations, predictors, writer.count - len(representations))
            total -= sum(scores)
            if screen:
                generation["stability_filter"] = screen.record()
    except KeyboardInterrupt:
        stopped = "interrupted"
    except ValueError as err:
        stopped = "failed"
        raise _sampling_error(err, min_rate) from None
    finally:
        writer.close({"generation": generation, **({"stopped": stopped} if stopped else {}),
                      **_realisation_record(args, settings)})
        if predictors and (out / PREDICTIONS_FILE).is_file():
            record_models(out, predictors)  # the manifest says whose columns predictions.csv holds
    if stopped:
        return _interrupted(out, writer.count, args.num_samples)
    if screen and not writer.count:
        raise ValueError(f"--stability-filter kept none of {screen.drawn} samples: no sample was predicted within "
                         f"{screen.threshold} eV/atom of the hull; raise --stability-threshold")
    if screen:
        print(f"--stability-filter kept {screen.kept} of {screen.drawn} samples (predicted ≤ {screen.threshold} "
              f"eV/atom above hull){'' if screen.kept == args.num_samples else f', not the {args.num_samples} asked'}")
    print(f"wrote {writer.count} Wyckoff representations to {out / 'samples.jsonl'}")
    print("\n".join(preview))
    # per sample, the log-probability under the distribution it was drawn from (-log p: the authors' novelty score)
    print(f"mean -log p {total / writer.count:.2f} nats (per sample: {out / 'log_probabilities.txt'})")
    if predictors:
        report_sample_predictions(out, writer.count, predictors)
    return _realise_and_report(out, args.num_workers, settings) if args.structures else 0


def _run_csp(args: argparse.Namespace) -> int:
    from .generation.csp import DistinctCrystals, formula_unit, predict_structures
    from .generation.jobs import effective_generation_settings
    from .generation.output import prepare_output_dir, write_samples
    from .generation.search import search_structures
    from .generation.support import check_composition_support

    formula = formula_unit(args.composition)  # a bad formula fails before the model loads
    if args.relax:
        from .evaluation.stability import require_chgnet

        require_chgnet()
    if not args.sample and (args.temperature is not None or args.field_temperatures):
        raise ValueError("--temperature and --field-temperature apply to --sample; the search ranks by the model's "
                         "probabilities at temperature 1")
    if not args.sample and (args.num_samples or 0) > CSP_MAX_DISTINCT:
        raise ValueError(f"-n {args.num_samples}: the search finds at most the {CSP_MAX_DISTINCT} likeliest crystals; "
                         "ask for fewer, or pass --sample")
    model, tokenizer, settings, generation = _start_job(args, output_optional=True)
    _warn(args, check_composition_support(model, args.composition))
    csp = {"composition": formula, "method": "sample" if args.sample else "search",
           "max_atoms": effective_generation_settings(model, max_atoms=args.max_atoms)["max_atoms"]}
    stopped = None
    if args.sample:
        count = args.num_samples or 100
        found = DistinctCrystals(CSP_MAX_DISTINCT)
        try:
            predict_structures(formula, model, tokenizer, n=count, space_group=args.space_group,
                               max_atoms=args.max_atoms, temperature=args.temperature,
                               field_temperatures=args.field_temperatures, seed=args.seed, batch_size=CSP_CHUNK,
                               found=found, progress=True)
        except KeyboardInterrupt:
            if not found.drawn:
                raise
            stopped = "interrupted"
        predictions = found.predictions()
        csp.update(num_samples=found.drawn, max_distinct=found.capacity)
        kept = f" (the {found.capacity} likeliest kept)" if found.dropped else ""
        preview = [f"{len(predictions)} distinct crystals{kept} of {args.composition} in {found.drawn} samples, "
                   "likeliest first (log-probability, samples):"]
    else:
        count = args.num_samples or 10
        predictions = search_structures(formula, model, tokenizer, k=count, space_group=args.space_group,
                                        max_atoms=args.max_atoms, time_limit=args.time_limit)
        generation["temperature"] = model.sampling_temperatures(1.0)
        csp.update(num_samples=count, complete=predictions.complete, expansions=predictions.expansions,
                   from_beam=predictions.from_beam, seconds=predictions.seconds)
        ending = ("complete: exactly the likeliest sequences" if predictions.complete
                  else f"cut by the time or node budget: the likeliest found, {predictions.from_beam} more from a "
                       "beam search, not guaranteed the likeliest")
        preview = [f"{len(predictions)} likeliest crystals of {args.composition} by search ({ending}; "
                   f"{predictions.seconds:.1f} s), likeliest first (log-probability, labellings found):"]
    csp.update(log_probabilities=[p.log_probability for p in predictions], counts=[p.count for p in predictions])
    shown = predictions[:10] if args.sample else predictions  # the search prints all K it was asked for
    hidden = len(predictions) - len(shown) if args.output_dir is None else 0  # else the file holds them
    print("\n".join(preview + [f"  {p.log_probability:8.2f} {p.count:4d}  {p.representation}" for p in shown]
                    + ([f"  ... {hidden} more: pass --output-dir to keep them all"] if hidden else [])))
    relaxation_stopped = False
    if args.relax and shown and not stopped:
        try:
            print(_relaxed_listing(shown, args, csp))
        except KeyboardInterrupt:  # the found crystals are still written below
            relaxation_stopped = True
            print("\ninterrupted: relaxation stopped; the crystals are ranked by the model only", file=sys.stderr)
    if args.output_dir is None:
        return INTERRUPTED if stopped or relaxation_stopped else 0
    out = write_samples(prepare_output_dir(args.output_dir, args.overwrite), [p.representation for p in predictions],
                        {"generation": generation, "csp": csp, **({"stopped": stopped} if stopped else {}),
                         **_realisation_record(args, settings)})
    if stopped:
        return _interrupted(out, found.drawn, count)
    print(f"wrote {len(predictions)} Wyckoff representations to {out / 'samples.jsonl'}")
    if relaxation_stopped:
        return INTERRUPTED
    return _realise_and_report(out, args.num_workers, settings) if args.structures else 0


def _relaxed_listing(shown, args: argparse.Namespace, csp: dict) -> str:
    """Relax the listed crystals, record them in the manifest's ``csp`` section, and list them by energy."""
    from .evaluation.relaxation import rank_by_energy

    relaxed = rank_by_energy(shown, args.num_workers, args.seed)
    model_rank = {id(prediction): rank for rank, prediction in enumerate(shown, 1)}
    csp["relaxed"] = [{"crystal": str(r.prediction.representation), "energy_per_atom": r.energy_per_atom,
                       "space_group_relaxed": r.space_group_relaxed, "failure": r.failure} for r in relaxed]
    lowest = relaxed[0].energy_per_atom
    lines = ["by CHGNet energy after relaxation (ΔE from the lowest in meV/atom, log-probability, model's rank, "
             "space group after relaxation):"]
    for r in relaxed:
        rank = model_rank[id(r.prediction)]
        if r.energy_per_atom is None:
            lines.append(f"  {'failed':>8} {r.prediction.log_probability:8.2f} {rank:4d}  {r.prediction.representation}"
                         f"  ({r.failure})")
            continue
        group = r.space_group_relaxed
        kept = "keeps its group" if group == r.prediction.representation.space_group else f"relaxes to group {group}"
        lines.append(f"  {1000 * (r.energy_per_atom - lowest):8.1f} {r.prediction.log_probability:8.2f} {rank:4d}  "
                     f"{r.prediction.representation}  ({kept})")
    return "\n".join(lines)


def _add_realise(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "realise", help="realise the samples of a generated folder in 3D, or finish an interrupted job",
        description="Realise with pyxtal every sample of OUTPUT_DIR that has no structure and no failure record "
                    "yet. A folder generated with --structures keeps its settings (format, attempts, seeds); "
                    "the options below apply to a folder realised for the first time.")
    parser.add_argument("output_dir", help="folder written by `wyckoff-hf generate`")
    _add_realisation_arguments(parser)
    for action in parser._actions:  # None marks an option not given: a folder's recorded settings may not be changed
        if action.dest in REALISE_SETTINGS:
            action.help, action.default = action.help.replace("%(default)s", str(action.default)), None
    parser.set_defaults(run=_run_realise)


def _run_realise(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .generation.output import read_manifest
    from .generation.realisation import folder_settings

    out = Path(args.output_dir)
    manifest = read_manifest(out) or {}
    seed = manifest.get("generation", {}).get("seed", 0)
    given = {field: getattr(args, dest) for dest, field in REALISE_SETTINGS.items()}
    return _realise_and_report(out, args.num_workers, folder_settings(out, seed, **given))


def _add_tokenize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenize", help="print the Wyckoff representation and tokens of CIF files")
    parser.add_argument("cifs", nargs="+", help="CIF files")
    parser.add_argument("--symprec", type=positive_float, default=0.1,
                        help="spglib symmetry tolerance in Å (default: %(default)s)")
    parser.set_defaults(run=_run_tokenize)


def _run_tokenize(args: argparse.Namespace) -> int:
    from .tokenization import WyckoffError, WyckoffTokenizer

    tokenizer = WyckoffTokenizer(symprec=args.symprec)
    failures = 0
    for path in args.cifs:
        try:
            rep = tokenizer.to_representation(path)
        except WyckoffError as err:
            failures += 1
            print(f"{path}: ERROR {type(err).__name__}: {err}", file=sys.stderr)
            continue
        print(f"{path}: {rep}")
        print(json.dumps(tokenizer.encode(rep)))
    return 1 if failures else 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    from .prediction.cli import add_predict_arguments, run_predict

    parser = subparsers.add_parser("predict", help="predict crystal properties with property models",
                                   description="Predict properties of crystals (CIF files, folders of CIFs, generated "
                                               "folders, CDVAE CSVs) from their Wyckoff representations. A crystal "
                                               "that cannot be read is reported and skipped.")
    add_predict_arguments(parser)
    parser.set_defaults(run=run_predict)


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    from .evaluation.cli import add_evaluate_arguments, run_evaluate

    parser = subparsers.add_parser("evaluate", help="metrics of generated samples against a reference dataset")
    add_evaluate_arguments(parser)
    parser.set_defaults(run=run_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wyckoff-hf", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(required=True, dest="command")
    for add in (_add_generate, _add_csp, _add_realise, _add_evaluate, _add_predict, _add_tokenize):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; bad input (unknown model, impossible constraints, unreadable files) ends with a
    one-line error and exit status 2 instead of a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # a command with structure work to do connects first, so that an unreachable scheduler fails before the model loads
    structure_work = "scheduler" in args and getattr(args, "structures", True)
    try:
        with connect(scheduler_address(args.scheduler) if structure_work else None):
            return args.run(args)
    except (ValueError, OSError) as err:  # WyckoffError is a ValueError
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"wyckoff-hf {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nwyckoff-hf {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
