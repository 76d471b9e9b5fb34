"""OpenSSF model signatures over a version's files: `sign` when publishing, `verify` when loading.

The format is the `model-signing` package's key-based one (what `model_signing sign key` writes): a Sigstore
bundle whose DSSE envelope carries an in-toto statement listing each file with its sha256, signed with an
elliptic-curve key (P-256, P-384 or P-521). Nothing goes over the network: no transparency log, no certificate
authority, only the key pair.

modelfn builds the statement from digests it already holds (publish, of the files it uploads; a load, the sha256s
the manifest records, which every byte it then loads must match) instead of letting the library hash paths, since
a path read twice is a path another process can swap in between. Two bindings are modelfn's own:
- the statement's subject name is `<model>/<version>` and a load checks it, so a signed version cannot be
  replayed as another model or version;
- the files signed are exactly the version's (model.onnx and its external data, the manifest's `files`), and the
  layout's own files (manifest, signature, claim) are recorded as ignored, so model_signing's own verifier accepts
  a downloaded version folder as it is.

`model-signing` and the sigstore stack under it take about half a second to import, so they are imported only in
the functions below, and this module is imported only by a publish that signs and by loads with
MODELFN_VERIFY_KEY set. Beyond its documented API (`signing.Config`, `verifying.Config`, which only hash paths),
this uses the classes those wrap (the key signer and verifier, `Payload`, `Digest`): hence the pinned minor
version in requirements.txt."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from modelfn.errors import NotReady, PublishError
from modelfn.store.base import located
from modelfn.store.layout import CLAIM, MANIFEST, SIGNATURE

if TYPE_CHECKING:
    from model_signing._signing.sign_ec_key import Signer
    from model_signing.manifest import Manifest

log = logging.getLogger("modelfn")
IGNORED = (MANIFEST, SIGNATURE, CLAIM)
"""Files of a version folder that are not the model: never signed, recorded as ignored in the statement."""
HASH = "sha256"
KEY_ERRORS = (OSError, ValueError, TypeError, AttributeError)
"""What loading a PEM key raises: unreadable, not PEM, encrypted without a password (TypeError), not an EC key
(AttributeError: it has no curve), an EC curve the format does not allow (ValueError)."""


def subject(name: str, version: int) -> str:
    """The statement's subject name: the model version a signature is for."""
    return f"{name}/{version}"


def statement(name: str, version: int, digests: Mapping[str, str]) -> Manifest:
    """model_signing's manifest of a version: each file (its path in the version folder) with its sha256."""
    from model_signing import manifest
    from model_signing._hashing.hashing import Digest

    serialization = manifest.SerializationType.from_args(
        {"method": "files", "hash_type": HASH, "allow_symlinks": False, "ignore_paths": list(IGNORED)}
    )
    items = [serialization.new_item(path, Digest(HASH, bytes.fromhex(sha))) for path, sha in sorted(digests.items())]
    return manifest.Manifest(subject(name, version), items, serialization)


def _reason(e: BaseException) -> str:
    """Why a key could not be used, naming no path (an OSError's text would)."""
    if isinstance(e, AttributeError):
        return "not an elliptic-curve key"
    return (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__


# ---- publish -----------------------------------------------------------------------------------------------------
def load_signer(key: Path) -> Signer:
    """The signer of a private key file (PEM, unencrypted, EC P-256/P-384/P-521), read before anything is written
    so that a bad key refuses the publish up front."""
    from model_signing._signing.sign_ec_key import Signer

    try:
        return Signer(key)
    except KEY_ERRORS as e:
        raise PublishError(
            f"--sign-key {key}: not a usable private key ({_reason(e)}); expected an unencrypted EC private key "
            "(P-256, P-384 or P-521) in PEM"
        ) from e


def sign(signer: Signer, name: str, version: int, digests: Mapping[str, str]) -> bytes:
    """The signature bundle (JSON) over the version's files, given as {path in the version folder: sha256}."""
    from model_signing._signing.sign_sigstore_pb import Signature
    from model_signing._signing.signing import Payload

    signature = signer.sign(Payload(statement(name, version, digests)))
    assert isinstance(signature, Signature)  # what key signers make: a bundle after Sigstore's protobuf specs
    return signature.bundle.to_json().encode()


# ---- load --------------------------------------------------------------------------------------------------------
def _signed(public_key: Path, bundle: bytes, where: str) -> Manifest:
    """The statement a bundle carries, once its signature is checked against the public key."""
    from cryptography.exceptions import InvalidSignature
    from model_signing._signing.sign_ec_key import Verifier
    from model_signing._signing.sign_sigstore_pb import Signature
    from sigstore_models.bundle.v1 import Bundle

    try:
        verifier = Verifier(public_key)
    except KEY_ERRORS as e:
        unusable = NotReady(f"{where}: the verification key (MODELFN_VERIFY_KEY) cannot be used: {_reason(e)}")
        raise located(unusable, str(public_key)) from e
    try:
        return verifier.verify(Signature(Bundle.from_dict(json.loads(bundle))))
    except InvalidSignature as e:
        raise NotReady(f"{where}: signature does not verify (not signed by the verification key)") from e
    except Exception as e:  # anything a malformed bundle raises (JSON, pydantic, base64, key hint): not verified
        why = "signed with another key" if "Key mismatch" in str(e) else f"unreadable bundle: {type(e).__name__}"
        log.warning("%s: signature bundle refused: %s", where, e)
        raise NotReady(f"{where}: signature does not verify ({why})") from e


def verify(public_key: Path, bundle: bytes, name: str, version: int, digests: Mapping[str, str]) -> None:
    """Refuse (NotReady, naming the reason) unless `bundle` is a signature by `public_key` for this model version
    over exactly these files ({path in the version folder: sha256}, which every byte loaded is then checked
    against)."""
    where = f"model {name!r} version {version}"
    signed = _signed(public_key, bundle, where)
    if signed.model_name != subject(name, version):
        raise NotReady(f"{where}: signature does not verify (it is for {signed.model_name!r}, not this version)")
    method = signed.serialization_type
    if (method.get("method"), method.get("hash_type")) != ("files", HASH):
        raise NotReady(
            f"{where}: signature does not verify (it hashes {method.get('method')} with {method.get('hash_type')}; "
            f"modelfn checks signatures over whole files by {HASH})"
        )
    got = {r.identifier: (r.digest.algorithm, r.digest.digest_hex) for r in signed.resource_descriptors()}
    want = {path: (HASH, sha) for path, sha in digests.items()}
    differ = sorted(p for p in got.keys() | want.keys() if got.get(p) != want.get(p))
    if differ:
        raise NotReady(f"{where}: signature does not verify (the signed files differ in {', '.join(differ)})")
