
/*
 * Reading what the AWS credential services answer, see
 * ngx_http_replay_creds_parse.h.
 *
 * No nginx types here: the file builds alone for t/unit/ and t/fuzz/.
 * The JSON reader knows the whole grammar but keeps only top-level
 * string members; the XML reader is no XML parser, it finds the few
 * elements of STS's documented answer by name, each inside the one
 * before, and decodes their text.
 */


#include <string.h>

#include "ngx_http_replay_creds_parse.h"


/* JSON and XML nest objects; a deeper document is refused */
#define NGX_REPLAY_CREDS_MAX_DEPTH  32

#define NGX_REPLAY_CREDS_MAX_NAME   32


#define ngx_replay_creds_ws(c)                                               \
    ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')

#define ngx_replay_creds_digit(c)  ((c) >= '0' && (c) <= '9')


typedef struct {
    const unsigned char           *p;
    const unsigned char           *end;
} ngx_replay_creds_text_t;


/* a member or element the readers keep, and where its text goes */
typedef struct {
    const char                    *name;
    unsigned char                 *dst;
    size_t                         size;
    size_t                        *len;
} ngx_replay_creds_field_t;


static int ngx_replay_creds_failed(ngx_replay_creds_parsed_t *out, int rc);
static int ngx_replay_creds_json(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out);
static int ngx_replay_creds_sts(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out);
static int ngx_replay_creds_json_string(ngx_replay_creds_text_t *t,
    unsigned char *dst, size_t size, size_t *len);
static int ngx_replay_creds_json_skip(ngx_replay_creds_text_t *t);
static int ngx_replay_creds_hex4(const unsigned char *p, unsigned *v);
static size_t ngx_replay_creds_utf8(unsigned char *dst, size_t size,
    size_t len, unsigned cp);
static int ngx_replay_creds_xml_find(ngx_replay_creds_text_t *in,
    const char *name, ngx_replay_creds_text_t *content);
static int ngx_replay_creds_xml_text(ngx_replay_creds_text_t *t,
    unsigned char *dst, size_t size, size_t *len);
static void ngx_replay_creds_set_code(ngx_replay_creds_parsed_t *out,
    const unsigned char *s, size_t len);
static int ngx_replay_creds_finish(ngx_replay_creds_parsed_t *out,
    const unsigned char *expiration, size_t len);


static void
ngx_replay_creds_reset(ngx_replay_creds_parsed_t *out)
{
    out->key_id_len = 0;
    out->secret_len = 0;
    out->token_len = 0;
    out->expiration = 0;
    out->field = NULL;
    out->code[0] = '\0';
}


int
ngx_replay_creds_parse_json(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out)
{
    return ngx_replay_creds_failed(out, ngx_replay_creds_json(p, len, out));
}


int
ngx_replay_creds_parse_sts(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out)
{
    return ngx_replay_creds_failed(out, ngx_replay_creds_sts(p, len, out));
}


/* a reader that fails leaves no value behind: the caller wipes them */

static int
ngx_replay_creds_failed(ngx_replay_creds_parsed_t *out, int rc)
{
    if (rc != NGX_REPLAY_CREDS_OK) {
        out->key_id_len = 0;
        out->secret_len = 0;
        out->token_len = 0;
        out->expiration = 0;
    }

    return rc;
}


