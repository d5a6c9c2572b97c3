
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

    ngx_uint_t                      s3_status;       /* S3's, if an error */
    ngx_buf_t                      *s3_error;        /* head of its body */

    unsigned                        signed_request:1;
    unsigned                        error:1;
    unsigned                        error_done:1;
} ngx_http_replay_ctx_t;


extern ngx_module_t  ngx_http_replay_module;


#endif /* _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_ */
