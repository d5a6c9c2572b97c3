
/*
 * The credential services' HTTP(S) client, see ngx_http_replay_client.h.
 *
 * The whole exchange is small (a request of a few hundred bytes, an
 * answer of a few KB), so it is written from one buffer and read into
 * another of max_response bytes; the answer is parsed once it is whole:
 * by its Content-Length, its last chunk, or the connection's close.
 * Both buffers may hold secrets (a token sent, credentials read): they
 * are wiped before they are freed.
 */


#include "ngx_http_replay_client.h"


static void ngx_http_replay_client_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_replay_client_connect(ngx_http_replay_client_t *hc);
static void ngx_http_replay_client_connected(ngx_http_replay_client_t *hc);
#if (NGX_SSL)
static void ngx_http_replay_client_handshake(ngx_connection_t *c);
#endif
static void ngx_http_replay_client_write_handler(ngx_event_t *wev);
static void ngx_http_replay_client_test_connect(
    ngx_http_replay_client_t *hc);
static void ngx_http_replay_client_send(ngx_http_replay_client_t *hc);
static void ngx_http_replay_client_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_replay_client_parse(ngx_http_replay_client_t *hc,
    ngx_uint_t eof);
static ngx_int_t ngx_http_replay_client_head(ngx_http_replay_client_t *hc,
    u_char *p, u_char *last);
static ngx_int_t ngx_http_replay_client_dechunk(u_char *p, u_char *last,
    u_char *dst, u_char **end);
static void ngx_http_replay_client_timeout(ngx_event_t *ev);
static void ngx_http_replay_client_done(ngx_event_t *ev);
static void ngx_http_replay_client_fail(ngx_http_replay_client_t *hc,
    ngx_err_t err, const char *fmt, ...);
static void ngx_http_replay_client_finish(ngx_http_replay_client_t *hc);
static void ngx_http_replay_client_close(ngx_http_replay_client_t *hc);
static u_char *ngx_http_replay_client_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


char *
ngx_http_replay_endpoint_parse(ngx_conf_t *cf, ngx_http_replay_endpoint_t *ep,
    ngx_str_t *url)
{
    u_char     *p;
    size_t      skip;
    ngx_url_t   u;
    u_char      buf[NGX_SOCKADDRLEN];

    ngx_memzero(ep, sizeof(ngx_http_replay_endpoint_t));

    ep->url = *url;

    if (url->len > 7 && ngx_strncasecmp(url->data, (u_char *) "http://", 7)
                        == 0)
    {
        skip = 7;

    } else if (url->len > 8
               && ngx_strncasecmp(url->data, (u_char *) "https://", 8) == 0)
    {
        skip = 8;
        ep->https = 1;

#if !(NGX_SSL)
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": https needs nginx built with SSL", url);
        return NGX_CONF_ERROR;
#endif

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URL \"%V\": it must start with "
                           "\"http://\" or \"https://\"", url);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = url->data + skip;
    u.url.len = url->len - skip;
    u.default_port = ep->https ? 443 : 80;
    u.uri_part = 1;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in URL \"%V\"",
                           u.err ? u.err : "no host", url);
        return NGX_CONF_ERROR;
    }

    if (ngx_strlchr(u.url.data, u.url.data + u.url.len, '@')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URL \"%V\": no user name or password "
                           "may be given", url);
        return NGX_CONF_ERROR;
    }

    ep->authority.data = u.url.data;
    ep->authority.len = u.url.len - u.uri.len;
    ep->port = u.port;

    /* u.host keeps an IPv6 address's brackets */

    p = u.host.data;
    ep->host.len = u.host.len;

    if (p[0] == '[' && ep->host.len > 2) {
        p++;
        ep->host.len -= 2;
    }

    ep->host.data = ngx_pnalloc(cf->pool, ep->host.len + 1);
    if (ep->host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(ep->host.data, p, ep->host.len);
    ep->host.data[ep->host.len] = '\0';

    ep->ip = (ngx_inet_addr(ep->host.data, ep->host.len) != INADDR_NONE);

#if (NGX_HAVE_INET6)
    if (!ep->ip) {
        ep->ip = (ngx_inet6_addr(ep->host.data, ep->host.len, buf) == NGX_OK);
    }
#else
    (void) buf;
#endif

    if (u.uri.len) {
        ep->path = u.uri;

    } else {
        ngx_str_set(&ep->path, "/");
    }

    return NGX_CONF_OK;
}


