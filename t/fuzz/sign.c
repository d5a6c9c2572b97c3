
/*
 * Fuzz target: ngx_replay_sigv4_sign() and ngx_replay_sigv4_presign()
 * with fuzzed method, path, query, headers, payload hash, credentials,
 * region, service, date, expiry and output buffer size.
 *
 * Invariants:
 *   - no crash, no read or write outside the inputs and the output
 *     buffer (each allocated at its exact size: ASan sees one byte past);
 *   - a result is OK, TOO_LONG, BAD_INPUT or ERROR, and *out_len is 0
 *     unless OK, at most the buffer's size when OK;
 *   - deterministic: a fresh signer, and one with the signing key cached,
 *     write the same bytes;
 *   - the length is exact: a buffer of out_len bytes is enough, one byte
 *     less is TOO_LONG;
 *   - the shape: "AWS4-HMAC-SHA256 Credential=AKID/DATE/..., Signature=
 *     <64 hex>" for the header form, "PATH?...&X-Amz-Signature=<64 hex>"
 *     for the presigned one;
 *   - the signature is the HMAC of the string to sign the debug callback
 *     was given, with the key derived here independently, and that
 *     string's last line is the SHA-256 of the canonical request given:
 *     the streamed hashing and the texts agree (the 512-byte staging
 *     buffer's edges included);
 *   - the texts do not depend on the secret: with another secret they
 *     are the same, byte for byte (so the secret is in neither), and the
 *     signature is then the reference one for that secret.
 */


#include "fuzz.h"
#include "ngx_http_replay_sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>


#define MAX_HEADERS  (NGX_REPLAY_SIGV4_MAX_HEADERS + 4)


typedef struct {
    unsigned char  *creq;
    size_t          creq_len;
    unsigned char  *sts;
    size_t          sts_len;
    int             calls;
} debug_t;


static void
debug_cb(void *data, const char *what, const unsigned char *text, size_t len)
{
    debug_t        *d = data;
    unsigned char  *copy;

    copy = malloc(len ? len : 1);
    fuzz_check(copy != NULL);

    if (len) {
        memcpy(copy, text, len);
    }

    if (strcmp(what, "canonical request") == 0) {
        free(d->creq);
        d->creq = copy;
        d->creq_len = len;

    } else {
        fuzz_check(strcmp(what, "string to sign") == 0);
        free(d->sts);
        d->sts = copy;
        d->sts_len = len;
    }

    d->calls++;
}


static void
hex(char *out, const unsigned char *in, size_t n)
{
    static const char  digits[] = "0123456789abcdef";

    while (n--) {
        *out++ = digits[*in >> 4];
        *out++ = digits[*in++ & 0xf];
    }
}


static int
is_lower_hex(const unsigned char *p, size_t n)
{
    while (n--) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return 0;
        }

        p++;
    }

    return 1;
}


/* the SigV4 key and signature, computed here without the signer */

static void
reference_signature(const ngx_replay_sigv4_creds_t *c, const char *date,
    const unsigned char *sts, size_t sts_len, char out[64])
{
    unsigned int    n;
    unsigned char  *secret, k1[32], k2[32], sig[32];

    secret = malloc(4 + c->secret_access_key.len);
    fuzz_check(secret != NULL);

    memcpy(secret, "AWS4", 4);

    if (c->secret_access_key.len) {
        memcpy(secret + 4, c->secret_access_key.data,
               c->secret_access_key.len);
    }

    fuzz_check(HMAC(EVP_sha256(), secret, (int) (4 + c->secret_access_key.len),
                    (const unsigned char *) date, 8, k1, &n));
    fuzz_check(HMAC(EVP_sha256(), k1, 32, c->region.data, c->region.len,
                    k2, &n));
    fuzz_check(HMAC(EVP_sha256(), k2, 32, c->service.data, c->service.len,
                    k1, &n));
    fuzz_check(HMAC(EVP_sha256(), k1, 32,
                    (const unsigned char *) "aws4_request", 12, k2, &n));
    fuzz_check(HMAC(EVP_sha256(), k2, 32, sts, sts_len, sig, &n));

    hex(out, sig, 32);
    free(secret);
}


