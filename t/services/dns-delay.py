#!/usr/bin/env python3
"""t/services/dns-delay.py: a DNS forwarder that answers late.

    dns-delay.py --listen PORT --upstream PORT --delay-file FILE [--log FILE]

Relays each UDP DNS query (RFC 1035, section 4.2.1) to the real server on
127.0.0.1:UPSTREAM (the suite's dnsmasq) unchanged, and its answer back,
after waiting the number of milliseconds FILE holds when the query comes
(0 or no file: no wait).  Queries wait concurrently, each on its own
timer: one slow answer never holds back another.  With --log, one line
per query: "<ms waited> <name>".  It prints "ready 127.0.0.1:PORT" once
it listens.
"""

import argparse
import asyncio
import sys


def qname(packet):
    """The first question's name, for the log (RFC 1035, 4.1.2)."""
    labels, i = [], 12
    try:
        while packet[i]:
            n = packet[i]
            labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
    except IndexError:
        return "?"
    return ".".join(labels) or "."


def delay_ms(path):
    try:
        with open(path) as f:
            return max(0, int(f.read().strip() or 0))
    except (OSError, ValueError):
        return 0


class Upstream(asyncio.DatagramProtocol):
    """One socket per query: the answer comes back to it alone."""

    def __init__(self, query, reply):
        self.query, self.reply = query, reply

    def connection_made(self, transport):
        self.transport = transport
        transport.sendto(self.query)

    def datagram_received(self, data, addr):
        self.reply(data)
        self.transport.close()

    def error_received(self, exc):
        self.transport.close()


class Forwarder(asyncio.DatagramProtocol):
    def __init__(self, args, log):
        self.args, self.log = args, log

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.get_running_loop().create_task(self.relay(data, addr))

    async def relay(self, data, addr):
        ms = delay_ms(self.args.delay_file)
        if self.log:
            self.log.write("%d %s\n" % (ms, qname(data)))
            self.log.flush()
        if ms:
            await asyncio.sleep(ms / 1000.0)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Upstream(data, lambda a: self.transport.sendto(a, addr)),
            remote_addr=("127.0.0.1", self.args.upstream))
        # an upstream that never answers: give the socket up
        loop.call_later(10, transport.close)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    p.add_argument("--delay-file", required=True)
    p.add_argument("--log")
    args = p.parse_args()

    log = open(args.log, "a") if args.log else None
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: Forwarder(args, log), local_addr=("127.0.0.1", args.listen))
    print("ready 127.0.0.1:%d" % args.listen, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
