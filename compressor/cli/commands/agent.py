"""`compressor agent`: serve measurements on this device to a workstation's search.

Reads the bearer token from `--token-file` (it must exist, hold at least
`MIN_TOKEN_CHARS` characters and not be world-readable), binds to loopback
unless `--host` says otherwise (with a warning for other addresses), prints
`listening on http://HOST:PORT` as the first line on stdout (with `--port 0`
the port the system chose) and serves `profilers.agent` until Ctrl-C or
SIGTERM, then removes its temporary files. Nothing here imports torch: the
agent runs on boards where only onnxruntime is installed.
"""

from __future__ import annotations

import argparse
import signal
import stat
import sys
from pathlib import Path

from compressor.cli.common import positive_float
from compressor.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "agent",
        help="run the remote profiling agent on an edge device",
        description="Serve `GET /v1/health` and `POST /v1/profile` so that a workstation measures models on "
        "this device (a target with runtime = \"remote\"). Every call needs the bearer token from "
        "--token-file. Listens on loopback by default: reach it through an SSH tunnel or a TLS reverse proxy.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1; anything else is reachable from the network)")
    parser.add_argument("--port", type=_port, default=8765, help="TCP port (default: 8765; 0 picks a free one)")
    parser.add_argument("--token-file", required=True, type=Path, metavar="FILE",
                        help="file holding the bearer token (chmod 600); clients export it in the target's token_env")
    parser.add_argument("--max-model-mb", type=positive_float, default=200.0,
                        help="largest model accepted, MiB (default: 200); larger uploads get 413")
    parser.add_argument("--queue", type=_non_negative_int, default=8,
                        help="requests that may wait behind the running measurement (default: 8); more get 503")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from profilers.agent import AgentConfig, is_loopback, make_server

    token = read_token(args.token_file)
    config = AgentConfig(token=token, host=args.host, port=args.port, max_model_mb=args.max_model_mb,
                         queue=args.queue)
    try:
        server = make_server(config)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                        "pick another --port or --host") from None
    host, port = server.server_address[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown_host}:{port}", flush=True)
    if not is_loopback(args.host):
        _warn(f"{args.host} is not a loopback address: the agent is reachable from the network over plain "
              "HTTP. Prefer the default 127.0.0.1 with an SSH tunnel, or put a TLS reverse proxy in front.")
    _info(f"max model {config.max_model_mb:g} MiB, queue {config.queue}; Ctrl-C stops")
    # SIGTERM (systemd, docker stop) stops as cleanly as Ctrl-C; SIGINT is set too, because an agent started
    # in the background by a script (`compressor agent &`) inherits SIGINT ignored and would not stop on it.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.agent.close()
    _info("stopped")
    return 0


def read_token(path: Path) -> str:
    """The bearer token in `path`, refused when missing, short or world-readable.

    Raises:
        UserError: naming the problem and the fix.
    """
    from profilers.agent import MIN_TOKEN_CHARS

    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UserError(f"token file {str(path)!r} does not exist; create one with: "
                        f"(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > {path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read token file {str(path)!r}: {exc}") from None
    if mode & stat.S_IROTH:
        raise UserError(f"token file {str(path)!r} is readable by every user; run: chmod 600 {path}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise UserError(f"token file {str(path)!r} must hold one token of at least {MIN_TOKEN_CHARS} characters "
                        "without spaces, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if mode & stat.S_IRGRP:
        _warn(f"token file {path} is readable by its group; chmod 600 {path} keeps it private")
    return token


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _info(message: str) -> None:
    print(f"compressor agent: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"compressor agent: warning: {message}", file=sys.stderr, flush=True)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value
