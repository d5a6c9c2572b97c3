
/*
 * AWS Signature Version 4 for S3, see ngx_http_replay_sigv4.h.
 *
 * No nginx types or headers here: the file also builds alone for
 * t/unit/.  The canonical request is never built as a whole: its pieces
 * are streamed through a small staging buffer into SHA-256, and the
 * query and header lists are sorted through index arrays on the stack.
 * Only the debug callback gets the texts, in a buffer made for it.
 */


#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include "ngx_http_replay_sigv4.h"


#define NGX_REPLAY_SIGV4_ALGORITHM      "AWS4-HMAC-SHA256"
#define NGX_REPLAY_SIGV4_UNSIGNED       "UNSIGNED-PAYLOAD"
#define NGX_REPLAY_SIGV4_TERMINATOR     "aws4_request"

/* X-Amz-* parameters of a presigned request, less X-Amz-Signature */
#define NGX_REPLAY_SIGV4_PRESIGN_PARAMS 6

/* akid "/" date "/" region "/" service "/aws4_request" */
#define NGX_REPLAY_SIGV4_CRED_PARTS     8

/* an HMAC-SHA256 key longer than the SHA-256 block is hashed first */
#define NGX_REPLAY_SIGV4_BLOCK          64

#define NGX_REPLAY_SIGV4_STAGE          512


#define ngx_replay_sigv4_lower(c)                                            \
    (((c) >= 'A' && (c) <= 'Z') ? ((c) | 0x20) : (c))

#define ngx_replay_sigv4_space(c)                                            \
    ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n'                 \
     || (c) == '\v' || (c) == '\f')

#define ngx_replay_sigv4_digit(c)  ((c) >= '0' && (c) <= '9')

#define ngx_replay_sigv4_string(s)  { (const unsigned char *) (s),          \
                                      sizeof(s) - 1 }


/*
 * A byte string made of pieces, read as one; optionally percent-decoded
 * (a query name or value off the wire) or lower-cased (header names).
 */
typedef struct {
    const ngx_replay_sigv4_str_t  *parts;
    size_t                         nparts;
    unsigned                       decode:1;
    unsigned                       lower:1;
} ngx_replay_sigv4_src_t;


/* reads a source byte by byte, optionally S3-URI-encoding it */
typedef struct {
    const ngx_replay_sigv4_src_t  *src;
    size_t                         part;
    size_t                         off;
    unsigned char                  hex[2];
    unsigned                       nhex;
} ngx_replay_sigv4_iter_t;


typedef struct {
    ngx_replay_sigv4_str_t         name_part;
    ngx_replay_sigv4_str_t         value_part;
    ngx_replay_sigv4_src_t         name;
    ngx_replay_sigv4_src_t         value;
} ngx_replay_sigv4_param_t;


/*
 * Where text goes: with md set, a staging buffer flushed into SHA-256
 * (and into the debug copy); without, the caller's output buffer.
 */
typedef struct {
    unsigned char                 *start;
    unsigned char                 *pos;
    unsigned char                 *end;
    EVP_MD_CTX                    *md;
    unsigned char                 *debug;
    size_t                         debug_len;
    size_t                         debug_size;
    unsigned                       debug_on:1;
    int                            rc;
} ngx_replay_sigv4_sink_t;


typedef struct {
    ngx_replay_sigv4_creds_t      *creds;
    ngx_replay_sigv4_request_t    *req;

    ngx_replay_sigv4_str_t         path;

    size_t                         hidx[NGX_REPLAY_SIGV4_MAX_HEADERS];
    size_t                         nheaders;

    ngx_replay_sigv4_str_t         signed_parts[
                                       2 * NGX_REPLAY_SIGV4_MAX_HEADERS];
    ngx_replay_sigv4_src_t         signed_headers;

    ngx_replay_sigv4_str_t         cred_parts[NGX_REPLAY_SIGV4_CRED_PARTS];
    ngx_replay_sigv4_src_t         credential;

    ngx_replay_sigv4_param_t       params[NGX_REPLAY_SIGV4_MAX_PARAMS
                                          + NGX_REPLAY_SIGV4_PRESIGN_PARAMS];
    size_t                         pidx[NGX_REPLAY_SIGV4_MAX_PARAMS
                                        + NGX_REPLAY_SIGV4_PRESIGN_PARAMS];
    size_t                         nparams;
} ngx_replay_sigv4_ctx_t;


static int ngx_replay_sigv4_unreserved(int c);
static int ngx_replay_sigv4_hex_value(int c);
static void ngx_replay_sigv4_hex(unsigned char *dst, const unsigned char *src,
    size_t len);
static void ngx_replay_sigv4_iter_init(ngx_replay_sigv4_iter_t *it,
    const ngx_replay_sigv4_src_t *src);
static int ngx_replay_sigv4_iter_byte(ngx_replay_sigv4_iter_t *it);
static int ngx_replay_sigv4_iter_encoded(ngx_replay_sigv4_iter_t *it);
static int ngx_replay_sigv4_src_cmp(const ngx_replay_sigv4_src_t *a,
    const ngx_replay_sigv4_src_t *b);
static int ngx_replay_sigv4_src_is(const ngx_replay_sigv4_src_t *src,
    const char *lower);
static int ngx_replay_sigv4_name_cmp(const ngx_replay_sigv4_str_t *a,
    const ngx_replay_sigv4_str_t *b);

static void ngx_replay_sigv4_sink_init(ngx_replay_sigv4_sink_t *s,
    unsigned char *buf, size_t size, EVP_MD_CTX *md, int debug);
static int ngx_replay_sigv4_sink_flush(ngx_replay_sigv4_sink_t *s);
static void ngx_replay_sigv4_put(ngx_replay_sigv4_sink_t *s, int c);
static void ngx_replay_sigv4_write(ngx_replay_sigv4_sink_t *s,
    const void *data, size_t len);
