#!/usr/bin/env python3
# Writes the seed corpora of the fuzz targets (t/fuzz/corpus/TARGET/) in
# the input formats the targets read (see each target's comment).  The
# output is committed; run it again after changing a format.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- uri_encode: flag byte (bit 0: keep "/"), then the key
for name, flag, key in [
    ("plain", 1, "games/1/replay.bin"),
    ("all-special", 1, "special/all !$&'()*+,;=:@~%?#.bin"),
    ("more-special", 1, 'special/other "<>\\^`{|}[].bin'),
    ("utf8", 1, "special/日本/リプレイ.bin"),
    ("dots", 1, "../other//./secret.txt"),
    ("no-slash", 0, "a/b c%2F"),
    ("bytes", 0, "".join(chr(i) for i in range(256))),
]:
    data = key.encode("utf-8") if name != "bytes" else bytes(range(256))
    write("uri_encode", name, bytes([flag]) + data)


# ---- sign
def s8(b):
    return bytes([len(b)]) + b


def s16(b):
    return struct.pack(">H", len(b)) + b


def sign_input(presign, method, path, query, payload, akid, secret, token,
               region, service, headers, expires, osize, debug=True):
    flags = (1 if presign else 0) | (8 if debug else 0)
    out = bytes([flags])
    out += s8(method) + s16(path) + s16(query) + s8(payload)
    out += s8(akid) + s8(secret) + s16(token) + s8(region) + s8(service)
    out += bytes([len(headers)])
    for name, value in headers:
        if name is None:
            out += bytes([0])              # "Host"
        else:
            out += bytes([1]) + s8(name)
        out += s16(value)
    out += struct.pack(">HH", expires >> 16, expires & 0xffff)
    out += struct.pack(">H", osize)
    return out


AKID = b"AKIAIOSFODNN7EXAMPLE"
SECRET = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EMPTY = b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HOST = b"examplebucket.s3.amazonaws.com"

write("sign", "aws-get-range", sign_input(
    False, b"GET", b"/test.txt", b"", EMPTY, AKID, SECRET, b"",
    b"us-east-1", b"s3",
    [(None, HOST), (b"range", b"bytes=0-9"),
     (b"x-amz-content-sha256", EMPTY), (b"x-amz-date", b"20130524T000000Z")],
    0, 512))
write("sign", "aws-presign", sign_input(
    True, b"GET", b"/test.txt", b"", b"", AKID, SECRET, b"",
    b"us-east-1", b"s3", [(None, HOST)], 86400, 1024))
write("sign", "token-query", sign_input(
    True, b"HEAD", b"/replays/special/a%20b.bin", b"a=1&b&&c=%zz&d=%41+",
    b"", AKID, SECRET, b"FQoGZXIvYXdzEJr//////////wEaDOVc+token", b"eu-west-1",
    b"s3", [(None, b"127.0.0.1:9000"), (b"X-Amz-Meta", b"  a   b  ")],
    604800, 2048))
write("sign", "repeated-headers", sign_input(
    False, b"GET", b"", b"", b"UNSIGNED-PAYLOAD", AKID, SECRET, b"tok",
    b"us-east-1", b"s3",
    [(b"X-B", b"2"), (None, HOST), (b"x-b", b"1"), (b"X-A", b"\t x \n y ")],
    0, 300))
write("sign", "long-path", sign_input(
    False, b"GET", b"/" + b"k" * 1500, b"q=" + b"%" * 600, EMPTY, AKID,
    SECRET * 3, b"", b"us-east-1", b"s3", [(None, HOST)], 0, 4096))


# ---- creds: a credentials file
write("creds", "plain", b"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
      b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
write("creds", "token-crlf", b"# comment\r\n; other\r\n[default]\r\n"
      b"AWS_Access_Key_Id=AKID\r\nsecret_access_key\t=\tSECRET \t\r\n"
      b"aws_session_token = TOKEN\r\nregion = eu-west-1\r\n")
write("creds", "errors", b"[prod]\nno equals here\naws_access_key_id =\n"
      b"aws_ = x\n= value\n  \t\n[default] \naws_access_key_id=a=b\n")