static int
ngx_replay_creds_json(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out)
{
    int                       rc, seen[5];
    size_t                    i, n, exp_len, code_len;
    unsigned char             name[NGX_REPLAY_CREDS_MAX_NAME];
    unsigned char             exp[64], code[NGX_REPLAY_CREDS_MAX_CODE];
    ngx_replay_creds_text_t   t;
    ngx_replay_creds_field_t  fields[5];

    ngx_replay_creds_reset(out);

    exp_len = 0;
    code_len = 0;

    fields[0] = (ngx_replay_creds_field_t) { "AccessKeyId", out->key_id,
        sizeof(out->key_id), &out->key_id_len };
    fields[1] = (ngx_replay_creds_field_t) { "SecretAccessKey", out->secret,
        sizeof(out->secret), &out->secret_len };
    fields[2] = (ngx_replay_creds_field_t) { "Token", out->token,
        sizeof(out->token), &out->token_len };
    fields[3] = (ngx_replay_creds_field_t) { "Expiration", exp,
        sizeof(exp), &exp_len };
    fields[4] = (ngx_replay_creds_field_t) { "Code", code, sizeof(code),
        &code_len };

    memset(seen, 0, sizeof(seen));

    t.p = p;
    t.end = p + len;

    while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
        t.p++;
    }

    if (t.p == t.end || *t.p++ != '{') {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
        t.p++;
    }

    if (t.p < t.end && *t.p == '}') {
        t.p++;
        goto done;
    }

    for ( ;; ) {
        if (t.p == t.end || *t.p != '"') {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        rc = ngx_replay_creds_json_string(&t, name, sizeof(name), &n);
        if (rc != NGX_REPLAY_CREDS_OK) {
            return rc;
        }

        while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
            t.p++;
        }

        if (t.p == t.end || *t.p++ != ':') {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
            t.p++;
        }

        for (i = 0; i < 5; i++) {
            if (n == strlen(fields[i].name)
                && memcmp(name, fields[i].name, n) == 0)
            {
                break;
            }
        }

        /* the ECS agent's errors are {"code": ..., "message": ...} */
        if (i == 5 && n == 4 && memcmp(name, "code", 4) == 0) {
            i = 4;
        }

        if (i < 5 && t.p < t.end && *t.p == '"') {
            if (seen[i]) {
                out->field = fields[i].name;
                return NGX_REPLAY_CREDS_INVALID;
            }

            seen[i] = 1;

            rc = ngx_replay_creds_json_string(&t, fields[i].dst,
                                              fields[i].size, fields[i].len);
            if (rc != NGX_REPLAY_CREDS_OK) {
                return rc;
            }

            /* an error code is only logged: a long one is cut */
            if (*fields[i].len > fields[i].size && i != 4) {
                out->field = fields[i].name;
                return NGX_REPLAY_CREDS_INVALID;
            }

        } else {
            rc = ngx_replay_creds_json_skip(&t);
            if (rc != NGX_REPLAY_CREDS_OK) {
                return rc;
            }
        }

        while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
            t.p++;
        }

        if (t.p == t.end) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (*t.p == '}') {
            t.p++;
            break;
        }

        if (*t.p++ != ',') {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
            t.p++;
        }
    }

done:

    while (t.p < t.end && ngx_replay_creds_ws(*t.p)) {
        t.p++;
    }

    if (t.p != t.end) {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    if (seen[4]) {
        ngx_replay_creds_set_code(out, code, code_len < sizeof(code)
                                             ? code_len : sizeof(code));
    }

    /* IMDS says "Code": "Success"; anything else is its error */

    if (seen[4] && strcmp(out->code, "Success") != 0) {
        out->key_id_len = 0;
        out->secret_len = 0;
        out->token_len = 0;
        return NGX_REPLAY_CREDS_SERVICE_ERROR;
    }

    out->code[0] = '\0';

    if (!seen[0]) {
        out->field = "AccessKeyId";
        return NGX_REPLAY_CREDS_MISSING;
    }

    if (!seen[1]) {
        out->field = "SecretAccessKey";
        return NGX_REPLAY_CREDS_MISSING;
    }

    if (!seen[3]) {
        out->field = "Expiration";
        return NGX_REPLAY_CREDS_MISSING;
    }

    return ngx_replay_creds_finish(out, exp, exp_len);
}


