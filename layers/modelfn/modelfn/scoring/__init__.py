"""Batch scoring of tabular files (CSV, JSON Lines, Parquet): streamed in chunks, bounded memory, columns matched
to the model's inputs by name where the names are known, every input row landing in exactly one of the results and
the errors file."""

from modelfn.scoring.scorer import ERRORS_SUFFIX, RowScorer, ScoreStats, score_object

__all__ = ["ERRORS_SUFFIX", "RowScorer", "ScoreStats", "score_object"]