static int
run(ngx_replay_sigv4_creds_t *creds, ngx_replay_sigv4_request_t *req,
    int presign, unsigned long expires, unsigned char *out, size_t size,
    size_t *len)
{
    int  rc;

    *len = (size_t) -1;

    rc = presign
         ? ngx_replay_sigv4_presign(creds, req, expires, out, size, len)
         : ngx_replay_sigv4_sign(creds, req, out, size, len);

    fuzz_check(rc == NGX_REPLAY_SIGV4_OK || rc == NGX_REPLAY_SIGV4_TOO_LONG
               || rc == NGX_REPLAY_SIGV4_BAD_INPUT
               || rc == NGX_REPLAY_SIGV4_ERROR);
    fuzz_check(rc == NGX_REPLAY_SIGV4_OK ? *len <= size : *len == 0);

    return rc;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                          presign, rc, rc2;
    char                         ref[64];
    size_t                       i, n, nh, osize, len, len2;
    unsigned                     flags;
    unsigned long                expires;
    fuzz_input_t                 in;
    unsigned char               *out, *out2, *buf[2 * MAX_HEADERS + 16];
    unsigned char                digest[32];
    char                         digest_hex[64];
    debug_t                      dbg;
    ngx_replay_sigv4_creds_t     creds, fresh;
    ngx_replay_sigv4_request_t   req;
    ngx_replay_sigv4_header_t    headers[MAX_HEADERS];
    static const char            valid_date[] = "20130524T000000Z";

    in.p = data;
    in.left = size;

    memset(&creds, 0, sizeof(creds));
    memset(&req, 0, sizeof(req));
    memset(&dbg, 0, sizeof(dbg));
    memset(buf, 0, sizeof(buf));
    n = 0;

    flags = fuzz_u8(&in);
    presign = flags & 1;

    /* bit 1: take the date as it comes (mostly invalid); else a valid one
     * with fuzzed digits */
    if (flags & 2) {
        for (i = 0; i < NGX_REPLAY_SIGV4_DATE_LEN; i++) {
            req.amz_date[i] = (char) fuzz_u8(&in);
        }

    } else {
        memcpy(req.amz_date, valid_date, NGX_REPLAY_SIGV4_DATE_LEN);

        for (i = 0; i < NGX_REPLAY_SIGV4_DATE_LEN; i++) {
            if (i != 8 && i != 15 && (flags & 4)) {
                req.amz_date[i] = (char) ('0' + fuzz_u8(&in) % 10);
            }
        }
    }

    if (flags & 8) {
        req.debug = debug_cb;
        req.debug_data = &dbg;
    }

#define STR(field, max)                                                      \
    (field).data = buf[n++] = fuzz_str(&in, max, &(field).len)

    STR(req.method, 16);
    STR(req.path, 2048);
    STR(req.query, 2048);
    STR(req.payload_hash, 80);
    STR(creds.access_key_id, 64);
    STR(creds.secret_access_key, 128);
    STR(creds.session_token, 1024);
    STR(creds.region, 32);
    STR(creds.service, 16);

    nh = fuzz_u8(&in) % (MAX_HEADERS + 1);

    for (i = 0; i < nh; i++) {
        /* one header in three is "host", so that most requests are valid */
        if (fuzz_u8(&in) % 3 == 0) {
            headers[i].name.data = (const unsigned char *) "Host";
            headers[i].name.len = 4;

        } else {
            STR(headers[i].name, 40);
        }

        STR(headers[i].value, 300);
    }

#undef STR

    req.headers = nh ? headers : NULL;
    req.nheaders = nh;

    expires = (unsigned long) fuzz_u16(&in) << 16 | fuzz_u16(&in);
    osize = fuzz_u16(&in) % 8192;

    out = malloc(osize ? osize : 1);
    fuzz_check(out != NULL);

    fresh = creds;

    rc = run(&creds, &req, presign, expires, out, osize, &len);

    if (rc == NGX_REPLAY_SIGV4_OK) {
        /* the shape of the output */

        if (presign) {
            const unsigned char  *path = req.path.len ? req.path.data
                                         : (const unsigned char *) "/";
            size_t                plen = req.path.len ? req.path.len : 1;

            fuzz_check(len > plen + 1 + 17 + 64);
            fuzz_check(memcmp(out, path, plen) == 0 && out[plen] == '?');
            fuzz_check(memcmp(out + len - 64 - 17, "&X-Amz-Signature=", 17)
                       == 0);

        } else {
            fuzz_check(len > 28 + 12 + 64);
            fuzz_check(memcmp(out, "AWS4-HMAC-SHA256 Credential=", 28) == 0);
            fuzz_check(memcmp(out + 28, creds.access_key_id.data,
                              creds.access_key_id.len) == 0);
            fuzz_check(memcmp(out + len - 64 - 12, ", Signature=", 12) == 0);
        }

        fuzz_check(is_lower_hex(out + len - 64, 64));

        /* the texts, and an independent signature over them */

        if (req.debug) {
            fuzz_check(dbg.calls == 2 && dbg.creq && dbg.sts);

            fuzz_check(dbg.creq_len > req.method.len
                       && memcmp(dbg.creq, req.method.data, req.method.len)
                          == 0
                       && dbg.creq[req.method.len] == '\n');

            SHA256(dbg.creq, dbg.creq_len, digest);
            hex(digest_hex, digest, 32);

            fuzz_check(dbg.sts_len > 64 + 17 + 17);
            fuzz_check(memcmp(dbg.sts, "AWS4-HMAC-SHA256\n", 17) == 0);
            fuzz_check(memcmp(dbg.sts + 17, req.amz_date,
                              NGX_REPLAY_SIGV4_DATE_LEN) == 0);
            fuzz_check(memcmp(dbg.sts + dbg.sts_len - 64, digest_hex, 64)
                       == 0);

            reference_signature(&creds, req.amz_date, dbg.sts, dbg.sts_len,
                                ref);
            fuzz_check(memcmp(out + len - 64, ref, 64) == 0);

            /*
             * the texts do not depend on the secret: with another secret
             * of the same length they are the same, byte for byte (so
             * the secret is in neither), and the signature matches the
             * reference with that secret
             */
            if (creds.secret_access_key.len) {
                debug_t                    dbg2;
                unsigned char             *other;
                ngx_replay_sigv4_creds_t   creds2;

                other = malloc(creds.secret_access_key.len);
                fuzz_check(other != NULL);

                for (i = 0; i < creds.secret_access_key.len; i++) {
                    other[i] = creds.secret_access_key.data[i] ^ 0x5a;
                }

                creds2 = fresh;
                creds2.secret_access_key.data = other;

                memset(&dbg2, 0, sizeof(dbg2));
                req.debug_data = &dbg2;

                out2 = malloc(len);
                fuzz_check(out2 != NULL);

                rc2 = run(&creds2, &req, presign, expires, out2, len, &len2);
                fuzz_check(rc2 == NGX_REPLAY_SIGV4_OK && len2 == len);
                fuzz_check(dbg2.calls == 2);
                fuzz_check(dbg2.creq_len == dbg.creq_len
                           && memcmp(dbg2.creq, dbg.creq, dbg.creq_len) == 0);
                fuzz_check(dbg2.sts_len == dbg.sts_len
                           && memcmp(dbg2.sts, dbg.sts, dbg.sts_len) == 0);

                reference_signature(&creds2, req.amz_date, dbg2.sts,
                                    dbg2.sts_len, ref);
                fuzz_check(memcmp(out2 + len - 64, ref, 64) == 0);
                fuzz_check(memcmp(out2, out, len - 64) == 0);

                req.debug_data = &dbg;

                free(out2);
                free(other);
                free(dbg2.creq);
                free(dbg2.sts);
            }
        }

        /* deterministic, with a fresh key and with the cached one */

        out2 = malloc(len ? len : 1);
        fuzz_check(out2 != NULL);

        req.debug = NULL;

        rc2 = run(&fresh, &req, presign, expires, out2, len, &len2);
        fuzz_check(rc2 == NGX_REPLAY_SIGV4_OK && len2 == len);
        fuzz_check(memcmp(out, out2, len) == 0);

        rc2 = run(&creds, &req, presign, expires, out2, len, &len2);
        fuzz_check(rc2 == NGX_REPLAY_SIGV4_OK && len2 == len);
        fuzz_check(memcmp(out, out2, len) == 0);

        /* one byte less does not fit */
        if (len > 0) {
            rc2 = run(&creds, &req, presign, expires, out2, len - 1, &len2);
            fuzz_check(rc2 == NGX_REPLAY_SIGV4_TOO_LONG);
        }

        free(out2);

    } else if (rc == NGX_REPLAY_SIGV4_TOO_LONG) {
        /* TOO_LONG is about the output only: a big enough buffer works */
        out2 = malloc(65536);
        fuzz_check(out2 != NULL);
        req.debug = NULL;
        rc2 = run(&fresh, &req, presign, expires, out2, 65536, &len2);
        fuzz_check(rc2 == NGX_REPLAY_SIGV4_OK
                   || rc2 == NGX_REPLAY_SIGV4_TOO_LONG);
        free(out2);
    }

    free(out);
    free(dbg.creq);
    free(dbg.sts);

    for (i = 0; i < n; i++) {
        free(buf[i]);
    }

    return 0;
}
