
/*
 * AWS Signature Version 4 for S3, header and presigned forms.
 *
 * The core uses no nginx types so that it builds and unit-tests alone
 * (t/unit/); the module wraps it in ngx_http_replay_s3.c.  Nothing here
 * allocates on the heap: the canonical request is hashed piece by piece,
 * and every output goes to a buffer the caller passes in.
 */


#ifndef _NGX_HTTP_REPLAY_SIGV4_H_INCLUDED_
#define _NGX_HTTP_REPLAY_SIGV4_H_INCLUDED_


#include <stddef.h>
#include <time.h>


#define NGX_REPLAY_SIGV4_OK            0
#define NGX_REPLAY_SIGV4_ERROR        -1   /* libcrypto failed */
#define NGX_REPLAY_SIGV4_TOO_LONG     -2   /* output buffer too small */
#define NGX_REPLAY_SIGV4_BAD_INPUT    -3   /* too many headers/params, ... */

/*
 * BAD_INPUT also covers: no "host" header, an empty header name or
 * method, an empty access key id, region or service, an amz_date not
 * "YYYYMMDDTHHMMSSZ", an empty payload_hash (header form), and X-Amz-*
 * parameters of the request's own (presign).  On any error *out_len is 0.
 */

#define NGX_REPLAY_SIGV4_MAX_HEADERS   32
#define NGX_REPLAY_SIGV4_MAX_PARAMS    64

/* "YYYYMMDDTHHMMSSZ" */
#define NGX_REPLAY_SIGV4_DATE_LEN      16

/* SHA-256 of the empty string, the payload hash of a GET */
#define NGX_REPLAY_SIGV4_EMPTY_SHA256                                        \
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


typedef struct {
    const unsigned char           *data;
    size_t                         len;
} ngx_replay_sigv4_str_t;


typedef struct {
    ngx_replay_sigv4_str_t         name;
    ngx_replay_sigv4_str_t         value;
} ngx_replay_sigv4_header_t;


/*
 * Credentials and scope.  The signing key is derived from them once per
 * UTC day and kept in "key"; callers keep one of these per credential set
 * (per location in the module) for the life of the process.  The cache
 * fields must start zeroed (ngx_pcalloc()); change the secret only in a
 * fresh struct, as the cached key is not checked against it.
 */
typedef struct {
    ngx_replay_sigv4_str_t         access_key_id;
    ngx_replay_sigv4_str_t         secret_access_key;
    ngx_replay_sigv4_str_t         session_token;     /* len 0: none */
    ngx_replay_sigv4_str_t         region;
    ngx_replay_sigv4_str_t         service;           /* "s3" */

    /* cache, owned by the signer */
    char                           key_date[8];       /* YYYYMMDD */
    unsigned char                  key[32];
    unsigned                       key_valid:1;
    unsigned long                  key_derivations;   /* for tests */
} ngx_replay_sigv4_creds_t;


typedef void (*ngx_replay_sigv4_debug_pt)(void *data, const char *what,
    const unsigned char *text, size_t len);


typedef struct {
    ngx_replay_sigv4_str_t         method;        /* "GET" */

    /*
     * The path exactly as sent on the wire, already encoded with
     * ngx_replay_sigv4_uri_encode(); S3 signs it as is (no normalisation,
     * no second encoding).
     */
    ngx_replay_sigv4_str_t         path;

    /*
     * The query string as sent on the wire (without "?"), may be empty.
     * Each name and value is decoded, re-encoded with S3's rules and the
     * pairs sorted, as SigV4 requires.  "+" is a literal plus, not a
     * space; a "%" not followed by two hex digits stands for itself; a
     * name without "=" gets an empty value; empty "&&" parts are skipped.
     */
    ngx_replay_sigv4_str_t         query;

    /*
     * Headers to sign; must include "host".  Names are matched and sorted
     * case-insensitively, values trimmed and inner runs of spaces folded.
     * Repeated names are joined with ",".  For the header form the caller
     * includes x-amz-date, x-amz-content-sha256 and, with a session token,
     * x-amz-security-token among them.
     */
    ngx_replay_sigv4_header_t     *headers;
    size_t                         nheaders;

    /* hex SHA-256 of the body or "UNSIGNED-PAYLOAD"; header form only */
    ngx_replay_sigv4_str_t         payload_hash;

    char                           amz_date[NGX_REPLAY_SIGV4_DATE_LEN];

    /*
     * Optional: called with what "canonical request" and "string to sign"
     * (not NUL-terminated; only then are the texts built, on the heap).
     * The texts hold the session token where it is signed, never the
     * secret or a key.
     */
    ngx_replay_sigv4_debug_pt      debug;
    void                          *debug_data;
} ngx_replay_sigv4_request_t;


