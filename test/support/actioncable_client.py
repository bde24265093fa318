"""A real ActionCable client for test/test_actioncable.rb: Python's `websockets` package (installed
by script/bootstrap into the venv) speaking ActionCable's `actioncable-v1-json` protocol by hand
(welcome, subscribe and confirm_subscription, message commands, pings). Usage:
actioncable_client.py URL ORIGIN; prints one JSON line per report on stdout; every wait is
bounded (TIMEOUT), so a hang ends as an error, not a hang.

First connection A subscribes to EchoChannel and has a message echoed; reports "subscribed",
then waits for a line on stdin (the test sends plain HTTP requests meanwhile). Then connection B
subscribes and sends a broadcast, which reaches A and B; A waits for a server ping; reports the
lot.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect

TIMEOUT = 20
IDENTIFIER = json.dumps({"channel": "EchoChannel"})


def report(**fields):
    print(json.dumps(fields), flush=True)


async def next_frame(ws, wanted):
    """The next decoded frame `wanted` accepts; the frames before it (pings, say) are skipped."""
    async def scan():
        while True:
            frame = json.loads(await ws.recv())
            if wanted(frame):
                return frame
    return await asyncio.wait_for(scan(), TIMEOUT)


async def open_subscribed(url, origin):
    """A connection with its welcome and a confirmed EchoChannel subscription."""
    ws = await connect(url, origin=origin, subprotocols=["actioncable-v1-json"],
                       open_timeout=TIMEOUT, ping_interval=None)
    welcome = await next_frame(ws, lambda f: f.get("type") != "ping")
    await ws.send(json.dumps({"command": "subscribe", "identifier": IDENTIFIER}))
    confirm = await next_frame(ws, lambda f: f.get("type") != "ping")
    return ws, dict(subprotocol=ws.subprotocol, welcome=welcome.get("type"),
                    confirm=confirm.get("type"), identifier=confirm.get("identifier"))


async def send_message(ws, data):
    await ws.send(json.dumps({"command": "message", "identifier": IDENTIFIER, "data": json.dumps(data)}))


def is_message(frame):
    return "message" in frame and frame.get("identifier") == IDENTIFIER


async def session(url, origin):
    a, subscribed = await open_subscribed(url, origin)
    await send_message(a, {"text": "héllo"})
    echoed = (await next_frame(a, is_message))["message"]
    report(subscribed=subscribed, echoed=echoed)
    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), TIMEOUT * 3)
    b, _ = await open_subscribed(url, origin)
    await send_message(b, {"broadcast": "to all"})
    to_a = (await next_frame(a, is_message))["message"]
    to_b = (await next_frame(b, is_message))["message"]
    ping = await next_frame(a, lambda f: f.get("type") == "ping")
    for ws in (a, b):
        await asyncio.wait_for(ws.close(), TIMEOUT)
    report(to_a=to_a, to_b=to_b, ping=isinstance(ping.get("message"), int),
           closed=[ws.close_code for ws in (a, b)])


def main():
    asyncio.run(session(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
