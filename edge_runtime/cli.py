"""Command line: `edge-runtime predict | inspect | compare | serve`."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.api.schemas import ResponseIds, dumps, prediction_body
from edge_runtime.app import predictor_options
from edge_runtime.backends.providers import detect_availability
from edge_runtime.engine import Predictor
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model.export import export_folder
from edge_runtime.model.loader import LoadOptions, load_spec
from edge_runtime.model.spec import Resize
from edge_runtime.model_card import ModelCard
from edge_runtime.redact import ScrubFilter
from edge_runtime.settings import Settings, load_settings, rule_tag_problem

log = logging.getLogger("edge_runtime")


def demo_model_path() -> Path:
    from edge_runtime.demo.model import build_demo_export

    return build_demo_export(Path(tempfile.gettempdir()) / "edge-runtime-demo" / "model")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (also EDGE_RUNTIME_CONFIG)")
    parser.add_argument(
        "--model", type=Path, help="Custom Vision export folder or .zip (default: built-in demo)"
    )
    parser.add_argument("--device", help="auto | cpu | cuda | openvino[:CPU|GPU|NPU|AUTO] (default auto)")
    parser.add_argument(
        "--allow-fallback",
        action="store_true",
        default=None,
        help="use the auto choice if the requested device is missing",
    )
    parser.add_argument("--threads", type=int, help="backend threads per inference (0 = default)")
    parser.add_argument(
        "--resize",
        choices=[r.value for r in Resize],
        help="override the export's preprocessing recipe (see README, Preprocessing)",
    )
    parser.add_argument(
        "--no-verify-sha1",
        dest="verify_sha1",
        action="store_false",
        default=None,
        help="load even if ModelFileSHA1 does not match the file",
    )


_MODEL_FLAGS = ("device", "allow_fallback", "threads", "resize", "verify_sha1")
_SERVER_FLAGS = ("host", "port", "inference_workers", "max_inflight", "max_body_bytes", "prediction_key")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Command-line flags override the environment, which overrides the YAML file."""
    model: dict[str, Any] = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None}
    if args.model is not None:
        model["path"] = args.model
    server = {k: getattr(args, k) for k in _SERVER_FLAGS if getattr(args, k, None) is not None}
    overrides: dict[str, Any] = {"model": model, "server": server}
    if args.log_level:
        overrides["log_level"] = args.log_level
    return load_settings(args.config, overrides)


def model_path(settings: Settings) -> Path:
    return settings.model.path or demo_model_path()