char *
ngx_http_replay_endpoint_init(ngx_conf_t *cf, ngx_http_replay_endpoint_t *ep,
    ngx_resolver_t *resolver, ngx_msec_t resolver_timeout, ngx_str_t *ca)
{
    ngx_url_t            u;
#if (NGX_SSL)
    ngx_str_t            file;
    ngx_pool_cleanup_t  *cln;
#endif

    if (!ep->ip && resolver && resolver->connections.nelts) {
        ep->resolver = resolver;
        ep->resolver_timeout = resolver_timeout;

    } else {
        /* as proxy_pass does: once, in the master, while it loads */

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = ep->authority;
        u.default_port = ep->port;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in \"%V\"",
                               u.err ? u.err : "host not found", &ep->url);
            return NGX_CONF_ERROR;
        }

        ep->addrs = u.addrs;
        ep->naddrs = u.naddrs;
    }

#if (NGX_SSL)

    if (!ep->https || ep->ssl) {
        return NGX_CONF_OK;
    }

    ep->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ep->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    ep->ssl->log = cf->log;

    if (ngx_ssl_create(ep->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ep->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ep->ssl;

    /* with an empty name it only sets the depth and the callback */

    file = *ca;

    if (ngx_ssl_trusted_certificate(cf, ep->ssl, &file, 10) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ca->len == 0 && SSL_CTX_set_default_verify_paths(ep->ssl->ctx) != 1)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "SSL_CTX_set_default_verify_paths() failed");
        return NGX_CONF_ERROR;
    }

#endif

    return NGX_CONF_OK;
}


