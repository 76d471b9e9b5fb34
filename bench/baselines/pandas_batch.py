"""Batch scoring as it is usually written with pandas: read the CSV in chunks, predict each chunk, concatenate,
write a CSV. The S3 variant reads the object's body with pandas and puts the written CSV back.

Output columns match modelfn's S3 batch contract: id, logits_0..9, probabilities_0..9."""

import io

import boto3
import numpy as np
import onnxruntime as ort
import pandas as pd

CHUNK_ROWS = 8192


def score_csv(session: ort.InferenceSession, source, chunksize: int = CHUNK_ROWS) -> pd.DataFrame:
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    parts = []
    for chunk in pd.read_csv(source, chunksize=chunksize):
        ids = chunk.pop("id") if "id" in chunk.columns else None
        outputs = session.run(output_names, {input_name: chunk.to_numpy(dtype=np.float32)})
        frame = pd.DataFrame(index=chunk.index)
        if ids is not None:
            frame["id"] = ids
        for name, values in zip(output_names, outputs, strict=True):
            for k in range(values.shape[1]):
                frame[f"{name}_{k}"] = values[:, k]
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def score_s3(session: ort.InferenceSession, bucket: str, key: str, out_bucket: str, out_key: str) -> int:
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    result = score_csv(session, body)
    buf = io.StringIO()
    result.to_csv(buf, index=False)
    s3.put_object(Bucket=out_bucket, Key=out_key, Body=buf.getvalue().encode())
    return len(result)


def score_file(session: ort.InferenceSession, src: str, dest: str) -> int:
    result = score_csv(session, src)
    result.to_csv(dest, index=False)
    return len(result)