static void ngx_replay_sigv4_write_src(ngx_replay_sigv4_sink_t *s,
    const ngx_replay_sigv4_src_t *src, int encode);
static void ngx_replay_sigv4_write_query(ngx_replay_sigv4_sink_t *s,
    ngx_replay_sigv4_ctx_t *ctx);
static void ngx_replay_sigv4_write_headers(ngx_replay_sigv4_sink_t *s,
    ngx_replay_sigv4_ctx_t *ctx);

static int ngx_replay_sigv4_prepare(ngx_replay_sigv4_ctx_t *ctx,
    ngx_replay_sigv4_creds_t *creds, ngx_replay_sigv4_request_t *req);
static int ngx_replay_sigv4_parse_query(ngx_replay_sigv4_ctx_t *ctx);
static void ngx_replay_sigv4_add_param(ngx_replay_sigv4_ctx_t *ctx,
    const char *name, const ngx_replay_sigv4_src_t *value);
static int ngx_replay_sigv4_signature(ngx_replay_sigv4_ctx_t *ctx,
    const ngx_replay_sigv4_str_t *payload_hash, unsigned char *sig);
static int ngx_replay_sigv4_hmac(const unsigned char *key,
    const ngx_replay_sigv4_str_t *parts, size_t nparts, unsigned char *out);


static const unsigned char  ngx_replay_sigv4_hex_lower[] =
    "0123456789abcdef";
static const unsigned char  ngx_replay_sigv4_hex_upper[] =
    "0123456789ABCDEF";

static const ngx_replay_sigv4_str_t  ngx_replay_sigv4_host =
    ngx_replay_sigv4_string("host");
static const ngx_replay_sigv4_str_t  ngx_replay_sigv4_slash =
    ngx_replay_sigv4_string("/");
static const ngx_replay_sigv4_str_t  ngx_replay_sigv4_semicolon =
    ngx_replay_sigv4_string(";");
static const ngx_replay_sigv4_str_t  ngx_replay_sigv4_lf =
    ngx_replay_sigv4_string("\n");
static const ngx_replay_sigv4_str_t  ngx_replay_sigv4_terminator =
    ngx_replay_sigv4_string("/" NGX_REPLAY_SIGV4_TERMINATOR);
static const ngx_replay_sigv4_str_t  ngx_replay_sigv4_sts_head =
    ngx_replay_sigv4_string(NGX_REPLAY_SIGV4_ALGORITHM "\n");


