"""The `modelfn` command. Every subcommand imports what it needs when it runs, so `modelfn --help` is instant."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from modelfn.errors import InvalidInput, ModelfnError


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=None if isinstance(obj, dict) else 2))


def cmd_publish(a: argparse.Namespace) -> int:
    from modelfn_tools.publish import parse_features, publish, settings_store

    store = settings_store(a.store)
    features = parse_features(a.features) if a.features is not None else None
    sign_key = Path(a.sign_key) if a.sign_key else None
    baseline = Path(a.baseline) if a.baseline else None
    _print(
        publish(
            Path(a.model),
            store,
            a.name,
            a.version,
            a.quantize,
            a.label,
            not a.quiet,
            a.per_channel,
            features,
            sign_key,
            baseline,
        )
    )
    return 0


def cmd_label(a: argparse.Namespace) -> int:
    from modelfn_tools.publish import delete_label, set_label, settings_store

    if a.delete is not None:
        if a.label is not None:
            raise InvalidInput("give either LABEL VERSION or --delete LABEL, not both")
        labels = delete_label(settings_store(a.store), a.name, a.delete)
    elif a.label is None or a.version is None:
        raise InvalidInput("give LABEL VERSION to point a label at a version, or --delete LABEL to remove one")
    else:
        labels = set_label(settings_store(a.store), a.name, a.label, a.version)
    _print({"name": a.name, "labels": labels})
    return 0


def cmd_traffic(a: argparse.Namespace) -> int:
    from modelfn_tools.publish import settings_store
    from modelfn_tools.traffic import parse_shadow, parse_split, set_traffic

    split = parse_split(a.split) if a.split is not None else None
    shadow = parse_shadow(a.shadow) if a.shadow is not None else None
    _print(set_traffic(settings_store(a.store), a.name, split=split, sticky=a.sticky, shadow=shadow, clear=a.clear))
    return 0


def cmd_rollout(a: argparse.Namespace) -> int:
    from modelfn_tools.publish import settings_store
    from modelfn_tools.rollout import Monitor, parse_steps, print_event, start

    if a.max_error_rate is not None and not 0 <= a.max_error_rate <= 1:
        raise InvalidInput(f"--max-error-rate {a.max_error_rate} is not a fraction in 0..1")
    monitor = Monitor(a.name, a.to, a.alarm, a.max_error_rate, a.min_requests)
    rollout = start(settings_store(a.store), a.name, a.to, parse_steps(a.steps), a.interval, monitor, print_event)
    return 0 if rollout.run() else 1


def cmd_import_triton(a: argparse.Namespace) -> int:
    from modelfn_tools.publish import settings_store
    from modelfn_tools.triton_import import import_triton

    _print(import_triton(Path(a.repo), settings_store(a.store), progress=not a.quiet))
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from modelfn_tools.publish import list_models, settings_store

    models = list_models(settings_store(a.store))
    if a.json:
        print(json.dumps(models, indent=2))
        return 0
    for m in models:
        labels = ", ".join(f"{k}→{v}" for k, v in sorted(m["labels"].items())) or "-"
        print(f"{m['name']}  (labels: {labels})")
        for v in m["versions"]:
            if "error" in v:
                print(f"  v{v['version']}  ERROR {v['error']}")
            else:
                q = v["quantization"] or "fp"
                print(f"  v{v['version']}  {v['size_bytes']:>12,d} B  {q:<5}  {v['sha256'][:12]}  {v['created_at']}")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from modelfn_tools.quantize import quantize

    info = quantize(Path(a.input), Path(a.output), a.scheme, a.per_channel)
    info["output_size_bytes"] = Path(a.output).stat().st_size
    _print(info)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from modelfn_tools.serve import serve

    return serve(
        a.store,
        a.models,
        a.host,
        a.port,
        a.log_level,
        batching=a.batching,
        max_batch_size=a.max_batch_size,
        max_batch_wait_ms=a.max_batch_wait_ms,
        functions=a.functions,
        batching_always=a.batching_always,
        server=a.server,
        workers=a.workers,
        grpc_port=a.grpc_port,
    )


def cmd_invoke(a: argparse.Namespace) -> int:
    from modelfn_tools.invoke import run_invoke

    return run_invoke(a.function, a.event, a.template, a.env_vars)


def cmd_new(a: argparse.Namespace) -> int:
    from modelfn_tools.new import new_model

    _print(new_model(a.name, Path(a.model), a.store))
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from modelfn_tools.score import exit_status, score

    summary = score(a.input, a.output, a.store, a.name, a.version)
    _print(summary)
    return exit_status(summary)


def cmd_drift(a: argparse.Namespace) -> int:
    from modelfn.monitoring.captured import Window
    from modelfn.settings import Settings
    from modelfn_tools.drift import main as drift
    from modelfn_tools.publish import settings_store

    capture = a.capture or Settings.load().capture
    if not capture:
        raise InvalidInput("no capture given: pass --capture URI or set MODELFN_CAPTURE")
    window = Window.of(a.since, a.until, a.hours)
    return drift(settings_store(a.store), a.name, a.version, capture, window, a.threshold, a.html, a.json)


def cmd_dev(a: argparse.Namespace) -> int:
    from modelfn_tools.dev import run_dev

    return run_dev(a.host, a.port, a.s3_port, a.once, a.workdir, a.grpc_port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelfn", description="Serverless ONNX model functions: publish, serve, invoke.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("publish", help="verify, (quantize,) upload an ONNX model and its manifest")
    s.add_argument("model", help="path to MODEL.onnx")
    s.add_argument("--store", help="store URI (default: $MODELFN_STORE)")
    s.add_argument("--name", required=True)
    s.add_argument("--version", type=int, help="default: the next free integer")
    s.add_argument("--quantize", choices=["int8", "uint8"], help="dynamically quantize before upload")
    s.add_argument(
        "--per-channel", action="store_true", help="with --quantize: one scale per output channel (transformers)"
    )
    s.add_argument("--label", action="append", default=[], help="point this label at the new version (repeatable)")
    s.add_argument("--features", metavar="A,B,...", help="column names of the single [N, K] input's K features")
    s.add_argument(
        "--sign-key",
        metavar="KEY.pem",
        help="sign the version's files with this EC private key (OpenSSF model signing); servers with "
        "MODELFN_VERIFY_KEY serve only versions signed by its pair",
    )
    s.add_argument(
        "--baseline",
        metavar="DATA",
        help="reference data (CSV, JSON Lines, Parquet, .npy): per-feature statistics stored with the version, "
        "what `modelfn drift` compares captured requests against",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_publish)

    s = sub.add_parser("label", help="point a version label at a version, or remove a label")
    s.add_argument("--store")
    s.add_argument("--name", required=True)
    s.add_argument("label", nargs="?")
    s.add_argument("version", nargs="?", type=int)
    s.add_argument("--delete", metavar="LABEL", help="remove this label instead")
    s.set_defaults(fn=cmd_label)

    s = sub.add_parser(
        "traffic",
        help="share requests that name no version between versions (split, sticky header, shadow)",
        description="Writes <model>/traffic.json, keeping the parts not given, and prints the traffic in effect "
        "with each target's version. Targets are labels or versions; each must exist.",
    )
    s.add_argument("--store")
    s.add_argument("--name", required=True)
    s.add_argument("--split", metavar="T=W,...", help="weights per target, e.g. stable=90,canary=10 or 1=50,2=50")
    s.add_argument("--sticky", metavar="HEADER", help="requests with the same value of this header go to one target")
    s.add_argument("--shadow", metavar="TARGET[:PERCENT]", help="also score PERCENT (default 100) %% on TARGET")
    s.add_argument("--clear", action="store_true", help="start from no traffic (alone: remove it all)")
    s.set_defaults(fn=cmd_traffic)

    s = sub.add_parser(
        "rollout",
        help="move traffic to a version step by step, rolling back on a CloudWatch alarm",
        description="Gives VERSION each step's share of the requests that name no version (a split against "
        "the 'stable' label), waits --interval seconds while polling the alarms, and at 100 points 'stable' at "
        "VERSION. An alarm in ALARM (or the error-rate bound passed) clears the split at once; 'stable' is "
        "untouched. Each step is printed as a JSON line and recorded in <model>/rollout.json and "
        "<model>/rollouts/.",
        epilog="exit status: 0 promoted; 1 rolled back (the reason is the last line); 2 refused or failed "
        "(rolled back; the reason is on stderr)",
    )
    s.add_argument("--store")
    s.add_argument("--name", required=True)
    s.add_argument("--to", type=int, required=True, metavar="VERSION", help="the published version to roll out")
    s.add_argument("--steps", default="10,50,100", help="percentages for VERSION, ending at 100 (default 10,50,100)")
    s.add_argument("--interval", type=float, default=300.0, help="seconds to watch each step (default 300)")
    s.add_argument("--alarm", action="append", default=[], metavar="NAME", help="CloudWatch alarm (repeatable)")
    s.add_argument(
        "--max-error-rate",
        type=float,
        metavar="R",
        help="roll back when VERSION's share of 5xx answers (metric modelfn/Requests) passes R (0..1)",
    )
    s.add_argument(
        "--min-requests", type=int, default=20, help="requests VERSION must have answered before R is judged"
    )
    s.set_defaults(fn=cmd_rollout)

    s = sub.add_parser(
        "import-triton",
        help="publish a Triton model repository (ONNX models) as the same models and versions",
        description="Each <model>/config.pbtxt is checked against its ONNX model and its version_policy picks the "
        "versions, published under their own numbers. Nothing is written unless every model passes.",
    )
    s.add_argument("repo", help="the model repository: <model>/config.pbtxt, <model>/<version>/model.onnx")
    s.add_argument("--store")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_import_triton)

    s = sub.add_parser("models", help="list models, versions and labels")
    s.add_argument("--store")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("quantize", help="write a dynamically int8-quantized copy of a model")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--scheme", choices=["int8", "uint8"], default="int8")
    s.add_argument("--per-channel", action="store_true")
    s.set_defaults(fn=cmd_quantize)

    s = sub.add_parser("serve", help="serve every model of a store over HTTP")
    s.add_argument("--store")
    s.add_argument("--models", help="comma-separated subset to serve")
    s.add_argument(
        "--functions", help="a folder of functions (<name>/app.py): serve each with its hooks, as Lambda does"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--log-level", default="warning")
    s.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="join concurrent requests for one model version into one run (default: $MODELFN_BATCHING, off)",
    )
    s.add_argument("--max-batch-size", type=int, help="rows per joined run (default: $MODELFN_MAX_BATCH_SIZE, 32)")
    s.add_argument(
        "--max-batch-wait-ms",
        type=float,
        help="how long a batch waits to fill (default: $MODELFN_MAX_BATCH_WAIT_MS, 2)",
    )
    s.add_argument(
        "--batching-always",
        action="store_true",
        help="with batching, join even the models for which a joined run measured not worth it at start",
    )
    s.add_argument(
        "--server", choices=["granian", "uvicorn"], default="uvicorn", help="the HTTP server (default: uvicorn)"
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, each with its own copy of the models and its share of the CPUs (default: 1)",
    )
    s.add_argument(
        "--grpc-port",
        type=int,
        help="also serve the Open Inference Protocol over gRPC on this port (tritonclient.grpc; runs under uvicorn)",
    )
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("invoke", help="run one function of a SAM template on one event, like `sam local invoke`")
    s.add_argument("function", nargs="?", help="logical id of the function (optional if the template has one)")
    s.add_argument("--event", "-e", help='event JSON file, "-" for stdin (default: {})')
    s.add_argument("--template", "-t", help="SAM template (default: ./template.yaml)")
    s.add_argument("--env-vars", "-n", help='SAM env-vars JSON: {"Parameters": {...}, "<Function>": {...}}')
    s.set_defaults(fn=cmd_invoke)

    s = sub.add_parser(
        "score",
        help="batch-score a local or s3:// CSV / JSON Lines / Parquet file",
        epilog="exit status: 0 every row scored; 1 some rows could not be (see OUTPUT.errors.jsonl); "
        "2 the file could not be scored (the reason is on stderr)",
    )
    s.add_argument("input", help="local path or s3://bucket/key")
    s.add_argument("output", help="local path or s3://bucket/key (errors go to OUTPUT.errors.jsonl)")
    s.add_argument("--store")
    s.add_argument("--name", required=True)
    s.add_argument("--version", help="integer version or label (default: stable, else the highest)")
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser(
        "drift",
        help="per-feature drift of captured requests against the version's publish-time baseline",
        epilog="exit status: 0 no feature past the threshold; 3 at least one (named on stderr); 2 no baseline, "
        "no captured requests in the window, or another error (the reason is on stderr)",
    )
    s.add_argument("--store", help="store URI (default: $MODELFN_STORE)")
    s.add_argument("--name", required=True)
    s.add_argument("--version", help="integer version or label (default: stable, else the highest)")
    s.add_argument("--capture", help="where requests are captured, as MODELFN_CAPTURE (default: $MODELFN_CAPTURE)")
    s.add_argument("--since", metavar="TIME", help="ISO 8601, UTC unless it says (default: everything captured)")
    s.add_argument("--until", metavar="TIME", help="ISO 8601, exclusive (default: now)")
    s.add_argument("--hours", type=float, help="the last N hours (before --until), instead of --since")
    s.add_argument("--threshold", type=float, default=0.2, help="PSI past which a feature drifts (default 0.2)")
    s.add_argument("--html", metavar="REPORT.html", help="also write the report with each feature's histogram")
    s.add_argument("--json", action="store_true", help="print JSON instead of the table")
    s.set_defaults(fn=cmd_drift)

    s = sub.add_parser(
        "new",
        help="add a model to the Lambda deployment: publish it, write functions/NAME and events/NAME, extend "
        "template.yaml",
    )
    s.add_argument("name", help="the model's name (lowercase letters, digits, '-')")
    s.add_argument("--model", required=True, help="path to MODEL.onnx")
    s.add_argument("--store", help="store URI (default: the one `make demo` serves, s3://modelfn-models/models)")
    s.set_defaults(fn=cmd_new)

    s = sub.add_parser("dev", help="embedded S3 (moto) + example models + the API, kept running")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--s3-port", type=int, default=0, help="moto server port (default: a free one)")
    s.add_argument("--grpc-port", type=int, default=8001, help="gRPC (Open Inference Protocol) port; 0: none")
    s.add_argument("--once", action="store_true", help="exit after the tour (what `make demo ONCE=1` runs)")
    s.add_argument("--workdir", help="where example models are built (default: a temporary folder)")
    s.set_defaults(fn=cmd_dev)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.fn(args))
    except ModelfnError as e:
        print(f"modelfn {args.command}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
