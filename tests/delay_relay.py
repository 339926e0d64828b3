"""A TCP relay that adds a fixed one-way delay in each direction, for test hosts whose kernel has
no netem (tests/netns.py runs it inside a network namespace with `ip netns exec`).

Each chunk read from one side is written to the other `delay` seconds after it was read, in the
order read, so a round trip across the relay gains 2 x delay plus the relay's own few tens of
microseconds. The wait runs as a `time.sleep` in a worker thread: asyncio's own timers are
rounded up to the millisecond by epoll, which would turn a 0.5 ms delay into ~1 ms.

    python -m tests.delay_relay --listen HOST:PORT --connect HOST:PORT --delay-ms 15

It prints `relay listening HOST:PORT` once it accepts connections, and exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time

CHUNK = 64 * 1024


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _read_side(
    reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]], delay: float
) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic() + delay, chunk))
    except OSError:
        pass
    queue.put_nowait((time.monotonic() + delay, b""))  # end of stream, delayed like the data


async def _write_side(
    queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await loop.run_in_executor(None, time.sleep, wait)
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()
    except OSError:
        return


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    await asyncio.gather(_read_side(reader, queue, delay), _write_side(queue, writer))


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    _nodelay(client_writer)
    _nodelay(server_writer)
    try:
        await asyncio.gather(
            _pipe(client_reader, server_writer, delay),
            _pipe(server_reader, client_writer, delay),
        )
    finally:
        client_writer.close()
        server_writer.close()


async def relay(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    """Accept on `listen`, forward each connection to `target` with `delay` each way, until
    SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, target, delay), listen[0], listen[1], reuse_address=True
    )
    print(f"relay listening {listen[0]}:{listen[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delay_relay", description=__doc__)
    parser.add_argument("--listen", type=_hostport, required=True)
    parser.add_argument("--connect", type=_hostport, required=True)
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, ms")
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")
    asyncio.run(relay(args.listen, args.connect, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
