
/*
 * Unit tests of the SigV4 signer: AWS's published S3 examples, values
 * cross-checked with botocore, and the edge cases of the canonical form.
 *
 * Prints "ok N - name" or "not ok N - name" per check and, last,
 * "sigv4: N passed, M failed"; exits 1 on any failure.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ngx_http_replay_sigv4.h"

#include "tap.h"


#define AKID     "AKIAIOSFODNN7EXAMPLE"
#define SECRET   "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define HOST     "examplebucket.s3.amazonaws.com"
#define DATE     "20130524T000000Z"
#define EMPTY    NGX_REPLAY_SIGV4_EMPTY_SHA256
#define SCOPE    "20130524/us-east-1/s3/aws4_request"
#define CRED     AKID "/" SCOPE

#define MAX_H    (NGX_REPLAY_SIGV4_MAX_HEADERS + 1)


typedef struct {
    char    canonical[32768];
    size_t  canonical_len;
    char    sts[1024];
    size_t  sts_len;
    int     calls;
} debug_t;


static debug_t  dbg;


static void
check_str(const char *got, size_t got_len, const char *want,
    const char *name)
{
    int  ok;

    ok = got_len == strlen(want) && memcmp(got, want, got_len) == 0;

    check(ok, name);

    if (!ok) {
        printf("#   got:  \"%.*s\"\n#   want: \"%s\"\n", (int) got_len, got,
               want);
    }
}


static int
contains(const char *hay, size_t len, const char *needle)
{
    size_t  i, n;

    n = strlen(needle);

    for (i = 0; i + n <= len; i++) {
        if (memcmp(hay + i, needle, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
debug_handler(void *data, const char *what, const unsigned char *text,
    size_t len)
{
    debug_t  *d;

    d = data;
    d->calls++;

    if (strcmp(what, "canonical request") == 0) {
        d->canonical_len = len < sizeof(d->canonical) ? len : 0;
        memcpy(d->canonical, text, d->canonical_len);

    } else if (strcmp(what, "string to sign") == 0) {
        d->sts_len = len < sizeof(d->sts) ? len : 0;
        memcpy(d->sts, text, d->sts_len);
    }
}


static ngx_replay_sigv4_str_t
str(const char *s)
{
    ngx_replay_sigv4_str_t  v;

    v.data = (const unsigned char *) s;
    v.len = strlen(s);

    return v;
}


static void
init_creds(ngx_replay_sigv4_creds_t *creds, const char *secret,
    const char *token)
{
    memset(creds, 0, sizeof(ngx_replay_sigv4_creds_t));

    creds->access_key_id = str(AKID);
    creds->secret_access_key = str(secret);
    creds->session_token = str(token ? token : "");
    creds->region = str("us-east-1");
    creds->service = str("s3");
}


/* headers as "name", "value", ... NULL */

static void
init_req(ngx_replay_sigv4_request_t *req, ngx_replay_sigv4_header_t *h,
    const char *method, const char *path, const char *query,
    const char *payload, const char **hv)
{
    size_t  n;

    memset(req, 0, sizeof(ngx_replay_sigv4_request_t));

    for (n = 0; hv[2 * n]; n++) {
        h[n].name = str(hv[2 * n]);
        h[n].value = str(hv[2 * n + 1]);
    }

    req->method = str(method);
    req->path = str(path);
    req->query = str(query);
    req->headers = h;
    req->nheaders = n;
    req->payload_hash = str(payload ? payload : "");
    memcpy(req->amz_date, DATE, NGX_REPLAY_SIGV4_DATE_LEN);
    req->debug = debug_handler;
    req->debug_data = &dbg;

    memset(&dbg, 0, sizeof(debug_t));
}


static int
sign(ngx_replay_sigv4_creds_t *creds, ngx_replay_sigv4_request_t *req,
    char *out, size_t size, size_t *len)
{
    return ngx_replay_sigv4_sign(creds, req, (unsigned char *) out, size,
                                 len);
}


