#!/usr/bin/env python3
"""Differential check of Catamount's HTTP/1.1 request parser against llhttp (Node's parser,
through the httptools package): generated and mutated request streams go through both, and
every disagreement is classified. The rule: where they disagree, Catamount is the stricter one.
It may refuse what llhttp accepts (or close where llhttp keeps the connection), never accept
what llhttp refuses, and never end a message at another place than llhttp.

Catamount's side is crates/catamount-http/examples/parse-verdicts.rs (built here with cargo),
which reads a stream as the server does: head, body, next request. llhttp is fed one byte at a
time so the offset where each message ends is known exactly.

Usage: parser_differential.py [--cases N] [--seed S] [--examples K]. Exit status 1 when
Catamount was laxer anywhere; each such class is printed with its shortest input, shrunk.
"""

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import time

try:
    import httptools
except ImportError:
    sys.exit("parser_differential: httptools is missing (script/bootstrap installs it into "
             "~/.cache/catamount/venv; run this with that venv's python3)")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = "parse-verdicts"

# Disagreement kinds. LAXER fails the run; the others are counted.
LAXER = "LAXER"
STRICTER = "stricter"
AGREE = "agree"
PENDING = "pending"
UPGRADE = "upgrade"


# --- Catamount's side ---------------------------------------------------------------------


def build_catamount():
    """Builds the verdict example (quick when nothing changed); returns its path."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "catamount", "target"
    )
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--locked", "-p", "catamount-http",
         "--example", EXAMPLE],
        cwd=ROOT, env=env, check=True,
    )
    return os.path.join(target, "release", "examples", EXAMPLE)


def records(cases):
    return b"".join(struct.pack("<I", len(c)) + c for c in cases)


def latin1(s):
    return s.encode("latin-1")


def from_catamount(line):
    v = json.loads(line)
    messages = [
        {
            "head": m["head"],
            "end": m["end"],
            "method": latin1(m["method"]),
            "target": latin1(m["target"]),
            "version": m["version"],
            "body": m["body"],
            "keep_alive": m["keep_alive"],
            "headers": [(latin1(n), latin1(val)) for n, val in m["headers"]],
        }
        for m in v["messages"]
    ]
    return {"messages": messages, "outcome": v["outcome"], "error": v.get("error"),
            "head": v.get("head")}


def catamount_batch(binary, cases):
    """Catamount's verdicts on many cases in one process."""
    out = subprocess.run([binary], input=records(cases), stdout=subprocess.PIPE, check=True).stdout
    lines = out.decode("ascii").splitlines()
    if len(lines) != len(cases):
        raise RuntimeError(f"{EXAMPLE} answered {len(lines)} of {len(cases)} cases")
    return [from_catamount(line) for line in lines]


