"""Payload capture: a sample of the inferences a service answered, written as gzip JSON Lines to a folder, S3 or
Kinesis Data Firehose, for drift checks (`modelfn drift`) and audits. See observer.py for how it runs."""

from modelfn.capture.observer import Capture

__all__ = ["Capture"]