static int
presign(ngx_replay_sigv4_creds_t *creds, ngx_replay_sigv4_request_t *req,
    unsigned long expires, char *out, size_t size, size_t *len)
{
    return ngx_replay_sigv4_presign(creds, req, expires,
                                    (unsigned char *) out, size, len);
}


static const char *
signature_of(const char *out, size_t len)
{
    static char  sig[65];

    if (len < 64) {
        return "";
    }

    memcpy(sig, out + len - 64, 64);
    sig[64] = '\0';

    return sig;
}


static void
test_format_date(void)
{
    char  d[NGX_REPLAY_SIGV4_DATE_LEN];

    ngx_replay_sigv4_format_date(1369353600, d);
    check_str(d, sizeof(d), "20130524T000000Z", "format_date 1369353600");

    ngx_replay_sigv4_format_date(0, d);
    check_str(d, sizeof(d), "19700101T000000Z", "format_date epoch");

    ngx_replay_sigv4_format_date(951782400, d);
    check_str(d, sizeof(d), "20000229T000000Z", "format_date leap day");

    ngx_replay_sigv4_format_date(4102444799, d);
    check_str(d, sizeof(d), "20991231T235959Z", "format_date 2099");
}


static void
test_uri_encode(void)
{
    int            ok;
    size_t         i, n, need;
    unsigned char  buf[256];

    static const struct {
        const char  *in;
        size_t       len;
        int          keep_slash;
        const char  *want;
    } cases[] = {
        { "AZaz09-._~", 0, 0, "AZaz09-._~" },
        { " ", 0, 0, "%20" },
        { "+", 0, 0, "%2B" },
        { "!", 0, 0, "%21" },
        { "$", 0, 0, "%24" },
        { "&", 0, 0, "%26" },
        { "'", 0, 0, "%27" },
        { "(", 0, 0, "%28" },
        { ")", 0, 0, "%29" },
        { "*", 0, 0, "%2A" },
        { ",", 0, 0, "%2C" },
        { ";", 0, 0, "%3B" },
        { "=", 0, 0, "%3D" },
        { ":", 0, 0, "%3A" },
        { "@", 0, 0, "%40" },
        { "~", 0, 0, "~" },
        { "%", 0, 0, "%25" },
        { "?", 0, 0, "%3F" },
        { "#", 0, 0, "%23" },
        { "\"<>[]\\^`{|}", 0, 0, "%22%3C%3E%5B%5D%5C%5E%60%7B%7C%7D" },
        { "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 0, 0,
          "%D0%BA%D0%BB%D1%8E%D1%87" },
        { "caf\xc3\xa9", 0, 1, "caf%C3%A9" },
        { "\x00\x7f\xff", 3, 0, "%00%7F%FF" },
        { "/a/b c", 0, 1, "/a/b%20c" },
        { "/a/b c", 0, 0, "%2Fa%2Fb%20c" },
        { "/a/../b//c/./", 0, 1, "/a/../b//c/./" },
        { "/test$file.text", 0, 1, "/test%24file.text" },
        { "", 0, 1, "" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = cases[i].len ? cases[i].len : strlen(cases[i].in);

        memset(buf, '#', sizeof(buf));

        need = ngx_replay_sigv4_uri_encode(NULL,
                                           (const unsigned char *) cases[i].in,
                                           n, cases[i].keep_slash);
        n = ngx_replay_sigv4_uri_encode(buf,
                                        (const unsigned char *) cases[i].in,
                                        n, cases[i].keep_slash);

        ok = n == strlen(cases[i].want)
             && memcmp(buf, cases[i].want, n) == 0
             && buf[n] == '#';

        check(ok && need == n, cases[i].want[0] ? cases[i].want
                                                : "uri_encode empty");

        if (!ok || need != n) {
            printf("#   got \"%.*s\" (%zu, length mode %zu)\n", (int) n, buf,
                   n, need);
        }
    }
}


static void
test_signing_key(void)
{
    int                       rc;
    char                      hex[65];
    size_t                    i, j;
    ngx_replay_sigv4_creds_t  creds;

    static const struct {
        const char  *name;
        const char  *secret;
        const char  *key;
    } cases[] = {
        /* published with the S3 examples */
        { "signing key of the S3 examples", SECRET,
          "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378" },

        /* "AWS4" + secret of 64, 65 and 75 bytes, from Python's hmac */
        { "signing key, \"AWS4\" + secret of 64 bytes",
          "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss",
          "51e991c7b9446257c982066e7d3815276396eba142f709fda92e4de49be90508" },
        { "signing key, 65 bytes: hashed first",
          "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss",
          "90d6e3f7b8ab92232ab1c635d67c97f871c2b2dd6af25d7490e13edb077f0332" },
        { "signing key, 75 bytes",
          "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLL/"
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
          "f51af3162661fcae82cb62d52bd09e2cb5e3a8c6b90a6e4f42e2f1b70f7381b8" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        init_creds(&creds, cases[i].secret, NULL);

        rc = ngx_replay_sigv4_signing_key(&creds, "20130524");

        for (j = 0; j < 32; j++) {
            snprintf(hex + 2 * j, 3, "%02x", creds.key[j]);
        }

        check(rc == NGX_REPLAY_SIGV4_OK && creds.key_valid
              && memcmp(creds.key_date, "20130524", 8) == 0
              && creds.key_derivations == 1
              && memcmp(hex, cases[i].key, 64) == 0,
              cases[i].name);
    }
}


/* AWS: Examples of the header form, GET Object */

static void
test_get_object(void)
{
    int                          rc;
    char                         out[512];
    size_t                       len;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = {
        "Host", HOST,
        "Range", "bytes=0-9",
        "x-amz-content-sha256", EMPTY,
        "x-amz-date", DATE,
        NULL
    };

    init_creds(&creds, SECRET, NULL);
    init_req(&req, h, "GET", "/test.txt", "", EMPTY, hv);

    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK, "GET Object: signs");

    check_str(out, len,
              "AWS4-HMAC-SHA256 Credential=" CRED ", "
              "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
              "Signature="
              "f0e8bdb87c964420e857bd35b5d6ed31"
              "0bd44f0170aba48dd91039c6036bdb41",
              "GET Object: Authorization");

    check_str(dbg.canonical, dbg.canonical_len,
              "GET\n/test.txt\n\n"
              "host:" HOST "\n"
              "range:bytes=0-9\n"
              "x-amz-content-sha256:" EMPTY "\n"
              "x-amz-date:" DATE "\n"
              "\n"
              "host;range;x-amz-content-sha256;x-amz-date\n"
              EMPTY,
              "GET Object: canonical request to debug");

    check_str(dbg.sts, dbg.sts_len,
              "AWS4-HMAC-SHA256\n" DATE "\n" SCOPE "\n"
              "7344ae5b7ee6c3e7e6b0fe0640412a37"
              "625d1fbfff95c48bbb2dc43964946972",
              "GET Object: string to sign to debug");
}


/* AWS: PUT Object, a "$" in the key, a payload hash, more headers */

static void
test_put_object(void)
{
    int                          rc;
    char                         out[512], path[64];
    size_t                       len;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = {
        "Host", HOST,
        "Date", "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-date", DATE,
        "x-amz-storage-class", "REDUCED_REDUNDANCY",
        "x-amz-content-sha256",
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        NULL
    };

    len = ngx_replay_sigv4_uri_encode((unsigned char *) path,
                                      (const unsigned char *) "/test$file.text",
                                      15, 1);
    path[len] = '\0';

    init_creds(&creds, SECRET, NULL);
    init_req(&req, h, "PUT", path, "",
             "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
             hv);

    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(out, len, "SignedHeaders=date;host;x-amz-content-sha256;"
                                "x-amz-date;x-amz-storage-class, "),
          "PUT Object: signed headers");

    check_str(signature_of(out, len), 64,
              "98ad721746da40c64f1a55b78f14c238"
              "d841ea1380cd77a1b5971af0ece108bd",
              "PUT Object: signature");

    check_str(dbg.sts + dbg.sts_len - 64, 64,
              "9e0e90d9c76de8fa5b200d8c849cd5b8"
              "dc7a3be3951ddb7f6a76b4158342019d",
              "PUT Object: canonical request hash");
}


