
/*
 * ngx_replay_module: serves objects from S3, resolved from a request
 * variable, signed with AWS Signature V4 and streamed through nginx's own
 * proxy machinery.
 *
 * What the module's files share: the location configuration and the
 * per-request context.
 */


#ifndef _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_
#define _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_replay_sigv4.h"


#define NGX_HTTP_REPLAY_PATH_STYLE     0
#define NGX_HTTP_REPLAY_VIRTUAL_STYLE  1


typedef struct {
    /* replay_s3_endpoint: set only in the locations that serve replays */
    ngx_str_t                       endpoint;        /* as written */
    ngx_str_t                       scheme;          /* "http", "https" */
    ngx_str_t                       endpoint_host;   /* host[:port] */
    ngx_http_handler_pt             proxy_handler;   /* proxy_pass's */

    ngx_str_t                       bucket;
    ngx_str_t                       region;
    ngx_uint_t                      addressing;
    ngx_replay_sigv4_creds_t       *creds;
    ngx_http_complex_value_t       *key;

    /* the PostgreSQL lookup (ngx_http_replay_db.c), NULL if none */
    void                           *db;
    void                           *query;
    size_t                          key_param_max;
    void                           *dbs;             /* http level: all */

    ngx_flag_t                      buffering;

    ngx_uint_t                      redirect;        /* 0, 302 or 307 */
    time_t                          presign_expires;

    /* derived at merge time */
    ngx_str_t                       host;            /* Host we sign */
    ngx_str_t                       path_prefix;     /* "/bucket/" or "/" */
} ngx_http_replay_loc_conf_t;


typedef struct {
    ngx_str_t                       key;
    ngx_str_t                       uri;             /* path sent to S3 */
    ngx_str_t                       authorization;
    u_char                          amz_date[NGX_REPLAY_SIGV4_DATE_LEN];

    /* optional columns 2 and 3 of the lookup's row */
    ngx_str_t                       content_type;
    ngx_str_t                       file_name;

    void                           *db;              /* the lookup's state */

    ngx_uint_t                      s3_status;       /* S3's, if an error */
    ngx_buf_t                      *s3_error;        /* head of its body */

    unsigned                        signed_request:1;
    unsigned                        error:1;
    unsigned                        error_done:1;
} ngx_http_replay_ctx_t;


extern ngx_module_t  ngx_http_replay_module;


/*
 * Called by an asynchronous lookup when it ends: rc is NGX_OK with
 * ctx->key set, or the HTTP status to answer with.
 */
void ngx_http_replay_lookup_done(ngx_http_request_t *r, ngx_int_t rc);

/* registers a ngx_http_null_variable-terminated list */
ngx_int_t ngx_http_replay_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);

/* adds a response header; the strings must outlive the request's header */
ngx_table_elt_t *ngx_http_replay_add_header(ngx_http_request_t *r,
    char *key, u_char *value, size_t len);


#endif /* _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_ */
