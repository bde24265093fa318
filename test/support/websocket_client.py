"""A real WebSocket client for test/test_websocket.rb: Python's `websockets` package (installed by
script/bootstrap into the venv). Usage: websocket_client.py COMMAND URL [N]; prints one JSON line
per report on stdout; every wait is bounded (TIMEOUT), so a hang ends as an error, not a hang.

  echo URL     a text and a binary message, each echoed
  ping URL     a ping answered by its pong
  close URL    the server closes on "close me" (code 4000); then a close this client starts
  many URL N   N connections open at once, a message exchanged on each; reports "ready", waits
               for a line on stdin (the test sends plain HTTP requests meanwhile), exchanges a
               second message on each, closes them all and reports "done"
  hold URL N   N connections open at once, a message exchanged on each; reports "ready", then
               obeys commands read from stdin, one a line, until "closed" or the end of stdin:
               "echo" exchanges a message on every connection and reports how many were open
               and how many echoed; "closed" waits until the server has closed every connection
               (the test stops the server meanwhile) and reports how many closed, with their
               close codes (1006: the TCP connection ended without a close frame), then exits
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

TIMEOUT = 20


def report(**fields):
    print(json.dumps(fields), flush=True)


async def echo(url):
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send("héllo")
        text = await asyncio.wait_for(ws.recv(), TIMEOUT)
        await ws.send(bytes([0, 1, 2, 255]))
        binary = await asyncio.wait_for(ws.recv(), TIMEOUT)
    report(text=text, binary=list(binary), binary_is_bytes=isinstance(binary, bytes))


async def ping(url):
    async with connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT)
        report(pong=True)


async def close(url):
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send("close me")
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        by_server = dict(code=ws.close_code, reason=ws.close_reason)
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await asyncio.wait_for(ws.close(code=1000, reason="done"), TIMEOUT)
        by_client = dict(code=ws.close_code, reason=ws.close_reason, rcvd=ws.protocol.close_rcvd.code)
    report(by_server=by_server, by_client=by_client)


async def many(url, n):
    sockets = await asyncio.wait_for(
        asyncio.gather(*(connect(url, open_timeout=TIMEOUT, ping_interval=None) for _ in range(n))), TIMEOUT * 3)

    async def exchange(i, ws, word):
        await ws.send(f"{word} {i}")
        return await asyncio.wait_for(ws.recv(), TIMEOUT) == f"{word} {i}"

    async def round_(word):
        return sum(await asyncio.gather(*(exchange(i, ws, word) for i, ws in enumerate(sockets))))

    report(ready=len(sockets), echoed=await round_("first"))
    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), TIMEOUT * 3)
    echoed = await round_("second")
    await asyncio.gather(*(asyncio.wait_for(ws.close(), TIMEOUT) for ws in sockets))
    report(done=len(sockets), echoed=echoed, closed=sum(ws.close_code == 1000 for ws in sockets))


async def hold(url, n):
    sockets = await asyncio.wait_for(
        asyncio.gather(*(connect(url, open_timeout=TIMEOUT, ping_interval=None) for _ in range(n))), TIMEOUT * 3)
    rounds = 0

    # False, not an exception, for a connection the server closed or that never answered.
    async def exchange(i, ws):
        try:
            await ws.send(f"round {rounds} on {i}")
            return await asyncio.wait_for(ws.recv(), TIMEOUT) == f"round {rounds} on {i}"
        except (ConnectionClosed, asyncio.TimeoutError):
            return False

    async def round_():
        nonlocal rounds
        rounds += 1
        return sum(await asyncio.gather(*(exchange(i, ws) for i, ws in enumerate(sockets))))

    # Commands from a pipe without a thread: a reader thread blocked on stdin would outlive
    # a timeout and keep the process from ending.
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    report(ready=len(sockets), echoed=await round_())
    while line := (await asyncio.wait_for(stdin.readline(), TIMEOUT * 6)).decode().strip():
        if line == "echo":
            is_open = sum(ws.state is State.OPEN for ws in sockets)
            report(open=is_open, echoed=await round_())
        elif line == "closed":
            ended = await asyncio.gather(*(asyncio.wait_for(ws.wait_closed(), TIMEOUT * 3) for ws in sockets),
                                         return_exceptions=True)
            report(closed=sum(e is None for e in ended), codes=sorted(ws.close_code or 0 for ws in sockets))
            return
        else:
            report(error=f"unknown command {line!r}")


def main():
    command, url = sys.argv[1], sys.argv[2]
    if command == "many":
        asyncio.run(many(url, int(sys.argv[3])))
    elif command == "hold":
        asyncio.run(hold(url, int(sys.argv[3])))
    else:
        asyncio.run({"echo": echo, "ping": ping, "close": close}[command](url))


if __name__ == "__main__":
    main()