def cmd_predict(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    predictor = Predictor.load(model_path(settings), predictor_options(settings, workers=1))
    failures = 0
    for image in args.images:
        try:
            result = predictor.predict_bytes(Path(image).read_bytes())
        except (OSError, EdgeRuntimeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"error: {image}: {reason}", file=sys.stderr)  # the other images go on
            failures += 1
            continue
        body = prediction_body(result, ResponseIds())
        if len(args.images) > 1:
            body = {"image": str(image), **body}
        sys.stdout.write(dumps(body))
    return 1 if failures else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    predictor = Predictor.load(model_path(settings), predictor_options(settings, workers=1))
    card = ModelCard.of(predictor, detect_availability()).to_dict()
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    for key, value in card.items():
        if isinstance(value, list | dict) and key != "labels":
            print(f"{key}:")
            for item in value if isinstance(value, list) else [f"{k}: {v}" for k, v in value.items()]:
                print(f"  {item}")
        else:
            print(f"{key}: {'-' if value is None else value}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Both models predict every image; the comparison (compare/) is printed as text or JSON. Exit 0
    when at least one image was compared (however much the models disagree), 1 when none could be, 2 for
    usage errors and a model that does not load (named: old or new, and its path)."""
    from edge_runtime.compare import ModelSide, compare, discover_images, render_text
    from edge_runtime.compare.run import predict_both

    models: list[Path] = args.model or []
    if len(models) != 2:
        raise ConfigError(f"compare needs two models, --model OLD --model NEW (got {len(models)})")
    devices: list[str | None] = args.device or [None]
    if len(devices) > 2:
        raise ConfigError("--device: give it once (both models) or twice (OLD's, then NEW's)")
    devices = devices * 2 if len(devices) == 1 else devices
    if not 0.0 < args.iou <= 1.0:
        raise ConfigError(f"--iou {args.iou:g}: expected a value above 0 and at most 1")
    if not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold:g}: expected a value from 0 to 1")
    images, failures = discover_images(args.paths)
    if not images:
        missing = "".join(f"; {f.image}: {f.error}" for f in failures)
        raise ConfigError(f"no images to compare in {', '.join(map(str, args.paths))}{missing}")
    predictors: list[Predictor] = []
    try:
        for role, path, device in zip(("old", "new"), models, devices, strict=True):
            try:
                settings = settings_from_args(
                    argparse.Namespace(**{**vars(args), "model": path, "device": device})
                )
                predictors.append(Predictor.load(path, predictor_options(settings, workers=1)))
            except EdgeRuntimeError as exc:
                print(f"error: {role} model ({path}): {exc}", file=sys.stderr)
                return 2
        predicted = predict_both(images, predictors[0], predictors[1], failures)
        old_side, new_side = (
            ModelSide(str(path), p.spec.task, p.spec.labels, p.device)
            for path, p in zip(models, predictors, strict=True)
        )
        report = compare(
            old_side,
            new_side,
            predicted.names,
            predicted.old,
            predicted.new,
            iou_threshold=args.iou,
            threshold=args.threshold,
            failures=failures,
        )
    finally:
        for predictor in predictors:
            predictor.close()
    sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n" if args.json else render_text(report))
    return 0 if report.images else 1


def check_rule_tags(settings: Settings, path: Path) -> None:
    """A rule naming a tag the model does not have is a configuration error: said before serving, from
    the export's labels alone (the model itself loads in the background)."""
    with export_folder(path) as root:  # a zip goes to a temp folder: nothing is left behind
        labels = load_spec(root, LoadOptions(verify_sha1=False)).labels
    problem = rule_tag_problem(settings, labels)
    if problem:
        raise ConfigError(problem)


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from edge_runtime.app import create_app
    from edge_runtime.sources.readers import configure_ffmpeg_capture

    settings = settings_from_args(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    no_model = settings.model.path is None and settings.model.url is None
    path: Path | None = None
    if no_model and settings.hub_enabled:
        # An IoT Edge module gets its model and cameras from the twin: no demo events upstream.
        log.info("no model configured yet: waiting for the module twin (model.url / model.path)")
    elif no_model and not settings.cameras:
        from edge_runtime.demo.camera import with_demo_camera

        log.info("no model and no camera configured: running the built-in demo (synthetic conveyor)")
        settings = with_demo_camera(settings)
        path = model_path(settings)
    elif settings.model.url is None:
        path = model_path(settings)
    if path is not None:
        check_rule_tags(settings, path)
    host, port = settings.server.host, settings.server.port
    if port and not port_is_free(host, port):
        # Before anything starts: a second instance must not connect to the broker with the first's client
        # id (kicking it off and publishing its retained "offline") only to find the port taken.
        print(f"error: cannot listen on {host}:{port}: address already in use", file=sys.stderr)
        return 2
    configure_ffmpeg_capture()  # before anything opens a camera
    app = create_app(settings, path)
    log.info("starting on http://%s:%d", host, port)

    def serving(_: object) -> None:  # run_app prints once its sockets listen
        log.info("serving on http://%s:%d", host, port)
        if settings.ui.enabled:
            shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1", "") else host
            keys = settings.ui.viewer_key is not None or settings.server.admin_key is not None
            access = [
                "no key needed from this machine" if settings.ui.open_on_loopback else "",
                "other machines log in with a key" if keys else "set ui.viewer_key to let others log in",
            ]
            log.info("operator page: http://%s:%d/ui/ (%s)", shown, port, "; ".join(a for a in access if a))

    code = 0
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            shutdown_timeout=settings.server.shutdown_timeout_s,
            access_log=None,
            print=serving,
        )
    # run_app has shut down whatever startup began (cameras, sinks, outbox) before any of these arrive.
    except OSError as exc:
        if _listen_error(exc):
            print(f"error: cannot listen on {host}:{port}: {_os_reason(exc)}", file=sys.stderr)
            code = 2
        else:
            log.exception("serve stopped by an unexpected error")
            code = 1
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except Exception:  # a bug: say where, then exit like the others (no abort from native threads)
        log.exception("serve stopped by an unexpected error")
        code = 1
    # Everything of ours is closed (outbox flushed, sinks gone). Threads a library left behind (an
    # IoT Hub SDK connect stuck in a silent TLS handshake, ~60 s; native pools whose destructors abort
    # at interpreter exit) must not hold or crash the exit that the orchestrator times: exit now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def port_is_free(host: str, port: int) -> bool:
    """A bind probe (SO_REUSEADDR, like aiohttp's own); any failure other than EADDRINUSE is left for
    the real bind to report."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
    return True


def _listen_error(exc: OSError) -> bool:
    """The listening socket's failure (port taken, address not here, name unknown), not another OSError."""
    return isinstance(exc, socket.gaierror) or "bind" in str(exc)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror) or exc.errno is None:
        return str(exc.strerror or exc)
    return os.strerror(exc.errno).lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-runtime", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="predict images, print the container's JSON per image")
    add_model_arguments(predict)
    predict.add_argument("images", nargs="+", type=Path)
    predict.set_defaults(func=cmd_predict)

    inspect = sub.add_parser("inspect", help="print the model card: task, labels, tensors, device")
    add_model_arguments(inspect)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=cmd_inspect)

    compare = sub.add_parser(
        "compare",
        help="compare two models on the same images: top-1 agreement, |dp| by label, confusion, boxes",
        conflict_handler="resolve",  # --model and --device are given twice here
    )
    add_model_arguments(compare)
    compare.add_argument(
        "--model",
        type=Path,
        action="append",
        metavar="EXPORT",
        help="twice: the OLD export, then the NEW one",
    )
    compare.add_argument(
        "--device",
        action="append",
        help="auto | cpu | cuda | openvino[:CPU|GPU|NPU|AUTO]: once for both models, or twice (OLD's, NEW's)",
    )
    compare.add_argument("--iou", type=float, default=0.5, help="detection: boxes match at this IoU (0.5)")
    compare.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="detection: boxes below this probability are left out (0)",
    )
    compare.add_argument("--json", action="store_true", help="the whole report, every image, as JSON")
    compare.add_argument(
        "paths", nargs="+", type=Path, metavar="IMAGES_OR_FOLDER", help="image files and folders (recursive)"
    )
    compare.set_defaults(func=cmd_compare)

    serve = sub.add_parser("serve", help="serve the Custom Vision container API, health and metrics")
    add_model_arguments(serve)
    serve.add_argument("--host", help="listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (default 80, like the container)")
    serve.add_argument("--workers", dest="inference_workers", type=int, help="inference threads (0 = cores)")
    serve.add_argument("--max-inflight", type=int, help="requests admitted at once before 503")
    serve.add_argument("--max-body-bytes", type=int, help="413 above this (default 4 MiB)")
    serve.add_argument(
        "--prediction-key", help="require this Prediction-Key header (prefer the env variable)"
    )
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # credentials in any URL a library logs are masked
        handler.addFilter(ScrubFilter())
    # The IoT Hub SDK logs every pipeline step at INFO; its warnings are enough.
    logging.getLogger("azure.iot.device").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
