
/*
 * Signs one HTTP request read on stdin, in the format of the AWS
 * Signature Version 4 test suite's .req files:
 *
 *     GET /path?query HTTP/1.1
 *     Host:example.amazonaws.com
 *     X-Amz-Date:20150830T123600Z
 *
 * Every header is signed; a body after the blank line is ignored.  The
 * last line printed is the Authorization value (--payload-hash) or the
 * presigned request target (--presign).  Exit status: 0 signed, 1 bad
 * request or signing failure, 2 bad usage.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_replay_sigv4.h"


/* one more than the signer takes, so that it, not we, says no */
#define DRIVER_MAX_HEADERS  (NGX_REPLAY_SIGV4_MAX_HEADERS + 1)

/* S3 refuses presigned URLs valid for longer than seven days */
#define DRIVER_MAX_EXPIRES  604800


typedef struct {
    const char  *access_key_id;
    const char  *secret_access_key;
    const char  *session_token;
    const char  *date;
    const char  *region;
    const char  *service;
    const char  *payload_hash;
    const char  *presign;
    int          verbose;
} driver_opts_t;


static const char  *prog = "sigv4_driver";


static void
usage(FILE *f)
{
    fprintf(f,
        "usage: %s --access-key-id ID --secret-access-key KEY\n"
        "           --date YYYYMMDDTHHMMSSZ --region REGION"
        " --service SERVICE\n"
        "           [--session-token TOKEN] [-v]\n"
        "           (--payload-hash HEX|UNSIGNED-PAYLOAD"
        " | --presign SECONDS) < request.req\n"
        "\n"
        "Reads one HTTP request (request line, headers, blank line) on\n"
        "stdin and signs all its headers with AWS Signature Version 4 for\n"
        "S3.  Prints the Authorization value (--payload-hash) or the\n"
        "presigned request target (--presign) as the last line; -v prints\n"
        "the canonical request and the string to sign before it.\n",
        prog);
}


static void
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    exit(2);
}


static int
is_hex64(const char *s)
{
    size_t  i;

    for (i = 0; i < 64; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return s[64] == '\0';
}


static int
is_amz_date(const char *s)
{
    size_t  i;

    if (strlen(s) != NGX_REPLAY_SIGV4_DATE_LEN) {
        return 0;
    }

    for (i = 0; i < NGX_REPLAY_SIGV4_DATE_LEN; i++) {
        if (i == 8 ? s[i] != 'T'
            : i == 15 ? s[i] != 'Z'
            : !(s[i] >= '0' && s[i] <= '9'))
        {
            return 0;
        }
    }

    return 1;
}


static void
parse_args(int argc, char **argv, driver_opts_t *o)
{
    int           i;
    size_t        n, k;
    const char   *arg, *eq, *value;
    const char  **slot;

    static const struct {
        const char  *name;
        size_t       offset;
    } opts[] = {
        { "--access-key-id", offsetof(driver_opts_t, access_key_id) },
        { "--secret-access-key", offsetof(driver_opts_t, secret_access_key) },
        { "--session-token", offsetof(driver_opts_t, session_token) },
        { "--date", offsetof(driver_opts_t, date) },
        { "--region", offsetof(driver_opts_t, region) },
        { "--service", offsetof(driver_opts_t, service) },
        { "--payload-hash", offsetof(driver_opts_t, payload_hash) },
        { "--presign", offsetof(driver_opts_t, presign) },
    };

    memset(o, 0, sizeof(driver_opts_t));

    for (i = 1; i < argc; i++) {
        arg = argv[i];

        if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            o->verbose = 1;
            continue;
        }

        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(0);
        }

        /* "--name value" or "--name=value" */

        eq = strchr(arg, '=');
        n = eq ? (size_t) (eq - arg) : strlen(arg);

        for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strlen(opts[k].name) == n
                && strncmp(arg, opts[k].name, n) == 0)
            {
                break;
            }
        }

        if (k == sizeof(opts) / sizeof(opts[0])) {
            usage_error("unknown option \"%s\"", arg);
        }

        if (eq) {
            value = eq + 1;

        } else {
            if (i + 1 == argc) {
                usage_error("option %s needs a value", opts[k].name);
            }

            value = argv[++i];
        }

        slot = (const char **) ((char *) o + opts[k].offset);

        if (*slot) {
            usage_error("option %s given twice", opts[k].name);
        }

        *slot = value;
    }

    if (o->access_key_id == NULL || o->access_key_id[0] == '\0') {
        usage_error("%s is required", "--access-key-id");
    }

    if (o->secret_access_key == NULL) {
        usage_error("%s is required", "--secret-access-key");
    }

    if (o->date == NULL) {
        usage_error("%s is required", "--date");
    }

    if (!is_amz_date(o->date)) {
        usage_error("--date \"%s\" is not YYYYMMDDTHHMMSSZ", o->date);
    }

    if (o->region == NULL || o->region[0] == '\0') {
        usage_error("%s is required", "--region");
    }

    if (o->service == NULL || o->service[0] == '\0') {
        usage_error("%s is required", "--service");
    }

    if ((o->payload_hash == NULL) == (o->presign == NULL)) {
        usage_error("%s", "give exactly one of --payload-hash and --presign");
    }

    if (o->payload_hash
        && !is_hex64(o->payload_hash)
        && strcmp(o->payload_hash, "UNSIGNED-PAYLOAD") != 0
        && strncmp(o->payload_hash, "STREAMING-", 10) != 0)
    {
        usage_error("--payload-hash \"%s\" is neither 64 lower-case hex"
                    " digits nor UNSIGNED-PAYLOAD", o->payload_hash);
    }

    if (o->presign) {
        n = strspn(o->presign, "0123456789");

        if (n == 0 || n > 6 || o->presign[n] != '\0'
            || strtoul(o->presign, NULL, 10) == 0
            || strtoul(o->presign, NULL, 10) > DRIVER_MAX_EXPIRES)
        {
            usage_error("--presign \"%s\" is not a number of seconds"
                        " from 1 to 604800", o->presign);
        }
    }
}