/* AWS: GET Bucket Lifecycle and GET Bucket (List Objects) */

static void
test_bucket_queries(void)
{
    int                          rc;
    char                         out[512];
    size_t                       len, i;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = {
        "Host", HOST,
        "x-amz-date", DATE,
        "x-amz-content-sha256", EMPTY,
        NULL
    };

    static const char  *list[] = {
        "max-keys=2&prefix=J",
        "prefix=J&max-keys=2",
        "prefix=%4A&max-keys=2",
        "&max-keys=2&&prefix=%4a&",
    };

    init_creds(&creds, SECRET, NULL);

    init_req(&req, h, "GET", "/", "lifecycle", EMPTY, hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK, "GET Bucket Lifecycle: signs");
    check_str(signature_of(out, len), 64,
              "fea454ca298b7da1c68078a5d1bdbfbb"
              "e0d65c699e0f91ac7a200a0136783543",
              "GET Bucket Lifecycle: signature");
    check(contains(dbg.canonical, dbg.canonical_len, "\n/\nlifecycle=\n"),
          "GET Bucket Lifecycle: a bare name gets an empty value");

    init_req(&req, h, "GET", "/", "lifecycle=", EMPTY, hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check_str(signature_of(out, len), 64,
              "fea454ca298b7da1c68078a5d1bdbfbb"
              "e0d65c699e0f91ac7a200a0136783543",
              "GET Bucket Lifecycle: \"lifecycle=\" signs the same");

    for (i = 0; i < sizeof(list) / sizeof(list[0]); i++) {
        init_req(&req, h, "GET", "/", list[i], EMPTY, hv);
        rc = sign(&creds, &req, out, sizeof(out), &len);

        check(rc == NGX_REPLAY_SIGV4_OK
              && strcmp(signature_of(out, len),
                        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db667"
                        "0ed5711ef69dc6f7") == 0,
              i == 0 ? "GET Bucket: max-keys=2&prefix=J"
              : i == 1 ? "GET Bucket: query order does not matter"
              : i == 2 ? "GET Bucket: query is decoded and re-encoded"
              : "GET Bucket: empty query parts are skipped");
    }
}


/* AWS: presigned GET Object */

static void
test_presign_example(void)
{
    int                          rc;
    char                         out[512];
    size_t                       len;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = { "host", HOST, NULL };

    init_creds(&creds, SECRET, NULL);
    init_req(&req, h, "GET", "/test.txt", "", NULL, hv);

    rc = presign(&creds, &req, 86400, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK, "presigned GET Object: signs");

    check_str(out, len,
              "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1"
              "%2Fs3%2Faws4_request"
              "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
              "&X-Amz-SignedHeaders=host"
              "&X-Amz-Signature="
              "aeeed9bbccd4d02ee5c0109b86d86835"
              "f995330da4c265957d157751f604d404",
              "presigned GET Object: request target");

    check_str(dbg.canonical, dbg.canonical_len,
              "GET\n/test.txt\n"
              "X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1"
              "%2Fs3%2Faws4_request"
              "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
              "&X-Amz-SignedHeaders=host\n"
              "host:" HOST "\n\nhost\nUNSIGNED-PAYLOAD",
              "presigned GET Object: canonical request");

    check_str(dbg.sts + dbg.sts_len - 64, 64,
              "3bfa292879f6447bbcda7001decf97f4"
              "a54dc650c8942174ae0a9121cf58ad04",
              "presigned GET Object: canonical request hash");

    /* the request's own query is kept and sorted in */

    init_req(&req, h, "GET", "/test.txt", "versionId=3%2F4&acl", NULL, hv);
    rc = presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && len > 30
          && memcmp(out, "/test.txt?X-Amz-Algorithm=", 26) == 0
          && contains(out, len, "&X-Amz-SignedHeaders=host&acl=&"
                                "versionId=3%2F4&X-Amz-Signature="),
          "presign: the request's query is kept, sorted");

    /* X-Amz-* of its own would be signed twice */

    init_req(&req, h, "GET", "/test.txt", "x-amz-expires=5", NULL, hv);
    rc = presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT && len == 0,
          "presign: BAD_INPUT on a query with X-Amz-Expires");

    init_req(&req, h, "GET", "/test.txt", "X-Amz-Signature=00", NULL, hv);
    rc = presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT,
          "presign: BAD_INPUT on a query with X-Amz-Signature");

    /*
     * a name that decodes to a reserved one and a NUL is not reserved (the
     * comparison once read past the end of the reserved name: t/fuzz)
     */

    init_req(&req, h, "GET", "/test.txt", "X-Amz-Date%00=1", NULL, hv);
    rc = presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(out, len, "&X-Amz-Date%00=1&"),
          "presign: X-Amz-Date%00 is a parameter of its own");
}


