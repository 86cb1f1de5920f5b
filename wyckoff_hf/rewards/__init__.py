"""Rewards for fine-tuning a generator toward new and stable crystals (``scripts/train.py --task reward``), and
for screening samples (``wyckoff-hf generate --rank-by stability``).

A reward is a weighted sum of terms, each a function of a batch of Wyckoff representations to one value per
crystal (``terms``): stability from a surrogate predictor of energy above hull (microseconds a crystal) or from
CHGNet relaxation (seconds), Wyckoff and template novelty against the training data, and uniqueness within the
batch, the guard against collapsing onto a few crystals. ``RewardFunction.from_spec`` builds one from
``"stability=1,novelty=0.5"``. ``screening`` keeps only the samples a surrogate calls stable.
"""

from .function import REWARD_TERMS, RewardFunction, parse_reward_spec
from .terms import (
    ChgnetStability,
    NewTemplate,
    NotAmongKnown,
    Novelty,
    RewardTerm,
    SurrogateStability,
    Uniqueness,
    stability_score,
)

__all__ = ["REWARD_TERMS", "ChgnetStability", "NewTemplate", "NotAmongKnown", "Novelty", "RewardFunction", "RewardTerm",
           "SurrogateStability", "Uniqueness", "parse_reward_spec", "stability_score"]
