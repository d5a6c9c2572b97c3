
/*
 * Streaming: the S3 request rides nginx's proxy module (buffers, keepalive,
 * TLS, timeouts and cache all stay nginx's), and a filter pair leaves the
 * client only what it may see of S3's answer and turns S3's errors into
 * nginx's own.
 */


#ifndef _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_
#define _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* room for ngx_http_replay_stream_need()'s text */
#define NGX_HTTP_REPLAY_BUFFERS_TEXT_LEN  192


/*
 * Sets up proxy_pass, its peer (keepalive: connections kept per worker,
 * 0 for none), its headers and TLS (verify: on or off, ca: a CA file, or
 * empty for the system's) in the current location.
 */
char *ngx_http_replay_stream_wire_proxy(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_uint_t keepalive, ngx_uint_t verify,
    ngx_str_t *ca);

/* $replay_s3_peer */
ngx_int_t ngx_http_replay_stream_add_variables(ngx_conf_t *cf);

/* once the proxy module has merged the location: its cache key */
char *ngx_http_replay_stream_merge(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf);

ngx_int_t ngx_http_replay_stream_init_filters(ngx_conf_t *cf);

/*
 * The proxy's buffers a request of the location may hold at most, from
 * the proxy module's merged settings; text->data (room for
 * NGX_HTTP_REPLAY_BUFFERS_TEXT_LEN) gets which ones, "... + ".
 */
size_t ngx_http_replay_stream_need(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_str_t *text);

/* the length of the Content-Disposition made of a download file name */
size_t ngx_http_replay_stream_disposition_len(ngx_str_t *file_name);


#endif /* _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_ */