/* "YYYYMMDDTHHMMSSZ" of t in UTC, not NUL-terminated */
void ngx_replay_sigv4_format_date(time_t t,
    char out[NGX_REPLAY_SIGV4_DATE_LEN]);

/*
 * S3's URI encoding: every byte outside A-Za-z0-9-._~ becomes %XX
 * (upper-case hex); "/" is kept when keep_slash is set.  With dst NULL
 * returns the length needed; otherwise writes it and returns it.
 */
size_t ngx_replay_sigv4_uri_encode(unsigned char *dst,
    const unsigned char *src, size_t len, int keep_slash);

/*
 * Derives the signing key for "date" (YYYYMMDD) unless the cached one is
 * for that day already.  Returns NGX_REPLAY_SIGV4_OK or _ERROR.
 */
int ngx_replay_sigv4_signing_key(ngx_replay_sigv4_creds_t *creds,
    const char *date);

/*
 * Header form: writes the Authorization value
 * "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."
 * to out (not NUL-terminated), its length to *out_len.
 */
int ngx_replay_sigv4_sign(ngx_replay_sigv4_creds_t *creds,
    ngx_replay_sigv4_request_t *req, unsigned char *out, size_t size,
    size_t *out_len);

/*
 * Presigned form: writes the request target "path?query" where query is
 * the request's own parameters plus X-Amz-Algorithm, X-Amz-Credential,
 * X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, X-Amz-Security-Token
 * (with a token) and X-Amz-Signature, payload UNSIGNED-PAYLOAD.  The
 * query is written in canonical form (encoded, sorted) with
 * X-Amz-Signature last.  "expires" is not checked: S3 allows 1..604800.
 */
int ngx_replay_sigv4_presign(ngx_replay_sigv4_creds_t *creds,
    ngx_replay_sigv4_request_t *req, unsigned long expires,
    unsigned char *out, size_t size, size_t *out_len);


/*
 * One line of a credentials file in the format of ~/.aws/credentials,
 * without its "\n": blanks (space, tab) around it, around the key and
 * before the value, and a trailing "\r", are ignored; "#" and ";" start
 * a comment line; "[default]" is the only profile header allowed; an
 * "aws_" prefix of a key is optional and keys match case-insensitively.
 * "expiration" (and "x_security_token_expires", as saml2aws and
 * gimme-aws-creds write it) is when temporary credentials expire; the
 * signer does not use it, the module does.
 * Returns one of the codes below; for a key the signer uses, *value is
 * its value, pointing into the line (possibly empty).  No allocation, no
 * NUL termination needed: the parser the module and t/fuzz/ share.
 */

#define NGX_REPLAY_SIGV4_CREDS_SKIP                0  /* nothing for us */
#define NGX_REPLAY_SIGV4_CREDS_ACCESS_KEY_ID       1
#define NGX_REPLAY_SIGV4_CREDS_SECRET_ACCESS_KEY   2
#define NGX_REPLAY_SIGV4_CREDS_SESSION_TOKEN       3
#define NGX_REPLAY_SIGV4_CREDS_EXPIRATION          4  /* see below */
#define NGX_REPLAY_SIGV4_CREDS_PROFILE            -1  /* not [default] */
#define NGX_REPLAY_SIGV4_CREDS_NO_EQUALS          -2  /* not "name = value" */

int ngx_replay_sigv4_creds_line(const unsigned char *line, size_t len,
    ngx_replay_sigv4_str_t *value);


#endif /* _NGX_HTTP_REPLAY_SIGV4_H_INCLUDED_ */
