"""onnxruntime sessions: threads sized to the CPUs this process may use, providers with CPU fallback, warm-up."""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelfn.model.loaded import LoadedModel
from modelfn.model.signature import TensorSpec, spec_from_onnx
from modelfn.settings import Settings

log = logging.getLogger("modelfn")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, else v1 cfs quota); None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may actually run on: affinity mask, then cgroup quota; never the host's count alone."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


@functools.cache
def cuda_device_count() -> int:
    """GPUs the CUDA driver reports; 0 without a driver (no GPU, or a container started without one)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    except (OSError, AttributeError):
        return 0


@functools.cache
def tensorrt_installed() -> bool:
    """TensorRT's runtime library (10.x, as onnxruntime-gpu 1.2x links it) can be loaded."""
    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return False
    return True


def usable_providers(device_id: int = 0) -> list[str]:
    """This onnxruntime build's providers that can run here. onnxruntime-gpu lists CUDA and TensorRT whether or not
    there is a GPU (or TensorRT's libraries), and then falls back at session creation with errors of its own; checking
    first keeps the fallback to the one warning of `choose_providers`."""
    usable = []
    for p in ort.get_available_providers():
        if p in (CUDA, TENSORRT) and cuda_device_count() <= device_id:
            continue
        if p == TENSORRT and not tensorrt_installed():
            continue
        usable.append(p)
    return usable


def choose_providers(
    requested: Sequence[str], available: Sequence[str] | None = None, device_id: int = 0, what: str = ""
) -> list[str]:
    """The requested providers that can run here, in order, always ending with CPU.

    Anything unavailable is dropped with one warning naming what was asked and what is used (`what` says for
    which model), so a model never fails to load because an accelerator is missing."""
    have = set(available if available is not None else usable_providers(device_id))
    chosen = [p for p in requested if p in have and p != CPU] + [CPU]
    missing = [p for p in requested if p not in have]
    if missing:
        log.warning(
            "%sexecution providers %s are not available; asked for %s, using %s",
            f"{what}: " if what else "",
            missing,
            list(requested),
            chosen,
        )
    return chosen


def provider_options(providers: Sequence[str], settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """Each provider with its options: the GPU from MODELFN_CUDA_DEVICE; TensorRT engines and timing caches kept
    under MODELFN_CACHE_DIR/tensorrt, so a restart (or a second process on the same disk) skips the engine build."""
    out: list[tuple[str, dict[str, Any]]] = []
    for p in providers:
        if p == TENSORRT:
            cache = str(settings.cache_dir / "tensorrt")
            opts: dict[str, Any] = {
                "device_id": settings.cuda_device,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
                "trt_fp16_enable": settings.trt_fp16,
            }
        elif p == CUDA:
            opts = {"device_id": settings.cuda_device}
        else:
            opts = {}
        out.append((p, opts))
    return out


LAMBDA_MB_PER_VCPU = 1769
"""Lambda gives a function one full vCPU per 1,769 MB of memory (a fraction below it), whatever the CPU count says."""


def lambda_vcpus() -> float | None:
    """The vCPUs a Lambda function's memory buys; None outside Lambda (no AWS_LAMBDA_FUNCTION_MEMORY_SIZE)."""
    try:
        return int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) / LAMBDA_MB_PER_VCPU
    except (KeyError, ValueError):
        return None


def default_intra_op_threads() -> int:
    """The CPUs this process may use; on Lambda no more than its memory's vCPUs (rounded up, as cgroup quotas are),
    since Lambda shows both CPUs of its host to a function that owns a fraction of one."""
    cpus = available_cpus()
    vcpus = lambda_vcpus()
    return cpus if vcpus is None else max(1, min(cpus, math.ceil(vcpus)))


def allow_spinning(threads: int) -> bool:
    """Whether onnxruntime's pool threads may spin-wait between and after runs.

    Servers: never. A spinning thread burns its core for a while after each run, which is exactly when the event
    loop needs that core to decode the next request and encode this answer (measured: unpinned on 2 cores every
    onnxruntime server used 1.9 cores and modelfn's CPU per request doubled). Lambda: one request at a time and
    nothing else to run, so spinning only shortens the hand-offs inside a run, and the bill is for wall time, not
    CPU; but only where every pool thread has a whole vCPU of its own (memory >= threads x 1,769 MB): below that the
    spinning threads eat the fraction of a vCPU the request itself needs."""
    vcpus = lambda_vcpus()
    return vcpus is not None and threads > 1 and vcpus >= threads


def session_options(settings: Settings) -> ort.SessionOptions:
    """Threads sized to the CPUs this process may use (MODELFN_INTRA_OP_THREADS overrides), sequential execution,
    and spin-waiting only where `allow_spinning` says it costs nothing."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads or default_intra_op_threads()
    opts.inter_op_num_threads = settings.inter_op_threads or 1
    spin = "1" if allow_spinning(opts.intra_op_num_threads) else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def read_signature(session: ort.InferenceSession) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs = [spec_from_onnx(a.name, a.type, a.shape) for a in session.get_inputs()]
    outputs = [spec_from_onnx(a.name, a.type, a.shape) for a in session.get_outputs()]
    return inputs, outputs


def example_inputs(specs: Sequence[TensorSpec], batch: int = 1) -> dict[str, np.ndarray]:
    """Zeros fitting the signature (variable dims become `batch`), for warm-up and smoke tests."""
    out: dict[str, np.ndarray] = {}
    for s in specs:
        shape = tuple(batch if d == -1 else d for d in s.shape)
        if s.datatype == "BYTES":
            out[s.name] = np.full(shape, "", dtype=np.object_)  # onnxruntime takes str for tensor(string)
        else:
            out[s.name] = np.zeros(shape, dtype=s.dtype)
    return out


def load_session(
    model: Path | bytes, settings: Settings, what: str = "", external: Mapping[str, bytes] | None = None
) -> ort.InferenceSession:
    """A session on the preferred providers that can run here (`what`, e.g. "model 'mlp' version 2", names the
    model in the fallback warning).

    `model` is a file, or the graph's bytes; with bytes, `external` holds the contents of its external-data files
    by the location the graph names them with, and onnxruntime takes them from memory (copying what it needs while
    the session is created): it reads no file at all, so what runs is exactly the bytes the caller verified. A
    graph naming a file that `external` lacks fails to load."""
    providers = choose_providers(settings.provider_list, device_id=settings.cuda_device, what=what)
    if TENSORRT in providers:
        (settings.cache_dir / "tensorrt").mkdir(mode=0o700, parents=True, exist_ok=True)
    options = session_options(settings)
    if external:
        names, buffers = list(external), list(external.values())
        options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=provider_options(providers, settings))


def warm_up(model: LoadedModel) -> None:
    """Run once at load time: onnxruntime allocates and picks kernels on the first run, not at creation."""
    try:
        model.session.run(None, example_inputs(model.inputs))
    except Exception as e:  # zeros may be outside a model's domain; real requests still decide
        log.warning("model %r version %d: warm-up inference failed: %s", model.name, model.version, e)