static void
test_session_token(void)
{
    int                          rc;
    char                         out[1024];
    size_t                       len;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = { "host", HOST, NULL };

    /* a header request as botocore 1.43 signs it, with token and query */
    static const char  *hv2[] = {
        "host", HOST,
        "X-Amz-Meta-Note", "  a   b \t c  ",
        "x-amz-content-sha256", EMPTY,
        "x-amz-date", DATE,
        "x-amz-security-token", "AQoDYXdzEJr//tok+en==",
        NULL
    };

    init_creds(&creds, SECRET, "AQoDYXdzEJr//tok+en==");
    init_req(&req, h, "GET", "/test.txt", "", NULL, hv);

    rc = presign(&creds, &req, 86400, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(out, len, "&X-Amz-Security-Token=AQoDYXdzEJr%2F%2Ftok"
                                "%2Ben%3D%3D&X-Amz-SignedHeaders=host&"),
          "token: X-Amz-Security-Token in the presigned query, sorted");

    check(contains(dbg.canonical, dbg.canonical_len,
                   "X-Amz-Security-Token=AQoDYXdzEJr%2F%2Ftok%2Ben%3D%3D"),
          "token: and in the canonical query");

    check_str(signature_of(out, len), 64,
              "4a57031d970b2d186f3a86b815dda74d"
              "c7b669938dd32d9a2ae860a67f78fa79",
              "token: presigned signature as botocore's");

    init_req(&req, h, "PUT", "/photos/2024/a-b_c.d~e.txt",
             "uploadId=a/b+c%3d=&partNumber=2", EMPTY, hv2);

    rc = sign(&creds, &req, out, sizeof(out), &len);

    check_str(out, len,
              "AWS4-HMAC-SHA256 Credential=" CRED ", "
              "SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
              "x-amz-meta-note;x-amz-security-token, Signature="
              "35d1deca53f07c8890bb4599770ebf01"
              "331a26467cb968bf8cb45f887400f608",
              "token: header form as botocore's");

    check(contains(dbg.canonical, dbg.canonical_len,
                   "\npartNumber=2&uploadId=a%2Fb%2Bc%3D%3D\n"),
          "token: '+' is literal, the rest decoded and re-encoded");
}