void
ngx_replay_sigv4_format_date(time_t t, char out[NGX_REPLAY_SIGV4_DATE_LEN])
{
    int        i, n;
    struct tm  tm;

    if (gmtime_r(&t, &tm) == NULL) {
        memset(&tm, 0, sizeof(struct tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
    }

    /* filled from the right: "YYYYMMDD" "T" "HHMMSS" "Z" */

    i = NGX_REPLAY_SIGV4_DATE_LEN;

    out[--i] = 'Z';
    out[--i] = (char) ('0' + tm.tm_sec % 10);
    out[--i] = (char) ('0' + tm.tm_sec / 10 % 10);
    out[--i] = (char) ('0' + tm.tm_min % 10);
    out[--i] = (char) ('0' + tm.tm_min / 10);
    out[--i] = (char) ('0' + tm.tm_hour % 10);
    out[--i] = (char) ('0' + tm.tm_hour / 10);
    out[--i] = 'T';
    out[--i] = (char) ('0' + tm.tm_mday % 10);
    out[--i] = (char) ('0' + tm.tm_mday / 10);
    out[--i] = (char) ('0' + (tm.tm_mon + 1) % 10);
    out[--i] = (char) ('0' + (tm.tm_mon + 1) / 10);

    /* years past 9999 keep their last four digits */

    n = tm.tm_year + 1900;

    if (n < 0) {
        n = 0;
    }

    for ( /* void */ ; i > 0; n /= 10) {
        out[--i] = (char) ('0' + n % 10);
    }
}


size_t
ngx_replay_sigv4_uri_encode(unsigned char *dst, const unsigned char *src,
    size_t len, int keep_slash)
{
    size_t          n;
    unsigned char   c;
    unsigned char  *p;

    if (dst == NULL) {
        n = 0;

        while (len--) {
            c = *src++;
            n += (ngx_replay_sigv4_unreserved(c) || (c == '/' && keep_slash))
                 ? 1 : 3;
        }

        return n;
    }

    p = dst;

    while (len--) {
        c = *src++;

        if (ngx_replay_sigv4_unreserved(c) || (c == '/' && keep_slash)) {
            *p++ = c;
            continue;
        }

        *p++ = '%';
        *p++ = ngx_replay_sigv4_hex_upper[c >> 4];
        *p++ = ngx_replay_sigv4_hex_upper[c & 0xf];
    }

    return (size_t) (p - dst);
}


int
ngx_replay_sigv4_signing_key(ngx_replay_sigv4_creds_t *creds,
    const char *date)
{
    int             rc;
    size_t          len;
    unsigned int    n;
    EVP_MD_CTX     *md;
    unsigned char   secret[NGX_REPLAY_SIGV4_BLOCK];
    unsigned char   k1[EVP_MAX_MD_SIZE], k2[EVP_MAX_MD_SIZE];

    if (date == NULL) {
        return NGX_REPLAY_SIGV4_ERROR;
    }

    if (creds->key_valid && memcmp(creds->key_date, date, 8) == 0) {
        return NGX_REPLAY_SIGV4_OK;
    }

    creds->key_valid = 0;

    /*
     * kSecret is "AWS4" + secret; HMAC hashes a key longer than a block
     * before use, so a long one is hashed here into the same key rather
     * than concatenated on the heap.
     */

    len = 4 + creds->secret_access_key.len;

    if (len <= NGX_REPLAY_SIGV4_BLOCK) {
        memcpy(secret, "AWS4", 4);

        if (creds->secret_access_key.len) {
            memcpy(secret + 4, creds->secret_access_key.data,
                   creds->secret_access_key.len);
        }

    } else {
        md = EVP_MD_CTX_new();
        if (md == NULL) {
            return NGX_REPLAY_SIGV4_ERROR;
        }

        rc = EVP_DigestInit_ex(md, EVP_sha256(), NULL)
             && EVP_DigestUpdate(md, "AWS4", 4)
             && EVP_DigestUpdate(md, creds->secret_access_key.data,
                                 creds->secret_access_key.len)
             && EVP_DigestFinal_ex(md, secret, &n);

        EVP_MD_CTX_free(md);

        if (!rc) {
            OPENSSL_cleanse(secret, sizeof(secret));
            return NGX_REPLAY_SIGV4_ERROR;
        }

        len = n;
    }

    rc = HMAC(EVP_sha256(), secret, (int) len,
              (const unsigned char *) date, 8, k1, &n) != NULL
         && HMAC(EVP_sha256(), k1, 32, creds->region.data, creds->region.len,
                 k2, &n) != NULL
         && HMAC(EVP_sha256(), k2, 32, creds->service.data,
                 creds->service.len, k1, &n) != NULL
         && HMAC(EVP_sha256(), k1, 32,
                 (const unsigned char *) NGX_REPLAY_SIGV4_TERMINATOR,
                 sizeof(NGX_REPLAY_SIGV4_TERMINATOR) - 1, k2, &n) != NULL;

    if (rc) {
        memcpy(creds->key, k2, 32);
        memcpy(creds->key_date, date, 8);
        creds->key_valid = 1;
        creds->key_derivations++;
    }

    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(k1, sizeof(k1));
    OPENSSL_cleanse(k2, sizeof(k2));

    return rc ? NGX_REPLAY_SIGV4_OK : NGX_REPLAY_SIGV4_ERROR;
}


int
ngx_replay_sigv4_sign(ngx_replay_sigv4_creds_t *creds,
    ngx_replay_sigv4_request_t *req, unsigned char *out, size_t size,
    size_t *out_len)
{
    int                      rc;
    unsigned char            sig[64];
    ngx_replay_sigv4_ctx_t   ctx;
    ngx_replay_sigv4_sink_t  s;

    *out_len = 0;

    if (req->payload_hash.len == 0) {
        return NGX_REPLAY_SIGV4_BAD_INPUT;
    }

    rc = ngx_replay_sigv4_prepare(&ctx, creds, req);
    if (rc != NGX_REPLAY_SIGV4_OK) {
        return rc;
    }

    rc = ngx_replay_sigv4_signature(&ctx, &req->payload_hash, sig);
    if (rc != NGX_REPLAY_SIGV4_OK) {
        return rc;
    }

    ngx_replay_sigv4_sink_init(&s, out, size, NULL, 0);

    ngx_replay_sigv4_write(&s, NGX_REPLAY_SIGV4_ALGORITHM " Credential=",
                           sizeof(NGX_REPLAY_SIGV4_ALGORITHM " Credential=")
                           - 1);
    ngx_replay_sigv4_write_src(&s, &ctx.credential, 0);
    ngx_replay_sigv4_write(&s, ", SignedHeaders=",
                           sizeof(", SignedHeaders=") - 1);
    ngx_replay_sigv4_write_src(&s, &ctx.signed_headers, 0);
    ngx_replay_sigv4_write(&s, ", Signature=", sizeof(", Signature=") - 1);
    ngx_replay_sigv4_write(&s, sig, sizeof(sig));

    if (s.rc != NGX_REPLAY_SIGV4_OK) {
        return s.rc;
    }

    *out_len = (size_t) (s.pos - out);

    return NGX_REPLAY_SIGV4_OK;
}


int
ngx_replay_sigv4_presign(ngx_replay_sigv4_creds_t *creds,
    ngx_replay_sigv4_request_t *req, unsigned long expires,
    unsigned char *out, size_t size, size_t *out_len)
{
    int                      rc;
    size_t                   i, j;
    unsigned char            sig[64], digits[24], *p;
    ngx_replay_sigv4_str_t   algorithm, date, expiry, token;
    ngx_replay_sigv4_str_t   unsigned_payload;
    ngx_replay_sigv4_src_t   algorithm_src, date_src, expiry_src, token_src;
    ngx_replay_sigv4_ctx_t   ctx;
    ngx_replay_sigv4_sink_t  s;

    static const char  *reserved[] = {
        "x-amz-algorithm", "x-amz-credential", "x-amz-date",
        "x-amz-expires", "x-amz-signedheaders", "x-amz-security-token",
        "x-amz-signature"
    };

    *out_len = 0;

    rc = ngx_replay_sigv4_prepare(&ctx, creds, req);
    if (rc != NGX_REPLAY_SIGV4_OK) {
        return rc;
    }

    /* the request's own X-Amz-* would be signed twice or contradict ours */

    for (i = 0; i < ctx.nparams; i++) {
        for (j = 0; j < sizeof(reserved) / sizeof(reserved[0]); j++) {
            if (ngx_replay_sigv4_src_is(&ctx.params[i].name, reserved[j])) {
                return NGX_REPLAY_SIGV4_BAD_INPUT;
            }
        }
    }

    p = digits + sizeof(digits);

    do {
        *--p = (unsigned char) ('0' + expires % 10);
        expires /= 10;
    } while (expires);

    algorithm.data = (const unsigned char *) NGX_REPLAY_SIGV4_ALGORITHM;
    algorithm.len = sizeof(NGX_REPLAY_SIGV4_ALGORITHM) - 1;
    date.data = (const unsigned char *) req->amz_date;
    date.len = NGX_REPLAY_SIGV4_DATE_LEN;
    expiry.data = p;
    expiry.len = (size_t) (digits + sizeof(digits) - p);
    token = creds->session_token;

    memset(&algorithm_src, 0, sizeof(ngx_replay_sigv4_src_t));
    date_src = algorithm_src;
    expiry_src = algorithm_src;
    token_src = algorithm_src;

    algorithm_src.parts = &algorithm;
    algorithm_src.nparts = 1;
    date_src.parts = &date;
    date_src.nparts = 1;
    expiry_src.parts = &expiry;
    expiry_src.nparts = 1;
    token_src.parts = &token;
    token_src.nparts = 1;

    ngx_replay_sigv4_add_param(&ctx, "X-Amz-Algorithm", &algorithm_src);
    ngx_replay_sigv4_add_param(&ctx, "X-Amz-Credential", &ctx.credential);
    ngx_replay_sigv4_add_param(&ctx, "X-Amz-Date", &date_src);
    ngx_replay_sigv4_add_param(&ctx, "X-Amz-Expires", &expiry_src);
    ngx_replay_sigv4_add_param(&ctx, "X-Amz-SignedHeaders",
                               &ctx.signed_headers);

    if (token.len) {
        /* S3, unlike some services, signs the token in a presigned URL */
        ngx_replay_sigv4_add_param(&ctx, "X-Amz-Security-Token", &token_src);
    }

    unsigned_payload.data = (const unsigned char *) NGX_REPLAY_SIGV4_UNSIGNED;
    unsigned_payload.len = sizeof(NGX_REPLAY_SIGV4_UNSIGNED) - 1;

    rc = ngx_replay_sigv4_signature(&ctx, &unsigned_payload, sig);
    if (rc != NGX_REPLAY_SIGV4_OK) {
        return rc;
    }

    ngx_replay_sigv4_sink_init(&s, out, size, NULL, 0);

    ngx_replay_sigv4_write(&s, ctx.path.data, ctx.path.len);
    ngx_replay_sigv4_put(&s, '?');
    ngx_replay_sigv4_write_query(&s, &ctx);
    ngx_replay_sigv4_write(&s, "&X-Amz-Signature=",
                           sizeof("&X-Amz-Signature=") - 1);
    ngx_replay_sigv4_write(&s, sig, sizeof(sig));

    if (s.rc != NGX_REPLAY_SIGV4_OK) {
        return s.rc;
    }

    *out_len = (size_t) (s.pos - out);

    return NGX_REPLAY_SIGV4_OK;
}


/*
 * Checks the request, sorts its headers, splits its query and makes sure
 * the signing key is there; common to both forms.
 */

static int
ngx_replay_sigv4_prepare(ngx_replay_sigv4_ctx_t *ctx,
    ngx_replay_sigv4_creds_t *creds, ngx_replay_sigv4_request_t *req)
{
    int                         host, bad;
    size_t                      i, j, k, n;
    const char                 *d;
    ngx_replay_sigv4_header_t  *h;

    ctx->creds = creds;
    ctx->req = req;

    if (req->method.len == 0
        || creds->access_key_id.len == 0
        || creds->region.len == 0
        || creds->service.len == 0)
    {
        return NGX_REPLAY_SIGV4_BAD_INPUT;
    }

    d = req->amz_date;

    /* "YYYYMMDDTHHMMSSZ" */

    for (i = 0; i < NGX_REPLAY_SIGV4_DATE_LEN; i++) {

        switch (i) {

        case 8:
            bad = (d[i] != 'T');
            break;

        case 15:
            bad = (d[i] != 'Z');
            break;

        default:
            bad = !ngx_replay_sigv4_digit(d[i]);
        }

        if (bad) {
            return NGX_REPLAY_SIGV4_BAD_INPUT;
        }
    }

    /* S3 signs the path as sent; an empty one is sent as "/" */

    ctx->path = req->path;

    if (ctx->path.len == 0) {
        ctx->path = ngx_replay_sigv4_slash;
    }

    /* headers: stable insertion sort, so repeated values keep their order */

    n = req->nheaders;

    if (n == 0 || n > NGX_REPLAY_SIGV4_MAX_HEADERS || req->headers == NULL) {
        return NGX_REPLAY_SIGV4_BAD_INPUT;
    }

    host = 0;

    for (i = 0; i < n; i++) {
        h = &req->headers[i];

        if (h->name.len == 0) {
            return NGX_REPLAY_SIGV4_BAD_INPUT;
        }

        if (ngx_replay_sigv4_name_cmp(&h->name, &ngx_replay_sigv4_host) == 0) {
            host = 1;
        }

        k = i;

        for (j = i; j > 0; j--) {
            if (ngx_replay_sigv4_name_cmp(&req->headers[ctx->hidx[j - 1]].name,
                                          &h->name)
                <= 0)
            {
                break;
            }

            ctx->hidx[j] = ctx->hidx[j - 1];
        }

        ctx->hidx[j] = k;
    }

    if (!host) {
        return NGX_REPLAY_SIGV4_BAD_INPUT;
    }

    ctx->nheaders = n;

    /* "host;range;...": each distinct name once, lower-cased on reading */

    k = 0;

    for (i = 0; i < n; i++) {
        h = &req->headers[ctx->hidx[i]];

        if (i > 0) {
            if (ngx_replay_sigv4_name_cmp(&req->headers[ctx->hidx[i - 1]].name,
                                          &h->name)
                == 0)
            {
                continue;
            }

            ctx->signed_parts[k++] = ngx_replay_sigv4_semicolon;
        }

        ctx->signed_parts[k++] = h->name;
    }

    memset(&ctx->signed_headers, 0, sizeof(ngx_replay_sigv4_src_t));
    ctx->signed_headers.parts = ctx->signed_parts;
    ctx->signed_headers.nparts = k;
    ctx->signed_headers.lower = 1;

    /* "AKID/20130524/us-east-1/s3/aws4_request"; parts 2-7 are the scope */

    ctx->cred_parts[0] = creds->access_key_id;
    ctx->cred_parts[1] = ngx_replay_sigv4_slash;
    ctx->cred_parts[2].data = (const unsigned char *) req->amz_date;
    ctx->cred_parts[2].len = 8;
    ctx->cred_parts[3] = ngx_replay_sigv4_slash;
    ctx->cred_parts[4] = creds->region;
    ctx->cred_parts[5] = ngx_replay_sigv4_slash;
    ctx->cred_parts[6] = creds->service;
    ctx->cred_parts[7] = ngx_replay_sigv4_terminator;

    memset(&ctx->credential, 0, sizeof(ngx_replay_sigv4_src_t));
    ctx->credential.parts = ctx->cred_parts;
    ctx->credential.nparts = NGX_REPLAY_SIGV4_CRED_PARTS;

    if (ngx_replay_sigv4_parse_query(ctx) != NGX_REPLAY_SIGV4_OK) {
        return NGX_REPLAY_SIGV4_BAD_INPUT;
    }

    return ngx_replay_sigv4_signing_key(creds, req->amz_date);
}


/* "a=1&b&&c=" to (a, 1), (b, ""), (c, ""), decoded on reading */

static int
ngx_replay_sigv4_parse_query(ngx_replay_sigv4_ctx_t *ctx)
{
    const unsigned char       *p, *end, *amp, *eq;
    ngx_replay_sigv4_param_t  *prm;

    ctx->nparams = 0;

    /* an empty ngx_str_t may have NULL data, and NULL + 0 is undefined */

    if (ctx->req->query.len == 0) {
        return NGX_REPLAY_SIGV4_OK;
    }

    p = ctx->req->query.data;
    end = p + ctx->req->query.len;

    while (p < end) {
        amp = memchr(p, '&', (size_t) (end - p));
        if (amp == NULL) {
            amp = end;
        }

        if (amp == p) {
            p++;
            continue;
        }

        if (ctx->nparams == NGX_REPLAY_SIGV4_MAX_PARAMS) {
            return NGX_REPLAY_SIGV4_BAD_INPUT;
        }

        prm = &ctx->params[ctx->nparams];

        eq = memchr(p, '=', (size_t) (amp - p));

        prm->name_part.data = p;
        prm->name_part.len = (size_t) ((eq ? eq : amp) - p);
        prm->value_part.data = eq ? eq + 1 : amp;
        prm->value_part.len = eq ? (size_t) (amp - eq - 1) : 0;

        memset(&prm->name, 0, sizeof(ngx_replay_sigv4_src_t));
        prm->name.parts = &prm->name_part;
        prm->name.nparts = 1;
        prm->name.decode = 1;
        prm->value = prm->name;
        prm->value.parts = &prm->value_part;

        ctx->nparams++;
        p = amp + 1;
    }

    return NGX_REPLAY_SIGV4_OK;
}


/* room for these is reserved in ctx->params beyond MAX_PARAMS */

static void
ngx_replay_sigv4_add_param(ngx_replay_sigv4_ctx_t *ctx, const char *name,
    const ngx_replay_sigv4_src_t *value)
{
    ngx_replay_sigv4_param_t  *prm;

    prm = &ctx->params[ctx->nparams++];

    prm->name_part.data = (const unsigned char *) name;
    prm->name_part.len = strlen(name);

    memset(&prm->name, 0, sizeof(ngx_replay_sigv4_src_t));
    prm->name.parts = &prm->name_part;
    prm->name.nparts = 1;
    prm->value = *value;
}


/*
 * Hashes the canonical request
 *
 *     method \n path \n query \n headers \n signed-headers \n payload
 *
 * (each header line ends in \n, hence the empty line), then signs the
 * string to sign with the cached key; sig gets 64 hex digits.
 */

static int
ngx_replay_sigv4_signature(ngx_replay_sigv4_ctx_t *ctx,
    const ngx_replay_sigv4_str_t *payload_hash, unsigned char *sig)
{
    int                          rc;
    size_t                       i, j, k, len;
    unsigned int                 n;
    EVP_MD_CTX                  *md;
    unsigned char                hash[EVP_MAX_MD_SIZE], hex[64];
    unsigned char                stage[NGX_REPLAY_SIGV4_STAGE], *text;
    ngx_replay_sigv4_str_t       sts[11];
    ngx_replay_sigv4_request_t  *req;
    ngx_replay_sigv4_sink_t      s;

    req = ctx->req;

    /* query names and values compare as they will be written, encoded */

    for (i = 0; i < ctx->nparams; i++) {
        for (j = i; j > 0; j--) {
            k = ctx->pidx[j - 1];

            rc = ngx_replay_sigv4_src_cmp(&ctx->params[k].name,
                                          &ctx->params[i].name);
            if (rc == 0) {
                rc = ngx_replay_sigv4_src_cmp(&ctx->params[k].value,
                                              &ctx->params[i].value);
            }

            if (rc <= 0) {
                break;
            }

            ctx->pidx[j] = k;
        }

        ctx->pidx[j] = i;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_REPLAY_SIGV4_ERROR;
    }

    if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(md);
        return NGX_REPLAY_SIGV4_ERROR;
    }

    ngx_replay_sigv4_sink_init(&s, stage, sizeof(stage), md,
                               req->debug != NULL);

    ngx_replay_sigv4_write(&s, req->method.data, req->method.len);
    ngx_replay_sigv4_put(&s, '\n');
    ngx_replay_sigv4_write(&s, ctx->path.data, ctx->path.len);
    ngx_replay_sigv4_put(&s, '\n');
    ngx_replay_sigv4_write_query(&s, ctx);
    ngx_replay_sigv4_put(&s, '\n');
    ngx_replay_sigv4_write_headers(&s, ctx);
    ngx_replay_sigv4_put(&s, '\n');
    ngx_replay_sigv4_write_src(&s, &ctx->signed_headers, 0);
    ngx_replay_sigv4_put(&s, '\n');
    ngx_replay_sigv4_write(&s, payload_hash->data, payload_hash->len);

    if (s.rc == NGX_REPLAY_SIGV4_OK) {
        ngx_replay_sigv4_sink_flush(&s);
    }

    rc = s.rc;

    if (rc == NGX_REPLAY_SIGV4_OK && !EVP_DigestFinal_ex(md, hash, &n)) {
        rc = NGX_REPLAY_SIGV4_ERROR;
    }

    EVP_MD_CTX_free(md);

    if (rc == NGX_REPLAY_SIGV4_OK && s.debug_on) {
        req->debug(req->debug_data, "canonical request", s.debug,
                   s.debug_len);
    }

    free(s.debug);

    if (rc != NGX_REPLAY_SIGV4_OK) {
        return rc;
    }

    ngx_replay_sigv4_hex(hex, hash, 32);

    /* "AWS4-HMAC-SHA256\n" date "\n" scope "\n" hex(hash) */

    sts[0] = ngx_replay_sigv4_sts_head;
    sts[1].data = (const unsigned char *) req->amz_date;
    sts[1].len = NGX_REPLAY_SIGV4_DATE_LEN;
    sts[2] = ngx_replay_sigv4_lf;
    memcpy(&sts[3], &ctx->cred_parts[2], 6 * sizeof(ngx_replay_sigv4_str_t));
    sts[9] = ngx_replay_sigv4_lf;
    sts[10].data = hex;
    sts[10].len = sizeof(hex);

    if (req->debug) {
        len = 0;

        for (i = 0; i < 11; i++) {
            len += sts[i].len;
        }

        text = malloc(len);

        if (text) {
            len = 0;

            for (i = 0; i < 11; i++) {
                memcpy(text + len, sts[i].data, sts[i].len);
                len += sts[i].len;
            }

            req->debug(req->debug_data, "string to sign", text, len);
            free(text);
        }
    }

    if (ngx_replay_sigv4_hmac(ctx->creds->key, sts, 11, hash)
        != NGX_REPLAY_SIGV4_OK)
    {
        return NGX_REPLAY_SIGV4_ERROR;
    }

    ngx_replay_sigv4_hex(sig, hash, 32);

    return NGX_REPLAY_SIGV4_OK;
}


/* HMAC-SHA256 of the concatenated parts, streamed */

static int
ngx_replay_sigv4_hmac(const unsigned char *key,
    const ngx_replay_sigv4_str_t *parts, size_t nparts, unsigned char *out)
{
    int           rc;
    char          digest[] = "SHA256";
    size_t        i, len;
    EVP_MAC      *mac;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *ctx;

    mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (mac == NULL) {
        return NGX_REPLAY_SIGV4_ERROR;
    }

    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL) {
        EVP_MAC_free(mac);
        return NGX_REPLAY_SIGV4_ERROR;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 digest, 0);
    params[1] = OSSL_PARAM_construct_end();

    rc = EVP_MAC_init(ctx, key, 32, params);

    for (i = 0; rc && i < nparts; i++) {
        rc = EVP_MAC_update(ctx, parts[i].data, parts[i].len);
    }

    if (rc) {
        rc = EVP_MAC_final(ctx, out, &len, 32) && len == 32;
    }

    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);

    return rc ? NGX_REPLAY_SIGV4_OK : NGX_REPLAY_SIGV4_ERROR;
}