ngx_http_replay_client_t *
ngx_http_replay_client_create(ngx_log_t *log, ngx_str_t *action)
{
    ngx_pool_t                *pool;
    ngx_http_replay_client_t  *hc;

    pool = ngx_create_pool(1024, log);
    if (pool == NULL) {
        return NULL;
    }

    hc = ngx_pcalloc(pool, sizeof(ngx_http_replay_client_t));
    if (hc == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    hc->pool = pool;
    hc->max_response = 65536;
    hc->timeout = 5000;
    hc->action = *action;

    /* the action and the endpoint are added to what nginx logs for us */
    hc->log = *log;
    hc->log.handler = ngx_http_replay_client_log_error;
    hc->log.data = hc;
    hc->log.action = NULL;
    pool->log = &hc->log;

    hc->timer.handler = ngx_http_replay_client_timeout;
    hc->timer.data = hc;
    hc->timer.log = &hc->log;
    hc->timer.cancelable = 1;

    hc->done.handler = ngx_http_replay_client_done;
    hc->done.data = hc;
    hc->done.log = &hc->log;

    return hc;
}


ngx_int_t
ngx_http_replay_client_start(ngx_http_replay_client_t *hc)
{
    u_char                      *p;
    size_t                       len;
    ngx_str_t                   *path;
    ngx_resolver_ctx_t          *ctx, temp;
    ngx_http_replay_endpoint_t  *ep;

    ep = hc->endpoint;
    path = hc->path.len ? &hc->path : &ep->path;

    len = hc->method.len + 1 + path->len + sizeof(" HTTP/1.1\r\n") - 1
          + sizeof("Host: \r\n") - 1 + ep->authority.len
          + sizeof("User-Agent: ngx_replay_module\r\n") - 1
          + sizeof("Accept: */*\r\nConnection: close\r\n") - 1
          + hc->headers.len
          + sizeof("\r\n") - 1;

    if (hc->body.len || hc->method.len != 3) {
        len += sizeof("Content-Type: \r\n") - 1 + hc->content_type.len
               + sizeof("Content-Length: \r\n") - 1 + NGX_SIZE_T_LEN
               + hc->body.len;
    }

    hc->out = ngx_create_temp_buf(hc->pool, len);
    if (hc->out == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(hc->out->last, "%V %V HTTP/1.1\r\nHost: %V\r\n"
                    "User-Agent: ngx_replay_module\r\n"
                    "Accept: */*\r\nConnection: close\r\n",
                    &hc->method, path, &ep->authority);

    p = ngx_cpymem(p, hc->headers.data, hc->headers.len);

    if (hc->body.len || hc->method.len != 3) {
        if (hc->content_type.len) {
            p = ngx_sprintf(p, "Content-Type: %V\r\n", &hc->content_type);
        }

        p = ngx_sprintf(p, "Content-Length: %uz\r\n", hc->body.len);
    }

    *p++ = CR; *p++ = LF;
    p = ngx_cpymem(p, hc->body.data, hc->body.len);

    hc->out->last = p;

    hc->in = ngx_create_temp_buf(hc->pool, hc->max_response);
    if (hc->in == NULL) {
        return NGX_ERROR;
    }

    ngx_add_timer(&hc->timer, hc->timeout);

    if (ep->resolver == NULL) {
        hc->addrs = ep->addrs;
        hc->naddrs = ep->naddrs;

        ngx_http_replay_client_connect(hc);
        return NGX_OK;
    }

    ngx_memzero(&temp, sizeof(ngx_resolver_ctx_t));
    temp.name = ep->host;

    ctx = ngx_resolve_start(ep->resolver, &temp);

    if (ctx == NULL) {
        ngx_del_timer(&hc->timer);
        return NGX_ERROR;
    }

    if (ctx == NGX_NO_RESOLVER) {
        ngx_http_replay_client_fail(hc, 0, "no resolver for %V",
                                    &ep->host);
        return NGX_OK;
    }

    ctx->name = ep->host;
    ctx->handler = ngx_http_replay_client_resolved;
    ctx->data = hc;
    ctx->timeout = ep->resolver_timeout;

    hc->resolving = ctx;

    /* the handler may run at once, from the resolver's cache */

    if (ngx_resolve_name(ctx) != NGX_OK) {
        hc->resolving = NULL;
        ngx_http_replay_client_fail(hc, 0, "could not resolve %V",
                                    &ep->host);
    }

    return NGX_OK;
}


static void
ngx_http_replay_client_resolved(ngx_resolver_ctx_t *ctx)
{
    ngx_http_replay_client_t *hc = ctx->data;

    ngx_uint_t   i;
    ngx_addr_t  *addr;

    hc->resolving = NULL;

    if (ctx->state) {
        ngx_http_replay_client_fail(hc, 0, "could not resolve %V (%i: %s)",
                                    &ctx->name, ctx->state,
                                    ngx_resolver_strerror(ctx->state));
        ngx_resolve_name_done(ctx);
        return;
    }

    hc->addrs = ngx_pcalloc(hc->pool, ctx->naddrs * sizeof(ngx_addr_t));
    if (hc->addrs == NULL) {
        ngx_resolve_name_done(ctx);
        ngx_http_replay_client_fail(hc, 0, "no memory");
        return;
    }

    for (i = 0; i < ctx->naddrs; i++) {
        addr = &hc->addrs[i];

        addr->socklen = ctx->addrs[i].socklen;
        addr->sockaddr = ngx_palloc(hc->pool, addr->socklen);
        addr->name.data = ngx_pnalloc(hc->pool, NGX_SOCKADDR_STRLEN);

        if (addr->sockaddr == NULL || addr->name.data == NULL) {
            ngx_resolve_name_done(ctx);
            ngx_http_replay_client_fail(hc, 0, "no memory");
            return;
        }

        ngx_memcpy(addr->sockaddr, ctx->addrs[i].sockaddr, addr->socklen);
        ngx_inet_set_port(addr->sockaddr, hc->endpoint->port);

        addr->name.len = ngx_sock_ntop(addr->sockaddr, addr->socklen,
                                       addr->name.data, NGX_SOCKADDR_STRLEN,
                                       1);
    }

    hc->naddrs = ctx->naddrs;

    ngx_resolve_name_done(ctx);

    ngx_http_replay_client_connect(hc);
}


/* the next address; a refused connection goes on to the one after */

static void
ngx_http_replay_client_connect(ngx_http_replay_client_t *hc)
{
    ngx_int_t              rc;
    ngx_addr_t            *addr;
    ngx_connection_t      *c;
    ngx_peer_connection_t *pc;

    for ( ;; ) {
        if (hc->next == hc->naddrs) {
            ngx_http_replay_client_fail(hc, 0, "could not connect to %V",
                                        &hc->endpoint->authority);
            return;
        }

        addr = &hc->addrs[hc->next++];

        pc = &hc->peer;
        ngx_memzero(pc, sizeof(ngx_peer_connection_t));

        pc->sockaddr = addr->sockaddr;
        pc->socklen = addr->socklen;
        pc->name = &addr->name;
        pc->get = ngx_event_get_peer;
        pc->log = &hc->log;
        pc->log_error = NGX_ERROR_ERR;

        rc = ngx_event_connect_peer(pc);

        if (rc == NGX_ERROR) {
            ngx_http_replay_client_fail(hc, 0, "could not connect to %V",
                                        pc->name);
            return;
        }

        if (rc == NGX_BUSY || rc == NGX_DECLINED) {
            /* nginx has logged why */
            continue;
        }

        break;
    }

    c = pc->connection;
    c->data = hc;
    c->pool = hc->pool;
    c->read->handler = ngx_http_replay_client_read_handler;
    c->write->handler = ngx_http_replay_client_write_handler;

    if (rc == NGX_AGAIN) {
        /* the write event says when it is connected */
        hc->connecting = 1;
        return;
    }

    ngx_http_replay_client_connected(hc);
}


static void
ngx_http_replay_client_connected(ngx_http_replay_client_t *hc)
{
    ngx_connection_t  *c;
#if (NGX_SSL)
    ngx_int_t          rc;
#endif

    c = hc->peer.connection;

#if (NGX_SSL)

    if (hc->endpoint->https) {
        if (ngx_ssl_create_connection(hc->endpoint->ssl, c,
                                      NGX_SSL_BUFFER|NGX_SSL_CLIENT)
            != NGX_OK)
        {
            ngx_http_replay_client_fail(hc, 0, "TLS setup failed");
            return;
        }

        /* RFC 6066: no address as a server name */

        if (!hc->endpoint->ip
            && SSL_set_tlsext_host_name(c->ssl->connection,
                                        (char *) hc->endpoint->host.data)
               == 0)
        {
            ngx_http_replay_client_fail(hc, 0, "TLS setup failed (SNI)");
            return;
        }

        rc = ngx_ssl_handshake(c);

        if (rc == NGX_AGAIN) {
            c->ssl->handler = ngx_http_replay_client_handshake;
            return;
        }

        ngx_http_replay_client_handshake(c);
        return;
    }

#endif

    ngx_http_replay_client_send(hc);
}


#if (NGX_SSL)

static void
ngx_http_replay_client_handshake(ngx_connection_t *c)
{
    ngx_http_replay_client_t *hc = c->data;

    long                         rc;
    X509                        *cert;
    ngx_http_replay_endpoint_t  *ep;

    ep = hc->endpoint;

    if (!c->ssl->handshaked) {
        ngx_http_replay_client_fail(hc, 0, "TLS handshake with %V failed",
                                    hc->peer.name);
        return;
    }

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        ngx_http_replay_client_fail(hc, 0, "the certificate of %V is not "
                                    "trusted (%l: %s)", &ep->authority, rc,
                                    X509_verify_cert_error_string(rc));
        return;
    }

    if (ep->ip) {
        cert = SSL_get_peer_certificate(c->ssl->connection);

        rc = (cert && X509_check_ip_asc(cert, (char *) ep->host.data, 0) == 1);

        if (cert) {
            X509_free(cert);
        }

    } else {
        rc = (ngx_ssl_check_host(c, &ep->host) == NGX_OK);
    }

    if (!rc) {
        ngx_http_replay_client_fail(hc, 0, "the certificate of %V is not "
                                    "for \"%V\"", &ep->authority, &ep->host);
        return;
    }

    c->read->handler = ngx_http_replay_client_read_handler;
    c->write->handler = ngx_http_replay_client_write_handler;

    ngx_http_replay_client_send(hc);
}

#endif


static void
ngx_http_replay_client_write_handler(ngx_event_t *wev)
{
    ngx_connection_t          *c;
    ngx_http_replay_client_t  *hc;

    c = wev->data;
    hc = c->data;

    if (hc->finished) {
        return;
    }

    if (hc->connecting) {
        ngx_http_replay_client_test_connect(hc);
        return;
    }

    ngx_http_replay_client_send(hc);
}


/* the outcome of an asynchronous connect */

static void
ngx_http_replay_client_test_connect(ngx_http_replay_client_t *hc)
{
    int                err;
    socklen_t          len;
    ngx_connection_t  *c;

    c = hc->peer.connection;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, &hc->log, err, "connect() to %V failed",
                      hc->peer.name);
        ngx_close_connection(c);
        hc->peer.connection = NULL;
        ngx_http_replay_client_connect(hc);
        return;
    }

    hc->connecting = 0;

    ngx_http_replay_client_connected(hc);
}


