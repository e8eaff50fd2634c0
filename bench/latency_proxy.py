"""A TCP proxy that delays every request by a fixed time and does no other work.

It stands for the network between a client and an AWS endpoint: bytes from the client reach
the upstream server `--delay-ms` after they arrived (a delay line: each chunk is due at its
arrival time plus the delay, so a request sent in several writes is delayed once, not once
per write); the response comes back at once. One HTTP call therefore costs the delay plus
what the server takes, and the client spends no CPU on the wait, unlike a sleep in the
client. Run it in its own process so its CPU is not the client's:

    python -m bench.latency_proxy --port 8001 --upstream 127.0.0.1:5000 --delay-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Sequence

from tests.fixtures.servers import ROOT, free_port, port_open, wait_until

CHUNK = 65536


async def _delayed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy reader to writer, each chunk `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while data := await reader.read(CHUNK):
            line.put_nowait((loop.time() + delay, data))
        line.put_nowait((loop.time() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, data = await line.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        receiving.cancel()
        with contextlib.suppress(OSError):
            writer.write_eof()


async def _plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy reader to writer as fast as it comes."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def serve(port: int, upstream_host: str, upstream_port: int, delay: float) -> None:
    """Accept connections on 127.0.0.1:`port` until cancelled."""

    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_writer.close()
            return
        with contextlib.suppress(OSError):
            await asyncio.gather(
                _delayed(client_reader, up_writer, delay), _plain(up_reader, client_writer)
            )
        for writer in (up_writer, client_writer):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start(upstream: str, delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """The proxy in its own process in front of `upstream` (a URL); its process and URL."""
    host_port = upstream.split("://", 1)[-1].rstrip("/")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.latency_proxy", "--port", str(port),
         "--upstream", host_port, "--delay-ms", str(delay_ms)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: port_open(port), timeout=30, what=f"latency proxy on port {port}")
    return process, f"http://127.0.0.1:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    host, _, upstream_port = args.upstream.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, host, int(upstream_port), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