/* "name=value&..." in sorted order, both S3-URI-encoded */

static void
ngx_replay_sigv4_write_query(ngx_replay_sigv4_sink_t *s,
    ngx_replay_sigv4_ctx_t *ctx)
{
    size_t                     i;
    ngx_replay_sigv4_param_t  *prm;

    for (i = 0; i < ctx->nparams; i++) {
        prm = &ctx->params[ctx->pidx[i]];

        if (i > 0) {
            ngx_replay_sigv4_put(s, '&');
        }

        ngx_replay_sigv4_write_src(s, &prm->name, 1);
        ngx_replay_sigv4_put(s, '=');
        ngx_replay_sigv4_write_src(s, &prm->value, 1);
    }
}


/*
 * "name:value\n" per distinct name, lower-cased; values trimmed, runs of
 * white space folded to one space, repeated names' values joined by ","
 */

static void
ngx_replay_sigv4_write_headers(ngx_replay_sigv4_sink_t *s,
    ngx_replay_sigv4_ctx_t *ctx)
{
    int                         space, word;
    size_t                      i, j;
    unsigned char               c;
    ngx_replay_sigv4_header_t  *h, *prev;

    prev = NULL;

    for (i = 0; i < ctx->nheaders; i++) {
        h = &ctx->req->headers[ctx->hidx[i]];

        if (prev && ngx_replay_sigv4_name_cmp(&prev->name, &h->name) == 0) {
            ngx_replay_sigv4_put(s, ',');

        } else {
            if (prev) {
                ngx_replay_sigv4_put(s, '\n');
            }

            for (j = 0; j < h->name.len; j++) {
                c = h->name.data[j];
                ngx_replay_sigv4_put(s, ngx_replay_sigv4_lower(c));
            }

            ngx_replay_sigv4_put(s, ':');
        }

        /* a space is written before a word only, so none at either end */

        space = 0;
        word = 0;

        for (j = 0; j < h->value.len; j++) {
            c = h->value.data[j];

            if (ngx_replay_sigv4_space(c)) {
                space = 1;
                continue;
            }

            if (space && word) {
                ngx_replay_sigv4_put(s, ' ');
            }

            space = 0;
            word = 1;

            ngx_replay_sigv4_put(s, c);
        }

        prev = h;
    }

    ngx_replay_sigv4_put(s, '\n');
}


