
/*
 * Streaming: the S3 request rides nginx's proxy module (buffers, keepalive,
 * TLS, timeouts and cache all stay nginx's), and a filter pair turns S3's
 * error answers into plain nginx errors.
 */


#ifndef _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_
#define _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* sets up proxy_pass and its headers in the current location */
char *ngx_http_replay_stream_wire_proxy(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf);

ngx_int_t ngx_http_replay_stream_init_filters(ngx_conf_t *cf);


#endif /* _NGX_HTTP_REPLAY_STREAM_H_INCLUDED_ */
