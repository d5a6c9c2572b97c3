#!/usr/bin/env python3
"""t/services/stall-listener.py: PostgreSQL servers that never get far.

    stall-listener.py --silent PORT --tls-stall PORT

--silent: a listener that never accepts: connect() completes in the
kernel's backlog and the client's startup packet is never read.
--tls-stall: accepts, reads the client's SSLRequest (8 bytes: length 8,
code 80877103, protocol section 54.2.10), answers 'S' (TLS is on), and then
says nothing, so that the client's TLS handshake waits for a ServerHello
that never comes.  Prints "ready" once both listen.
"""

import argparse
import socket
import struct
import threading
import time


def stall(conn):
    try:
        data = b""
        while len(data) < 8:
            chunk = conn.recv(8 - len(data))
            if not chunk:
                return
            data += chunk
        if struct.unpack("!ii", data) == (8, 80877103):
            conn.sendall(b"S")
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--silent", type=int, required=True)
    p.add_argument("--tls-stall", type=int, required=True)
    args = p.parse_args()

    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", args.silent))
    silent.listen(1)

    tls = socket.socket()
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tls.bind(("127.0.0.1", args.tls_stall))
    tls.listen(64)

    print("ready", flush=True)

    while True:
        conn, _ = tls.accept()
        threading.Thread(target=stall, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