static void
ngx_http_replay_client_send(ngx_http_replay_client_t *hc)
{
    ssize_t            n;
    ngx_buf_t         *b;
    ngx_connection_t  *c;

    c = hc->peer.connection;
    b = hc->out;

    while (b->pos < b->last) {
        n = c->send(c, b->pos, b->last - b->pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_replay_client_fail(hc, 0, "write event failed");
            }

            return;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_replay_client_fail(hc, 0, "sending to %V failed",
                                        hc->peer.name);
            return;
        }

        b->pos += n;
    }

    /* the request may hold a token: not kept once it is sent */
    ngx_explicit_memzero(b->start, b->last - b->start);

    ngx_http_replay_client_read_handler(c->read);
}


static void
ngx_http_replay_client_read_handler(ngx_event_t *rev)
{
    ssize_t                    n;
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    ngx_connection_t          *c;
    ngx_http_replay_client_t  *hc;

    c = rev->data;
    hc = c->data;
    b = hc->in;

    if (hc->finished) {
        return;
    }

    if (hc->connecting) {
        ngx_http_replay_client_test_connect(hc);
        return;
    }

    if (hc->out->pos < hc->out->last) {
        /* an answer before the whole request: read it after */
        if (ngx_handle_read_event(rev, 0) != NGX_OK) {
            ngx_http_replay_client_fail(hc, 0, "read event failed");
        }

        return;
    }

    for ( ;; ) {
        if (b->last == b->end) {
            ngx_http_replay_client_fail(hc, 0, "the answer of %V is longer "
                                        "than %uz bytes", hc->peer.name,
                                        hc->max_response);
            return;
        }

        n = c->recv(c, b->last, b->end - b->last);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_replay_client_fail(hc, 0, "read event failed");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_replay_client_fail(hc, 0, "reading from %V failed",
                                        hc->peer.name);
            return;
        }

        if (n > 0) {
            b->last += n;
        }

        rc = ngx_http_replay_client_parse(hc, n == 0);

        if (rc == NGX_AGAIN) {
            if (n == 0) {
                ngx_http_replay_client_fail(hc, 0, "%V closed the "
                                            "connection before the whole "
                                            "answer", hc->peer.name);
                return;
            }

            continue;
        }

        /* whole, or NGX_ERROR with the reason set */
        ngx_http_replay_client_finish(hc);
        return;
    }
}


