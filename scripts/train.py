"""Train a WyckoffTransformer on a prepared crystal dataset with 🤗 Accelerate, on one or several processes.

    python scripts/train.py --dataset DIR_OR_HUB_ID --output-dir runs/NAME [--config model.json] ...
    python scripts/train.py --task property --target formation_energy_per_atom ...  # a property predictor
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...           # 2 processes
    torchrun --nproc_per_node 2 scripts/train.py ...                               # the same with torchrun

The training itself lives in ``wyckoff_hf.training`` (its docstring has every usage and what a run writes;
docs/training.md the multi-GPU and multi-node commands); this file is the command the launchers start.
"""

from wyckoff_hf.training import main

if __name__ == "__main__":
    main()
