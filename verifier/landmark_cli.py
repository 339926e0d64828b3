"""`gpu-attest-verifier landmark ...`: run a landmark and register it (docs/protocol.md §12).

    landmark serve [--config F]
        serve Landmark.Probe on `listen` (plain gRPC) until SIGTERM/SIGINT
    landmark key [--config F]
        the landmark's public key (PEM); landmark.key is created on first use
    landmark enroll [--config F]
        the registry's [[landmark]] stanza (id, lat, lon, base64 SPKI DER public key): append it
        to the registry file and run `registry import`

--config names landmark.toml (default /etc/gpu-attest/landmark.toml), not verifier.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from verifier.exits import VerifierExit
from verifier.landmark_config import LandmarkConfig, load_landmark_config


def add_landmark_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS,
        help="landmark.toml (default /etc/gpu-attest/landmark.toml)",
    )  # fmt: skip
    common.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS)
    landmark = sub.add_parser(
        "landmark",
        help="a landmark: times signed round trips to agents (docs/protocol.md §12)",
        description=__doc__.split("\n\n")[0],
        epilog=VerifierExit.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="action", required=True)
    landmark.add_parser("serve", parents=[common], help="serve Landmark.Probe until signalled")
    landmark.add_parser("key", parents=[common], help="print the landmark public key (PEM)")
    landmark.add_parser(
        "enroll", parents=[common], help="print the registry [[landmark]] stanza for this landmark"
    )


def enroll_stanza(config: LandmarkConfig) -> str:
    """The `[[landmark]]` table verifier/registry.py reads, for this landmark and its key."""
    # grpc only where a landmark command runs: every `gpu-attest-verifier` command, and the
    # supervisor of `serve --workers N` (~20 MB less), imports this module.
    from verifier.landmark_service import load_or_create_landmark_signer  # noqa: PLC0415

    key = load_or_create_landmark_signer(config).public_key
    return (
        "[[landmark]]\n"
        f'id = "{config.id}"\n'
        f"lat = {config.lat!r}\n"
        f"lon = {config.lon!r}\n"
        f'public_key = "{key.to_base64()}"\n'
    )


def run_landmark_command(args: argparse.Namespace) -> int:
    """Run `landmark serve|key|enroll`; raises ConfigError (exit 3) for a bad landmark.toml."""
    config = load_landmark_config(getattr(args, "config", None))
    if args.action == "serve":
        from verifier.landmark_service import run_until_signalled  # noqa: PLC0415

        return asyncio.run(run_until_signalled(config))
    if args.action == "key":
        from verifier.landmark_service import load_or_create_landmark_signer  # noqa: PLC0415

        sys.stdout.buffer.write(load_or_create_landmark_signer(config).public_key.to_pem())
        sys.stdout.flush()
        return VerifierExit.OK
    sys.stdout.write(enroll_stanza(config))
    return VerifierExit.OK