static void
ngx_replay_sigv4_write_src(ngx_replay_sigv4_sink_t *s,
    const ngx_replay_sigv4_src_t *src, int encode)
{
    int                      c;
    ngx_replay_sigv4_iter_t  it;

    ngx_replay_sigv4_iter_init(&it, src);

    for ( ;; ) {
        c = encode ? ngx_replay_sigv4_iter_encoded(&it)
                   : ngx_replay_sigv4_iter_byte(&it);
        if (c < 0) {
            return;
        }

        ngx_replay_sigv4_put(s, c);
    }
}


static void
ngx_replay_sigv4_sink_init(ngx_replay_sigv4_sink_t *s, unsigned char *buf,
    size_t size, EVP_MD_CTX *md, int debug)
{
    memset(s, 0, sizeof(ngx_replay_sigv4_sink_t));

    s->start = buf;
    s->pos = buf;
    s->end = buf + size;
    s->md = md;
    s->debug_on = debug ? 1 : 0;
    s->rc = NGX_REPLAY_SIGV4_OK;
}


static int
ngx_replay_sigv4_sink_flush(ngx_replay_sigv4_sink_t *s)
{
    size_t          len, size;
    unsigned char  *p;

    if (s->md == NULL) {
        s->rc = NGX_REPLAY_SIGV4_TOO_LONG;
        return s->rc;
    }

    len = (size_t) (s->pos - s->start);

    if (!EVP_DigestUpdate(s->md, s->start, len)) {
        s->rc = NGX_REPLAY_SIGV4_ERROR;
        return s->rc;
    }

    if (s->debug_on) {
        if (s->debug_len + len > s->debug_size) {
            size = s->debug_size ? 2 * s->debug_size : 1024;

            while (size < s->debug_len + len) {
                size *= 2;
            }

            p = realloc(s->debug, size);

            if (p == NULL) {
                /* the debug text is a nicety; signing goes on without it */
                free(s->debug);
                s->debug = NULL;
                s->debug_on = 0;

            } else {
                s->debug = p;
                s->debug_size = size;
            }
        }

        if (s->debug_on) {
            memcpy(s->debug + s->debug_len, s->start, len);
            s->debug_len += len;
        }
    }

    s->pos = s->start;

    return NGX_REPLAY_SIGV4_OK;
}