static void
test_key_cache(void)
{
    int                          rc;
    char                         out[512], sig1[65], sig2[65];
    size_t                       len;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = {
        "host", HOST, "x-amz-date", DATE,
        "x-amz-content-sha256", EMPTY, NULL
    };

    init_creds(&creds, SECRET, NULL);
    init_req(&req, h, "GET", "/a", "", EMPTY, hv);

    rc = sign(&creds, &req, out, sizeof(out), &len);
    rc |= sign(&creds, &req, out, sizeof(out), &len);
    strcpy(sig1, signature_of(out, len));
    rc |= presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK && creds.key_derivations == 1,
          "key cache: one derivation for a day's requests");

    memcpy(req.amz_date, "20130525T000001Z", NGX_REPLAY_SIGV4_DATE_LEN);

    rc = sign(&creds, &req, out, sizeof(out), &len);
    strcpy(sig2, signature_of(out, len));

    check(rc == NGX_REPLAY_SIGV4_OK && creds.key_derivations == 2
          && memcmp(creds.key_date, "20130525", 8) == 0
          && strcmp(sig1, sig2) != 0,
          "key cache: a new day derives again");

    memcpy(req.amz_date, "20130525T235959Z", NGX_REPLAY_SIGV4_DATE_LEN);

    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK && creds.key_derivations == 2,
          "key cache: and keeps it for the rest of that day");

    rc = ngx_replay_sigv4_signing_key(&creds, "20130524");

    check(rc == NGX_REPLAY_SIGV4_OK && creds.key_derivations == 3,
          "key cache: going back a day derives again");
}


