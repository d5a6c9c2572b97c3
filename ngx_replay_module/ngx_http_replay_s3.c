
/*
 * S3 addressing and request signing.
 */


#include "ngx_http_replay_s3.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_util.h"
#include "ngx_http_replay_creds.h"


static ngx_int_t ngx_http_replay_s3_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_replay_s3_signed_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_replay_s3_header_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_replay_s3_sign(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static ngx_int_t ngx_http_replay_s3_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_replay_s3_sha256_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_replay_s3_host_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_replay_s3_request(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_loc_conf_t *rlcf,
    ngx_str_t *method, ngx_replay_sigv4_request_t *req,
    ngx_replay_sigv4_header_t *headers);
static size_t ngx_http_replay_s3_auth_size(ngx_http_replay_loc_conf_t *rlcf);
static size_t ngx_http_replay_s3_url_size(ngx_http_replay_loc_conf_t *rlcf,
    size_t uri_len);
#if (NGX_DEBUG)
static void ngx_http_replay_s3_debug(void *data, const char *what,
    const unsigned char *text, size_t len);
#endif


#define ngx_http_replay_s3_sv(s)                                              \
    { (const unsigned char *) (s), sizeof(s) - 1 }


static ngx_http_variable_t  ngx_http_replay_s3_vars[] = {

    { ngx_string("replay_key"), NULL, ngx_http_replay_s3_variable,
      offsetof(ngx_http_replay_ctx_t, key), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_s3_uri"), NULL, ngx_http_replay_s3_variable,
      offsetof(ngx_http_replay_ctx_t, uri), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_s3_authorization"), NULL,
      ngx_http_replay_s3_signed_variable,
      offsetof(ngx_http_replay_ctx_t, authorization),
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("replay_s3_date"), NULL, ngx_http_replay_s3_signed_variable,
      offsetof(ngx_http_replay_ctx_t, amz_date), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_s3_host"), NULL, ngx_http_replay_s3_host_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_s3_content_sha256"), NULL,
      ngx_http_replay_s3_sha256_variable, 0, 0, 0 },

    { ngx_string("replay_s3_security_token"), NULL,
      ngx_http_replay_s3_token_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    /* the client's headers that S3 sees, when the answer is not cached */

    { ngx_string("replay_s3_range"), NULL, ngx_http_replay_s3_header_variable,
      offsetof(ngx_http_headers_in_t, range), NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("replay_s3_if_range"), NULL,
      ngx_http_replay_s3_header_variable,
      offsetof(ngx_http_headers_in_t, if_range), NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("replay_s3_if_match"), NULL,
      ngx_http_replay_s3_header_variable,
      offsetof(ngx_http_headers_in_t, if_match), NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("replay_s3_if_none_match"), NULL,
      ngx_http_replay_s3_header_variable,
      offsetof(ngx_http_headers_in_t, if_none_match),
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("replay_s3_if_modified_since"), NULL,
      ngx_http_replay_s3_header_variable,
      offsetof(ngx_http_headers_in_t, if_modified_since),
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("replay_s3_if_unmodified_since"), NULL,
      ngx_http_replay_s3_header_variable,
      offsetof(ngx_http_headers_in_t, if_unmodified_since),
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_replay_s3_empty_sha256 =
    ngx_string(NGX_REPLAY_SIGV4_EMPTY_SHA256);


ngx_int_t
ngx_http_replay_s3_add_variables(ngx_conf_t *cf)
{
    return ngx_http_replay_add_variables(cf, ngx_http_replay_s3_vars);
}


/* $replay_key, $replay_s3_uri: strings of the request's context */

static ngx_int_t
ngx_http_replay_s3_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t              *s;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) ctx + data);

    if (s->data == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


/*
 * $replay_s3_authorization and $replay_s3_date: the request is signed
 * when the proxy module first asks for them, as it builds the request to
 * S3, so that the method signed is the one sent (GET for a HEAD that
 * proxy_cache turns into one) and a request served from the cache is not
 * signed at all.  Once signed, they keep what was sent, for the log.
 */

static ngx_int_t
ngx_http_replay_s3_signed_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL || ctx->uri.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (ctx->authorization.len == 0) {

        /* a presigned URL has no header to show */

        if (ctx->phase != NGX_HTTP_REPLAY_PROXY || ctx->signed_request) {
            v->not_found = 1;
            return NGX_OK;
        }

        if (ngx_http_replay_s3_sign(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (data == offsetof(ngx_http_replay_ctx_t, amz_date)) {
        v->data = ctx->amz_date;
        v->len = NGX_REPLAY_SIGV4_DATE_LEN;

    } else {
        v->data = ctx->authorization.data;
        v->len = ctx->authorization.len;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * A client's Range or conditional header, for S3; none when the answer is
 * to be cached: the cache keeps the whole object, and nginx answers
 * ranges and conditions from it.
 */

static ngx_int_t
ngx_http_replay_s3_header_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_table_elt_t  *h;

    h = *(ngx_table_elt_t **) ((char *) &r->headers_in + data);

    if (h == NULL || (r->upstream && r->upstream->cacheable)) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = h->value.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = h->value.data;

    return NGX_OK;
}


/* the payload hash of a request without a body */

static ngx_int_t
ngx_http_replay_s3_sha256_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->len = ngx_http_replay_s3_empty_sha256.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = ngx_http_replay_s3_empty_sha256.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_s3_host_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->host.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = rlcf->host.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = rlcf->host.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_s3_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL || ctx->uri.len == 0
        || ctx->phase != NGX_HTTP_REPLAY_PROXY)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    /* the token of the credentials the request is signed with */
    if (!ctx->signed_request && ngx_http_replay_s3_sign(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->security_token.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->security_token.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = ctx->security_token.data;

    return NGX_OK;
}


char *
ngx_http_replay_s3_parse_endpoint(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf, ngx_str_t *url)
{
    u_char  *p, *last;

    p = url->data;
    last = p + url->len;

    if (url->len > 7 && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0) {
        ngx_str_set(&rlcf->scheme, "http");
        p += 7;

    } else if (url->len > 8
               && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0)
    {
        ngx_str_set(&rlcf->scheme, "https");
        p += 8;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint \"%V\" must start with "
                           "\"http://\" or \"https://\"", url);
        return NGX_CONF_ERROR;
    }

    if (last[-1] == '/') {
        last--;
    }

    if (p == last || ngx_strlchr(p, last, '/') || ngx_strlchr(p, last, '?')
        || ngx_strlchr(p, last, '@') || ngx_strlchr(p, last, '$'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint \"%V\" must be a scheme and "
                           "a host with an optional port, without a path",
                           url);
        return NGX_CONF_ERROR;
    }

    rlcf->endpoint = *url;
    rlcf->endpoint_host.data = p;
    rlcf->endpoint_host.len = last - p;

    return NGX_CONF_OK;
}


char *
ngx_http_replay_s3_merge(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *rlcf)
{
    u_char  *p;
    size_t   len;

    if (rlcf->endpoint.len == 0) {
        return NGX_CONF_OK;
    }

    if (rlcf->bucket.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint \"%V\" is set but "
                           "replay_s3_bucket is not", &rlcf->endpoint);
        return NGX_CONF_ERROR;
    }

    if (rlcf->key == NULL && rlcf->query == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint \"%V\" is set but neither "
                           "replay_s3_key nor replay_key_query is",
                           &rlcf->endpoint);
        return NGX_CONF_ERROR;
    }

    if (rlcf->key && rlcf->query) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_key and replay_key_query are both "
                           "set: the query gives the key");
        return NGX_CONF_ERROR;
    }

    if (rlcf->creds == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint \"%V\" is set but "
                           "replay_s3_credentials is not", &rlcf->endpoint);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_replay_creds_merge(cf, rlcf->creds, &rlcf->region)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (rlcf->addressing == NGX_HTTP_REPLAY_VIRTUAL_STYLE) {
        len = rlcf->bucket.len + 1 + rlcf->endpoint_host.len;
        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        rlcf->host.data = p;
        rlcf->host.len = len;
        p = ngx_cpymem(p, rlcf->bucket.data, rlcf->bucket.len);
        *p++ = '.';
        ngx_memcpy(p, rlcf->endpoint_host.data, rlcf->endpoint_host.len);

        ngx_str_set(&rlcf->path_prefix, "/");

        return NGX_CONF_OK;
    }

    rlcf->host = rlcf->endpoint_host;

    /* bucket names are DNS-safe, but encode them anyway: nothing to trust */
    len = ngx_replay_sigv4_uri_encode(NULL, rlcf->bucket.data,
                                      rlcf->bucket.len, 0);

    p = ngx_pnalloc(cf->pool, len + 2);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rlcf->path_prefix.data = p;
    rlcf->path_prefix.len = len + 2;

    *p++ = '/';
    p += ngx_replay_sigv4_uri_encode(p, rlcf->bucket.data, rlcf->bucket.len,
                                     0);
    *p = '/';

    return NGX_CONF_OK;
}