static void
ngx_replay_sigv4_put(ngx_replay_sigv4_sink_t *s, int c)
{
    if (s->rc != NGX_REPLAY_SIGV4_OK) {
        return;
    }

    if (s->pos == s->end
        && ngx_replay_sigv4_sink_flush(s) != NGX_REPLAY_SIGV4_OK)
    {
        return;
    }

    *s->pos++ = (unsigned char) c;
}


static void
ngx_replay_sigv4_write(ngx_replay_sigv4_sink_t *s, const void *data,
    size_t len)
{
    size_t                n;
    const unsigned char  *p;

    p = data;

    while (len && s->rc == NGX_REPLAY_SIGV4_OK) {
        if (s->pos == s->end
            && ngx_replay_sigv4_sink_flush(s) != NGX_REPLAY_SIGV4_OK)
        {
            return;
        }

        n = (size_t) (s->end - s->pos);

        if (n > len) {
            n = len;
        }

        memcpy(s->pos, p, n);
        s->pos += n;
        p += n;
        len -= n;
    }
}


static void
ngx_replay_sigv4_iter_init(ngx_replay_sigv4_iter_t *it,
    const ngx_replay_sigv4_src_t *src)
{
    memset(it, 0, sizeof(ngx_replay_sigv4_iter_t));
    it->src = src;
}