class CatamountProcess:
    """One long-lived verdict process, asked one case at a time (for shrinking)."""

    def __init__(self, binary):
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def verdict(self, case):
        self.proc.stdin.write(records([case]))
        self.proc.stdin.flush()
        return from_catamount(self.proc.stdout.readline().decode("ascii"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --- llhttp's side ------------------------------------------------------------------------


class LlhttpMessages:
    """httptools callbacks collecting each message and the offsets where its head and body
    end (`pos` is the offset of the byte being fed)."""

    def __init__(self):
        self.parser = None
        self.pos = 0
        self.messages = []
        self.current = None
        self.begun = 0

    def on_message_begin(self):
        self.current = {"target": b"", "headers": [], "body": 0, "head": None}
        self.begun += 1

    def on_url(self, url):
        self.current["target"] += url

    def on_header(self, name, value):
        # After the head these are trailer fields, which Catamount checks and drops.
        if self.current["head"] is None:
            self.current["headers"].append((name, value))

    def on_headers_complete(self):
        self.current["head"] = self.pos + 1

    def on_body(self, body):
        self.current["body"] += len(body)

    def on_message_complete(self):
        m = self.current
        m["end"] = self.pos + 1
        m["method"] = self.parser.get_method()
        m["version"] = self.parser.get_http_version()
        m["keep_alive"] = self.parser.should_keep_alive()
        self.messages.append(m)


# llhttp's refusal of bytes after a message that ends the connection: Catamount's "closed".
LLHTTP_CLOSED = "Data after `Connection: close`"


def llhttp_verdict(case):
    collected = LlhttpMessages()
    parser = httptools.HttpRequestParser(collected)
    collected.parser = parser
    outcome, error = None, None
    feed, view = parser.feed_data, memoryview(case)
    try:
        for i in range(len(case)):
            collected.pos = i
            feed(view[i:i + 1])
    except httptools.HttpParserUpgrade:
        outcome = "upgrade"
    except httptools.HttpParserError as e:
        reason = str(e) or type(e).__name__
        outcome, error = ("closed", None) if reason == LLHTTP_CLOSED else ("error", reason)
    if outcome is None:
        outcome = "partial" if collected.begun > len(collected.messages) else "clean"
    return {"messages": collected.messages, "outcome": outcome, "error": error}


# --- Comparing ----------------------------------------------------------------------------


def only_line_ends(data):
    return all(b in b"\r\n" for b in data)


def normalize_catamount(v, case):
    """Bytes left over that are only CR/LF are no message to either parser."""
    if v["outcome"] in ("partial", "closed"):
        end = v["messages"][-1]["end"] if v["messages"] else 0
        if only_line_ends(case[end:]):
            v = dict(v, outcome="clean")
    return v


def strip_ows(value):
    return value.strip(b" \t")


def content_difference(c, l):
    """What two messages framed alike disagree on, or None."""
    if c["method"] != l["method"]:
        return "method"
    if c["target"] != l["target"]:
        return "target"
    if c["version"] != l["version"]:
        return "version"
    if [(n, strip_ows(v)) for n, v in c["headers"]] != [(n, strip_ows(v)) for n, v in l["headers"]]:
        return "header fields"
    if c["body"] != l["body"]:
        return "body length"
    if c["keep_alive"] != l["keep_alive"]:
        return "keep-alive"
    return None


def compare(case, cat, ll):
    """(kind, class name) for one case."""
    cat = normalize_catamount(cat, case)
    cm, lm = cat["messages"], ll["messages"]
    n = min(len(cm), len(lm))
    for i in range(n):
        c, l = cm[i], lm[i]
        if ll["outcome"] == "upgrade" and i == len(lm) - 1:
            # llhttp hands the bytes after this head to another protocol; Catamount lets the
            # app decide (a 101, or a normal answer). Only the head can be compared.
            if c["head"] != l["head"]:
                return LAXER, "the head of an upgrade ends at a different place"
            return UPGRADE, "llhttp hands the connection over after the head (Upgrade or CONNECT)"
        if c["end"] != l["end"]:
            return LAXER, "a message ends at a different place"
        diff = content_difference(c, l)
        if diff == "keep-alive" and not c["keep_alive"]:
            if i + 1 < len(lm) or ll["outcome"] not in ("clean", "closed"):
                return STRICTER, "Catamount closes after a message llhttp keeps the connection open for"
        elif diff:
            return LAXER, f"both accept a message but read its {diff} differently"
    co, lo = cat["outcome"], ll["outcome"]
    if lo == "upgrade" and len(lm) > n and co != "error":
        # llhttp hands over after a head whose body Catamount still reads (an Upgrade with a
        # body: Catamount gives the app the body and lets it answer, 101 or not).
        if co == "partial" and cat["head"] is not None and cat["head"] != lm[n]["head"]:
            return LAXER, "the head of an upgrade ends at a different place"
        return UPGRADE, "llhttp hands the connection over after the head, Catamount reads the body it announces"
    if len(cm) > n:
        return LAXER, {
            "error": f"Catamount accepts what llhttp refuses ({ll['error']})",
            "partial": "Catamount ends a message where llhttp waits for more",
            "closed": "Catamount reads a request after one llhttp closes the connection with",
        }.get(lo, f"Catamount reads a message more (llhttp: {lo})")
    if len(lm) > n:
        if co == "error":
            return STRICTER, f"Catamount refuses ({cat['error']}) what llhttp accepts"
        if co == "closed":
            return STRICTER, "Catamount closes after a message llhttp keeps the connection open for"
        return LAXER, "Catamount waits for more where llhttp ends a message"
    if co == lo:
        if co == "error":
            return AGREE, "both refuse"
        return AGREE, "both accept"
    if co == "error":
        return STRICTER, f"Catamount refuses ({cat['error']}) where llhttp waits for more or is done"
    if co == "closed":
        return STRICTER, "Catamount closes after a message llhttp keeps the connection open for"
    if co == "partial" and lo == "error":
        # Catamount checks the fields once the head is complete; llhttp at the field. The
        # completed case is checked in a second round.
        return PENDING, "llhttp refuses before the head ends, Catamount waits for its end"
    if co == "partial" and lo == "closed":
        return PENDING, "llhttp closes, Catamount waits for the rest of a request"
    return LAXER, f"outcomes differ (Catamount: {co}, llhttp: {lo})"


# --- Generating ---------------------------------------------------------------------------

# Each part of a message comes from a list of usual values or, now and then (ODD), from a
# list of odd ones: most messages carry at most one oddity, so both parsers get past it.
ODD = 0.06
METHODS = ([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"],
           [b"CONNECT", b"PROPFIND", b"PRI", b"get", b"FOO", b"G-T", b"M" * 40, b"GET\t"])
TARGETS = ([b"/", b"/a/b", b"/p?q=1&r=2", b"/p?q#frag", b"/%20x", b"/a;b=c",
            b"http://example.com/x?y", b"/~user/" + b"a" * 100, b"/?", b"//x"],
           [b"*", b"HTTP://h:8080", b"https://h/", b"example.com:443", b"/\x80", b"http://u@h/",
            b"/a|b", b"/{x}", b"/a\\b", b"/a^b", b"/a`b", b"/a b", b""])
VERSIONS = ([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"],
            [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10", b"http/1.1", b"HTTP/1.1 ",
             b"HTTP/3.0", b"HTTP/1.", b"HTTP/1.1\t"])
HOSTS = ([b"example.com", b"example.com:8080", b"127.0.0.1", b"[::1]:80", b"x"],
         [b"", b"a b", b"h:port", b"u@h", b"h/", b"h:", b"xn--bcher-kva.example", b"h\x80"])
CONTENT_LENGTHS = [b"5, 5", b"5,5", b"+5", b"-5", b"0x5", b"5.0", b"", b"05", b"1 0",
                   b"99999999999999999999", b"18446744073709551615", b"18446744073709551616",
                   b"\t5", b" 5 ", b"5\t", b"\"5\"", b"5;", b"0"]
CODINGS = ([b"chunked", b"CHUNKED", b"Chunked", b" chunked "],
           [b"chunked, chunked", b"gzip, chunked", b"chunked, gzip", b"identity",
            b"identity, chunked", b"chunked;q=1", b"\"chunked\"", b"xchunked", b"chunkedx", b"",
            b"deflate", b"chunked ,", b",chunked", b"chunked,", b"gzip,chunked", b"chunk",
            b"\tchunked", b"chunked\t", b"gzip ,chunked"])
CONNECTIONS = ([b"close", b"keep-alive", b"Close", b"upgrade", b"close, upgrade", b"Keep-Alive"],
               [b"keep-alive, close", b"foo, close", b"closed", b"close;", b"TE", b", close",
                b"close,", b"keep-alive,close", b"\tclose"])
EXTRA_NAMES = ([b"Accept", b"User-Agent", b"Cookie", b"X-Forwarded-For", b"X-Request-Id",
                b"Expect", b"Upgrade", b"TE", b"Trailer", b"Keep-Alive"],
               [b"Content_Length", b"Transfer_Encoding", b"Proxy-Connection",
                b"X!#$%&'*+-.^_`|~", b"a" * 30, b"X Y", b"X\x80", b"X(Y)", b"X@Y", b"Hos t"])
EXTRA_VALUES = ([b"*/*", b"text/html, application/json;q=0.9", b"curl/8.0", b"a=b; c=d",
                 b"100-continue", b"websocket", b"h2c", b"", b"trailers", b"x" * 200],
                [b"  spaced  ", b"caf\xc3\xa9", b"\x80\xff", b"quoted \"x\"", b"a,b,,c",
                 b"a\tb", b"\t", b" \t ", b"\x7f", b"a\x00b"])
CHUNK_EXTENSIONS = ([b"", b";a", b";a=b", b";a=\"q s\"", b";a;b=c", b";a=\"\\\"\""],
                    [b"; a = b", b" ;a", b";", b";=b", b";a=", b";a=\"open", b"\t;a",
                     b";a=b c", b";a =b", b";a= b", b";a\x80", b";a=\"\x80\""])
TRAILERS = ([b"", b"T: v\r\n", b"T:v\r\n", b"X-Checksum: abc\r\nY: z\r\n"],
            [b"T : v\r\n", b"T: v\r\n w\r\n", b"no colon\r\n", b": v\r\n", b"T: a\x00\r\n",
             b"Content-Length: 5\r\n", b"T:\tv\t\r\n"])
SEPARATORS = ([b": ", b":", b":  "], [b": \t", b":\t", b" :", b"\t:", b"::"])
SIZE_ODDITIES = [b"+", b"-", b" ", b"0x", b"\t"]


def pick(rng, pair):
    usual, odd = pair
    return rng.choice(odd if rng.random() < ODD else usual)


def hex_size(rng, n):
    s = b"%x" % n
    r = rng.random()
    if r < 0.15:
        s = s.upper()
    elif r < 0.25:
        s = b"0" * rng.randint(1, 4) + s
    if rng.random() < ODD / 2:
        s = rng.choice(SIZE_ODDITIES) + s if rng.random() < 0.5 else s + rng.choice(SIZE_ODDITIES)
    return s


def chunked_body(rng):
    out = b""
    for _ in range(rng.randint(0, 3)):
        data = bytes(rng.choice(b"abcdefgh\r\n0") for _ in range(rng.randint(1, 20)))
        size = len(data) + (rng.choice([-1, 1]) if rng.random() < ODD / 2 else 0)
        out += hex_size(rng, max(size, 1)) + pick(rng, CHUNK_EXTENSIONS) + b"\r\n" + data + b"\r\n"
    last = b"0" * rng.randint(1, 3) if rng.random() < 0.1 else b"0"
    return out + last + pick(rng, CHUNK_EXTENSIONS) + b"\r\n" + pick(rng, TRAILERS) + b"\r\n"


def message(rng):
    method = pick(rng, METHODS)
    target = pick(rng, TARGETS)
    if method == b"CONNECT" and rng.random() < 0.7:
        target = rng.choice([b"example.com:443", b"h:80", b"[::1]:443"])
    if method == b"OPTIONS" and rng.random() < 0.3:
        target = b"*"
    version = pick(rng, VERSIONS)
    fields = []
    if rng.random() < 0.97:
        fields.append((b"Host", pick(rng, HOSTS)))
    if rng.random() < ODD / 2:
        fields.append((b"Host", b"other.example"))
    body = b""
    framing = rng.random()
    if framing < 0.3:
        body = bytes(rng.choice(b"xyz\r\n") for _ in range(rng.randint(0, 30)))
        length = str(len(body)).encode()
        if rng.random() < ODD:
            length = rng.choice(CONTENT_LENGTHS + [str(len(body) + d).encode() for d in (-1, 1)])
        fields.append((b"Content-Length", length))
        if rng.random() < ODD / 2:
            fields.append((b"Content-Length", length))
    elif framing < 0.6:
        fields.append((b"Transfer-Encoding", pick(rng, CODINGS)))
        if rng.random() < ODD / 2:
            fields.append((b"Transfer-Encoding", pick(rng, CODINGS)))
        if rng.random() < ODD / 2:
            fields.append((b"Content-Length", b"%d" % rng.randint(0, 20)))
        body = chunked_body(rng)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5])):
        if rng.random() < 0.2:
            fields.append((b"Connection", pick(rng, CONNECTIONS)))
        else:
            fields.append((pick(rng, EXTRA_NAMES), pick(rng, EXTRA_VALUES)))
    rng.shuffle(fields)
    head = method + b" " + target + b" " + version + b"\r\n"
    for name, value in fields:
        head += name + pick(rng, SEPARATORS) + value + b"\r\n"
    return head + b"\r\n" + body


def generated(rng):
    count = rng.choice([1, 1, 1, 2, 2, 3])
    return b"".join(message(rng) + (b"\r\n" if rng.random() < 0.03 else b"") for _ in range(count))


# Bytes inserted or written over others: line ends, whitespace, controls, list and sign
# characters, quotes, high bytes.
INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b",", b"+", b"-", b"\"", b";",
               b":", b"\x0b", b"\x0c", b"\x7f", b"\x80", b"\xff", b"0", b"=", b"\\", b"/",
               b"#", b"?", b"\r\n ", b"\r\n\r\n", b"\r\nContent-Length: 3",
               b"\r\nTransfer-Encoding: chunked", b"\r\nHost: y", b"\r\nConnection: close",
               b"\r\nUpgrade: x\r\nConnection: upgrade", b"0\r\n\r\n", b"HTTP/1.1"]