static int
ngx_replay_creds_sts(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out)
{
    int                       rc;
    size_t                    i, exp_len, code_len;
    unsigned char             exp[64], code[NGX_REPLAY_CREDS_MAX_CODE];
    ngx_replay_creds_text_t   doc, elt, creds, v;
    ngx_replay_creds_field_t  fields[4];

    ngx_replay_creds_reset(out);

    doc.p = p;
    doc.end = p + len;

    /* <ErrorResponse><Error><Type/><Code/><Message/></Error>...  */

    elt = doc;

    rc = ngx_replay_creds_xml_find(&elt, "ErrorResponse", &v);

    if (rc == NGX_REPLAY_CREDS_OK) {
        elt = v;

        if (ngx_replay_creds_xml_find(&elt, "Error", &v)
            == NGX_REPLAY_CREDS_OK)
        {
            elt = v;
        }

        if (ngx_replay_creds_xml_find(&elt, "Code", &v)
            == NGX_REPLAY_CREDS_OK
            && ngx_replay_creds_xml_text(&v, code, sizeof(code), &code_len)
               == NGX_REPLAY_CREDS_OK)
        {
            ngx_replay_creds_set_code(out, code,
                                      code_len < sizeof(code)
                                      ? code_len : sizeof(code));
        }

        if (out->code[0] == '\0') {
            ngx_replay_creds_set_code(out, NULL, 0);
        }

        return NGX_REPLAY_CREDS_SERVICE_ERROR;
    }

    if (rc != NGX_REPLAY_CREDS_MISSING) {
        return rc;
    }

    elt = doc;

    rc = ngx_replay_creds_xml_find(&elt, "AssumeRoleWithWebIdentityResult",
                                   &v);
    if (rc != NGX_REPLAY_CREDS_OK) {
        if (rc == NGX_REPLAY_CREDS_MISSING) {
            out->field = "AssumeRoleWithWebIdentityResult";
        }

        return rc;
    }

    rc = ngx_replay_creds_xml_find(&v, "Credentials", &creds);
    if (rc != NGX_REPLAY_CREDS_OK) {
        if (rc == NGX_REPLAY_CREDS_MISSING) {
            out->field = "Credentials";
        }

        return rc;
    }

    exp_len = 0;

    fields[0] = (ngx_replay_creds_field_t) { "AccessKeyId", out->key_id,
        sizeof(out->key_id), &out->key_id_len };
    fields[1] = (ngx_replay_creds_field_t) { "SecretAccessKey", out->secret,
        sizeof(out->secret), &out->secret_len };
    fields[2] = (ngx_replay_creds_field_t) { "SessionToken", out->token,
        sizeof(out->token), &out->token_len };
    fields[3] = (ngx_replay_creds_field_t) { "Expiration", exp,
        sizeof(exp), &exp_len };

    for (i = 0; i < 4; i++) {
        elt = creds;

        rc = ngx_replay_creds_xml_find(&elt, fields[i].name, &v);

        if (rc == NGX_REPLAY_CREDS_OK) {
            rc = ngx_replay_creds_xml_text(&v, fields[i].dst, fields[i].size,
                                           fields[i].len);
        }

        if (rc == NGX_REPLAY_CREDS_OK && *fields[i].len > fields[i].size) {
            rc = NGX_REPLAY_CREDS_INVALID;
        }

        if (rc != NGX_REPLAY_CREDS_OK) {
            out->key_id_len = 0;
            out->secret_len = 0;
            out->token_len = 0;

            if (rc != NGX_REPLAY_CREDS_SYNTAX) {
                out->field = fields[i].name;
            }

            return rc;
        }
    }

    return ngx_replay_creds_finish(out, exp, exp_len);
}


/* the checks both formats end with */

static int
ngx_replay_creds_finish(ngx_replay_creds_parsed_t *out,
    const unsigned char *expiration, size_t len)
{
    int  rc;

    if (ngx_replay_creds_parse_time(expiration, len, &out->expiration)
        != NGX_REPLAY_CREDS_OK)
    {
        rc = NGX_REPLAY_CREDS_INVALID;
        out->field = "Expiration";
        goto failed;
    }

    rc = ngx_replay_creds_check(out);

    if (rc == NGX_REPLAY_CREDS_OK) {
        return rc;
    }

failed:

    out->key_id_len = 0;
    out->secret_len = 0;
    out->token_len = 0;
    out->expiration = 0;

    return rc;
}


