#!/usr/bin/env python3
# Writes the special-key blocks of t/020-stream.t (which gives them its
# default configuration): one block per key the services upload (see
# t/services/schema.sql), from TEST 22 on, each with the request S3 must
# see: the key percent-encoded as SigV4 wants it for S3 (every byte but
# A-Za-z0-9-._~/).  A key with an empty, "." or ".." segment is refused
# (404, one log line, S3 never asked): a server that normalises paths
# would read another object, even another bucket's.  Run it after changing
# the list; its output replaces the blocks from "=== TEST 22: key " to the
# end of the file, the test does not run it.
keys = [
    "special/a b.bin", "special/a+b.bin", "special/bang!.bin",
    "special/dollar$.bin", "special/amp&.bin", "special/apos'.bin",
    "special/paren().bin", "special/star*.bin", "special/comma,.bin",
    "special/semi;.bin", "special/eq=.bin", "special/colon:.bin",
    "special/at@.bin", "special/tilde~.bin", "special/pct%.bin",
    "special/pct%20.bin", "special/pct%2F.bin", "special/q?.bin",
    "special/hash#.bin", "special/all !$&'()*+,;=:@~%?#.bin",
    'special/other "<>\\^`{|}[].bin', "special/café.bin",
    "special/日本/リプレイ.bin", "special/dots/../up.bin", "special/up.bin",
    "special/dot/./here.bin", "special/dot/here.bin",
    "special//double-slash.bin", "special/double-slash.bin",
    "special/trailing/", "special/trailing", "/leading-slash.bin",
    "leading-slash.bin", "../other/secret.txt", "/other/secret.txt",
    "long/" + "k" * 1019,
]


UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def encode(key):
    return "".join(chr(b) if b in UNRESERVED else "%%%02X" % b for b in key.encode())


def refused(key):
    return any(seg in ("", ".", "..") for seg in key.split("/"))


def escaped(key):
    # as the module writes a key into the error log
    return "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\'
                   else "".join("\\x%02X" % b for b in c.encode())
                   for c in key)


out = []
for n, k in enumerate(keys, 22):
    title = k if len(k) < 60 else k[:40] + "... (%d bytes)" % len(k.encode())
    if refused(k):
        out.append(f"""=== TEST {n}: key {title}: refused
--- request
GET /s3
--- more_headers
X-Key: {k}
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "{escaped(k)}" has an empty, "." or ".." segment
""")
        continue
    out.append(f"""=== TEST {n}: key {title}
--- request
GET /s3
--- more_headers
X-Key: {k}
--- response_body
bucket=replays key={k}
--- s3_requests
GET /replays/{encode(k)}
""")
print("\n\n\n".join(out))