/*
 * NGX_OK once the answer is whole (status and response set), NGX_AGAIN
 * for more, NGX_ERROR with hc->error set.
 */

static ngx_int_t
ngx_http_replay_client_parse(ngx_http_replay_client_t *hc, ngx_uint_t eof)
{
    u_char     *p, *end;
    ngx_int_t   rc;
    ngx_buf_t  *b;

    b = hc->in;

    if (hc->body_start == NULL) {
        for (p = b->pos; p + 3 < b->last; p++) {
            if (p[0] == CR && p[1] == LF && p[2] == CR && p[3] == LF) {
                break;
            }
        }

        if (p + 3 >= b->last) {
            return NGX_AGAIN;
        }

        hc->body_start = p + 4;

        if (ngx_http_replay_client_head(hc, b->pos, p + 2) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    p = hc->body_start;

    if (hc->chunked) {
        rc = ngx_http_replay_client_dechunk(p, b->last, NULL, &end);

        if (rc == NGX_OK) {
            (void) ngx_http_replay_client_dechunk(p, b->last, p, &end);
            hc->response.data = p;
            hc->response.len = end - p;
            return NGX_OK;
        }

        if (rc == NGX_ERROR) {
            ngx_http_replay_client_fail(hc, 0, "a bad chunked answer from %V",
                                        hc->peer.name);
        }

        return rc;
    }

    if (hc->content_length >= 0) {
        if (b->last - p < hc->content_length) {
            return NGX_AGAIN;
        }

        hc->response.data = p;
        hc->response.len = (size_t) hc->content_length;
        return NGX_OK;
    }

    if (!eof) {
        return NGX_AGAIN;
    }

    hc->response.data = p;
    hc->response.len = b->last - p;

    return NGX_OK;
}


/* the status line and the headers we need: [p, last) ends with CRLF */

static ngx_int_t
ngx_http_replay_client_head(ngx_http_replay_client_t *hc, u_char *p,
    u_char *last)
{
    u_char      *eol, *colon, *v, *vend;
    size_t       n;
    ngx_int_t    status;
    ngx_uint_t   seen_length;

    hc->content_length = -1;
    seen_length = 0;

    /* "HTTP/1.1 200 OK" */

    if (last - p < 12 || ngx_strncmp(p, "HTTP/1.", 7) != 0
        || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
    {
        goto bad;
    }

    status = ngx_atoi(p + 9, 3);

    if (status < 100 || status > 599 || (p[12] != ' ' && p[12] != CR)) {
        goto bad;
    }

    hc->status = status;

    eol = ngx_strlchr(p, last, LF);
    p = eol + 1;

    while (p < last) {
        eol = ngx_strlchr(p, last, LF);
        if (eol == NULL) {
            goto bad;
        }

        colon = ngx_strlchr(p, eol, ':');
        if (colon == NULL) {
            goto bad;
        }

        n = colon - p;
        v = colon + 1;
        vend = eol;

        while (v < vend && (*v == ' ' || *v == '\t')) {
            v++;
        }

        while (vend > v && (vend[-1] == CR || vend[-1] == ' '
                            || vend[-1] == '\t'))
        {
            vend--;
        }

        if (n == sizeof("Content-Length") - 1
            && ngx_strncasecmp(p, (u_char *) "Content-Length", n) == 0)
        {
            hc->content_length = ngx_atoof(v, vend - v);

            if (hc->content_length < 0 || seen_length) {
                goto bad;
            }

            seen_length = 1;

        } else if (n == sizeof("Transfer-Encoding") - 1
                   && ngx_strncasecmp(p, (u_char *) "Transfer-Encoding", n)
                      == 0)
        {
            if (vend - v != 7 || ngx_strncasecmp(v, (u_char *) "chunked", 7)
                                 != 0)
            {
                goto bad;
            }

            hc->chunked = 1;
        }

        p = eol + 1;
    }

    if (hc->chunked) {
        hc->content_length = -1;
    }

    return NGX_OK;

bad:

    hc->status = 0;
    ngx_http_replay_client_fail(hc, 0, "an invalid HTTP answer from %V",
                                hc->peer.name);

    return NGX_ERROR;
}


/*
 * A chunked body in [p, last): NGX_AGAIN while the last chunk has not
 * come, NGX_ERROR if it is not chunked encoding, NGX_OK when whole; with
 * dst, the data is then copied there (in place: dst <= p) up to *end.
 */

static ngx_int_t
ngx_http_replay_client_dechunk(u_char *p, u_char *last, u_char *dst,
    u_char **end)
{
    u_char  *eol, *q;
    size_t   size;
    ngx_int_t  digit;

    for ( ;; ) {
        eol = ngx_strlchr(p, last, LF);
        if (eol == NULL) {
            return (last - p > 64) ? NGX_ERROR : NGX_AGAIN;
        }

        size = 0;

        for (q = p; q < eol && *q != ';' && *q != CR; q++) {
            digit = ngx_hextoi(q, 1);

            if (digit == NGX_ERROR || size > 0xffffff) {
                return NGX_ERROR;
            }

            size = size * 16 + digit;
        }

        if (q == p) {
            return NGX_ERROR;
        }

        p = eol + 1;

        if (size == 0) {
            /* trailers are not expected: the empty line ends it */

            eol = ngx_strlchr(p, last, LF);
            if (eol == NULL) {
                return NGX_AGAIN;
            }

            *end = dst;
            return NGX_OK;
        }

        if ((size_t) (last - p) < size + 2) {
            return NGX_AGAIN;
        }

        if (dst) {
            ngx_memmove(dst, p, size);
            dst += size;
        }

        p += size;

        if (p[0] == CR) {
            p++;
        }

        if (p[0] != LF) {
            return NGX_ERROR;
        }

        p++;
    }
}


static void
ngx_http_replay_client_timeout(ngx_event_t *ev)
{
    ngx_http_replay_client_t *hc = ev->data;

    ngx_http_replay_client_fail(hc, NGX_ETIMEDOUT, "%V timed out",
                                &hc->endpoint->authority);
}


static void
ngx_http_replay_client_fail(ngx_http_replay_client_t *hc, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    if (hc->finished) {
        return;
    }

    last = hc->errbuf + NGX_HTTP_REPLAY_CLIENT_ERRLEN;

    va_start(args, fmt);
    p = ngx_vslprintf(hc->errbuf, last, fmt, args);
    va_end(args);

    if (err) {
        p = ngx_slprintf(p, last, " (%d: ", err);
        p = ngx_strerror(err, p, last - p);

        if (p < last) {
            *p++ = ')';
        }
    }

    hc->error.data = hc->errbuf;
    hc->error.len = p - hc->errbuf;
    hc->status = 0;

    ngx_http_replay_client_finish(hc);
}


/* the outcome is known: close, and tell the caller from a posted event */

static void
ngx_http_replay_client_finish(ngx_http_replay_client_t *hc)
{
    if (hc->finished) {
        return;
    }

    hc->finished = 1;

    ngx_http_replay_client_close(hc);

    ngx_post_event(&hc->done, &ngx_posted_events);
}


static void
ngx_http_replay_client_done(ngx_event_t *ev)
{
    ngx_http_replay_client_t *hc = ev->data;

    hc->handler(hc);
}


static void
ngx_http_replay_client_close(ngx_http_replay_client_t *hc)
{
    ngx_connection_t  *c;

    if (hc->timer.timer_set) {
        ngx_del_timer(&hc->timer);
    }

    if (hc->resolving) {
        ngx_resolve_name_done(hc->resolving);
        hc->resolving = NULL;
    }

    c = hc->peer.connection;

    if (c == NULL) {
        return;
    }

    hc->peer.connection = NULL;

#if (NGX_SSL)
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
#endif

    ngx_close_connection(c);
}


void
ngx_http_replay_client_destroy(ngx_http_replay_client_t *hc)
{
    hc->finished = 1;

    ngx_http_replay_client_close(hc);

    if (hc->done.posted) {
        ngx_delete_posted_event(&hc->done);
    }

    if (hc->out) {
        ngx_explicit_memzero(hc->out->start, hc->out->end - hc->out->start);
    }

    if (hc->in) {
        ngx_explicit_memzero(hc->in->start, hc->in->end - hc->in->start);
    }

    ngx_destroy_pool(hc->pool);
}


/* "..., while fetching AWS credentials from imds (http://...)" */

static u_char *
ngx_http_replay_client_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_http_replay_client_t *hc = log->data;

    return ngx_snprintf(buf, len, " while %V from %s://%V", &hc->action,
                        hc->endpoint->https ? "https" : "http",
                        &hc->endpoint->authority);
}