int
ngx_replay_creds_check(ngx_replay_creds_parsed_t *out)
{
    size_t  i;

    if (out->key_id_len == 0 || out->key_id_len > sizeof(out->key_id)) {
        out->field = "AccessKeyId";
        return NGX_REPLAY_CREDS_INVALID;
    }

    for (i = 0; i < out->key_id_len; i++) {
        if (!((out->key_id[i] >= 'A' && out->key_id[i] <= 'Z')
              || (out->key_id[i] >= 'a' && out->key_id[i] <= 'z')
              || ngx_replay_creds_digit(out->key_id[i])))
        {
            out->field = "AccessKeyId";
            return NGX_REPLAY_CREDS_INVALID;
        }
    }

    if (out->secret_len == 0 || out->secret_len > sizeof(out->secret)) {
        out->field = "SecretAccessKey";
        return NGX_REPLAY_CREDS_INVALID;
    }

    for (i = 0; i < out->secret_len; i++) {
        if (out->secret[i] <= 0x20 || out->secret[i] >= 0x7f) {
            out->field = "SecretAccessKey";
            return NGX_REPLAY_CREDS_INVALID;
        }
    }

    if (out->token_len > sizeof(out->token)) {
        out->field = "Token";
        return NGX_REPLAY_CREDS_INVALID;
    }

    for (i = 0; i < out->token_len; i++) {
        if (out->token[i] <= 0x20 || out->token[i] >= 0x7f) {
            out->field = "Token";
            return NGX_REPLAY_CREDS_INVALID;
        }
    }

    return NGX_REPLAY_CREDS_OK;
}


/* days since 1970-01-01 of a proleptic Gregorian date */

static long
ngx_replay_creds_days(long y, long m, long d)
{
    long  era, yoe, doy, doe;

    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static int
ngx_replay_creds_number(const unsigned char *p, size_t n, long *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (!ngx_replay_creds_digit(p[i])) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        *v = *v * 10 + (p[i] - '0');
    }

    return NGX_REPLAY_CREDS_OK;
}


