
/*
 * What the AWS credential services answer, read without nginx: the JSON
 * of the EC2 instance metadata service and of the ECS / EKS Pod Identity
 * container endpoint, the XML of STS's AssumeRoleWithWebIdentity, and
 * their RFC 3339 expiry times.  No allocation: the values are decoded
 * into the caller's ngx_replay_creds_parsed_t.  Unit-tested alone in
 * t/unit/, fuzzed in t/fuzz/.
 */


#ifndef _NGX_HTTP_REPLAY_CREDS_PARSE_H_INCLUDED_
#define _NGX_HTTP_REPLAY_CREDS_PARSE_H_INCLUDED_


#include <stddef.h>
#include <time.h>


/* AWS documents access key ids of 16 to 128 characters */
#define NGX_REPLAY_CREDS_MAX_KEY_ID    128
#define NGX_REPLAY_CREDS_MAX_SECRET    128

/*
 * STS does not bound its session tokens ("do not assume a maximum
 * size"); those seen are 400 to 2,500 bytes, up to about 4 KB with
 * session tags.  A longer one is refused, with a clear log line.
 */
#define NGX_REPLAY_CREDS_MAX_TOKEN     8192

#define NGX_REPLAY_CREDS_MAX_CODE      64


#define NGX_REPLAY_CREDS_OK             0
#define NGX_REPLAY_CREDS_SYNTAX        -1   /* not the JSON / XML expected */
#define NGX_REPLAY_CREDS_MISSING       -2   /* a field is missing: "field" */
#define NGX_REPLAY_CREDS_INVALID       -3   /* a field's value is refused */
#define NGX_REPLAY_CREDS_SERVICE_ERROR -4   /* the answer is an error: "code" */


typedef struct {
    unsigned char                  key_id[NGX_REPLAY_CREDS_MAX_KEY_ID];
    size_t                         key_id_len;
    unsigned char                  secret[NGX_REPLAY_CREDS_MAX_SECRET];
    size_t                         secret_len;
    unsigned char                  token[NGX_REPLAY_CREDS_MAX_TOKEN];
    size_t                         token_len;
    time_t                         expiration;         /* 0: none */

    /*
     * On an error: the field at fault ("AccessKeyId", ...), and an error
     * code the service gave, NUL-terminated, printable ASCII only (so
     * that it may be logged as it is); neither is ever a secret.
     */
    const char                    *field;
    char                           code[NGX_REPLAY_CREDS_MAX_CODE + 1];
} ngx_replay_creds_parsed_t;


/*
 * The credentials JSON of IMDS ("Code", "AccessKeyId", "SecretAccessKey",
 * "Token", "Expiration") and of the container endpoint (the same without
 * "Code"): top-level string members; others are skipped.  An IMDS "Code"
 * other than "Success", or an object without AccessKeyId but with
 * "code" / "Code", is SERVICE_ERROR.
 */
int ngx_replay_creds_parse_json(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out);

/*
 * STS's AssumeRoleWithWebIdentityResponse: the members of its
 * <Credentials>; an <ErrorResponse> is SERVICE_ERROR with its <Code>.
 */
int ngx_replay_creds_parse_sts(const unsigned char *p, size_t len,
    ngx_replay_creds_parsed_t *out);

/*
 * "2024-01-31T12:00:00Z", with optional fractional seconds and a "Z" or
 * "+HH:MM" / "-HH:MM" offset; years 1970 to 9999.  Returns OK or SYNTAX.
 */
int ngx_replay_creds_parse_time(const unsigned char *p, size_t len,
    time_t *t);

/*
 * What may go on the wire: an access key id of letters and digits, a
 * secret and a token of visible ASCII (no blank, no control byte: they
 * end up in headers), within the limits above; an empty token is none.
 * Returns OK, or INVALID with out->field set.
 */
int ngx_replay_creds_check(ngx_replay_creds_parsed_t *out);


#endif /* _NGX_HTTP_REPLAY_CREDS_PARSE_H_INCLUDED_ */