static char *
read_all(FILE *f, size_t *len)
{
    char    *buf, *p;
    size_t   size, n;

    size = 4096;
    *len = 0;

    buf = malloc(size);
    if (buf == NULL) {
        return NULL;
    }

    for ( ;; ) {
        n = fread(buf + *len, 1, size - *len, f);
        *len += n;

        if (*len < size) {
            if (ferror(f)) {
                free(buf);
                return NULL;
            }

            return buf;
        }

        size *= 2;

        p = realloc(buf, size);
        if (p == NULL) {
            free(buf);
            return NULL;
        }

        buf = p;
    }
}


static void
request_error(const char *msg, size_t line)
{
    fprintf(stderr, "%s: bad request on stdin, line %zu: %s\n", prog, line,
            msg);
    exit(1);
}


/*
 * Fills req from the text: values point into it.  A header line that
 * starts with white space continues the previous value; the line break
 * stays inside the value, where the signer folds it into a space.
 */

static void
parse_request(char *text, size_t len, ngx_replay_sigv4_request_t *req,
    ngx_replay_sigv4_header_t *headers)
{
    char    *p, *end, *eol, *next, *sp, *last, *colon, *q;
    size_t   line, n;

    p = text;
    end = text + len;
    line = 1;
    n = 0;

    eol = memchr(p, '\n', (size_t) (end - p));
    next = eol ? eol + 1 : end;

    if (eol == NULL) {
        eol = end;
    }

    if (eol > p && eol[-1] == '\r') {
        eol--;
    }

    /* "METHOD target HTTP/1.1", where the target may hold spaces */

    sp = memchr(p, ' ', (size_t) (eol - p));

    if (sp == NULL || sp == p) {
        request_error("expected \"METHOD target HTTP/1.1\"", line);
    }

    req->method.data = (unsigned char *) p;
    req->method.len = (size_t) (sp - p);

    for (last = eol - 1; last > sp && *last != ' '; last--) { /* void */ }

    if (last == sp || eol - last < 6 || strncmp(last + 1, "HTTP/", 5) != 0) {
        last = eol;
    }

    sp++;

    if (sp >= last) {
        request_error("no request target", line);
    }

    q = memchr(sp, '?', (size_t) (last - sp));

    req->path.data = (unsigned char *) sp;
    req->path.len = (size_t) ((q ? q : last) - sp);

    if (q) {
        req->query.data = (unsigned char *) q + 1;
        req->query.len = (size_t) (last - q - 1);
    }

    /* headers up to a blank line or the end */

    for (p = next; p < end; p = next) {
        line++;

        eol = memchr(p, '\n', (size_t) (end - p));
        next = eol ? eol + 1 : end;

        if (eol == NULL) {
            eol = end;
        }

        if (eol > p && eol[-1] == '\r') {
            eol--;
        }

        if (eol == p) {
            break;
        }

        if (*p == ' ' || *p == '\t') {
            if (n == 0) {
                request_error("continuation line before any header", line);
            }

            headers[n - 1].value.len =
                (size_t) ((unsigned char *) eol - headers[n - 1].value.data);
            continue;
        }

        colon = memchr(p, ':', (size_t) (eol - p));

        if (colon == NULL || colon == p) {
            request_error("expected \"Name:value\"", line);
        }

        if (n == DRIVER_MAX_HEADERS) {
            request_error("too many headers", line);
        }

        headers[n].name.data = (unsigned char *) p;
        headers[n].name.len = (size_t) (colon - p);
        headers[n].value.data = (unsigned char *) colon + 1;
        headers[n].value.len = (size_t) (eol - colon - 1);
        n++;
    }

    if (n == 0) {
        request_error("no headers (a Host header is needed)", line);
    }

    req->headers = headers;
    req->nheaders = n;
}


