"""OpenSSF model signatures: `modelfn publish --sign-key` signs a version's files, and with MODELFN_VERIFY_KEY a
load serves a version only if its signature verifies with that key over exactly the bytes it loads. The sha256 in a
manifest proves the bytes are the ones the manifest names; the signature proves who published them, since whoever
can write the store can also rewrite a manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from modelfn_tools.embedded import EmbeddedAWS
from modelfn_tools.publish import publish

from modelfn.errors import NotReady
from modelfn.model.onnx import read_signature
from modelfn.registry import ModelRegistry
from modelfn.registry.loader import ModelCache
from modelfn.service.dispatch import Service
from modelfn.service.request import Request
from modelfn.settings import Settings
from modelfn.store import ModelRepository, ObjectStore, open_store
from modelfn.store.layout import ArtifactFile, manifest_key
from tests.registry.versions import affine, reference, save_external

ROW = [5.1, 3.5, 1.4, 0.2]


def write_key_pair(folder: Path, name: str, curve: ec.EllipticCurve | None = None) -> tuple[Path, Path]:
    """An EC key pair as PEM files: (private, public)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    private, public = write_key_pair(folder, "publisher")
    other_private, other_public = write_key_pair(folder, "other", ec.SECP384R1())
    return {"private": private, "public": public, "other_private": other_private, "other_public": other_public}


def registry(store: str, cache_dir: Path, verify_key: Path | None = None) -> ModelRegistry:
    settings = Settings(cache_dir=cache_dir, verify_key=verify_key, warmup=False)
    return ModelRegistry(ModelRepository(open_store(store)), settings, cache=ModelCache())


def rewrite_manifest(store: ObjectStore, name: str, version: int, **changes: Any) -> None:
    """What anyone who can write the store can do: the manifest is not signed."""
    repo = ModelRepository(store)
    manifest = dataclasses.replace(repo.manifest(name, version), **changes)
    store.write_bytes(manifest_key(name, version), manifest.to_json())


def predicts_iris(registry: ModelRegistry, version: int) -> bool:
    out = registry.get("iris", version).predict({"float_input": np.array([ROW], dtype=np.float32)})
    return bool(out["label"].tolist() == [0])


# ---- serving ------------------------------------------------------------------------------------------------------


def test_a_signed_version_serves_with_the_key_and_an_unsigned_one_does_not(
    fresh_bucket: str, example_dir: Path, keys: dict[str, Path], tmp_path: Path, aws: EmbeddedAWS
) -> None:
    iris = example_dir / "iris.onnx"
    publish(iris, fresh_bucket, "iris", progress=False, sign_key=keys["private"])
    publish(iris, fresh_bucket, "iris", progress=False)  # version 2: unsigned
    manifest = ModelRepository(open_store(fresh_bucket)).manifest("iris", 1)
    assert manifest.signature_bundle is not None
    assert manifest.signature_bundle.path == "model.sig"

    verifying = registry(fresh_bucket, tmp_path / "c1", keys["public"])
    assert predicts_iris(verifying, 1)
    with pytest.raises(NotReady) as e:
        verifying.get("iris", 2)
    assert e.value.status == 503
    assert "model 'iris' version 2: not signed" in e.value.message
    assert verifying.cache.stats["downloads"] == 2  # version 1's model.sig and model.onnx: nothing of version 2

    # Without MODELFN_VERIFY_KEY signatures are not required, nor even fetched.
    sig = f"/{fresh_bucket.removeprefix('s3://').split('/')[0]}/models/iris/1/model.sig"
    before = aws.count("GET", sig)
    plain = registry(fresh_bucket, tmp_path / "c2")
    assert predicts_iris(plain, 1)
    assert predicts_iris(plain, 2)
    assert aws.count("GET", sig) == before


def test_the_service_answers_503_naming_the_reason_and_other_versions_keep_serving(
    fresh_bucket: str, example_dir: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    iris = example_dir / "iris.onnx"
    publish(iris, fresh_bucket, "iris", progress=False, sign_key=keys["private"])
    publish(iris, fresh_bucket, "iris", progress=False)
    publish(iris, fresh_bucket, "iris", progress=False, sign_key=keys["other_private"])
    service = Service(registry(fresh_bucket, tmp_path / "cache", keys["public"]))
    body = json.dumps({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]})

    def infer(version: int) -> tuple[int, dict[str, object]]:
        r = service.handle(Request("POST", f"/v2/models/iris/versions/{version}/infer", body=body.encode()))
        return r.status, json.loads(r.body)

    assert infer(1)[0] == 200
    unsigned = "model 'iris' version 2: not signed, and MODELFN_VERIFY_KEY requires a signature; not served"
    assert infer(2) == (503, {"error": unsigned})
    status, answer = infer(3)
    assert status == 503
    assert str(answer["error"]).startswith("model 'iris' version 3: signature does not verify")
    ready = service.handle(Request("GET", "/v2/models/iris/versions/3/ready"))
    assert ready.status == 503
    assert "signature does not verify" in json.loads(ready.body)["error"]
    assert infer(1)[0] == 200  # still serving