/* the next byte of the source, decoded or lower-cased, or -1 at its end */

static int
ngx_replay_sigv4_iter_byte(ngx_replay_sigv4_iter_t *it)
{
    int                            c, hi, lo;
    const ngx_replay_sigv4_str_t  *part;

    for ( ;; ) {
        if (it->part == it->src->nparts) {
            return -1;
        }

        part = &it->src->parts[it->part];

        if (it->off < part->len) {
            break;
        }

        it->part++;
        it->off = 0;
    }

    c = part->data[it->off++];

    /* a "%" not followed by two hex digits stands for itself */

    if (c == '%' && it->src->decode && part->len - it->off >= 2) {
        hi = ngx_replay_sigv4_hex_value(part->data[it->off]);
        lo = ngx_replay_sigv4_hex_value(part->data[it->off + 1]);

        if (hi >= 0 && lo >= 0) {
            c = (hi << 4) | lo;
            it->off += 2;
        }
    }

    if (it->src->lower) {
        c = ngx_replay_sigv4_lower(c);
    }

    return c;
}


/* the next byte of the source's S3 URI encoding (with "/" encoded) */

static int
ngx_replay_sigv4_iter_encoded(ngx_replay_sigv4_iter_t *it)
{
    int  c;

    if (it->nhex) {
        return it->hex[2 - it->nhex--];
    }

    c = ngx_replay_sigv4_iter_byte(it);

    if (c < 0 || ngx_replay_sigv4_unreserved(c)) {
        return c;
    }

    it->hex[0] = ngx_replay_sigv4_hex_upper[c >> 4];
    it->hex[1] = ngx_replay_sigv4_hex_upper[c & 0xf];
    it->nhex = 2;

    return '%';
}