static void
debug_print(void *data, const char *what, const unsigned char *text,
    size_t len)
{
    (void) data;

    printf("--- %s ---\n%.*s\n", what, (int) len, (const char *) text);
}


static ngx_replay_sigv4_str_t
str(const char *s)
{
    ngx_replay_sigv4_str_t  v;

    v.data = (const unsigned char *) (s ? s : "");
    v.len = s ? strlen(s) : 0;

    return v;
}


int
main(int argc, char **argv)
{
    int                          rc;
    char                        *text;
    size_t                       len, size, out_len;
    unsigned char               *out, *p;
    driver_opts_t                o;
    ngx_replay_sigv4_creds_t     creds;
    ngx_replay_sigv4_header_t    headers[DRIVER_MAX_HEADERS];
    ngx_replay_sigv4_request_t   req;

    if (argc > 0 && argv[0][0] != '\0') {
        prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    }

    parse_args(argc, argv, &o);

    text = read_all(stdin, &len);
    if (text == NULL) {
        fprintf(stderr, "%s: cannot read the request on stdin\n", prog);
        return 1;
    }

    if (len == 0) {
        fprintf(stderr, "%s: no request on stdin\n", prog);
        free(text);
        return 1;
    }

    memset(&creds, 0, sizeof(ngx_replay_sigv4_creds_t));
    creds.access_key_id = str(o.access_key_id);
    creds.secret_access_key = str(o.secret_access_key);
    creds.session_token = str(o.session_token);
    creds.region = str(o.region);
    creds.service = str(o.service);

    memset(&req, 0, sizeof(ngx_replay_sigv4_request_t));
    parse_request(text, len, &req, headers);

    req.payload_hash = str(o.payload_hash);
    memcpy(req.amz_date, o.date, NGX_REPLAY_SIGV4_DATE_LEN);

    if (o.verbose) {
        req.debug = debug_print;
    }

    out = NULL;
    size = 1024;

    for ( ;; ) {
        p = realloc(out, size);
        if (p == NULL) {
            fprintf(stderr, "%s: out of memory\n", prog);
            rc = NGX_REPLAY_SIGV4_ERROR;
            break;
        }

        out = p;

        if (o.presign) {
            rc = ngx_replay_sigv4_presign(&creds, &req,
                                          strtoul(o.presign, NULL, 10),
                                          out, size, &out_len);
        } else {
            rc = ngx_replay_sigv4_sign(&creds, &req, out, size, &out_len);
        }

        if (rc != NGX_REPLAY_SIGV4_TOO_LONG || size > 1024 * 1024) {
            break;
        }

        size *= 2;
    }

    switch (rc) {

    case NGX_REPLAY_SIGV4_OK:
        printf("%.*s\n", (int) out_len, (char *) out);
        break;

    case NGX_REPLAY_SIGV4_BAD_INPUT:
        fprintf(stderr, "%s: the signer refused the request: more than %d"
                " headers or %d query parameters, no Host header, an empty"
                " header name, or X-Amz-* parameters of its own in a"
                " request to presign\n", prog, NGX_REPLAY_SIGV4_MAX_HEADERS,
                NGX_REPLAY_SIGV4_MAX_PARAMS);
        break;

    case NGX_REPLAY_SIGV4_TOO_LONG:
        fprintf(stderr, "%s: the signed request is too long\n", prog);
        break;

    default:
        fprintf(stderr, "%s: libcrypto failed\n", prog);
        break;
    }

    free(out);
    free(text);

    return rc == NGX_REPLAY_SIGV4_OK ? 0 : 1;
}