/* the S3 path of ctx->key: the bucket's prefix, the key encoded once */

ngx_int_t
ngx_http_replay_s3_prepare(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    u_char                      *p;
    size_t                       len;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    len = ngx_replay_sigv4_uri_encode(NULL, ctx->key.data, ctx->key.len, 1);

    p = ngx_http_replay_mem_alloc(r, ctx, rlcf->path_prefix.len + len,
                                  "S3 path");
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->uri.data = p;
    ctx->uri.len = rlcf->path_prefix.len + len;

    p = ngx_cpymem(p, rlcf->path_prefix.data, rlcf->path_prefix.len);
    ngx_replay_sigv4_uri_encode(p, ctx->key.data, ctx->key.len, 1);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: s3 \"%V\" host \"%V\"", &ctx->uri, &rlcf->host);

    return NGX_OK;
}


/* the request as the proxy sends it: host, date, payload hash, token */

static void
ngx_http_replay_s3_request(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_loc_conf_t *rlcf, ngx_str_t *method,
    ngx_replay_sigv4_request_t *req, ngx_replay_sigv4_header_t *headers)
{
    ngx_memzero(req, sizeof(ngx_replay_sigv4_request_t));

    ngx_replay_sigv4_format_date(ngx_time(), (char *) ctx->amz_date);

    req->method.data = method->data;
    req->method.len = method->len;
    req->path.data = ctx->uri.data;
    req->path.len = ctx->uri.len;
    ngx_memcpy(req->amz_date, ctx->amz_date, NGX_REPLAY_SIGV4_DATE_LEN);
    req->headers = headers;
#if (NGX_DEBUG)
    /* the signer builds the debug texts only when they are asked for */
    if (r->connection->log->log_level & NGX_LOG_DEBUG_HTTP) {
        req->debug = ngx_http_replay_s3_debug;
        req->debug_data = r->connection->log;
    }
#endif

    headers[0].name.data = (u_char *) "host";
    headers[0].name.len = 4;
    headers[0].value.data = rlcf->host.data;
    headers[0].value.len = rlcf->host.len;

    req->nheaders = 1;
}


