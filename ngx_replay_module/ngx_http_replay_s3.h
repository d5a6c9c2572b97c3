
/*
 * S3 addressing and request signing for the module: turns the
 * resolved object key into the request line, Host and Authorization that
 * the proxied request carries, or into a presigned URL.
 */


#ifndef _NGX_HTTP_REPLAY_S3_H_INCLUDED_
#define _NGX_HTTP_REPLAY_S3_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* the variables the proxied request's headers are built from */
ngx_int_t ngx_http_replay_s3_add_variables(ngx_conf_t *cf);

/* "replay_s3_endpoint URL": scheme and host[:port] */
char *ngx_http_replay_s3_parse_endpoint(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_str_t *url);

/* Host and path prefix, once the location's settings are known */
char *ngx_http_replay_s3_merge(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf);

/*
 * ctx->uri, the S3 path of ctx->key, for the proxy; the signature follows
 * when the proxy builds its request ($replay_s3_authorization).
 */
ngx_int_t ngx_http_replay_s3_prepare(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/* a presigned redirect: the status to answer with, Location set */
ngx_int_t ngx_http_replay_s3_redirect(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/* the most a request holds for its key, S3 path and signature */
size_t ngx_http_replay_s3_need(ngx_http_replay_loc_conf_t *rlcf);


#endif /* _NGX_HTTP_REPLAY_S3_H_INCLUDED_ */