# ---- what a signature proves that a sha256 does not ----------------------------------------------------------------


def test_a_replaced_artifact_with_a_rewritten_manifest_passes_sha256_but_not_the_signature(
    fresh_bucket: str, example_dir: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    publish(example_dir / "iris.onnx", fresh_bucket, "iris", progress=False, sign_key=keys["private"])
    store = open_store(fresh_bucket)
    other = (example_dir / "ranker.onnx").read_bytes()
    store.write_bytes("iris/1/model.onnx", other)
    inputs, outputs = read_signature(ort.InferenceSession(other, providers=["CPUExecutionProvider"]))
    sha = hashlib.sha256(other).hexdigest()
    rewrite_manifest(store, "iris", 1, sha256=sha, size_bytes=len(other), inputs=inputs, outputs=outputs)

    verifying = registry(fresh_bucket, tmp_path / "c1", keys["public"])
    with pytest.raises(NotReady) as e:
        verifying.get("iris", 1)
    differ = "model 'iris' version 1: signature does not verify (the signed files differ in model.onnx)"
    assert e.value.message == differ
    assert verifying.cache.stats["downloads"] == 1  # the signature alone: the model itself was never fetched
    # the sha256 alone is satisfied: without the key the swapped model loads (as the ranker it is)
    assert registry(fresh_bucket, tmp_path / "c2").get("iris", 1).inputs[0].name == "dense"


def test_a_signature_for_another_version_or_model_does_not_verify(
    fresh_bucket: str, example_dir: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    """Same bytes, same key: a signed version copied to another version number (or model) is not that version."""
    iris = example_dir / "iris.onnx"
    publish(iris, fresh_bucket, "iris", progress=False, sign_key=keys["private"])
    publish(iris, fresh_bucket, "iris", progress=False, sign_key=keys["private"])
    publish(iris, fresh_bucket, "copy", progress=False, sign_key=keys["private"])
    store = open_store(fresh_bucket)
    first = store.read_bytes("iris/1/model.sig")
    for name, version in (("iris", 2), ("copy", 1)):
        store.write_bytes(f"{name}/{version}/model.sig", first)
        bundle = ArtifactFile(path="model.sig", sha256=hashlib.sha256(first).hexdigest(), size_bytes=len(first))
        rewrite_manifest(store, name, version, signature_bundle=bundle)

    reg = registry(fresh_bucket, tmp_path / "cache", keys["public"])
    assert predicts_iris(reg, 1)
    with pytest.raises(NotReady, match=r"version 2: signature does not verify \(it is for 'iris/1', not this"):
        reg.get("iris", 2)
    with pytest.raises(NotReady, match=r"'copy' version 1: signature does not verify \(it is for 'iris/1'"):
        reg.get("copy", 1)


@pytest.mark.parametrize(
    ("bundle", "why"),
    [
        (b"not json", "unreadable bundle"),
        (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}', "unreadable bundle"),
    ],
)
def test_a_malformed_signature_does_not_verify(
    tmp_path: Path, example_dir: Path, keys: dict[str, Path], bundle: bytes, why: str
) -> None:
    root = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", root, "iris", progress=False, sign_key=keys["private"])
    store = open_store(root)
    store.write_bytes("iris/1/model.sig", bundle)
    rewrite_manifest(
        store,
        "iris",
        1,
        signature_bundle=ArtifactFile(path="model.sig", sha256=hashlib.sha256(bundle).hexdigest(), size_bytes=1),
    )
    with pytest.raises(NotReady, match=f"signature does not verify \\({why}"):
        registry(root, tmp_path / "cache", keys["public"]).get("iris", 1)


def test_a_signature_swapped_in_the_store_fails_its_sha256(
    tmp_path: Path, example_dir: Path, keys: dict[str, Path]
) -> None:
    root = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", root, "iris", progress=False, sign_key=keys["private"])
    publish(example_dir / "iris.onnx", root, "iris", progress=False, sign_key=keys["private"])
    store = open_store(root)
    store.write_bytes("iris/2/model.sig", store.read_bytes("iris/1/model.sig"))
    with pytest.raises(NotReady, match=r"version 2: sha256 mismatch in model\.sig"):
        registry(root, tmp_path / "cache", keys["public"]).get("iris", 2)


def test_an_unusable_verification_key_names_no_path(tmp_path: Path, example_dir: Path, keys: dict[str, Path]) -> None:
    root = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", root, "iris", progress=False, sign_key=keys["private"])
    for key in (tmp_path / "secret-dir" / "absent.pem", keys["private"]):  # missing; a private key is no public key
        with pytest.raises(NotReady) as e:
            registry(root, tmp_path / "cache", key).get("iris", 1)
        assert e.value.message.startswith(
            "model 'iris' version 1: the verification key (MODELFN_VERIFY_KEY) cannot be used"
        )
        assert str(tmp_path) not in e.value.message


# ---- external data ------------------------------------------------------------------------------------------------


def test_external_data_files_are_signed_and_verified(tmp_path: Path, keys: dict[str, Path]) -> None:
    rng = np.random.default_rng(5)
    model = affine(rng.normal(size=(3, 4)), rng.normal(size=4))
    path = save_external(model, tmp_path / "exported")
    root = str(tmp_path / "store")
    publish(path, root, "ext", progress=False, sign_key=keys["private"])
    x = np.ones((2, 3), dtype=np.float32)
    loaded = registry(root, tmp_path / "c1", keys["public"]).get("ext", 1)
    np.testing.assert_allclose(loaded.predict({"x": x})["y"], reference(model, x), rtol=1e-6)

    store = open_store(root)
    weights = bytearray(store.read_bytes("ext/1/weights.bin"))
    weights[:4] = np.float32(42).tobytes()
    store.write_bytes("ext/1/weights.bin", bytes(weights))
    manifest = ModelRepository(store).manifest("ext", 1)
    files = [dataclasses.replace(f, sha256=hashlib.sha256(weights).hexdigest()) for f in manifest.files]
    rewrite_manifest(store, "ext", 1, files=files)
    with pytest.raises(NotReady, match=r"signature does not verify \(the signed files differ in weights.bin\)"):
        registry(root, tmp_path / "c2", keys["public"]).get("ext", 1)


# ---- the format is model_signing's own -----------------------------------------------------------------------------


def test_a_version_folder_verifies_with_model_signings_own_verifier(
    tmp_path: Path, example_dir: Path, keys: dict[str, Path]
) -> None:
    """model_signing's documented API, on the version folder as the store holds it (manifest and claim included):
    the signature covers exactly the model's files."""
    from model_signing import verifying

    def verify(key: Path, folder: Path) -> None:
        verifying.Config().use_elliptic_key_verifier(public_key=key).verify(folder, folder / "model.sig")

    root = tmp_path / "store"
    publish(example_dir / "iris.onnx", str(root), "iris", progress=False, sign_key=keys["private"])
    folder = root / "iris" / "1"
    assert sorted(p.name for p in folder.iterdir()) == [".claim", "manifest.json", "model.onnx", "model.sig"]
    verify(keys["public"], folder)
    with pytest.raises(ValueError, match="Key mismatch"):
        verify(keys["other_public"], folder)
    (folder / "model.onnx").write_bytes((example_dir / "ranker.onnx").read_bytes())
    with pytest.raises(ValueError, match="Signature mismatch"):
        verify(keys["public"], folder)


def test_signing_and_verifying_need_no_network(
    tmp_path: Path, example_dir: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    root = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", root, "iris", progress=False, sign_key=keys["private"])
    assert predicts_iris(registry(root, tmp_path / "cache", keys["public"]), 1)


LAZY = textwrap.dedent(
    """
    import json, sys
    from modelfn.registry import ModelRegistry
    from modelfn.settings import Settings
    settings = Settings(warmup=False)
    ModelRegistry.from_uri(settings.store, settings).get("iris", 1)
    print(json.dumps(sorted(m for m in ("model_signing", "sigstore", "modelfn.registry.signing") if m in sys.modules)))
    """
)


def test_model_signing_is_imported_only_when_a_verification_key_is_set(
    tmp_path: Path, example_dir: Path, keys: dict[str, Path]
) -> None:
    root = str(tmp_path / "store")
    publish(example_dir / "iris.onnx", root, "iris", progress=False, sign_key=keys["private"])
    imported = {}
    for label, key in (("without", None), ("with", keys["public"])):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFN_")}
        env |= {"MODELFN_STORE": root, "MODELFN_CACHE_DIR": str(tmp_path / label)}
        if key is not None:
            env["MODELFN_VERIFY_KEY"] = str(key)
        proc = subprocess.run(
            [sys.executable, "-c", LAZY], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr
        imported[label] = json.loads(proc.stdout)
    assert imported == {"without": [], "with": ["model_signing", "modelfn.registry.signing", "sigstore"]}
