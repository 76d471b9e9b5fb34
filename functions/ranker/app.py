"""The ranker (dense FP32 + item ids INT64) as a Lambda function. It has two inputs, so /predict and S3 batch
scoring (one 2-D input) answer 400; v2, TF Serving and SQS requests name both inputs."""

from __future__ import annotations

from modelfn import ModelFunction

fn = ModelFunction.from_env(model="ranker")
http_handler = fn.http_handler
batch_handler = fn.batch_handler
sqs_handler = fn.sqs_handler
s3_handler = fn.s3_handler