/* compares the encodings of two sources, byte order, a prefix first */

static int
ngx_replay_sigv4_src_cmp(const ngx_replay_sigv4_src_t *a,
    const ngx_replay_sigv4_src_t *b)
{
    int                      ca, cb;
    ngx_replay_sigv4_iter_t  ia, ib;

    ngx_replay_sigv4_iter_init(&ia, a);
    ngx_replay_sigv4_iter_init(&ib, b);

    do {
        ca = ngx_replay_sigv4_iter_encoded(&ia);
        cb = ngx_replay_sigv4_iter_encoded(&ib);
    } while (ca == cb && ca >= 0);

    return ca - cb;
}


/* whether the decoded source equals "lower" ignoring case */

static int
ngx_replay_sigv4_src_is(const ngx_replay_sigv4_src_t *src, const char *lower)
{
    int                      c;
    ngx_replay_sigv4_src_t   copy;
    ngx_replay_sigv4_iter_t  it;

    copy = *src;
    copy.lower = 1;

    ngx_replay_sigv4_iter_init(&it, &copy);

    for ( ;; ) {
        c = ngx_replay_sigv4_iter_byte(&it);

        /* a decoded NUL must not match the terminator and read past it */
        if (c < 0 || *lower == '\0' || c != (unsigned char) *lower) {
            return c < 0 && *lower == '\0';
        }

        lower++;
    }
}


static int
ngx_replay_sigv4_name_cmp(const ngx_replay_sigv4_str_t *a,
    const ngx_replay_sigv4_str_t *b)
{
    int     ca, cb;
    size_t  i;

    for (i = 0; i < a->len && i < b->len; i++) {
        ca = ngx_replay_sigv4_lower(a->data[i]);
        cb = ngx_replay_sigv4_lower(b->data[i]);

        if (ca != cb) {
            return ca - cb;
        }
    }

    return (a->len > b->len) - (a->len < b->len);
}


static int
ngx_replay_sigv4_unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9')
           || c == '-' || c == '.' || c == '_' || c == '~';
}


static int
ngx_replay_sigv4_hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c = ngx_replay_sigv4_lower(c);

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


static void
ngx_replay_sigv4_hex(unsigned char *dst, const unsigned char *src,
    size_t len)
{
    while (len--) {
        *dst++ = ngx_replay_sigv4_hex_lower[*src >> 4];
        *dst++ = ngx_replay_sigv4_hex_lower[*src++ & 0xf];
    }
}


/*
 * One line of a credentials file (see ngx_http_replay_sigv4.h); the same
 * rules as the AWS CLI's for the keys the signer uses.
 */

#define ngx_replay_sigv4_blank(c)  ((c) == ' ' || (c) == '\t')

int
ngx_replay_sigv4_creds_line(const unsigned char *line, size_t len,
    ngx_replay_sigv4_str_t *value)
{
    size_t                i, j, n;
    const unsigned char  *p, *end, *eq, *k, *kend, *v;

    static const struct {
        const char       *name;
        int               field;
    } keys[] = {
        { "access_key_id", NGX_REPLAY_SIGV4_CREDS_ACCESS_KEY_ID },
        { "secret_access_key", NGX_REPLAY_SIGV4_CREDS_SECRET_ACCESS_KEY },
        { "session_token", NGX_REPLAY_SIGV4_CREDS_SESSION_TOKEN },
        { "expiration", NGX_REPLAY_SIGV4_CREDS_EXPIRATION },
        { "x_security_token_expires", NGX_REPLAY_SIGV4_CREDS_EXPIRATION }
    };

    value->data = NULL;
    value->len = 0;

    p = line;
    end = line + len;

    while (p < end && ngx_replay_sigv4_blank(*p)) {
        p++;
    }

    while (end > p && (ngx_replay_sigv4_blank(end[-1]) || end[-1] == '\r')) {
        end--;
    }

    if (p == end || *p == '#' || *p == ';') {
        return NGX_REPLAY_SIGV4_CREDS_SKIP;
    }

    if (*p == '[') {
        return ((size_t) (end - p) == sizeof("[default]") - 1
                && memcmp(p, "[default]", sizeof("[default]") - 1) == 0)
               ? NGX_REPLAY_SIGV4_CREDS_SKIP : NGX_REPLAY_SIGV4_CREDS_PROFILE;
    }

    eq = memchr(p, '=', (size_t) (end - p));
    if (eq == NULL) {
        return NGX_REPLAY_SIGV4_CREDS_NO_EQUALS;
    }

    k = p;
    kend = eq;

    while (kend > k && ngx_replay_sigv4_blank(kend[-1])) {
        kend--;
    }

    v = eq + 1;

    while (v < end && ngx_replay_sigv4_blank(*v)) {
        v++;
    }

    if (kend - k > 4
        && ngx_replay_sigv4_lower(k[0]) == 'a'
        && ngx_replay_sigv4_lower(k[1]) == 'w'
        && ngx_replay_sigv4_lower(k[2]) == 's'
        && k[3] == '_')
    {
        k += 4;
    }

    n = (size_t) (kend - k);

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (n != strlen(keys[i].name)) {
            continue;
        }

        for (j = 0; j < n; j++) {
            if (ngx_replay_sigv4_lower(k[j]) != keys[i].name[j]) {
                break;
            }
        }

        if (j == n) {
            value->data = v;
            value->len = (size_t) (end - v);
            return keys[i].field;
        }
    }

    /* other keys of ~/.aws/credentials (region, ...) are not the signer's */

    return NGX_REPLAY_SIGV4_CREDS_SKIP;
}
