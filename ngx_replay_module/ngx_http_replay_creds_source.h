
/*
 * Where a set of AWS credentials comes from: "env", "file=PATH", "imds",
 * "container", "web_identity", and "chain", which picks one of them from
 * the AWS_* environment as the AWS SDKs do.  Its configuration (and, for
 * env and file=, the credentials themselves) is read by the master while
 * the configuration loads; a worker refreshes with
 * ngx_http_replay_source_fetch(), whose outcome comes back through the
 * source's handler.
 */


#ifndef _NGX_HTTP_REPLAY_CREDS_SOURCE_H_INCLUDED_
#define _NGX_HTTP_REPLAY_CREDS_SOURCE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_replay_client.h"
#include "ngx_http_replay_creds_parse.h"


#define NGX_HTTP_REPLAY_SOURCE_ENV           1
#define NGX_HTTP_REPLAY_SOURCE_FILE          2
#define NGX_HTTP_REPLAY_SOURCE_IMDS          3
#define NGX_HTTP_REPLAY_SOURCE_CONTAINER     4
#define NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY  5

/* the longest reason a fetch gives for failing */
#define NGX_HTTP_REPLAY_SOURCE_ERRLEN        200


typedef struct ngx_http_replay_source_s  ngx_http_replay_source_t;

/*
 * A fetch ends: new credentials (parsed), nothing new (a file that has
 * not changed: parsed NULL, changed 0), or a failure (err: why,
 * NUL-terminated, never a secret).  parsed and err are the source's until
 * the handler returns.
 */
typedef void (*ngx_http_replay_source_handler_pt)(
    ngx_http_replay_source_t *src, ngx_replay_creds_parsed_t *parsed,
    u_char *err, ngx_uint_t changed);


struct ngx_http_replay_source_s {
    ngx_uint_t                      type;
    ngx_str_t                       name;            /* "imds", ... */

    /* what the sources need, from parameters or the environment */
    ngx_str_t                       file;            /* file=, token files */
    ngx_str_t                       token;           /* a secret */
    ngx_str_t                       role;
    ngx_str_t                       session_name;
    ngx_str_t                       sts_region;
    ngx_str_t                       ca;
    ngx_str_t                       url;             /* the endpoint's */
    ngx_http_replay_endpoint_t      endpoint;
    time_t                          duration;
    time_t                          check;
    ngx_msec_t                      timeout;
    ngx_flag_t                      imds_v1;

    /* env and file=: what the master has read */
    ngx_replay_creds_parsed_t      *loaded;

    /* file=: the file as last read, before and after a fetch */
    time_t                          mtime;
    time_t                          ctime;
    off_t                           size;
    ngx_file_uniq_t                 uniq;

    ngx_http_replay_source_handler_pt  handler;
    void                           *data;

    /* a worker's fetch in progress */
    ngx_http_replay_client_t       *client;
    ngx_uint_t                      step;
    size_t                          imds_token_len;
    size_t                          imds_role_len;
    u_char                          imds_token[128];
    u_char                          imds_role[128];
};


/*
 * The arguments of "replay_s3_credentials" (cf->args: the directive,
 * the source, its parameters); env and file= are read here.
 */
char *ngx_http_replay_source_conf(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);

/* what the source is fetched from, not what it holds: to find it again */
void ngx_http_replay_source_id(ngx_http_replay_source_t *src, u_char *id);

/* the set is used in a region: the endpoint is made and resolved */
char *ngx_http_replay_source_merge(ngx_conf_t *cf,
    ngx_http_replay_source_t *src, ngx_str_t *region);

/* a refresh (not of env); the handler may be called at once (file=) */
void ngx_http_replay_source_fetch(ngx_http_replay_source_t *src);

/* a fetch in progress is dropped, its handler not called */
void ngx_http_replay_source_cancel(ngx_http_replay_source_t *src);


#endif /* _NGX_HTTP_REPLAY_CREDS_SOURCE_H_INCLUDED_ */