int
ngx_replay_creds_parse_time(const unsigned char *p, size_t len, time_t *t)
{
    long                  year, mon, day, hour, min, sec, oh, om, mdays;
    const unsigned char  *q, *end;

    static const long  days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
                                  30, 31 };

    /* YYYY-MM-DDTHH:MM:SS */

    if (len < 20
        || p[4] != '-' || p[7] != '-' || (p[10] != 'T' && p[10] != 't')
        || p[13] != ':' || p[16] != ':'
        || ngx_replay_creds_number(p, 4, &year) != NGX_REPLAY_CREDS_OK
        || ngx_replay_creds_number(p + 5, 2, &mon) != NGX_REPLAY_CREDS_OK
        || ngx_replay_creds_number(p + 8, 2, &day) != NGX_REPLAY_CREDS_OK
        || ngx_replay_creds_number(p + 11, 2, &hour) != NGX_REPLAY_CREDS_OK
        || ngx_replay_creds_number(p + 14, 2, &min) != NGX_REPLAY_CREDS_OK
        || ngx_replay_creds_number(p + 17, 2, &sec) != NGX_REPLAY_CREDS_OK)
    {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || hour > 23
        || min > 59 || sec > 60)
    {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    mdays = days[mon - 1];

    if (mon == 2
        && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
    {
        mdays = 29;
    }

    if (day > mdays) {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    q = p + 19;
    end = p + len;

    if (*q == '.') {
        for (q++; q < end && ngx_replay_creds_digit(*q); q++) {
            /* void */
        }

        if (q == p + 20) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }
    }

    oh = 0;
    om = 0;

    if (q < end && (*q == 'Z' || *q == 'z')) {
        q++;

    } else if (end - q == 6 && (*q == '+' || *q == '-') && q[3] == ':'
               && ngx_replay_creds_number(q + 1, 2, &oh)
                  == NGX_REPLAY_CREDS_OK
               && ngx_replay_creds_number(q + 4, 2, &om)
                  == NGX_REPLAY_CREDS_OK
               && oh < 24 && om < 60)
    {
        if (*q == '-') {
            oh = -oh;
            om = -om;
        }

        q += 6;

    } else {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    if (q != end) {
        return NGX_REPLAY_CREDS_SYNTAX;
    }

    *t = (time_t) ngx_replay_creds_days(year, mon, day) * 86400
         + hour * 3600 + min * 60 + sec - (oh * 3600 + om * 60);

    return NGX_REPLAY_CREDS_OK;
}


/*
 * A JSON string at t->p (its '"'), decoded into dst; *len is its whole
 * decoded length, which may pass size (the rest is not written).
 */

static int
ngx_replay_creds_json_string(ngx_replay_creds_text_t *t, unsigned char *dst,
    size_t size, size_t *len)
{
    unsigned        c, lo;
    size_t          n;
    unsigned char   ch;

    n = 0;
    t->p++;

    for ( ;; ) {
        if (t->p == t->end) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        ch = *t->p++;

        if (ch == '"') {
            break;
        }

        if (ch < 0x20) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (ch != '\\') {
            if (n < size) {
                dst[n] = ch;
            }

            n++;
            continue;
        }

        if (t->p == t->end) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        ch = *t->p++;

        switch (ch) {

        case '"': case '\\': case '/':
            break;

        case 'b':
            ch = '\b';
            break;

        case 'f':
            ch = '\f';
            break;

        case 'n':
            ch = '\n';
            break;

        case 'r':
            ch = '\r';
            break;

        case 't':
            ch = '\t';
            break;

        case 'u':
            if (t->end - t->p < 4
                || ngx_replay_creds_hex4(t->p, &c) != NGX_REPLAY_CREDS_OK)
            {
                return NGX_REPLAY_CREDS_SYNTAX;
            }

            t->p += 4;

            if (c >= 0xdc00 && c <= 0xdfff) {
                return NGX_REPLAY_CREDS_SYNTAX;
            }

            if (c >= 0xd800 && c <= 0xdbff) {
                if (t->end - t->p < 6 || t->p[0] != '\\' || t->p[1] != 'u'
                    || ngx_replay_creds_hex4(t->p + 2, &lo)
                       != NGX_REPLAY_CREDS_OK
                    || lo < 0xdc00 || lo > 0xdfff)
                {
                    return NGX_REPLAY_CREDS_SYNTAX;
                }

                t->p += 6;
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            }

            n = ngx_replay_creds_utf8(dst, size, n, c);
            continue;

        default:
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (n < size) {
            dst[n] = ch;
        }

        n++;
    }

    *len = n;

    return NGX_REPLAY_CREDS_OK;
}


static int
ngx_replay_creds_hex4(const unsigned char *p, unsigned *v)
{
    size_t    i;
    unsigned  c;

    *v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            c -= '0';

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            c = (c | 0x20) - 'a' + 10;

        } else {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        *v = (*v << 4) | c;
    }

    return NGX_REPLAY_CREDS_OK;
}


/* code point cp in UTF-8 at dst[len], as far as size allows */

static size_t
ngx_replay_creds_utf8(unsigned char *dst, size_t size, size_t len,
    unsigned cp)
{
    size_t         i, n;
    unsigned char  b[4];

    if (cp < 0x80) {
        b[0] = (unsigned char) cp;
        n = 1;

    } else if (cp < 0x800) {
        b[0] = (unsigned char) (0xc0 | (cp >> 6));
        b[1] = (unsigned char) (0x80 | (cp & 0x3f));
        n = 2;

    } else if (cp < 0x10000) {
        b[0] = (unsigned char) (0xe0 | (cp >> 12));
        b[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char) (0x80 | (cp & 0x3f));
        n = 3;

    } else {
        b[0] = (unsigned char) (0xf0 | (cp >> 18));
        b[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char) (0x80 | (cp & 0x3f));
        n = 4;
    }

    for (i = 0; i < n; i++) {
        if (len + i < size) {
            dst[len + i] = b[i];
        }
    }

    return len + n;
}


/* any JSON value, skipped; nesting is counted, not recursed into */

static int
ngx_replay_creds_json_skip(ngx_replay_creds_text_t *t)
{
    int            rc;
    size_t         depth, n;
    unsigned char  c, stack[NGX_REPLAY_CREDS_MAX_DEPTH];

    depth = 0;

    for ( ;; ) {
        while (t->p < t->end && ngx_replay_creds_ws(*t->p)) {
            t->p++;
        }

        if (t->p == t->end) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        c = *t->p;

        if (c == '"') {
            rc = ngx_replay_creds_json_string(t, NULL, 0, &n);
            if (rc != NGX_REPLAY_CREDS_OK) {
                return rc;
            }

        } else if (c == '{' || c == '[') {
            if (depth == NGX_REPLAY_CREDS_MAX_DEPTH) {
                return NGX_REPLAY_CREDS_SYNTAX;
            }

            stack[depth++] = (c == '{') ? '}' : ']';
            t->p++;

            while (t->p < t->end && ngx_replay_creds_ws(*t->p)) {
                t->p++;
            }

            if (t->p < t->end && *t->p == stack[depth - 1]) {
                t->p++;
                depth--;
                goto after_value;
            }

            if (c == '{') {
                goto member_name;
            }

            continue;

        } else {
            /* a number, true, false or null: its characters, checked */
            n = 0;

            while (t->p < t->end
                   && ((*t->p >= 'a' && *t->p <= 'z')
                       || ngx_replay_creds_digit(*t->p)
                       || *t->p == '-' || *t->p == '+' || *t->p == '.'
                       || *t->p == 'E'))
            {
                t->p++;
                n++;
            }

            if (n == 0) {
                return NGX_REPLAY_CREDS_SYNTAX;
            }
        }

    after_value:

        for ( ;; ) {
            if (depth == 0) {
                return NGX_REPLAY_CREDS_OK;
            }

            while (t->p < t->end && ngx_replay_creds_ws(*t->p)) {
                t->p++;
            }

            if (t->p == t->end) {
                return NGX_REPLAY_CREDS_SYNTAX;
            }

            if (*t->p == stack[depth - 1]) {
                t->p++;
                depth--;
                continue;
            }

            if (*t->p != ',') {
                return NGX_REPLAY_CREDS_SYNTAX;
            }

            t->p++;
            break;
        }

        if (stack[depth - 1] == ']') {
            continue;
        }

    member_name:

        while (t->p < t->end && ngx_replay_creds_ws(*t->p)) {
            t->p++;
        }

        if (t->p == t->end || *t->p != '"') {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        rc = ngx_replay_creds_json_string(t, NULL, 0, &n);
        if (rc != NGX_REPLAY_CREDS_OK) {
            return rc;
        }

        while (t->p < t->end && ngx_replay_creds_ws(*t->p)) {
            t->p++;
        }

        if (t->p == t->end || *t->p++ != ':') {
            return NGX_REPLAY_CREDS_SYNTAX;
        }
    }
}


/*
 * The first element "name" in "in": its content in *content, and "in"
 * moved past its end tag.  "<name" must be followed by ">", a blank or
 * "/>", so that <Code> is not <CodeX>.  MISSING when there is none.
 */

static int
ngx_replay_creds_xml_find(ngx_replay_creds_text_t *in, const char *name,
    ngx_replay_creds_text_t *content)
{
    size_t                n;
    const unsigned char  *p, *q;

    n = strlen(name);

    for (p = in->p; p + n + 1 < in->end; p++) {
        if (p[0] != '<' || memcmp(p + 1, name, n) != 0) {
            continue;
        }

        q = p + 1 + n;

        if (*q != '>' && *q != '/' && !ngx_replay_creds_ws(*q)) {
            continue;
        }

        /* past the attributes, to the end of the start tag */

        for ( /* void */ ; q < in->end && *q != '>'; q++) {
            if (*q == '"' || *q == '\'') {
                q = memchr(q + 1, *q, (size_t) (in->end - q - 1));
                if (q == NULL) {
                    return NGX_REPLAY_CREDS_SYNTAX;
                }
            }
        }

        if (q == in->end) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (q[-1] == '/') {
            content->p = q + 1;
            content->end = q + 1;
            in->p = q + 1;
            return NGX_REPLAY_CREDS_OK;
        }

        content->p = q + 1;

        for (q++; q + n + 3 <= in->end; q++) {
            if (q[0] == '<' && q[1] == '/' && memcmp(q + 2, name, n) == 0
                && q[2 + n] == '>')
            {
                content->end = q;
                in->p = q + n + 3;
                return NGX_REPLAY_CREDS_OK;
            }
        }

        return NGX_REPLAY_CREDS_SYNTAX;
    }

    return NGX_REPLAY_CREDS_MISSING;
}


/* an element's text: blanks around it trimmed, entities decoded */

static int
ngx_replay_creds_xml_text(ngx_replay_creds_text_t *t, unsigned char *dst,
    size_t size, size_t *len)
{
    size_t                n, i;
    unsigned              cp;
    const unsigned char  *p, *end, *semi;

    static const struct {
        const char       *name;
        unsigned char     ch;
    } entities[] = {
        { "amp", '&' }, { "lt", '<' }, { "gt", '>' }, { "quot", '"' },
        { "apos", '\'' }
    };

    p = t->p;
    end = t->end;

    while (p < end && ngx_replay_creds_ws(*p)) {
        p++;
    }

    while (end > p && ngx_replay_creds_ws(end[-1])) {
        end--;
    }

    n = 0;

    while (p < end) {
        if (*p == '<') {
            /* markup inside a value we read: not STS's answer */
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (*p != '&') {
            if (n < size) {
                dst[n] = *p;
            }

            n++;
            p++;
            continue;
        }

        semi = memchr(p, ';', (size_t) (end - p));
        if (semi == NULL || semi - p < 2 || semi - p > 10) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (p[1] == '#') {
            cp = 0;

            if (p[2] == 'x') {
                if (semi - p < 4) {
                    return NGX_REPLAY_CREDS_SYNTAX;
                }

                for (i = 3; p + i < semi; i++) {
                    if (ngx_replay_creds_digit(p[i])) {
                        cp = cp * 16 + (p[i] - '0');

                    } else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f') {
                        cp = cp * 16 + ((p[i] | 0x20) - 'a' + 10);

                    } else {
                        return NGX_REPLAY_CREDS_SYNTAX;
                    }
                }

            } else {
                if (semi - p < 3) {
                    return NGX_REPLAY_CREDS_SYNTAX;
                }

                for (i = 2; p + i < semi; i++) {
                    if (!ngx_replay_creds_digit(p[i])) {
                        return NGX_REPLAY_CREDS_SYNTAX;
                    }

                    cp = cp * 10 + (p[i] - '0');
                }
            }

            if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                return NGX_REPLAY_CREDS_SYNTAX;
            }

            n = ngx_replay_creds_utf8(dst, size, n, cp);
            p = semi + 1;
            continue;
        }

        for (i = 0; i < sizeof(entities) / sizeof(entities[0]); i++) {
            if ((size_t) (semi - p - 1) == strlen(entities[i].name)
                && memcmp(p + 1, entities[i].name, semi - p - 1) == 0)
            {
                break;
            }
        }

        if (i == sizeof(entities) / sizeof(entities[0])) {
            return NGX_REPLAY_CREDS_SYNTAX;
        }

        if (n < size) {
            dst[n] = entities[i].ch;
        }

        n++;
        p = semi + 1;
    }

    *len = n;

    return NGX_REPLAY_CREDS_OK;
}


/* an error code as it may be logged: printable ASCII, NUL-terminated */

static void
ngx_replay_creds_set_code(ngx_replay_creds_parsed_t *out,
    const unsigned char *s, size_t len)
{
    size_t  i;

    if (len > NGX_REPLAY_CREDS_MAX_CODE) {
        len = NGX_REPLAY_CREDS_MAX_CODE;
    }

    for (i = 0; i < len; i++) {
        out->code[i] = (s[i] > 0x20 && s[i] < 0x7f && s[i] != '"'
                        && s[i] != '\\')
                       ? (char) s[i] : '?';
    }

    out->code[len] = '\0';

    if (len == 0) {
        /* an error without a name is still an error */
        memcpy(out->code, "Unknown", sizeof("Unknown"));
    }
}
