#!/bin/sh
#
# Tests of the SigV4 command-line driver with AWS's published S3 examples.
#
#   sh t/unit/driver_test.sh build/sigv4_driver
#
# Prints "ok N - name" or "not ok N - name" per check and, last,
# "driver: N passed, M failed"; exits 1 on any failure.

driver=${1:?usage: sh t/unit/driver_test.sh path/to/sigv4_driver}

if [ ! -x "$driver" ]; then
    echo "driver_test: $driver is not an executable" >&2
    exit 2
fi

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 2' HUP INT TERM

passed=0
failed=0
n=0

check() {
    # check NAME COMMAND...: passes when COMMAND succeeds
    name=$1
    shift
    n=$((n + 1))

    if "$@"; then
        passed=$((passed + 1))
        echo "ok $n - $name"
    else
        failed=$((failed + 1))
        echo "not ok $n - $name"
        if [ -s "$tmp/out" ]; then
            sed 's/^/#   stdout: /' "$tmp/out"
        fi
        if [ -s "$tmp/err" ]; then
            sed 's/^/#   stderr: /' "$tmp/err"
        fi
    fi
}

last_line_has() {
    tail -n 1 "$tmp/out" | grep -F -q -e "$1"
}

status_is() {
    [ "$status" -eq "$1" ]
}

empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# sign OPTIONS... < request: runs the driver with the example credentials
sign() {
    "$driver" --access-key-id AKIAIOSFODNN7EXAMPLE \
        --secret-access-key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \
        --date 20130524T000000Z --region us-east-1 --service s3 \
        "$@" > "$tmp/out" 2> "$tmp/err"
    status=$?
}


# GET Object, header form; CRLF line ends and a body, as on the wire

printf 'GET /test.txt HTTP/1.1\r\nHost:examplebucket.s3.amazonaws.com\r\nRange:bytes=0-9\r\nx-amz-content-sha256:%s\r\nx-amz-date:20130524T000000Z\r\n\r\nignored body\r\n' \
    "$empty" > "$tmp/get.req"

sign --payload-hash "$empty" < "$tmp/get.req"
check "GET Object: exit 0" status_is 0
check "GET Object: Authorization" last_line_has \
"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"

# the same with LF line ends, -v and its canonical request first

tr -d '\r' < "$tmp/get.req" > "$tmp/get-lf.req"

sign -v --payload-hash "$empty" < "$tmp/get-lf.req"
check "GET Object, LF, -v: exit 0" status_is 0
check "GET Object, LF, -v: signature" last_line_has \
    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
check "GET Object, LF, -v: canonical request printed" \
    grep -q -x 'host;range;x-amz-content-sha256;x-amz-date' "$tmp/out"
check "GET Object, LF, -v: string to sign printed" \
    grep -q -x '7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972' \
    "$tmp/out"
check "GET Object, LF, -v: no secret printed" \
    eval '! grep -q wJalrXUtnFEMI "$tmp/out" "$tmp/err"'

# GET Object, presigned for a day

printf 'GET /test.txt HTTP/1.1\nHost:examplebucket.s3.amazonaws.com\n\n' \
    > "$tmp/presign.req"

sign --presign 86400 < "$tmp/presign.req"
check "presigned GET Object: exit 0" status_is 0
check "presigned GET Object: request target" last_line_has \
"/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"

# GET Bucket (List Objects): the query is sorted before signing

printf 'GET /?prefix=J&max-keys=2 HTTP/1.1\nHost:examplebucket.s3.amazonaws.com\nx-amz-date:20130524T000000Z\nx-amz-content-sha256:%s\n' \
    "$empty" > "$tmp/list.req"

sign --payload-hash "$empty" < "$tmp/list.req"
check "GET Bucket: signature" last_line_has \
    "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"

# bad usage: exit 2 and say why

"$driver" > "$tmp/out" 2> "$tmp/err" < /dev/null
status=$?
check "usage: no options, exit 2" status_is 2
check "usage: no options, message" grep -q 'is required' "$tmp/err"

sign --payload-hash "$empty" --presign 60 < "$tmp/get.req"
check "usage: both forms, exit 2" status_is 2
check "usage: both forms, message" grep -q 'exactly one of' "$tmp/err"

sign --presign 60 --bogus < "$tmp/get.req"
check "usage: unknown option, exit 2" status_is 2
check "usage: unknown option, message" grep -q 'unknown option' "$tmp/err"

# a request that is not one: exit 1

printf 'nonsense\n' > "$tmp/bad.req"
sign --payload-hash "$empty" < "$tmp/bad.req"
check "bad request: exit 1" status_is 1

echo "driver: $passed passed, $failed failed"

[ "$failed" -eq 0 ]