def mutate(rng, case):
    if not case:
        return case
    i = rng.randrange(len(case))
    kind = rng.random()
    if kind < 0.2:
        return case[:i] + rng.choice(INTERESTING) + case[i + 1:]
    if kind < 0.4:
        return case[:i] + rng.choice(INTERESTING) + case[i:]
    if kind < 0.5:
        return case[:i] + bytes([rng.randrange(256)]) + case[i + 1:]
    if kind < 0.55:
        return case[:i] + bytes([case[i] ^ (1 << rng.randrange(8))]) + case[i + 1:]
    if kind < 0.65:
        return case[:i] + case[i + rng.randint(1, 4):]
    if kind < 0.75:
        # A whole line twice (a repeated field or chunk line).
        start = case.rfind(b"\n", 0, i) + 1
        end = case.find(b"\n", i)
        end = len(case) if end < 0 else end + 1
        return case[:end] + case[start:end] + case[end:]
    if kind < 0.82:
        j = min(len(case), i + rng.randint(1, 8))
        return case[:j] + case[i:j] + case[j:]
    if kind < 0.9:
        return case[:i]
    if kind < 0.95:
        c = case[i:i + 1]
        return case[:i] + (c.lower() if c.isupper() else c.upper()) + case[i + 1:]
    return case[:i] + case[i:i + 1] * rng.randint(2, 5) + case[i + 1:]