static ngx_int_t
ngx_http_replay_s3_sign(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    u_char                      *out;
    size_t                       len, size;
    uint64_t                     start;
    ngx_str_t                    method;
    ngx_uint_t                   n;
    ngx_replay_sigv4_creds_t    *creds;
    ngx_http_replay_loc_conf_t  *rlcf;
    ngx_replay_sigv4_request_t   req;
    ngx_replay_sigv4_header_t    headers[4];

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    /*
     * The phase handler has seen credentials; they may have expired since
     * if the proxy builds its request later (proxy_cache_lock): then the
     * proxy answers 500, and the log says why.
     */
    creds = ngx_http_replay_creds_get(rlcf->creds);
    if (creds == NULL) {
        (void) ngx_http_replay_creds_unavailable(r, rlcf->creds,
                                                 &ctx->retry_after);
        return NGX_ERROR;
    }

    /* $replay_s3_security_token: the token signed with, whatever comes */
    if (creds->session_token.len) {
        ctx->security_token.data = ngx_http_replay_mem_alloc(r, ctx,
                                       creds->session_token.len,
                                       "session token");
        if (ctx->security_token.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ctx->security_token.data, creds->session_token.data,
                   creds->session_token.len);
        ctx->security_token.len = creds->session_token.len;
    }

    /* proxy_cache turns a HEAD into a GET (u->method); nothing else may */
    if (r->upstream && r->upstream->method.len) {
        method = r->upstream->method;

    } else {
        method = r->method_name;
    }

    ngx_http_replay_s3_request(r, ctx, rlcf, &method, &req, headers);

    n = 1;

    headers[n].name.data = (u_char *) "x-amz-content-sha256";
    headers[n].name.len = sizeof("x-amz-content-sha256") - 1;
    headers[n].value.data = ngx_http_replay_s3_empty_sha256.data;
    headers[n].value.len = ngx_http_replay_s3_empty_sha256.len;
    n++;

    headers[n].name.data = (u_char *) "x-amz-date";
    headers[n].name.len = sizeof("x-amz-date") - 1;
    headers[n].value.data = ctx->amz_date;
    headers[n].value.len = NGX_REPLAY_SIGV4_DATE_LEN;
    n++;

    if (ctx->security_token.len) {
        headers[n].name.data = (u_char *) "x-amz-security-token";
        headers[n].name.len = sizeof("x-amz-security-token") - 1;
        headers[n].value.data = ctx->security_token.data;
        headers[n].value.len = ctx->security_token.len;
        n++;
    }

    req.nheaders = n;
    req.payload_hash.data = ngx_http_replay_s3_empty_sha256.data;
    req.payload_hash.len = ngx_http_replay_s3_empty_sha256.len;

    size = ngx_http_replay_s3_auth_size(rlcf);

    out = ngx_http_replay_mem_alloc(r, ctx, size, "Authorization");
    if (out == NULL) {
        return NGX_ERROR;
    }

    start = ngx_http_replay_usec();

    if (ngx_replay_sigv4_sign(creds, &req, out, size, &len)
        != NGX_REPLAY_SIGV4_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: signing the S3 request failed");
        return NGX_ERROR;
    }

    ctx->s3_start = ngx_http_replay_usec();
    ctx->sign_time = ctx->s3_start - start;

    ctx->authorization.data = out;
    ctx->authorization.len = len;
    ctx->signed_request = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: signed %V for s3", &method);

    return NGX_OK;
}