static void
test_limits(void)
{
    int                          rc;
    char                         out[512], q[1024], names[MAX_H][8];
    size_t                       len, need, i;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = {
        "host", HOST, "x-amz-date", DATE,
        "x-amz-content-sha256", EMPTY, NULL
    };
    static const char  *nohost[] = { "x-amz-date", DATE, NULL };

    init_creds(&creds, SECRET, NULL);
    init_req(&req, h, "GET", "/test.txt", "", EMPTY, hv);

    rc = sign(&creds, &req, out, sizeof(out), &need);

    check(rc == NGX_REPLAY_SIGV4_OK, "limits: reference signature");

    rc = sign(&creds, &req, out, need, &len);

    check(rc == NGX_REPLAY_SIGV4_OK && len == need,
          "limits: a buffer of the exact size is enough");

    rc = sign(&creds, &req, out, need - 1, &len);

    check(rc == NGX_REPLAY_SIGV4_TOO_LONG && len == 0,
          "limits: TOO_LONG one byte short");

    rc = sign(&creds, &req, out, 0, &len);

    check(rc == NGX_REPLAY_SIGV4_TOO_LONG, "limits: TOO_LONG on size 0");

    rc = presign(&creds, &req, 86400, out, sizeof(out), &need);
    rc |= presign(&creds, &req, 86400, out, need, &len) != 0;

    check(rc == NGX_REPLAY_SIGV4_OK && len == need
          && presign(&creds, &req, 86400, out, need - 1, &len)
             == NGX_REPLAY_SIGV4_TOO_LONG
          && presign(&creds, &req, 86400, out, 20, &len)
             == NGX_REPLAY_SIGV4_TOO_LONG,
          "limits: presign TOO_LONG one byte short and in the path");

    /* MAX_HEADERS headers sign, one more does not */

    h[0].name = str("host");
    h[0].value = str(HOST);

    for (i = 1; i < MAX_H; i++) {
        snprintf(names[i], sizeof(names[i]), "x-h%02zu", i);
        h[i].name = str(names[i]);
        h[i].value = str("v");
    }

    req.nheaders = NGX_REPLAY_SIGV4_MAX_HEADERS;
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK, "limits: MAX_HEADERS headers sign");

    req.nheaders = NGX_REPLAY_SIGV4_MAX_HEADERS + 1;
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT,
          "limits: BAD_INPUT on MAX_HEADERS + 1 headers");

    rc = presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT,
          "limits: presign BAD_INPUT on MAX_HEADERS + 1 headers");

    /* MAX_PARAMS parameters sign, one more does not */

    init_req(&req, h, "GET", "/test.txt", "", EMPTY, hv);

    q[0] = '\0';

    for (i = 0; i < NGX_REPLAY_SIGV4_MAX_PARAMS; i++) {
        snprintf(q + strlen(q), sizeof(q) - strlen(q), "%sp%zu=%zu",
                 i ? "&" : "", i, i);
    }

    req.query = str(q);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK, "limits: MAX_PARAMS parameters sign");

    rc = presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_TOO_LONG,
          "limits: presign with MAX_PARAMS parameters, too long for 512");

    strcat(q, "&one-more");
    req.query = str(q);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT,
          "limits: BAD_INPUT on MAX_PARAMS + 1 parameters");

    /* nginx's empty strings have NULL data */

    init_creds(&creds, SECRET, NULL);
    creds.session_token.data = NULL;
    init_req(&req, h, "GET", "/", "", EMPTY, hv);
    req.path.data = NULL;
    req.path.len = 0;
    req.query.data = NULL;
    req.query.len = 0;
    req.debug = NULL;

    rc = sign(&creds, &req, out, sizeof(out), &len);
    rc |= presign(&creds, &req, 60, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK && len > 2 && memcmp(out, "/?", 2) == 0,
          "limits: empty strings with NULL data");

    /* the rest of the contract */

    init_req(&req, h, "GET", "/test.txt", "", EMPTY, nohost);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT, "limits: BAD_INPUT without host");

    init_req(&req, h, "GET", "/test.txt", "", "", hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT,
          "limits: header form BAD_INPUT without a payload hash");

    init_req(&req, h, "GET", "/test.txt", "", EMPTY, hv);
    memcpy(req.amz_date, "2013-05-24T0000Z", NGX_REPLAY_SIGV4_DATE_LEN);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT && creds.key_derivations == 1,
          "limits: BAD_INPUT on a malformed date, no key derived");

    init_req(&req, h, "GET", "/test.txt", "", EMPTY, hv);
    h[1].name = str("");
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_BAD_INPUT,
          "limits: BAD_INPUT on an empty header name");
}


