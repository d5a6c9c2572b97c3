
/*
 * Streaming through nginx's proxy module.
 *
 * A location with replay_s3_endpoint gets a proxy_pass to the endpoint and
 * the proxy_set_header lines S3 needs, as if the user had written them;
 * the proxy module's own content handler then sends the request the phase
 * handler has prepared, and the body flows through nginx's upstream
 * buffers to the client without a copy of ours (see docs/design.md).
 *
 * The filters are a small state machine on ctx->phase, as the image
 * filter's: S3's response header (NGX_HTTP_REPLAY_PROXY) leaves only the
 * headers a client may see, or, for an S3 error, is logged and turned
 * into nginx's own error response (error_page applies); the body
 * (NGX_HTTP_REPLAY_BODY) is counted until its last buffer.
 */


#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_util.h"


extern ngx_module_t  ngx_http_proxy_module;
extern ngx_module_t  ngx_http_upstream_keepalive_module;


typedef struct {
    ngx_str_t                       name;
    ngx_uint_t                      hash;
} ngx_http_replay_header_name_t;


static char *ngx_http_replay_proxy_directive(ngx_conf_t *cf,
    ngx_uint_t keep, char *name, ngx_uint_t nargs, ...);
static char *ngx_http_replay_directive(ngx_conf_t *cf, ngx_module_t *m,
    void *conf, ngx_uint_t keep, char *name, ngx_str_t *arg, ...);
static char *ngx_http_replay_stream_peer(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_uint_t keepalive);
static ngx_uint_t ngx_http_replay_stream_block(ngx_conf_t *cf,
    ngx_str_t *name);
static char *ngx_http_replay_stream_upstream(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_uint_t keepalive);
static ngx_int_t ngx_http_replay_stream_peer_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_resolver_t *ngx_http_replay_stream_resolver(ngx_conf_t *cf);
static char *ngx_http_replay_stream_ssl(ngx_conf_t *cf, ngx_uint_t verify,
    ngx_str_t *ca);
