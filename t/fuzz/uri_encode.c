
/*
 * Fuzz target: ngx_replay_sigv4_uri_encode(), the encoder every object key
 * goes through on its way to S3.
 *
 * Input: one flag byte (bit 0: keep "/"), then the key.  Invariants:
 *   - the length mode (dst NULL) gives exactly the length written, which
 *     stays within len..3*len (the output buffer is allocated at exactly
 *     that size: ASan catches a byte past it);
 *   - the output holds unreserved bytes, "/" when kept, and "%XX" with
 *     upper-case hex only for bytes that need it (S3's canonical form:
 *     never an unreserved byte encoded, never a "%" left bare);
 *   - decoding it gives the key back, byte for byte;
 *   - encoding is deterministic.
 */


#include "fuzz.h"
#include "ngx_http_replay_sigv4.h"


static int
unreserved(unsigned c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~';
}


static int
hex_value(unsigned c)
{
    if (c >= '0' && c <= '9') {
        return (int) (c - '0');
    }

    if (c >= 'A' && c <= 'F') {
        return (int) (c - 'A' + 10);
    }

    return -1;      /* lower-case hex is not S3's canonical form */
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             keep;
    size_t          len, n, w, i, d;
    unsigned        c;
    unsigned char  *src, *dst, *again, *dec;

    if (size == 0) {
        return 0;
    }

    keep = data[0] & 1;
    len = size - 1;

    /* the key at its exact size, away from the flag byte */
    src = malloc(len ? len : 1);
    fuzz_check(src != NULL);
    memcpy(src, data + 1, len);

    n = ngx_replay_sigv4_uri_encode(NULL, src, len, keep);
    fuzz_check(n >= len && n <= 3 * len);

    dst = malloc(n ? n : 1);
    again = malloc(n ? n : 1);
    dec = malloc(len ? len : 1);
    fuzz_check(dst && again && dec);

    w = ngx_replay_sigv4_uri_encode(dst, src, len, keep);
    fuzz_check(w == n);

    fuzz_check(ngx_replay_sigv4_uri_encode(again, src, len, keep) == n);
    fuzz_check(n == 0 || memcmp(dst, again, n) == 0);

    /* the alphabet, and the decode round trip */

    d = 0;

    for (i = 0; i < n; /* void */) {
        c = dst[i];

        if (c == '%') {
            fuzz_check(i + 2 < n);
            fuzz_check(hex_value(dst[i + 1]) >= 0);
            fuzz_check(hex_value(dst[i + 2]) >= 0);

            c = (unsigned) (hex_value(dst[i + 1]) << 4 | hex_value(dst[i + 2]));

            /* only what must be encoded is */
            fuzz_check(!unreserved(c));
            fuzz_check(!(keep && c == '/'));

            i += 3;

        } else {
            fuzz_check(unreserved(c) || (keep && c == '/'));
            i++;
        }

        fuzz_check(d < len);
        dec[d++] = (unsigned char) c;
    }

    fuzz_check(d == len);
    fuzz_check(len == 0 || memcmp(dec, src, len) == 0);

    free(src);
    free(dst);
    free(again);
    free(dec);

    return 0;
}