static void
test_canonical_form(void)
{
    int                          rc, ok;
    char                         out[8192], sig[65], big[MAX_H][200];
    size_t                       len, i;
    unsigned int                 n;
    unsigned char                md[EVP_MAX_MD_SIZE];
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *messy[] = {
        "X-Amz-Meta-B", "  one   two\t\tthree  ",
        "host", HOST,
        "x-amz-meta-a", "\t first ",
        "X-AMZ-META-A", "second  word",
        "x-amz-meta-empty", "   ",
        "x-amz-meta-a", "third",
        NULL
    };

    static const char  *tidy[] = {
        "host", HOST,
        "x-amz-meta-a", "first",
        "x-amz-meta-a", "second word",
        "x-amz-meta-a", "third",
        "x-amz-meta-b", "one two three",
        "x-amz-meta-empty", "",
        NULL
    };

    static const char  *hv[] = { "host", HOST, NULL };

    init_creds(&creds, SECRET, NULL);

    init_req(&req, h, "GET", "/k", "", EMPTY, messy);
    rc = sign(&creds, &req, out, sizeof(out), &len);
    strcpy(sig, signature_of(out, len));

    check_str(dbg.canonical, dbg.canonical_len,
              "GET\n/k\n\n"
              "host:" HOST "\n"
              "x-amz-meta-a:first,second word,third\n"
              "x-amz-meta-b:one two three\n"
              "x-amz-meta-empty:\n"
              "\n"
              "host;x-amz-meta-a;x-amz-meta-b;x-amz-meta-empty\n" EMPTY,
              "headers: lower-cased, sorted, trimmed, folded, joined");

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(out, len, "SignedHeaders=host;x-amz-meta-a;"
                                "x-amz-meta-b;x-amz-meta-empty, "),
          "headers: repeated names signed once");

    init_req(&req, h, "GET", "/k", "", EMPTY, tidy);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK && strcmp(sig, signature_of(out, len)) == 0,
          "headers: messy and tidy forms sign the same");

    init_req(&req, h, "GET", "/a/../b//c%20d/./", "", EMPTY, hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(dbg.canonical, dbg.canonical_len,
                      "GET\n/a/../b//c%20d/./\n\n"),
          "path: signed as given, no normalisation");

    init_req(&req, h, "GET", "", "", EMPTY, hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(dbg.canonical, dbg.canonical_len, "GET\n/\n\n"),
          "path: empty is \"/\"");

    init_req(&req, h, "GET", "/", "b=2&a=1&a=0&c&a-b=&d=x%2Fy&e=a+b"
             "&f=%7e%7E&g=%zz%4&h=%e2%82%ac&%41=caps&i=a%20b%2520",
             EMPTY, hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(dbg.canonical, dbg.canonical_len,
                      "\n/\nA=caps&a=0&a=1&a-b=&b=2&c=&d=x%2Fy&e=a%2Bb&f=~~"
                      "&g=%25zz%254&h=%E2%82%AC&i=a%20b%2520\n"),
          "query: decoded, re-encoded, sorted by name then value");

    /* the sort is on the encoded form: "%5B" ("[") before "A" */

    init_req(&req, h, "GET", "/", "A=1&[=2&%2a=3&-=4", EMPTY, hv);
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK
          && contains(dbg.canonical, dbg.canonical_len,
                      "\n%2A=3&%5B=2&-=4&A=1\n"),
          "query: sorted as encoded");

    /* a canonical request longer than any buffer: debug text is whole */

    h[0].name = str("host");
    h[0].value = str(HOST);

    for (i = 1; i < NGX_REPLAY_SIGV4_MAX_HEADERS; i++) {
        memset(big[i], 'a' + (int) (i % 26), sizeof(big[i]) - 1);
        big[i][sizeof(big[i]) - 1] = '\0';
        big[i][0] = 'x';
        big[i][1] = '-';
        h[i].name = str(big[i]);
        h[i].value = str(big[i]);
    }

    req.nheaders = NGX_REPLAY_SIGV4_MAX_HEADERS;
    rc = sign(&creds, &req, out, sizeof(out), &len);

    ok = rc == NGX_REPLAY_SIGV4_OK && dbg.canonical_len > 16384
         && EVP_Digest(dbg.canonical, dbg.canonical_len, md, &n,
                       EVP_sha256(), NULL);

    for (i = 0; ok && i < 32; i++) {
        char  hx[3];

        snprintf(hx, sizeof(hx), "%02x", md[i]);
        ok = memcmp(dbg.sts + dbg.sts_len - 64 + 2 * i, hx, 2) == 0;
    }

    check(ok, "debug: long canonical request hashes to the signed hash");

    /* without a debug callback nothing is built, the signature is the same */

    strcpy(sig, signature_of(out, len));
    req.debug = NULL;
    dbg.calls = 0;
    rc = sign(&creds, &req, out, sizeof(out), &len);

    check(rc == NGX_REPLAY_SIGV4_OK && dbg.calls == 0
          && strcmp(sig, signature_of(out, len)) == 0,
          "debug: off signs the same, no callback");
}


