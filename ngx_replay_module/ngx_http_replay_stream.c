
/*
 * Streaming through nginx's proxy module.
 *
 * A location with replay_s3_endpoint gets a proxy_pass to the endpoint and
 * the proxy_set_header lines S3 needs, as if the user had written them;
 * the module's content handler signs the request and then calls the proxy
 * handler.  The body then flows through nginx's upstream buffers to the
 * client without a copy of ours (see docs/design.md).
 *
 * The filters below see only those requests: they drop S3's own x-amz-*
 * response headers and turn S3's error answers (XML bodies) into plain
 * nginx error responses, logging S3's error code.
 */


#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_status.h"


extern ngx_module_t  ngx_http_proxy_module;


static char *ngx_http_replay_proxy_directive(ngx_conf_t *cf, char *name,
    ngx_uint_t nargs, ...);
static ngx_int_t ngx_http_replay_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_replay_set_type(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static ngx_int_t ngx_http_replay_send_error(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static void ngx_http_replay_clear_headers(ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_refuse(ngx_http_request_t *r);
static void ngx_http_replay_log_s3_error(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


/* headers passed to S3; the client's other headers are not */
static char  *ngx_http_replay_proxy_headers[][2] = {
    { "Host", "$replay_s3_host" },
    { "Authorization", "$replay_s3_authorization" },
    { "X-Amz-Date", "$replay_s3_date" },
    { "X-Amz-Content-Sha256", "$replay_s3_content_sha256" },
    { "X-Amz-Security-Token", "$replay_s3_security_token" },
    { "Range", "$http_range" },
    { "If-Range", "$http_if_range" },
    { "If-Match", "$http_if_match" },
    { "If-None-Match", "$http_if_none_match" },
    { "If-Modified-Since", "$http_if_modified_since" },
    { "If-Unmodified-Since", "$http_if_unmodified_since" },
    { "Connection", "" },
    { NULL, NULL }
};


char *
ngx_http_replay_stream_wire_proxy(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_url_t                   u;
    ngx_http_conf_ctx_t        *ctx;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_upstream_conf_t   *ucf;

    /* "scheme://host[:port]$replay_s3_uri" */
    len = rlcf->scheme.len + 3 + rlcf->endpoint_host.len
          + sizeof("$replay_s3_uri") - 1;

    p = ngx_pnalloc(cf->pool, len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(p, "%V://%V$replay_s3_uri%Z", &rlcf->scheme,
                &rlcf->endpoint_host);

    if (ngx_http_replay_proxy_directive(cf, "proxy_pass", 1, p)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    rlcf->proxy_handler = clcf->handler;

    /*
     * With a variable in proxy_pass nginx looks the host up among the
     * upstreams at run time; an implicit upstream resolves it at startup
     * as a plain proxy_pass would, and an explicit "upstream" block of
     * that name (keepalive, several servers) is used as it is.
     */
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

    if (u.naddrs == 0) {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = rlcf->endpoint_host;
        u.default_port = (rlcf->scheme.len == 5) ? 443 : 80;

        if (ngx_http_upstream_add(cf, &u, 0) == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; ngx_http_replay_proxy_headers[i][0]; i++) {
        if (ngx_http_replay_proxy_directive(cf, "proxy_set_header", 2,
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

    if (ngx_http_replay_proxy_directive(cf, "proxy_http_version", 1, "1.1")
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

#if (NGX_HTTP_SSL)

    if (rlcf->scheme.len == 5) {
        if (ngx_http_replay_proxy_directive(cf, "proxy_ssl_server_name", 1,
                                            "on")
            != NGX_CONF_OK
            || ngx_http_replay_proxy_directive(cf, "proxy_ssl_name", 1,
                                               "$replay_s3_host")
               != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

#endif

    return NGX_CONF_OK;
}


/*
 * Runs one of the proxy module's directives in the current location, as
 * if it had been written there.
 */

static char *
ngx_http_replay_proxy_directive(ngx_conf_t *cf, char *name, ngx_uint_t nargs,
    ...)
{
    char                 *rv, *arg;
    va_list               ap;
    ngx_str_t            *s;
    ngx_uint_t            i;
    ngx_array_t           args, *saved;
    ngx_command_t        *cmd;
    ngx_http_conf_ctx_t  *ctx;

    for (cmd = ngx_http_proxy_module.commands; cmd->name.len; cmd++) {
        if (cmd->name.len == ngx_strlen(name)
            && ngx_strcmp(cmd->name.data, name) == 0)
        {
            break;
        }
    }

    if (cmd->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint needs the proxy module's "
                           "\"%s\" directive", name);
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&args, cf->pool, nargs + 1, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    s = ngx_array_push_n(&args, nargs + 1);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    s[0].data = (u_char *) name;
    s[0].len = ngx_strlen(name);

    va_start(ap, nargs);

    for (i = 1; i <= nargs; i++) {
        arg = va_arg(ap, char *);
        s[i].data = (u_char *) arg;
        s[i].len = ngx_strlen(arg);
    }

    va_end(ap);

    ctx = cf->ctx;

    saved = cf->args;
    cf->args = &args;

    rv = cmd->set(cf, cmd, ctx->loc_conf[ngx_http_proxy_module.ctx_index]);

    cf->args = saved;

    if (rv != NGX_CONF_OK) {
        if (rv != NGX_CONF_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_endpoint sets \"%s\", which %s",
                               name, rv);
        }

        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
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
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_replay_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_replay_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_header_filter(ngx_http_request_t *r)
{
    size_t                       size;
    ngx_uint_t                   i, status;
    ngx_list_part_t             *part;
    ngx_table_elt_t             *h;
    ngx_http_upstream_t         *u;
    ngx_http_replay_ctx_t       *ctx;
    ngx_http_replay_loc_conf_t  *rlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL || r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    u = r->upstream;

    /* only S3's own answers: not nginx's errors, not our error page */
    if (!ctx->signed_request || u == NULL || ctx->error
        || u->headers_in.status_n != r->headers_out.status)
    {
        if (ngx_http_replay_server_timing(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_next_header_filter(r);
    }

    status = r->headers_out.status;

    if (!r->cached) {
        ngx_http_replay_status_s3(r, ctx, status);
    }

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

        if (h[i].key.len > 6
            && ngx_strncasecmp(h[i].key.data, (u_char *) "x-amz-", 6) == 0)
        {
            h[i].hash = 0;
        }
    }

    /*
     * nginx's buffered proxying holds a partly filled buffer back until it
     * fills; unbuffered, each read is passed on at once through the one
     * buffer of proxy_buffer_size, and the next read waits for the client.
     * The upstream code looks at u->buffering only after sending the
     * header, as for "X-Accel-Buffering: no".  A response to be cached
     * needs the buffered path.
     */
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (!rlcf->buffering && !u->cacheable && !u->store) {
        u->buffering = 0;
    }

    /*
     * The response header came in u->buffer; buffered, the pipe adds
     * proxy_buffers as it needs them, counted whole here.
     */
    size = u->conf->buffer_size;

    if (u->buffering) {
        size += u->conf->bufs.num * u->conf->bufs.size;
    }

    if (ngx_http_replay_mem_add(r, ctx, size, "proxy buffers") != NGX_OK) {
        return ngx_http_replay_refuse(r);
    }

    if (status < NGX_HTTP_BAD_REQUEST) {
        if (ngx_http_replay_set_type(r, ctx) != NGX_OK
            || ngx_http_replay_server_timing(r, ctx) != NGX_OK)
        {
            return ngx_http_replay_refuse(r);
        }

        ctx->streaming = 1;

        return ngx_http_next_header_filter(r);
    }

    /*
     * An S3 error: its headers and its XML body are S3's business, not the
     * client's.  The body's head is kept to log S3's error code; the
     * response goes out once it has been read.
     */

    ctx->error = 1;
    ctx->s3_status = status;

    if (status == NGX_HTTP_NOT_FOUND) {
        ctx->outcome = NGX_HTTP_REPLAY_NOT_FOUND;

    } else if (status == NGX_HTTP_RANGE_NOT_SATISFIABLE) {
        ctx->outcome = NGX_HTTP_REPLAY_BAD_REQUEST;

    } else {
        ctx->outcome = NGX_HTTP_REPLAY_S3_ERROR;
    }

    /* a HEAD answer has no body to wait for */
    if (r->header_only || r->method == NGX_HTTP_HEAD) {
        ngx_http_replay_log_s3_error(r, ctx);
        return ngx_http_replay_send_error(r, ctx);
    }

    if (ngx_http_replay_mem_add(r, ctx, NGX_HTTP_REPLAY_S3_ERROR_HEAD,
                                "S3 error head")
        != NGX_OK)
    {
        return ngx_http_replay_refuse(r);
    }

    ctx->s3_error = ngx_create_temp_buf(r->pool, NGX_HTTP_REPLAY_S3_ERROR_HEAD);
    if (ctx->s3_error == NULL) {
        return ngx_http_replay_refuse(r);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t                    n;
    ngx_buf_t               *b, *err;
    ngx_uint_t               last;
    ngx_chain_t             *cl, out;
    ngx_http_replay_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->s3_error == NULL || ctx->error_done) {

        /* a body that ends, and what of S3's it carries */

        n = 0;

        for (cl = in; cl; cl = cl->next) {
            n += ngx_buf_size(cl->buf);

            if (cl->buf->last_buf) {
                ctx->last_sent = 1;
            }
        }

        if (ctx->streaming && n) {
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_SENT_BYTES, n);
        }

        return ngx_http_next_body_filter(r, in);
    }

    err = ctx->s3_error;
    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            n = ngx_min(b->last - b->pos, err->end - err->last);
            err->last = ngx_cpymem(err->last, b->pos, n);
        }

        /* consumed: the upstream may reuse the buffer */
        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }

        if (b->last_buf) {
            last = 1;
        }
    }

    if (!last) {
        return NGX_OK;
    }

    ctx->error_done = 1;

    ngx_http_replay_log_s3_error(r, ctx);

    if (ngx_http_replay_send_error(r, ctx) == NGX_ERROR) {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = (u_char *) "";
    b->last = b->pos;
    b->last_buf = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
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
 * Sends the header of the error the client sees: 404 and 416 as S3 said,
 * every other S3 error as 502.  The body is the status line in plain text.
 */

static ngx_int_t
ngx_http_replay_send_error(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->s3_status != NGX_HTTP_NOT_FOUND
        && ctx->s3_status != NGX_HTTP_RANGE_NOT_SATISFIABLE)
    {
        r->headers_out.status = NGX_HTTP_BAD_GATEWAY;
    }

    /* S3's headers describe its XML, not this answer */
    ngx_http_replay_clear_headers(r);

    /* no body: the status says it all, the log says why */
    r->headers_out.content_length_n = 0;
    r->allow_ranges = 0;

    if (ngx_http_replay_server_timing(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_next_header_filter(r);

    return rc;
}


static void
ngx_http_replay_clear_headers(ngx_http_request_t *r)
{
    ngx_uint_t  status;

    /* nginx's own reset knows every header field of its version */
    status = r->headers_out.status;
    ngx_http_clean_header(r);
    r->headers_out.status = status;
}


/*
 * What S3 answered cannot be passed on: memory (or the limit) failed
 * before anything was sent, so nginx's own 500 goes out instead.
 */

static ngx_int_t
ngx_http_replay_refuse(ngx_http_request_t *r)
{
    ngx_http_replay_clear_headers(r);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static void
ngx_http_replay_log_s3_error(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    u_char      *p, *q, *last;
    ngx_str_t    code;
    ngx_uint_t   level;

    ngx_str_set(&code, "(no error code)");

    if (ctx->s3_error) {
        p = ctx->s3_error->pos;
        last = ctx->s3_error->last;

        p = ngx_strlcasestrn(p, last, (u_char *) "<Code>", 6 - 1);

        if (p) {
            p += 6;
            q = ngx_strlchr(p, last, '<');

            if (q && q - p > 0 && q - p <= 64) {
                code.data = p;
                code.len = q - p;
            }
        }
    }

    level = (ctx->s3_status == NGX_HTTP_NOT_FOUND
             || ctx->s3_status == NGX_HTTP_RANGE_NOT_SATISFIABLE)
            ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, r->connection->log, 0,
                  "replay: S3 answered %ui %V for key \"%V\"",
                  ctx->s3_status, &code, &ctx->key);
}
