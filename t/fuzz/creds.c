
/*
 * Fuzz target: ngx_replay_sigv4_creds_line(), the parser of
 * "replay_s3_credentials file=PATH" (the module splits the file at "\n"
 * and calls it for each line, as here).
 *
 * Invariants: no read outside the line (each line is copied to the heap
 * at its exact size); a known result code; for a key, a value inside the
 * line, without blanks at its start or blanks or "\r" at its end; the
 * same answer as the plain reference parser below, written separately
 * from the format's description in docs/directives.md.
 */


#include "fuzz.h"
#include "ngx_http_replay_sigv4.h"


static int
lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}


static int
blank(int c)
{
    return c == ' ' || c == '\t';
}


/* the format, read the simple way: trim, then look at the pieces */

static int
reference(const unsigned char *s, size_t len, size_t *voff, size_t *vlen)
{
    size_t       b, e, eq, kb, ke, vb, i, j;
    const char  *names[] = { "access_key_id", "secret_access_key",
                             "session_token", "expiration",
                             "x_security_token_expires" };

    *voff = 0;
    *vlen = 0;

    b = 0;
    e = len;

    while (b < e && blank(s[b])) {
        b++;
    }

    while (e > b && (blank(s[e - 1]) || s[e - 1] == '\r')) {
        e--;
    }

    if (b == e || s[b] == '#' || s[b] == ';') {
        return NGX_REPLAY_SIGV4_CREDS_SKIP;
    }

    if (s[b] == '[') {
        if (e - b == 9 && memcmp(s + b, "[default]", 9) == 0) {
            return NGX_REPLAY_SIGV4_CREDS_SKIP;
        }

        return NGX_REPLAY_SIGV4_CREDS_PROFILE;
    }

    for (eq = b; eq < e && s[eq] != '='; eq++) { /* void */ }

    if (eq == e) {
        return NGX_REPLAY_SIGV4_CREDS_NO_EQUALS;
    }

    kb = b;
    ke = eq;

    while (ke > kb && blank(s[ke - 1])) {
        ke--;
    }

    vb = eq + 1;

    while (vb < e && blank(s[vb])) {
        vb++;
    }

    if (ke - kb > 4 && lower(s[kb]) == 'a' && lower(s[kb + 1]) == 'w'
        && lower(s[kb + 2]) == 's' && s[kb + 3] == '_')
    {
        kb += 4;
    }

    for (i = 0; i < 5; i++) {
        if (ke - kb != strlen(names[i])) {
            continue;
        }

        for (j = 0; j < ke - kb && lower(s[kb + j]) == names[i][j]; j++) {
            /* void */
        }

        if (j == ke - kb) {
            *voff = vb;
            *vlen = e - vb;
            /* both names of the expiry are one key */
            return (i < 4) ? (int) i + 1 : NGX_REPLAY_SIGV4_CREDS_EXPIRATION;
        }
    }

    return NGX_REPLAY_SIGV4_CREDS_SKIP;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                      rc, ref;
    size_t                   start, end, voff, vlen;
    unsigned char           *line;
    ngx_replay_sigv4_str_t   v;

    for (start = 0; start <= size; start = end + 1) {
        for (end = start; end < size && data[end] != '\n'; end++) {
            /* void */
        }

        line = malloc(end - start ? end - start : 1);
        fuzz_check(line != NULL);
        memcpy(line, data + start, end - start);

        rc = ngx_replay_sigv4_creds_line(line, end - start, &v);

        fuzz_check(rc >= NGX_REPLAY_SIGV4_CREDS_NO_EQUALS
                   && rc <= NGX_REPLAY_SIGV4_CREDS_EXPIRATION);

        ref = reference(line, end - start, &voff, &vlen);
        fuzz_check(rc == ref);

        if (rc > 0) {
            fuzz_check(v.data >= line && v.data <= line + (end - start));
            fuzz_check(v.len <= (size_t) (line + (end - start) - v.data));
            fuzz_check((size_t) (v.data - line) == voff && v.len == vlen);

            if (v.len) {
                fuzz_check(!blank(v.data[0]));
                fuzz_check(!blank(v.data[v.len - 1])
                           && v.data[v.len - 1] != '\r');
            }

        } else {
            fuzz_check(v.len == 0);
        }

        free(line);

        if (end == size) {
            break;
        }
    }

    return 0;
}