static void
test_no_secrets(void)
{
    char                         out[1024];
    size_t                       len;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    h[MAX_H];
    ngx_replay_sigv4_request_t   req;

    static const char  *hv[] = {
        "host", HOST, "x-amz-date", DATE,
        "x-amz-content-sha256", EMPTY, NULL
    };

    init_creds(&creds, SECRET, "TOKEN");
    init_req(&req, h, "GET", "/", "", EMPTY, hv);

    check(sign(&creds, &req, out, sizeof(out), &len) == NGX_REPLAY_SIGV4_OK
          && dbg.calls == 2
          && !contains(out, len, "wJalrXUtnFEMI")
          && !contains(dbg.canonical, dbg.canonical_len, "wJalrXUtnFEMI")
          && !contains(dbg.sts, dbg.sts_len, "wJalrXUtnFEMI"),
          "secrets: not in the header form output nor debug text");

    check(presign(&creds, &req, 60, out, sizeof(out), &len)
          == NGX_REPLAY_SIGV4_OK
          && dbg.calls == 4
          && !contains(out, len, "wJalrXUtnFEMI")
          && !contains(dbg.canonical, dbg.canonical_len, "wJalrXUtnFEMI")
          && !contains(dbg.sts, dbg.sts_len, "wJalrXUtnFEMI"),
          "secrets: not in the presigned target nor debug text");
}


int
main(void)
{
    test_format_date();
    test_uri_encode();
    test_signing_key();
    test_get_object();
    test_put_object();
    test_bucket_queries();
    test_presign_example();
    test_session_token();
    test_key_cache();
    test_limits();
    test_canonical_form();
    test_no_secrets();

    printf("sigv4: %d passed, %d failed\n", tests - failures, failures);

    return failures ? 1 : 0;
}
