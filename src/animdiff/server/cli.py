"""`animdiff serve`: the command-line face of the server settings.

The main CLI adds this command with `add_serve_command(subcommands)` and runs `run_serve(args)`;
FastAPI and uvicorn are imported only when the command runs, so `animdiff generate` works
without the `server` extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from animdiff.errors import ParamsError
from animdiff.run_flags import add_run_flags, run_flag_values

MIB = 1024 * 1024


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    serve = subparsers.add_parser("serve", help="HTTP API with a persistent job queue (A1111-compatible too)")
    serve.add_argument("--models-dir", type=Path, required=True, help="models folder laid out like A1111's")
    serve.add_argument("--data-dir", type=Path, default=Path("animdiff-data"), help="queue, uploads, results")
    serve.add_argument(
        "--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 with --listen)"
    )
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument(
        "--listen", action="store_true", help="bind all interfaces (needs --api-key or --api-auth)"
    )
    serve.add_argument(
        "--insecure", action="store_true", help="allow --listen without credentials (anyone can run jobs)"
    )
    serve.add_argument("--api-key", help="required API key (X-API-Key or Bearer); or env ANIMDIFF_API_KEY")
    serve.add_argument("--api-auth", help="HTTP basic credentials user:pass[,user2:pass2] (A1111's form)")
    serve.add_argument("--cors-allow-origins", default="", help="comma-separated origins allowed by CORS")
    serve.add_argument("--device", action="append", help="one worker per device (repeat); default: auto")
    serve.add_argument(
        "--input-dir", type=Path, action="append", default=[], help="server folder inputs may name"
    )
    add_run_flags(serve)
    serve.add_argument("--max-frames", type=int, default=256)
    serve.add_argument("--max-size", type=int, default=1024, help="largest width or height")
    serve.add_argument("--max-steps", type=int, default=100)
    serve.add_argument("--max-queue", type=int, default=1000)
    serve.add_argument("--max-upload-mb", type=float, default=200.0)
    serve.add_argument("--max-request-mb", type=float, default=50.0)
    serve.add_argument("--retention-hours", type=float, help="delete results older than this")
    serve.add_argument("--retention-gb", type=float, help="keep results under this total size")
    serve.add_argument(
        "--requeue-interrupted", action="store_true", help="run jobs a crash interrupted again (default: no)"
    )
    serve.add_argument("--sync-timeout", type=float, help="seconds an A1111 call waits for its job")
    serve.add_argument(
        "--previews", action="store_true", help="live previews from the latents while denoising"
    )
    scale = serve.add_argument_group("scale-out (several GPUs, machines or servers)")
    scale.add_argument(
        "--db", help="postgresql://USER:PASS@HOST/DB: a job queue several servers share (default: SQLite)"
    )
    scale.add_argument(
        "--workers",
        help="'auto' (a local Ray cluster) or ray://HOST:PORT: run jobs on Ray workers (extra ray)",
    )
    scale.add_argument(
        "--ray-actors", type=int, help="Ray workers to start (default: one per GPU, 1 without)"
    )
    scale.add_argument(
        "--ray-cpus-per-actor", type=float, default=1.0, help="CPUs a Ray worker holds without GPU"
    )
    scale.add_argument(
        "--requeue-limit", type=int, default=1, help="requeues of a job whose worker died mid-job (default 1)"
    )
    serve.add_argument("--log-level", default="info")
    return serve


def settings_from_args(args: argparse.Namespace):  # -> ServerSettings (imported lazily)
    from pydantic import ValidationError

    from animdiff.params import describe_validation_error
    from animdiff.server.settings import ServerSettings, api_keys_from, parse_api_auth

    host = args.host or ("0.0.0.0" if args.listen else "127.0.0.1")
    try:
        settings = ServerSettings(
            models_dir=args.models_dir,
            data_dir=args.data_dir,
            host=host,
            port=args.port,
            api_keys=api_keys_from(args.api_key),
            api_auth=parse_api_auth(args.api_auth),
            cors_origins=tuple(o.strip() for o in args.cors_allow_origins.split(",") if o.strip()),
            devices=tuple(args.device) if args.device else (None,),
            input_dirs=tuple(args.input_dir),
            **run_flag_values(args),
            max_frames=args.max_frames,
            max_size=args.max_size,
            max_steps=args.max_steps,
            max_queue=args.max_queue,
            max_upload_bytes=int(args.max_upload_mb * MIB),
            max_request_bytes=int(args.max_request_mb * MIB),
            retention_age_s=None if args.retention_hours is None else args.retention_hours * 3600,
            retention_bytes=None if args.retention_gb is None else int(args.retention_gb * 1024 * MIB),
            requeue_interrupted=args.requeue_interrupted,
            sync_timeout_s=args.sync_timeout,
            previews=args.previews,
            db=args.db,
            workers=args.workers,
            ray_actors=args.ray_actors,
            ray_cpus_per_actor=args.ray_cpus_per_actor,
            requeue_limit=args.requeue_limit,
        )
    except ValidationError as exc:
        raise ParamsError(
            describe_validation_error(exc, lambda name: "--" + name.replace("_", "-"))
        ) from None
    if not settings.is_loopback and not settings.auth_enabled and not args.insecure:
        raise ParamsError(
            f"refusing to listen on {host} without credentials: give --api-key (or ANIMDIFF_API_KEY) or "
            "--api-auth user:pass, or --insecure to let anyone on the network run jobs"
        )
    return settings


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        import uvicorn

        from animdiff.server.app import create_app
    except ImportError as exc:
        raise ParamsError(
            f"the server needs its extra: pip install 'animdiff[server]' ({exc.name} is missing)"
        ) from None
    if settings.workers:
        from animdiff.server.ray_pool import import_ray

        import_ray()  # without the extra: a message naming it, before anything starts
    from animdiff.models.store import ModelStore

    ModelStore(settings.models_dir).check()  # a wrong models folder stops here, not at the first job
    app = create_app(settings)
    print(f"animdiff serving on http://{settings.host}:{settings.port} (docs: /docs)", file=sys.stderr)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=args.log_level, timeout_graceful_shutdown=30
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m animdiff.server` without the main CLI (the same options as `animdiff serve`)."""
    from animdiff.errors import AnimdiffError

    parser = argparse.ArgumentParser(prog="animdiff")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_serve(args)
    except AnimdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
