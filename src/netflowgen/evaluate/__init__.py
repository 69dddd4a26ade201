"""Evaluation of pre-training: loss, perplexity, accuracy per split and feature group; bigram baseline."""

from netflowgen.evaluate.pretrain_metrics import (
                                                  GROUPS,
                                                  Bigram,
                                                  Scores,
                                                  evaluation_windows,
                                                  feature_group,
                                                  score_model,
                                                  table4,
)

__all__ = ["GROUPS", "Bigram", "Scores", "evaluation_windows", "feature_group", "score_model", "table4"]
