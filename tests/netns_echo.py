"""A TCP echo server and a timing client, run inside test namespaces (tests/netns.py) to measure a
path before anything of the project is put on it.

    python -m tests.netns_echo serve HOST:PORT      # prints `echo listening HOST:PORT`
    python -m tests.netns_echo ping HOST:PORT -n 20 # prints {"rtt_ns": [...]} (JSON, one line)

`ping` sends one 32-byte message at a time on one connection (like a landmark's challenge) and
times each echo with the monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import sys
import time

MESSAGE = b"x" * 32


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(65536):
            sock.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(host: str, port: int) -> None:
    with _Server((host, port), _Echo) as server:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        print(f"echo listening {host}:{port}", flush=True)
        server.serve_forever()


def ping(host: str, port: int, count: int) -> list[int]:
    """Round trips of `count` messages on one connection, in ns."""
    rtts = []
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.monotonic_ns()
            sock.sendall(MESSAGE)
            got = b""
            while len(got) < len(MESSAGE):
                chunk = sock.recv(len(MESSAGE) - len(got))
                if not chunk:
                    raise ConnectionError("echo server closed the connection")
                got += chunk
            rtts.append(time.monotonic_ns() - start)
    return rtts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns_echo")
    parser.add_argument("mode", choices=("serve", "ping"))
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("-n", "--count", type=int, default=20)
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    if args.mode == "serve":
        serve(host, int(port))
    else:
        print(json.dumps({"rtt_ns": ping(host, int(port), args.count)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
