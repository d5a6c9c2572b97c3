#!/usr/bin/env python3
# Writes the special-key blocks of t/020-stream.t (which gives them its
# default configuration) (one block per key the
# services upload; see t/services/schema.sql).  Run it after changing the
# list; its output is committed, the test does not run it.
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
out = []
for n, k in enumerate(keys, 1):
    title = k if len(k) < 60 else k[:40] + "... (%d bytes)" % len(k.encode())
    out.append(f"""=== KEY {n}: {title}
--- request
GET /s3
--- more_headers
X-Key: {k}
--- response_body
bucket=replays key={k}
""")
print("\n\n\n".join(out), end="")
