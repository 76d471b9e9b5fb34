"""Batch scoring of tabular files (CSV, JSON Lines, Parquet): streamed in chunks, bounded memory, every input row
landing in exactly one of the results and the errors file."""

from modelfn.scoring.scorer import ScoreStats, score_object

__all__ = ["ScoreStats", "score_object"]
