
/*
 * Fuzz target: the readers of what the AWS credential services answer
 * (ngx_http_replay_creds_parse.c): IMDS's and the container endpoint's
 * JSON, STS's XML, RFC 3339 times.  The first byte picks the reader, the
 * rest is the answer (copied to the heap at its exact size).
 *
 * Invariants: no read outside the answer; a known result code; on
 * success, values within their limits and as ngx_replay_creds_check()
 * wants them (they go into headers) and an expiry; on failure no value
 * left behind, a field named where one is at fault, a printable error
 * code; a time read as the C library's timegm() reads the plain form.
 */


#define _GNU_SOURCE
#include <time.h>

#include "fuzz.h"
#include "ngx_http_replay_creds_parse.h"


static ngx_replay_creds_parsed_t  out;


static void
check_result(int rc)
{
    size_t  i;

    fuzz_check(rc == NGX_REPLAY_CREDS_OK || rc == NGX_REPLAY_CREDS_SYNTAX
               || rc == NGX_REPLAY_CREDS_MISSING
               || rc == NGX_REPLAY_CREDS_INVALID
               || rc == NGX_REPLAY_CREDS_SERVICE_ERROR);

    if (rc == NGX_REPLAY_CREDS_OK) {
        fuzz_check(out.key_id_len > 0
                   && out.key_id_len <= NGX_REPLAY_CREDS_MAX_KEY_ID);
        fuzz_check(out.secret_len > 0
                   && out.secret_len <= NGX_REPLAY_CREDS_MAX_SECRET);
        fuzz_check(out.token_len <= NGX_REPLAY_CREDS_MAX_TOKEN);
        fuzz_check(out.expiration > 0);
        fuzz_check(ngx_replay_creds_check(&out) == NGX_REPLAY_CREDS_OK);

        for (i = 0; i < out.token_len; i++) {
            fuzz_check(out.token[i] > 0x20 && out.token[i] < 0x7f);
        }

        return;
    }

    fuzz_check(out.key_id_len == 0 && out.secret_len == 0
               && out.token_len == 0);

    if (rc == NGX_REPLAY_CREDS_MISSING) {
        fuzz_check(out.field != NULL);
    }

    if (rc == NGX_REPLAY_CREDS_SERVICE_ERROR) {
        fuzz_check(out.code[0] != '\0');
    }

    for (i = 0; out.code[i]; i++) {
        fuzz_check(i < NGX_REPLAY_CREDS_MAX_CODE);
        fuzz_check(out.code[i] > 0x20 && out.code[i] < 0x7f
                   && out.code[i] != '"' && out.code[i] != '\\');
    }
}


static void
check_time(const unsigned char *s, size_t len)
{
    int        rc;
    char       buf[32];
    time_t     t;
    struct tm  tm;

    rc = ngx_replay_creds_parse_time(s, len, &t);

    fuzz_check(rc == NGX_REPLAY_CREDS_OK || rc == NGX_REPLAY_CREDS_SYNTAX);

    /* the plain form, against the C library */

    if (len != 20 || s[19] != 'Z' || s[10] != 'T') {
        return;
    }

    memcpy(buf, s, 20);
    buf[20] = '\0';
    memset(&tm, 0, sizeof(tm));

    if (strptime(buf, "%Y-%m-%dT%H:%M:%SZ", &tm) != buf + 20
        || tm.tm_year < 70 || tm.tm_sec > 59)
    {
        return;
    }

    /* strptime takes a 31st of any month and lone digits; ours not */

    if (rc == NGX_REPLAY_CREDS_OK) {
        fuzz_check(t == timegm(&tm));
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char  *doc;
    unsigned        kind;

    if (size == 0) {
        return 0;
    }

    kind = data[0] % 3;
    size--;

    doc = malloc(size ? size : 1);
    fuzz_check(doc != NULL);
    memcpy(doc, data + 1, size);

    switch (kind) {

    case 0:
        check_result(ngx_replay_creds_parse_json(doc, size, &out));
        break;

    case 1:
        check_result(ngx_replay_creds_parse_sts(doc, size, &out));
        break;

    default:
        check_time(doc, size);
        break;
    }

    free(doc);

    return 0;
}
