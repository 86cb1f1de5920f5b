"""Training a WyckoffTransformer on a prepared crystal dataset with 🤗 Accelerate, on one or several processes.

    python scripts/train.py --dataset DIR_OR_HUB_ID --output-dir runs/NAME [--config model.json] ...
    python scripts/train.py --condition band_gap ...                           # a band-gap-conditional generator
    python scripts/train.py --task property --target formation_energy_per_atom ...        # a property predictor
    python scripts/train.py --task property --target band_gap --classification-threshold 0.0 ...  # a classifier
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...   # 2 processes: GPUs (NCCL) or CPUs (gloo)
    torchrun --nproc_per_node 2 scripts/train.py ...                       # the same with torchrun

docs/training.md has the multi-GPU and multi-node commands. Options are named as in
``transformers.TrainingArguments`` where the meaning is the same, and every default reproduces the shipped
model (``wyckoff_hf/pretrained/mp20-biternary``). One loop serves both tasks; what differs (the model, the
batch's extra columns, the loss terms and metrics, the end of the run) is a task object, ``GenerationTask`` or
``PropertyTask``. The run writes

- ``OUTPUT_DIR`` itself: the best model by validation loss (``save_pretrained``: config.json, model.safetensors,
  the modeling code for ``trust_remote_code``; for a generator also generation_config.json with the training
  split's space-group prior and the calibrated sampling temperature), the tokenizer, the model card
  ``README.md``, ``metrics.jsonl`` (every logged value) and ``training_summary.json``;
- ``OUTPUT_DIR/checkpoint-N/`` (N = optimizer steps so far, as ``Trainer`` names them): ``accelerator.save_state``
  plus ``trainer_state.json``, resumed with ``--resume-from-checkpoint latest`` (or a path).

On several processes each global batch (``per_device_train_batch_size`` × processes crystals, drawn by one
length-grouped sampler over the whole split) is cut into one slice per process, and each process weights each
loss term by its share of the global batch's predictions (a property loss predicts once per crystal), so N
processes follow the trajectory of one process with the same global batch (up to float summation order). Only
the main process writes files.

The package's modules, one job each: ``arguments`` (the options and their checks), ``tasks`` (generator and
property predictor), ``augmentation`` (the per-epoch draws), ``losses`` (exact sums across processes),
``checkpoints`` (resume and save), ``calibration`` (the sampling temperature and STOP shifts fitted after training,
also run by ``scripts/calibrate_temperature.py``), ``launch`` (launcher and ``Accelerator``), ``summary`` (the end
of a run) and ``loop`` (``main``). ``scripts/train.py`` is the command that runs ``main``.
"""

from .loop import main

__all__ = ["main"]
