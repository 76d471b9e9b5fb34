"""The batch half of the `modelfn dev` tour: an SQS batch and an S3 batch file through the iris function's
batch handler, against the embedded S3/SQS, the way Lambda's event source mapping and S3 notifications drive it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

INPUT_BUCKET = "modelfn-input"
RESULTS_BUCKET = "modelfn-results"
RESULTS = f"s3://{RESULTS_BUCKET}/results"
REGION = "us-east-1"


class LocalContext:
    """The fields of Lambda's context object that Powertools reads."""

    def __init__(self, name: str) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 1769
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def _s3_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": size},
                },
            }
        ]
    }


def batch_tour(store: str, cache_dir: Path) -> list[str]:
    import boto3

    from modelfn.function import ModelFunction
    from modelfn.settings import Settings

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    failures: list[str] = []
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    for bucket in (INPUT_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    fn = ModelFunction(
        Settings(store=store, model="iris", results=RESULTS, input_prefix="incoming/iris/", cache_dir=cache_dir)
    )

    print("\n# SQS: four messages (one malformed) through the iris batch function; failures are reported by id")
    queue_url = sqs.create_queue(QueueName="iris-requests")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bodies = [
        {"instances": [[5.1, 3.5, 1.4, 0.2]]},
        {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [6.7, 3.0, 5.2, 2.3]}]},
        {"inputs": {"float_input": [[5.9, 3.0, 4.2, 1.5]]}},
        {"instances": [[1.0, 2.0]]},  # three features short: this one fails alone
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    answer = fn.batch_handler(_sqs_event(messages, queue_arn), LocalContext("IrisBatchFunction"))
    print("  handler returned", json.dumps(answer))
    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    for m in messages:  # as the event source mapping does: delete what succeeded, leave failures for redrive
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            key = f"results/iris/{m['MessageId']}.json"
            print(
                f"  s3://{RESULTS_BUCKET}/{key}:", s3.get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read().decode()
            )
    if len(failed) != 1:
        failures.append(f"SQS batch: expected one failed message, got {sorted(failed)}")

    print("\n# S3: a CSV with two malformed rows lands under incoming/iris/; results and errors are written beside")
    rows = ["id,sepal_length,sepal_width,petal_length,petal_width"]
    rows += [
        f"f{i},{5 + i % 3 * 0.7:.1f},{3 + i % 2 * 0.4:.1f},{1.4 + i % 3 * 2:.1f},{0.2 + i % 3 * 0.9:.1f}"
        for i in range(8)
    ]
    rows += ["bad1,5.1,not-a-number,1.4,0.2", "bad2,5.1,3.5"]
    data = ("\n".join(rows) + "\n").encode()
    key = "incoming/iris/demo run/flowers.csv"
    s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=data)
    answer = fn.batch_handler(_s3_event(INPUT_BUCKET, key, len(data)), LocalContext("IrisBatchFunction"))
    print("  handler returned", json.dumps(answer))
    out_key = "results/iris/demo run/flowers.csv"
    for k in (out_key, out_key + ".errors.jsonl"):
        text = s3.get_object(Bucket=RESULTS_BUCKET, Key=k)["Body"].read().decode()
        print(f"  s3://{RESULTS_BUCKET}/{k}:\n    " + "\n    ".join(text.strip().splitlines()[:4]))
    result = answer["results"][0]
    if (result.get("scored"), result.get("errors")) != (8, 2):
        failures.append(f"S3 batch: expected 8 scored and 2 errors, got {result}")
    return failures