def smuggling_seeds():
    """The raw requests of the smuggling table (test/support/smuggling_table.rb)."""
    out = subprocess.run(["ruby", os.path.join(ROOT, "test", "support", "smuggling_vectors.rb")],
                         stdout=subprocess.PIPE, check=True).stdout
    seeds, pos = [], 0
    while pos < len(out):
        (n,) = struct.unpack_from("<I", out, pos)
        seeds.append(out[pos + 4:pos + 4 + n])
        pos += 4 + n
    return seeds


def cases(rng, total, seeds):
    """The seeds as they are, then generated and mutated cases up to `total`."""
    out = list(seeds)
    small = [s for s in seeds if len(s) <= 2048]
    while len(out) < total:
        base = rng.choice(small) if small and rng.random() < 0.25 else generated(rng)
        for _ in range(rng.choice([0, 0, 0, 1, 1, 1, 2, 3])):
            base = mutate(rng, base)
        out.append(base)
    return out


# --- Shrinking ----------------------------------------------------------------------------


def shrink(case, name, catamount):
    """The shortest input found by deleting runs of bytes that still shows class `name`."""

    def same(candidate):
        return compare(candidate, catamount.verdict(candidate), llhttp_verdict(candidate))[1] == name

    size = max(1, len(case) // 2)
    tries = 0
    while size >= 1 and tries < 4000:
        i, shrunk = 0, False
        while i < len(case) and tries < 4000:
            candidate = case[:i] + case[i + size:]
            tries += 1
            if candidate and same(candidate):
                case, shrunk = candidate, True
            else:
                i += size
        if not shrunk:
            size //= 2
    return case


# --- Running ------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=30000)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--examples", type=int, default=0,
                    help="print this many inputs of each class (shortest first)")
    ap.add_argument("--no-seeds", action="store_true", help="leave out smuggling_table.rb's vectors")
    args = ap.parse_args()

    started = time.monotonic()
    binary = build_catamount()
    rng = random.Random(args.seed)
    seeds = [] if args.no_seeds else smuggling_seeds()
    todo = cases(rng, args.cases, seeds)
    classes = {}
    rounds = 0
    seen = set()
    while todo:
        rounds += 1
        verdicts = catamount_batch(binary, todo)
        follow_up = []
        for case, cat in zip(todo, verdicts):
            kind, name = compare(case, cat, llhttp_verdict(case))
            classes.setdefault((kind, name), []).append(case)
            if kind == PENDING and rounds == 1:
                # Completing the head shows whether Catamount would accept it in the end.
                for completed in (case + b"\r\n\r\n", case + b"\r\n"):
                    if completed not in seen:
                        seen.add(completed)
                        follow_up.append(completed)
        todo = follow_up

    order = {LAXER: 0, STRICTER: 1, PENDING: 2, UPGRADE: 3, AGREE: 4}
    total = sum(len(v) for v in classes.values())
    print(f"parser differential: {total} cases (seed {args.seed}, {len(seeds)} from "
          f"smuggling_table.rb, {total - args.cases if total > args.cases else 0} completions of "
          f"pending ones), {time.monotonic() - started:.1f} s")
    laxer = 0
    catamount = None
    for (kind, name), found in sorted(classes.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1]))):
        print(f"  {len(found):6d}  {kind}: {name}")
        found.sort(key=len)
        shown = found[:args.examples]
        if kind == LAXER:
            laxer += len(found)
            catamount = catamount or CatamountProcess(binary)
            shown = [shrink(found[0], name, catamount)] + shown
        for case in shown:
            print(f"          {case!r}")
    if catamount:
        catamount.close()
    if laxer:
        print(f"parser differential: Catamount was laxer than llhttp in {laxer} cases")
        return 1
    print("parser differential: Catamount was never laxer than llhttp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