static ngx_int_t ngx_http_replay_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_replay_s3_header(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_upstream_t *u);
static ngx_int_t ngx_http_replay_s3_error(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_upstream_t *u);
static void ngx_http_replay_allow_headers(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static ngx_int_t ngx_http_replay_set_type(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static ngx_int_t ngx_http_replay_refuse(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static void ngx_http_replay_s3_code(ngx_http_upstream_t *u, ngx_str_t *code);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


/* headers passed to S3; the client's other headers are not */
static char  *ngx_http_replay_proxy_headers[][2] = {
    { "Host", "$replay_s3_host" },
    { "Authorization", "$replay_s3_authorization" },
    { "X-Amz-Date", "$replay_s3_date" },
    { "X-Amz-Content-Sha256", "$replay_s3_content_sha256" },
    { "X-Amz-Security-Token", "$replay_s3_security_token" },
    { "Range", "$replay_s3_range" },
    { "If-Range", "$replay_s3_if_range" },
    { "If-Match", "$replay_s3_if_match" },
    { "If-None-Match", "$replay_s3_if_none_match" },
    { "If-Modified-Since", "$replay_s3_if_modified_since" },
    { "If-Unmodified-Since", "$replay_s3_if_unmodified_since" },
    { "Connection", "" },
    { NULL, NULL }
};


/*
 * What of S3's response header a client may see: the object's own
 * description; never S3's x-amz-* headers, cookies, redirects or
 * anything else it may add.
 */
static ngx_http_replay_header_name_t  ngx_http_replay_allowed[] = {
    { ngx_string("content-type"), 0 },
    { ngx_string("content-length"), 0 },
    { ngx_string("content-range"), 0 },
    { ngx_string("accept-ranges"), 0 },
    { ngx_string("etag"), 0 },
    { ngx_string("last-modified"), 0 },
    { ngx_string("cache-control"), 0 },
    { ngx_string("expires"), 0 },
    { ngx_string("content-encoding"), 0 },
    { ngx_string("content-language"), 0 },
    { ngx_null_string, 0 }
};


/* the system's CA bundles, where distributions put them */
static char  *ngx_http_replay_ca_bundles[] = {
    "/etc/ssl/certs/ca-certificates.crt",         /* Debian, Ubuntu, Alpine */
    "/etc/pki/tls/certs/ca-bundle.crt",           /* RHEL, Fedora */
    "/etc/ssl/ca-bundle.pem",                     /* openSUSE */
    "/etc/ssl/cert.pem",                          /* FreeBSD, macOS */
    NULL
};


char *
ngx_http_replay_stream_wire_proxy(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_uint_t keepalive, ngx_uint_t verify,
    ngx_str_t *ca)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_conf_ctx_t        *ctx;
    ngx_http_upstream_conf_t   *ucf;

    if (ngx_http_replay_stream_peer(cf, rlcf, keepalive) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /* "scheme://$replay_s3_peer$replay_s3_uri" */
    len = rlcf->scheme.len + sizeof("://$replay_s3_peer$replay_s3_uri") - 1;

    p = ngx_pnalloc(cf->pool, len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(p, "%V://$replay_s3_peer$replay_s3_uri%Z", &rlcf->scheme);

    if (ngx_http_replay_proxy_directive(cf, 0, "proxy_pass", 1, p)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 0; ngx_http_replay_proxy_headers[i][0]; i++) {
        if (ngx_http_replay_proxy_directive(cf, 0, "proxy_set_header", 2,
                                            ngx_http_replay_proxy_headers[i][0],
                                            ngx_http_replay_proxy_headers[i][1])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    ctx = cf->ctx;
    ucf = ctx->loc_conf[ngx_http_proxy_module.ctx_index];

    /*
     * ngx_http_proxy_loc_conf_t starts with ngx_http_upstream_conf_t.
     * Settings the user wrote before replay_s3_endpoint are kept; written
     * after it, proxy's own "is duplicate" check reports them.
     */
    if (ucf->pass_request_headers == NGX_CONF_UNSET) {
        ucf->pass_request_headers = 0;
    }

    if (ucf->pass_request_body == NGX_CONF_UNSET) {
        ucf->pass_request_body = 0;
    }

    /*
     * The method signed is the method sent: the request's own, or GET when
     * proxy_cache turns a HEAD into one (ngx_http_replay_s3.c); so
     * proxy_method, here or after, is refused as a duplicate.
     */
    if (ngx_http_replay_proxy_directive(cf, 0, "proxy_http_version", 1, "1.1")
        != NGX_CONF_OK
        || ngx_http_replay_proxy_directive(cf, 0, "proxy_method", 1,
                                           "$request_method")
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (rlcf->scheme.len == 5) {
        return ngx_http_replay_stream_ssl(cf, verify, ca);
    }

    return NGX_CONF_OK;
}


/*
 * Where the proxy connects: the host of proxy_pass is $replay_s3_peer,
 * the name of the upstream the request goes to (the request itself is
 * signed for, and sent with the Host of, the endpoint).
 *
 * - An upstream block of the endpoint's name, wherever it is written, is
 *   used as it is (several servers, its own keepalive): an implicit
 *   upstream of that name is registered, which nginx merges with the
 *   block, and the merge finds the block.
 * - A host, with a resolver already set for the location, is left to the
 *   resolver at run time, re-resolved as nginx's variable proxy_pass does
 *   (S3's addresses rotate): no upstream of its name exists.
 * - Otherwise the address, or the host resolved now as proxy_pass would
 *   at startup, becomes the one server of an upstream of the module's own
 *   with "keepalive N" (default 32): S3 is asked over kept connections, a
 *   TLS handshake per connection, not per request.
 */

static char *
ngx_http_replay_stream_peer(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *rlcf,
    ngx_uint_t keepalive)
{
    ngx_url_t        u;
    ngx_resolver_t  *resolver;

    rlcf->peer_name = rlcf->endpoint_host;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = rlcf->endpoint_host;
    u.default_port = (rlcf->scheme.len == 5) ? 443 : 80;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s in replay_s3_endpoint \"%V\"", u.err,
                           &rlcf->endpoint);
        return NGX_CONF_ERROR;
    }

    if (u.naddrs) {
        rlcf->peer = NGX_HTTP_REPLAY_PEER_ADDRESS;

        if (keepalive == 0) {
            return NGX_CONF_OK;
        }

        return ngx_http_replay_stream_upstream(cf, rlcf, keepalive);
    }

    if (ngx_http_replay_stream_block(cf, &rlcf->endpoint_host)) {
        rlcf->peer = NGX_HTTP_REPLAY_PEER_UPSTREAM;
        return NGX_CONF_OK;
    }

    resolver = ngx_http_replay_stream_resolver(cf);

    if (resolver && resolver->connections.nelts) {
        rlcf->peer = NGX_HTTP_REPLAY_PEER_RESOLVE;
        return NGX_CONF_OK;
    }

    rlcf->peer = NGX_HTTP_REPLAY_PEER_UPSTREAM;

    /* a name DNS knows now: a host; one it does not: an upstream block */

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = rlcf->endpoint_host;
    u.default_port = (rlcf->scheme.len == 5) ? 443 : 80;

    if (keepalive && ngx_parse_url(cf->temp_pool, &u) == NGX_OK
        && u.naddrs)
    {
        return ngx_http_replay_stream_upstream(cf, rlcf, keepalive);
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = rlcf->endpoint_host;
    u.default_port = (rlcf->scheme.len == 5) ? 443 : 80;
    u.no_resolve = 1;

    if (ngx_http_upstream_add(cf, &u, 0) == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* an upstream block of that name, written so far or at all */

static ngx_uint_t
ngx_http_replay_stream_block(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                      i;
    ngx_http_upstream_srv_conf_t  **uscfp;
    ngx_http_upstream_main_conf_t  *umcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if ((uscfp[i]->flags & NGX_HTTP_UPSTREAM_CREATE)
            && uscfp[i]->host.len == name->len
            && ngx_strncasecmp(uscfp[i]->host.data, name->data, name->len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The module's own upstream for an endpoint, as if the user had written
 *
 *     upstream replay-s3-HOST-PORT { server HOST:PORT; keepalive N; }
 *
 * once per endpoint: the locations of one endpoint share it (and the
 * first one's "keepalive").  Its name is the module's: a user's upstream
 * block of the endpoint's own name is never shadowed.
 */

static char *
ngx_http_replay_stream_upstream(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_uint_t keepalive)
{
    char                          *rv;
    void                          *mconf;
    u_char                        *p, *q, *last, ch;
    u_char                         n[NGX_INT_T_LEN];
    ngx_str_t                      name, server, count;
    ngx_url_t                      u;
    ngx_uint_t                     m;
    ngx_conf_t                     pcf;
    ngx_http_module_t             *module;
    ngx_http_conf_ctx_t           *ctx, *http_ctx;
    ngx_http_upstream_srv_conf_t  *uscf;

    /* "replay-s3-" and the endpoint with anything but letters and digits
     * as "-": a name proxy_pass parses as a host, unlike "[::1]:9000" */

    name.len = sizeof("replay-s3-") - 1 + rlcf->endpoint_host.len
               + sizeof("-443") - 1;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(name.data, "replay-s3-", sizeof("replay-s3-") - 1);
    last = rlcf->endpoint_host.data + rlcf->endpoint_host.len;

    for (q = rlcf->endpoint_host.data; q < last; q++) {
        ch = ngx_tolower(*q);

        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
            || ch == '.')
        {
            *p++ = ch;

        } else {
            *p++ = '-';
        }
    }

    if (ngx_strlchr(rlcf->endpoint_host.data, last, ']') == NULL
        && ngx_strlchr(rlcf->endpoint_host.data, last, ':') == NULL)
    {
        /* the default port, so that each scheme's is apart */
        p = ngx_cpymem(p, rlcf->scheme.len == 5 ? "-443" : "-80",
                       rlcf->scheme.len == 5 ? 4 : 3);
    }

    name.len = p - name.data;

    rlcf->peer_name = name;

    if (ngx_http_replay_stream_block(cf, &name)) {
        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.host = name;
    u.no_resolve = 1;
    u.no_port = 1;

    uscf = ngx_http_upstream_add(cf, &u, NGX_HTTP_UPSTREAM_CREATE
                                         |NGX_HTTP_UPSTREAM_WEIGHT
                                         |NGX_HTTP_UPSTREAM_MAX_CONNS
                                         |NGX_HTTP_UPSTREAM_MAX_FAILS
                                         |NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                                         |NGX_HTTP_UPSTREAM_DOWN
                                         |NGX_HTTP_UPSTREAM_BACKUP);
    if (uscf == NULL) {
        return NGX_CONF_ERROR;
    }

    /* what ngx_http_upstream() makes for a block: every module's conf */

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_conf_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    http_ctx = cf->ctx;
    ctx->main_conf = http_ctx->main_conf;

    ctx->srv_conf = ngx_pcalloc(cf->pool, sizeof(void *) * ngx_http_max_module);
    ctx->loc_conf = ngx_pcalloc(cf->pool, sizeof(void *) * ngx_http_max_module);
    if (ctx->srv_conf == NULL || ctx->loc_conf == NULL) {
        return NGX_CONF_ERROR;
    }

    for (m = 0; cf->cycle->modules[m]; m++) {
        if (cf->cycle->modules[m]->type != NGX_HTTP_MODULE) {
            continue;
        }

        module = cf->cycle->modules[m]->ctx;

        if (module->create_srv_conf) {
            mconf = module->create_srv_conf(cf);
            if (mconf == NULL) {
                return NGX_CONF_ERROR;
            }

            ctx->srv_conf[cf->cycle->modules[m]->ctx_index] = mconf;
        }

        if (module->create_loc_conf) {
            mconf = module->create_loc_conf(cf);
            if (mconf == NULL) {
                return NGX_CONF_ERROR;
            }

            ctx->loc_conf[cf->cycle->modules[m]->ctx_index] = mconf;
        }
    }

    ctx->srv_conf[ngx_http_upstream_module.ctx_index] = uscf;
    uscf->srv_conf = ctx->srv_conf;

    uscf->servers = ngx_array_create(cf->pool, 1,
                                     sizeof(ngx_http_upstream_server_t));
    if (uscf->servers == NULL) {
        return NGX_CONF_ERROR;
    }

    server = rlcf->endpoint_host;
    count.data = n;
    count.len = ngx_sprintf(n, "%ui", keepalive) - n;

    pcf = *cf;
    cf->ctx = ctx;
    cf->cmd_type = NGX_HTTP_UPS_CONF;

    rv = ngx_http_replay_directive(cf, &ngx_http_upstream_module, uscf, 0,
                                   "server", &server, NULL);

    if (rv == NGX_CONF_OK) {
        mconf = ctx->srv_conf[ngx_http_upstream_keepalive_module.ctx_index];
        rv = ngx_http_replay_directive(cf, &ngx_http_upstream_keepalive_module,
                                       mconf, 0, "keepalive", &count, NULL);
    }

    *cf = pcf;

    return rv;
}


/* the resolver the location has so far: its own, its server's or http's */

static ngx_resolver_t *
ngx_http_replay_stream_resolver(ngx_conf_t *cf)
{
    ngx_http_conf_ctx_t        *hctx;
    ngx_http_core_srv_conf_t   *cscf;
    ngx_http_core_loc_conf_t   *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver) {
        return clcf->resolver;
    }

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    clcf = cscf->ctx->loc_conf[ngx_http_core_module.ctx_index];

    if (clcf->resolver) {
        return clcf->resolver;
    }

    hctx = (ngx_http_conf_ctx_t *) cf->cycle->conf_ctx[ngx_http_module.index];
    clcf = hctx->loc_conf[ngx_http_core_module.ctx_index];

    return clcf->resolver;
}


/*
 * TLS to S3 like a browser's: the certificate is verified against the
 * system's CA bundle (or the one given) for the host signed, sent as SNI.
 * proxy_ssl_* lines the user wrote before replay_s3_endpoint win.
 */

static char *
ngx_http_replay_stream_ssl(ngx_conf_t *cf, ngx_uint_t verify, ngx_str_t *ca)
{
#if (NGX_HTTP_SSL)
    u_char           *p;
    ngx_uint_t        i;
    ngx_file_info_t   fi;

    if (ngx_http_replay_proxy_directive(cf, 1, "proxy_ssl_server_name", 1,
                                        "on")
        != NGX_CONF_OK
        || ngx_http_replay_proxy_directive(cf, 1, "proxy_ssl_name", 1,
                                           "$replay_s3_host")
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (!verify) {
        return ngx_http_replay_proxy_directive(cf, 1, "proxy_ssl_verify", 1,
                                               "off");
    }

    if (ca->len == 0) {
        for (i = 0; ngx_http_replay_ca_bundles[i]; i++) {
            if (ngx_file_info(ngx_http_replay_ca_bundles[i], &fi)
                != NGX_FILE_ERROR)
            {
                break;
            }
        }

        if (ngx_http_replay_ca_bundles[i] == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_endpoint: no system CA bundle "
                               "found (%s, ...) to verify S3's certificate "
                               "with; give ssl_trusted_certificate=FILE, "
                               "or ssl_verify=off for a private endpoint",
                               ngx_http_replay_ca_bundles[0]);
            return NGX_CONF_ERROR;
        }

        p = (u_char *) ngx_http_replay_ca_bundles[i];

    } else {
        p = ngx_pnalloc(cf->pool, ca->len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, ca->data, ca->len);
        p[ca->len] = '\0';
    }

    if (ngx_http_replay_proxy_directive(cf, 1, "proxy_ssl_verify", 1, "on")
        != NGX_CONF_OK
        || ngx_http_replay_proxy_directive(cf, 1,
                                           "proxy_ssl_trusted_certificate",
                                           1, p)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

#else

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "replay_s3_endpoint: https needs nginx built with "
                       "the SSL module");

    return NGX_CONF_ERROR;

#endif
}


/*
 * Runs one of the proxy module's directives in the current location, as
 * if it had been written there.  With "keep", a setting the user wrote
 * before is left alone.
 */

static char *
ngx_http_replay_proxy_directive(ngx_conf_t *cf, ngx_uint_t keep, char *name,
    ngx_uint_t nargs, ...)
{
    void                 *conf;
    va_list               ap;
    ngx_str_t             args[2];
    ngx_uint_t            i;
    ngx_http_conf_ctx_t  *ctx;

    va_start(ap, nargs);

    for (i = 0; i < nargs && i < 2; i++) {
        args[i].data = va_arg(ap, u_char *);
        args[i].len = ngx_strlen(args[i].data);
    }

    va_end(ap);

    ctx = cf->ctx;

    conf = ctx->loc_conf[ngx_http_proxy_module.ctx_index];

    if (nargs == 1) {
        return ngx_http_replay_directive(cf, &ngx_http_proxy_module, conf,
                                         keep, name, &args[0], NULL);
    }

    return ngx_http_replay_directive(cf, &ngx_http_proxy_module, conf, keep,
                                     name, &args[0], &args[1], NULL);
}


/*
 * Runs a module's directive "NAME ARG [ARG2]" on its configuration conf:
 * the module checks and keeps the values itself, as for a line in the
 * file.
 */

static char *
ngx_http_replay_directive(ngx_conf_t *cf, ngx_module_t *m, void *conf,
    ngx_uint_t keep, char *name, ngx_str_t *arg, ...)
{
    char           *rv;
    va_list         ap;
    ngx_str_t      *s, *next;
    ngx_array_t     args, *saved;
    ngx_command_t  *cmd;

    for (cmd = m->commands; cmd->name.len; cmd++) {
        if (cmd->name.len == ngx_strlen(name)
            && ngx_strcmp(cmd->name.data, name) == 0)
        {
            break;
        }
    }

    if (cmd->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint needs the \"%s\" directive "
                           "of nginx's %s", name, m->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&args, cf->pool, 3, sizeof(ngx_str_t)) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    s = ngx_array_push(&args);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    s->data = (u_char *) name;
    s->len = ngx_strlen(name);

    va_start(ap, arg);

    for (next = arg; next; next = va_arg(ap, ngx_str_t *)) {
        s = ngx_array_push(&args);
        if (s == NULL) {
            va_end(ap);
            return NGX_CONF_ERROR;
        }

        *s = *next;
    }

    va_end(ap);

    saved = cf->args;
    cf->args = &args;

    rv = cmd->set(cf, cmd, conf);

    cf->args = saved;

    if (rv == NGX_CONF_OK) {
        return NGX_CONF_OK;
    }

    if (keep && rv != NGX_CONF_ERROR && ngx_strcmp(rv, "is duplicate") == 0)
    {
        return NGX_CONF_OK;
    }

    if (rv != NGX_CONF_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint sets \"%s\", which %s",
                           name, rv);
    }

    return NGX_CONF_ERROR;
}


/*
 * Once the proxy module has merged the location: proxy_cache's key names
 * the object (scheme, the host signed, which holds the bucket in either
 * addressing style, and the S3 path), not the client's URI, unless the
 * user gave one; and a resolver set after replay_s3_endpoint is refused
 * rather than silently not used.
 */

char *
ngx_http_replay_stream_merge(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *rlcf)
{
    ngx_http_core_loc_conf_t  *clcf;
#if (NGX_HTTP_CACHE)
    u_char                    *p;
    size_t                     len;
#endif

    if (rlcf->endpoint.len == 0) {
        return NGX_CONF_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /* an upstream block of the endpoint's name written after it wins */
    if (rlcf->peer != NGX_HTTP_REPLAY_PEER_RESOLVE
        && ngx_http_replay_stream_block(cf, &rlcf->endpoint_host))
    {
        rlcf->peer_name = rlcf->endpoint_host;
        goto cache;
    }

    if (rlcf->peer != NGX_HTTP_REPLAY_PEER_UPSTREAM
        || clcf->resolver == NULL || clcf->resolver->connections.nelts == 0)
    {
        goto cache;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "location \"%V\" has a resolver, but "
                       "replay_s3_endpoint \"%V\" comes before it and "
                       "was resolved at startup: put \"resolver\" "
                       "before replay_s3_endpoint", &clcf->name,
                       &rlcf->endpoint);
    return NGX_CONF_ERROR;

cache:

#if (NGX_HTTP_CACHE)

    len = rlcf->scheme.len + 3 + rlcf->host.len
          + sizeof("$replay_s3_uri") - 1;

    p = ngx_pnalloc(cf->pool, len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(p, "%V://%V$replay_s3_uri%Z", &rlcf->scheme, &rlcf->host);

    /* cf->ctx is the location's while it is merged */
    if (ngx_http_replay_proxy_directive(cf, 1, "proxy_cache_key", 1, p)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

#endif

    return NGX_CONF_OK;
}


static ngx_http_variable_t  ngx_http_replay_stream_vars[] = {

    { ngx_string("replay_s3_peer"), NULL,
      ngx_http_replay_stream_peer_variable, 0, NGX_HTTP_VAR_NOHASH, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_replay_stream_add_variables(ngx_conf_t *cf)
{
    return ngx_http_replay_add_variables(cf, ngx_http_replay_stream_vars);
}


/* $replay_s3_peer: the upstream proxy_pass goes to */

static ngx_int_t
ngx_http_replay_stream_peer_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->peer_name.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = rlcf->peer_name.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = rlcf->peer_name.data;

    return NGX_OK;
}


size_t
ngx_http_replay_stream_need(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *rlcf,
    ngx_str_t *text)
{
    u_char                    *p;
    size_t                     size;
    ngx_uint_t                 buffered;
    ngx_http_upstream_conf_t  *ucf;

    text->len = 0;

    if (rlcf->redirect) {
        return 0;
    }

    /* the proxy module's merge has run: its values are final */
    ucf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_proxy_module);

    buffered = (rlcf->buffering || ucf->store > 0);

#if (NGX_HTTP_CACHE)
    buffered = (buffered || ucf->cache > 0);
#endif

    size = ucf->buffer_size;
    p = ngx_sprintf(text->data, "proxy_buffer_size %uz + ", ucf->buffer_size);

    if (buffered) {
        size += ucf->bufs.num * ucf->bufs.size;
        p = ngx_sprintf(p, "proxy_buffers %i x %uz (%s) + ",
                        ucf->bufs.num, ucf->bufs.size,
                        rlcf->buffering ? "replay_buffering on"
                                        : "proxy_cache or proxy_store");
    }

    text->len = p - text->data;

    return size;
}


ngx_int_t
ngx_http_replay_stream_init_filters(ngx_conf_t *cf)
{
    ngx_http_replay_header_name_t  *h;

    for (h = ngx_http_replay_allowed; h->name.len; h++) {
        h->hash = ngx_hash_key(h->name.data, h->name.len);
    }

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_replay_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_replay_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_header_filter(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_http_upstream_t    *u;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL) {
        return ngx_http_next_header_filter(r);
    }

    u = r->upstream;

    /*
     * S3's answer (or the cache's copy of one): only while the proxy has
     * the request, and only once S3's status line was read.  Anything
     * else is nginx's or the module's own response: an error before S3,
     * a redirect, or nginx's 502/504 when S3 could not be reached.
     */

    if (ctx->phase == NGX_HTTP_REPLAY_PROXY
        && u && u->headers_in.status_n && !u->header_sent)
    {
        rc = ngx_http_replay_s3_header(r, ctx, u);

        if (rc != NGX_OK) {
            return rc;
        }

    } else if (ctx->phase == NGX_HTTP_REPLAY_PROXY) {
        ctx->phase = NGX_HTTP_REPLAY_DONE;
        ngx_http_replay_mem_release(r, ctx);
    }

    if (ctx->status == 0) {
        ctx->status = r->headers_out.status;
    }

    if (ngx_http_replay_server_timing(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


/*
 * S3's response header: NGX_OK to send it on (what is left of it), or the
 * status nginx is to answer with instead.
 */

static ngx_int_t
ngx_http_replay_s3_header(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_upstream_t *u)
{
    ngx_uint_t                   status;
    ngx_http_replay_loc_conf_t  *rlcf;

    status = u->headers_in.status_n;

    if (!r->cached) {
        ngx_http_replay_status_s3(r, ctx, status);
    }

    if ((status < NGX_HTTP_OK || status >= NGX_HTTP_SPECIAL_RESPONSE)
        && status != NGX_HTTP_NOT_MODIFIED)
    {
        return ngx_http_replay_s3_error(r, ctx, u);
    }

    ngx_http_replay_allow_headers(r, ctx);

    /*
     * nginx's buffered proxying holds a partly filled buffer back until it
     * fills; unbuffered, each read is passed on at once through the one
     * buffer of proxy_buffer_size, and the next read waits for the client.
     * The upstream code looks at u->buffering only after sending the
     * header, as for "X-Accel-Buffering: no".  A response to be cached or
     * stored, or read into memory for a subrequest, keeps its path.
     */
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (!rlcf->buffering && !u->cacheable && !u->store
        && !r->subrequest_in_memory)
    {
        u->buffering = 0;
    }

    if (ngx_http_replay_set_type(r, ctx) != NGX_OK) {
        return ngx_http_replay_refuse(r, ctx);
    }

    /* the header came in u->buffer: what the request holds now */

    if (ngx_http_replay_mem_measure(r, ctx, NGX_HTTP_REPLAY_MEM_HEADER)
        != NGX_OK)
    {
        if (r->main->header_sent) {
            /* a subrequest's: its main request's response is cut */
            r->connection->error = 1;
            ctx->phase = NGX_HTTP_REPLAY_DONE;
            ngx_http_replay_mem_release(r, ctx);
            return NGX_ERROR;
        }

        return ngx_http_replay_refuse(r, ctx);
    }

    ctx->phase = NGX_HTTP_REPLAY_BODY;

    if (r->header_only || r->method == NGX_HTTP_HEAD) {
        ctx->phase = NGX_HTTP_REPLAY_DONE;
        ngx_http_replay_mem_release(r, ctx);
    }

    return NGX_OK;
}


/*
 * An S3 error: its headers and XML body are S3's business, not the
 * client's.  The error code is read from what came with the header, the
 * status mapped (404, 412, 416 as S3 said, 503 to retry, 502 for every
 * other, S3's redirects included: a client must not follow them), and
 * nginx answers as for any error of its own, error_page included: the
 * upstream module finalizes the request with the status the header
 * filter returns.
 */

static ngx_int_t
ngx_http_replay_s3_error(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_upstream_t *u)
{
    u_char           *p, key[NGX_HTTP_REPLAY_LOG_VALUE_LEN];
    u_char            code[64], loc[NGX_HTTP_REPLAY_LOG_VALUE_LEN];
    u_char           *q;
    ngx_str_t         s3code, range;
    ngx_uint_t        status, level;
    ngx_table_elt_t  *h;

    status = u->headers_in.status_n;

    ngx_http_replay_s3_code(u, &s3code);

    q = ngx_http_replay_escape(code, sizeof(code), s3code.data, s3code.len);
    p = ngx_http_replay_escape(key, sizeof(key), ctx->key.data, ctx->key.len);

    switch (status) {

    case NGX_HTTP_NOT_FOUND:
        ctx->outcome = NGX_HTTP_REPLAY_NOT_FOUND;
        level = NGX_LOG_INFO;
        break;

    case NGX_HTTP_PRECONDITION_FAILED:
    case NGX_HTTP_RANGE_NOT_SATISFIABLE:
        ctx->outcome = NGX_HTTP_REPLAY_BAD_REQUEST;
        level = NGX_LOG_INFO;
        break;

    default:
        ctx->outcome = NGX_HTTP_REPLAY_S3_ERROR;
        level = NGX_LOG_ERR;
    }

    if (status >= NGX_HTTP_MOVED_PERMANENTLY && status < NGX_HTTP_BAD_REQUEST)
    {
        h = u->headers_in.location;
        q = loc;

        if (h) {
            q = ngx_http_replay_escape(loc, sizeof(loc), h->value.data,
                                       h->value.len);
        }

        ngx_log_error(level, r->connection->log, 0,
                      "replay: S3 answered %ui with Location \"%*s\" for "
                      "key \"%*s\", not followed",
                      status, q - loc, loc, p - key, key);

    } else {
        ngx_log_error(level, r->connection->log, 0,
                      "replay: S3 answered %ui %*s for key \"%*s\"",
                      status, q - code, code, p - key, key);
    }

    /* what may be said of a 416: the object's size */
    ngx_str_null(&range);

    if (status == NGX_HTTP_RANGE_NOT_SATISFIABLE
        && r->headers_out.content_range)
    {
        range = r->headers_out.content_range->value;
    }

    ngx_http_clean_header(r);

    switch (status) {

    case NGX_HTTP_NOT_FOUND:
    case NGX_HTTP_PRECONDITION_FAILED:
        break;

    case NGX_HTTP_RANGE_NOT_SATISFIABLE:
        if (range.len) {
            h = ngx_http_replay_add_header(r, "Content-Range", range.data,
                                           range.len);
            if (h == NULL) {
                return NGX_ERROR;
            }

            r->headers_out.content_range = h;
        }

        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        /* S3's "SlowDown": the client may retry, as S3 asks */
        if (ngx_http_replay_add_header(r, "Retry-After", (u_char *) "1", 1)
            == NULL)
        {
            return NGX_ERROR;
        }

        break;

    default:
        status = NGX_HTTP_BAD_GATEWAY;
    }

    ctx->status = status;
    ctx->phase = NGX_HTTP_REPLAY_DONE;

    ngx_http_replay_mem_release(r, ctx);

    if (ngx_http_replay_server_timing(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    return status;
}


/*
 * S3's <Code>, from the part of its XML body that came in the same read
 * as the header (an error body is small and S3 writes it at once);
 * "(no error code)" when it did not.
 */

static void
ngx_http_replay_s3_code(ngx_http_upstream_t *u, ngx_str_t *code)
{
    u_char  *p, *q, *last;

    ngx_str_set(code, "(no error code)");

    p = u->buffer.pos;
    last = u->buffer.last;

    if (p == NULL || p >= last) {
        return;
    }

    p = ngx_strlcasestrn(p, last, (u_char *) "<Code>", 6 - 1);

    if (p == NULL) {
        return;
    }

    p += 6;
    q = ngx_strlchr(p, last, '<');

    if (q && q - p > 0 && q - p <= 64) {
        code->data = p;
        code->len = q - p;
    }
}


/*
 * Leaves only the allowed headers of S3's answer.  The header list is
 * left as it is, an entry turned off (hash 0) as nginx's own filters do;
 * the shortcuts into it that nginx's header filter prints apart follow.
 */

static void
ngx_http_replay_allow_headers(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx)
{
    ngx_uint_t                      i, disposition;
    ngx_list_part_t                *part;
    ngx_table_elt_t                *h;
    ngx_http_replay_header_name_t  *a;

    disposition = (ctx->file_name.len == 0);

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0) {
            continue;
        }

        /* one Content-Disposition: S3's first, when the row gives none */

        if (h[i].key.len == sizeof("Content-Disposition") - 1
            && ngx_strncasecmp(h[i].key.data,
                               (u_char *) "Content-Disposition",
                               h[i].key.len)
               == 0)
        {
            if (disposition) {
                disposition = 0;

            } else {
                h[i].hash = 0;
            }

            continue;
        }

        for (a = ngx_http_replay_allowed; a->name.len; a++) {
            if (h[i].key.len == a->name.len
                && ngx_strncasecmp(h[i].key.data, a->name.data,
                                   a->name.len)
                   == 0)
            {
                break;
            }
        }

        if (a->name.len == 0) {
            h[i].hash = 0;
        }
    }

    r->headers_out.status_line.len = 0;
    r->headers_out.server = NULL;
    r->headers_out.date = NULL;
    r->headers_out.location = NULL;
    r->headers_out.refresh = NULL;
    r->headers_out.www_authenticate = NULL;
}


/*
 * Content-Type and a download file name from the lookup's row, when it
 * has them, replace what S3 stored with the object.
 */

static ngx_int_t
ngx_http_replay_set_type(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    u_char           *p, *q, *last;
    size_t            len;
    ngx_table_elt_t  *h;

    if (ctx->content_type.len) {
        r->headers_out.content_type = ctx->content_type;
        r->headers_out.content_type_len = ctx->content_type.len;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.charset.len = 0;
    }

    if (ctx->file_name.len == 0) {
        return NGX_OK;
    }

    /*
     * RFC 6266: a plain ASCII name for old clients, with anything that
     * could end the quoted string replaced, and the exact name in UTF-8
     */

    len = ngx_http_replay_stream_disposition_len(&ctx->file_name);

    p = ngx_http_replay_mem_alloc(r, ctx, len, "Content-Disposition");
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_http_replay_add_header(r, "Content-Disposition", p, 0);
    if (h == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "attachment; filename=\"",
                   sizeof("attachment; filename=\"") - 1);

    last = ctx->file_name.data + ctx->file_name.len;

    for (q = ctx->file_name.data; q < last; q++) {
        *p++ = (*q < 0x20 || *q >= 0x7f || *q == '"' || *q == '\\'
                || *q == '%') ? '_' : *q;
    }

    p = ngx_cpymem(p, "\"; filename*=UTF-8''",
                   sizeof("\"; filename*=UTF-8''") - 1);
    p += ngx_replay_sigv4_uri_encode(p, ctx->file_name.data,
                                     ctx->file_name.len, 0);

    h->value.len = p - h->value.data;

    return NGX_OK;
}


size_t
ngx_http_replay_stream_disposition_len(ngx_str_t *file_name)
{
    return sizeof("attachment; filename=\"\"; filename*=UTF-8''") - 1
           + file_name->len
           + ngx_replay_sigv4_uri_encode(NULL, file_name->data,
                                         file_name->len, 0);
}


/*
 * What S3 answered cannot be passed on: memory (or the limit) failed
 * before anything was sent, so nginx's own 500 goes out instead.
 */

static ngx_int_t
ngx_http_replay_refuse(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_http_clean_header(r);

    ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    ctx->phase = NGX_HTTP_REPLAY_DONE;

    ngx_http_replay_mem_release(r, ctx);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * The body from S3: counted, what the request holds looked at (cheaply),
 * and the reservation released with its last buffer.
 */

static ngx_int_t
ngx_http_replay_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                   n;
    ngx_int_t               rc;
    ngx_chain_t            *cl;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL || ctx->phase != NGX_HTTP_REPLAY_BODY) {
        return ngx_http_next_body_filter(r, in);
    }

    n = 0;

    for (cl = in; cl; cl = cl->next) {
        n += ngx_buf_size(cl->buf);

        if (cl->buf->last_buf
            || (r != r->main && cl->buf->last_in_chain))
        {
            ctx->last_sent = 1;
        }
    }

    if (n) {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_SENT_BYTES, n);
    }

    if (ctx->last_sent) {
        ctx->phase = NGX_HTTP_REPLAY_DONE;
        ngx_http_replay_mem_release(r, ctx);

        return ngx_http_next_body_filter(r, in);
    }

    rc = ngx_http_next_body_filter(r, in);

    /*
     * What sending made the request hold (TLS buffers, the pipe's); past
     * its limit, the response is cut and the connection closed.
     */

    if (rc != NGX_ERROR
        && ngx_http_replay_mem_measure(r, ctx, NGX_HTTP_REPLAY_MEM_BODY)
           != NGX_OK)
    {
        r->connection->error = 1;
        ctx->phase = NGX_HTTP_REPLAY_DONE;
        ngx_http_replay_mem_release(r, ctx);

        return NGX_ERROR;
    }

    return rc;
}
