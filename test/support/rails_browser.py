"""Drives a headless chromium through examples/rails-app for test/test_rails_app.rb, over the
DevTools protocol (CDP) spoken by hand with Python's `websockets` (the venv script/bootstrap
makes). Usage: rails_browser.py DEVTOOLS_WS_URL APP_URL NAME. The browser is already running
(test/support/chromium.rb starts it and kills it); this opens its own browser context (cookies
are per host, not per port, so apps tested side by side on 127.0.0.1 must not share a jar),
then, as a user would:

  1. loads APP_URL/ and reads the greeting;
  2. types NAME into the form and clicks its submit button (input events, not DOM calls):
     chromium posts the form with its CSRF token and the session cookie, follows the redirect;
  3. reads the greeting, the visit count (the cookie session) and the ActionCable broadcast
     the page lists once its subscription is confirmed (ShoutChannel);
  4. loads APP_URL/stream as a page, and reads it again with fetch(), each read of the
     response's stream recorded.

Prints one JSON object (what the page showed at each step) on stdout; a step that does not
happen within TIMEOUT ends the script with an error naming the step (exit status 1).
"""

import asyncio
import itertools
import json
import sys

from websockets.asyncio.client import connect

TIMEOUT = 30


class Step(Exception):
    pass


class Browser:
    """One CDP connection to the browser; a page's commands carry its flat session id."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting = {}
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        async for text in self.ws:
            message = json.loads(text)
            future = self.waiting.pop(message.get("id"), None)
            if future and not future.done():
                future.set_result(message)

    async def send(self, method, session=None, **params):
        ident = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.waiting[ident] = future
        message = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, TIMEOUT)
        if "error" in reply:
            raise Step(f"{method}: {reply['error']}")
        return reply["result"]


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    async def evaluate(self, expression):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.browser.send("Runtime.evaluate", self.session, expression=expression,
                                         awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise Step(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, what, expression):
        """The expression's value once it is truthy, polled; Step(what) after TIMEOUT."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        last = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                last = await self.evaluate(expression)
            except Step as error:  # the page is between two documents
                last = str(error)
            else:
                if last:
                    return last
            await asyncio.sleep(0.05)
        raise Step(f"{what}: not within {TIMEOUT} s (last: {last!r})")

    async def click(self, selector):
        """A left click in the middle of the element, as mouse events."""
        box = await self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                                  ".getBoundingClientRect(); return { x: r.x + r.width / 2, y: r.y + r.height / 2 }; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.browser.send("Input.dispatchMouseEvent", self.session, type=kind, x=box["x"], y=box["y"],
                                    button="left", clickCount=1)

    async def load(self, url):
        await self.browser.send("Page.navigate", self.session, url=url)
        await self.until(f"load {url}", f"location.href === {json.dumps(url)} && document.readyState === 'complete'")


READ_STREAM = """(async () => {
  // no-store: a revalidation could answer 304 (Last-Modified) and replay the cached body at once.
  const response = await fetch("/stream", { cache: "no-store" });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const reads = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    reads.push(decoder.decode(value));
  }
  return { status: response.status, contentType: response.headers.get("content-type"), reads };
})()"""


async def run(devtools, app, name):
    report = {}
    async with connect(devtools, max_size=None, open_timeout=TIMEOUT, ping_interval=None) as ws:
        browser = Browser(ws)
        context = (await browser.send("Target.createBrowserContext"))["browserContextId"]
        target = (await browser.send("Target.createTarget", url="about:blank", browserContextId=context))["targetId"]
        session = (await browser.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        page = Page(browser, session)
        try:
            await browser.send("Runtime.enable", session)
            await page.load(app + "/")
            report["first"] = await page.evaluate("document.getElementById('greeting').textContent")

            # Typed and clicked as input events, as a user's keyboard and mouse make them.
            await page.evaluate("document.getElementById('name').focus()")
            await browser.send("Input.insertText", session, text=name)
            await page.click("#greet input[type=submit]")
            greeting = f"Hello, {name}!"
            await page.until("the greeting after the form's redirect",
                             f"document.readyState === 'complete' && location.pathname === '/' && "
                             f"document.getElementById('greeting')?.textContent === {json.dumps(greeting)}")
            report["after_post"] = await page.evaluate(
                "({ url: location.href, greeting: document.getElementById('greeting').textContent, "
                "visits: document.getElementById('visits').textContent })")
            report["shouts"] = await page.until(
                "a broadcast over ActionCable listed in the page",
                "Array.from(document.querySelectorAll('#shouts li')).map(li => li.textContent).filter(t => t)"
                ".join('\\n')")
            report["shouts"] = report["shouts"].split("\n")

            await page.load(app + "/stream")
            report["stream_page"] = await page.until("the streamed page's last line",
                                                     "document.body?.innerText.includes('line 5 of 5') && document.body.innerText")
            report["stream_fetch"] = await page.evaluate(READ_STREAM)
        finally:
            await browser.send("Target.disposeBrowserContext", browserContextId=context)
        browser.reader.cancel()
    return report


def main():
    devtools, app, name = sys.argv[1:4]
    try:
        report = asyncio.run(run(devtools, app, name))
    except (Step, asyncio.TimeoutError, OSError) as error:
        print(f"rails_browser: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
