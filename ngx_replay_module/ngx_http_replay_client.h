
/*
 * A small asynchronous HTTP/1.1 client for the credential services: one
 * request on one connection (Connection: close) to an endpoint parsed at
 * configuration time, over TCP or TLS (the peer's certificate verified
 * against the system's CAs or a given bundle, and its name), with nginx's
 * resolver or the addresses found at startup, under one deadline.  It
 * never blocks, never logs what it sends or receives, and reports back
 * once through a handler, from a posted event: never from within
 * ngx_http_replay_client_start().
 */


#ifndef _NGX_HTTP_REPLAY_CLIENT_H_INCLUDED_
#define _NGX_HTTP_REPLAY_CLIENT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>


#define NGX_HTTP_REPLAY_CLIENT_ERRLEN  160


typedef struct {
    ngx_str_t                       url;         /* as written */
    ngx_str_t                       authority;   /* host[:port] */
    ngx_str_t                       host;        /* NUL-terminated */
    ngx_str_t                       path;        /* "/..." */
    in_port_t                       port;
    unsigned                        https:1;
    unsigned                        ip:1;        /* host is an address */

    /* resolved at startup, unless a resolver does it at each request */
    ngx_addr_t                     *addrs;
    ngx_uint_t                      naddrs;
    ngx_resolver_t                 *resolver;
    ngx_msec_t                      resolver_timeout;

#if (NGX_SSL)
    ngx_ssl_t                      *ssl;
#endif
} ngx_http_replay_endpoint_t;


typedef struct ngx_http_replay_client_s  ngx_http_replay_client_t;

typedef void (*ngx_http_replay_client_handler_pt)(
    ngx_http_replay_client_t *hc);


struct ngx_http_replay_client_s {
    /* the request: set by the caller before start */
    ngx_http_replay_endpoint_t     *endpoint;
    ngx_str_t                       method;
    ngx_str_t                       path;        /* empty: the endpoint's */
    ngx_str_t                       headers;     /* "Name: value\r\n"... */
    ngx_str_t                       body;        /* with a Content-Type */
    ngx_str_t                       content_type;
    ngx_msec_t                      timeout;     /* for all of it */
    size_t                          max_response;

    ngx_http_replay_client_handler_pt  handler;
    void                           *data;

    /*
     * The outcome, once the handler is called: the response's status and
     * body (in the client's memory, wiped by destroy), or status 0 and
     * why in "error" (no secret in it: it may be logged and shown).
     */
    ngx_uint_t                      status;
    ngx_str_t                       response;
    ngx_str_t                       error;

    ngx_pool_t                     *pool;

    /* private */
    ngx_log_t                       log;
    ngx_str_t                       action;
    ngx_peer_connection_t           peer;
    ngx_addr_t                     *addrs;
    ngx_uint_t                      naddrs;
    ngx_uint_t                      next;
    ngx_resolver_ctx_t             *resolving;
    ngx_buf_t                      *out;
    ngx_buf_t                      *in;
    u_char                         *body_start;
    off_t                           content_length;
    ngx_event_t                     timer;
    ngx_event_t                     done;
    u_char                          errbuf[NGX_HTTP_REPLAY_CLIENT_ERRLEN];
    unsigned                        connecting:1;
    unsigned                        chunked:1;
    unsigned                        finished:1;
};


/*
 * "http://host[:port][/path]" or "https://...": the host is resolved now
 * (in the master, as proxy_pass does) unless "resolver" is given, with
 * connections, in which case each request resolves it; for https, a TLS
 * context trusting "ca" (a PEM bundle), or the system's CAs if empty.
 */
char *ngx_http_replay_endpoint_parse(ngx_conf_t *cf,
    ngx_http_replay_endpoint_t *ep, ngx_str_t *url);
char *ngx_http_replay_endpoint_init(ngx_conf_t *cf,
    ngx_http_replay_endpoint_t *ep, ngx_resolver_t *resolver,
    ngx_msec_t resolver_timeout, ngx_str_t *ca);

/* a client with a pool of its own; "action" names it in log lines */
ngx_http_replay_client_t *ngx_http_replay_client_create(ngx_log_t *log,
    ngx_str_t *action);

/*
 * NGX_OK: the handler will be called once.  NGX_ERROR: nothing started
 * (no memory), the handler will not be called.
 */
ngx_int_t ngx_http_replay_client_start(ngx_http_replay_client_t *hc);

/* at any time: closes what is open, wipes the buffers, frees it all */
void ngx_http_replay_client_destroy(ngx_http_replay_client_t *hc);


#endif /* _NGX_HTTP_REPLAY_CLIENT_H_INCLUDED_ */