/*
 * What a request may hold for its key, S3 path and signature (or
 * presigned URL), for ngx_http_replay_mem_merge().
 */

size_t
ngx_http_replay_s3_need(ngx_http_replay_loc_conf_t *rlcf)
{
    size_t  size, uri;

    size = 0;

    /* a key from the database is counted with its row */
    if (rlcf->query == NULL) {
        size += NGX_HTTP_REPLAY_MAX_KEY;
    }

    /* each byte of the key may take three */
    uri = rlcf->path_prefix.len + 3 * NGX_HTTP_REPLAY_MAX_KEY;

    if (rlcf->redirect) {
        return size + uri + ngx_http_replay_s3_url_size(rlcf, uri);
    }

    /* the signature, and the session token copied for the proxy */
    return size + uri + ngx_http_replay_s3_auth_size(rlcf)
           + ngx_http_replay_creds_token_max(rlcf->creds);
}


static size_t
ngx_http_replay_s3_auth_size(ngx_http_replay_loc_conf_t *rlcf)
{
    /* the key id, the region and "s3" in the credential scope */
    return 256 + ngx_http_replay_creds_key_id_max(rlcf->creds)
           + rlcf->region.len + 2;
}


/* the query's values are percent-encoded, so allow three times them */

static size_t
ngx_http_replay_s3_url_size(ngx_http_replay_loc_conf_t *rlcf, size_t uri_len)
{
    return rlcf->scheme.len + sizeof("://") - 1 + rlcf->host.len + uri_len
           + 512
           + 3 * (ngx_http_replay_creds_key_id_max(rlcf->creds)
                  + rlcf->region.len
                  + ngx_http_replay_creds_token_max(rlcf->creds));
}


/*
 * Redirect mode: a presigned URL for the request's method, in Location;
 * what the phase handler answers with (302 or 307).
 */

ngx_int_t
ngx_http_replay_s3_redirect(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    u_char                      *p, *out;
    size_t                       size, len;
    uint64_t                     start;
    ngx_table_elt_t             *h;
    ngx_replay_sigv4_creds_t    *creds;
    ngx_http_replay_loc_conf_t  *rlcf;
    ngx_replay_sigv4_request_t   req;
    ngx_replay_sigv4_header_t    headers[1];

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    creds = ngx_http_replay_creds_get(rlcf->creds);
    if (creds == NULL) {
        return ngx_http_replay_creds_unavailable(r, rlcf->creds,
                                                 &ctx->retry_after);
    }

    if (ngx_http_replay_s3_prepare(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_replay_s3_request(r, ctx, rlcf, &r->method_name, &req, headers);

    size = ngx_http_replay_s3_url_size(rlcf, ctx->uri.len);

    out = ngx_http_replay_mem_alloc(r, ctx, size, "presigned URL");
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(out, rlcf->scheme.data, rlcf->scheme.len);
    p = ngx_cpymem(p, "://", sizeof("://") - 1);
    p = ngx_cpymem(p, rlcf->host.data, rlcf->host.len);

    start = ngx_http_replay_usec();

    if (ngx_replay_sigv4_presign(creds, &req, rlcf->presign_expires, p,
                                 size - (p - out), &len)
        != NGX_REPLAY_SIGV4_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: presigning the S3 URL failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->sign_time = ngx_http_replay_usec() - start;
    ctx->signed_request = 1;

    h = ngx_http_replay_add_header(r, "Location", out, (p - out) + len);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_clear_location(r);
    r->headers_out.location = h;

    /* a presigned URL expires: no cache may keep the redirect longer */
    if (ngx_http_replay_add_header(r, "Cache-Control", (u_char *) "no-store",
                                   8)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: redirect to s3 \"%V\"", &ctx->uri);

    return rlcf->redirect;
}


/* the string to sign holds no secret; the canonical request may hold a
 * session token, so it is not logged */

#if (NGX_DEBUG)

static void
ngx_http_replay_s3_debug(void *data, const char *what,
    const unsigned char *text, size_t len)
{
    ngx_str_t   s;
    ngx_log_t  *log;

    log = data;

    if (ngx_strcmp(what, "string to sign") != 0) {
        return;
    }

    s.data = (u_char *) text;
    s.len = len;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                   "replay: sigv4 string to sign:\n%V", &s);
}

#endif
