
/*
 * Streaming: the S3 request rides nginx's proxy module (buffers, keepalive,
 * TLS, timeouts and cache all stay nginx's), and a filter pair turns S3's
 * error answers into plain nginx errors.
 */


#ifndef _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_
#define _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* what is kept of an S3 error's body, to log its code */
#define NGX_HTTP_REPLAY_S3_ERROR_HEAD     1024

/* room for ngx_http_replay_stream_need()'s text */
#define NGX_HTTP_REPLAY_BUFFERS_TEXT_LEN  192


/* sets up proxy_pass and its headers in the current location */
char *ngx_http_replay_stream_wire_proxy(ngx_conf_t *cf,
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
