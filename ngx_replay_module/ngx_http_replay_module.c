
/*
 * ngx_replay_module: the module, its directives and its content handler.
 *
 *     location ~ ^/replays/(.+)$ {
 *         replay_s3_endpoint     http://127.0.0.1:9000;
 *         replay_s3_bucket       replays;
 *         replay_s3_credentials  env;
 *         replay_s3_key          games/$1.bin;
 *     }
 *
 * See docs/directives.md for every directive, docs/design.md for why the
 * S3 request rides the proxy module.
 */


#include "ngx_http_replay_module.h"
#include "ngx_http_replay_s3.h"
#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_lookup.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_cache.h"
#include "ngx_http_replay_util.h"
#include "ngx_http_replay_creds.h"


static ngx_int_t ngx_http_replay_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_content_handler(ngx_http_request_t *r);
static ngx_http_replay_ctx_t *ngx_http_replay_create_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_check_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_resolve_key(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_loc_conf_t *rlcf);
static ngx_int_t ngx_http_replay_wait(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static void ngx_http_replay_lookup_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc);
static void ngx_http_replay_step_done(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_replay_end(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_replay_cleanup(void *data);
static ngx_int_t ngx_http_replay_check_key(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_loc_conf_t *rlcf);
static ngx_int_t ngx_http_replay_check_headers(ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_replay_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_replay_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_replay_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_replay_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_replay_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_replay_s3_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_replay_redirect(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_replay_check_bucket(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_replay_check_region(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_replay_check_expires(ngx_conf_t *cf, void *post,
    void *data);


static ngx_conf_enum_t  ngx_http_replay_addressing[] = {
    { ngx_string("path"), NGX_HTTP_REPLAY_PATH_STYLE },
    { ngx_string("virtual"), NGX_HTTP_REPLAY_VIRTUAL_STYLE },
    { ngx_null_string, 0 }
};


static ngx_conf_post_t  ngx_http_replay_bucket_post =
    { ngx_http_replay_check_bucket };

static ngx_conf_post_t  ngx_http_replay_region_post =
    { ngx_http_replay_check_region };

static ngx_conf_post_t  ngx_http_replay_expires_post =
    { ngx_http_replay_check_expires };


static ngx_command_t  ngx_http_replay_commands[] = {

    { ngx_string("replay_s3_endpoint"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_replay_s3_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_s3_bucket"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, bucket),
      &ngx_http_replay_bucket_post },

    { ngx_string("replay_s3_region"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, region),
      &ngx_http_replay_region_post },

    { ngx_string("replay_s3_addressing"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, addressing),
      &ngx_http_replay_addressing },

    { ngx_string("replay_s3_credentials"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_replay_creds,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_s3_key"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, key),
      NULL },

    { ngx_string("replay_buffering"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, buffering),
      NULL },

    { ngx_string("replay_redirect"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_replay_redirect,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_presign_expires"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, presign_expires),
      &ngx_http_replay_expires_post },

    { ngx_string("replay_db"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_replay_db,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_key_query"),
      NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_replay_key_query,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_replay_key_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_key_param_max_length"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, key_param_max),
      NULL },

    { ngx_string("replay_memory_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, memory_limit),
      NULL },

    { ngx_string("replay_memory_budget"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_replay_memory_budget,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("replay_server_timing"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_replay_loc_conf_t, server_timing),
      NULL },

    { ngx_string("replay_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_replay_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_replay_module_ctx = {
    ngx_http_replay_preconfiguration,      /* preconfiguration */
    ngx_http_replay_postconfiguration,     /* postconfiguration */

    ngx_http_replay_create_main_conf,      /* create main configuration */
    ngx_http_replay_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_replay_create_loc_conf,       /* create location configuration */
    ngx_http_replay_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_replay_module = {
    NGX_MODULE_V1,
    &ngx_http_replay_module_ctx,           /* module context */
    ngx_http_replay_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_replay_status_init_module,    /* init module */
    ngx_http_replay_lookup_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_replay_lookup_exit_process,   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The request path: a precontent phase handler, entered again after each
 * asynchronous step (the memory budget, the key lookup) as
 * auth_request's access handler is, with ctx->phase saying where it is.
 * Once the key is known and checked it declines, and the location's
 * content handler, the proxy module's own, sends the request to S3; the
 * signature is made when the proxy builds that request
 * (ngx_http_replay_s3.c), and the filters (ngx_http_replay_stream.c) see
 * S3's answer.
 */

static ngx_int_t
ngx_http_replay_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_replay_ctx_t       *ctx;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->endpoint.len == 0) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL) {
        ctx = ngx_http_replay_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->waiting) {
        /* run again before its step is over: nothing to do yet */
        return NGX_DONE;
    }

    switch (ctx->phase) {

    case NGX_HTTP_REPLAY_START:

        rc = ngx_http_replay_check_request(r);
        if (rc != NGX_OK) {
            return ngx_http_replay_end(r, ctx, rc);
        }

        /* no credentials to sign with: no lookup for nothing */
        if (ngx_http_replay_creds_get(rlcf->creds) == NULL) {
            return ngx_http_replay_end(r, ctx,
                       ngx_http_replay_creds_unavailable(r, rlcf->creds,
                                                         &ctx->retry_after));
        }

        r->connection->log->action = "waiting for the memory budget";

        rc = ngx_http_replay_mem_reserve(r, ctx, ngx_http_replay_step_done);

        if (rc == NGX_AGAIN) {
            ctx->phase = NGX_HTTP_REPLAY_WAIT_BUDGET;
            return ngx_http_replay_wait(r, ctx);
        }

        if (rc != NGX_OK) {
            return ngx_http_replay_end(r, ctx, rc);
        }

        /* fall through */

    case NGX_HTTP_REPLAY_WAIT_BUDGET:

        if (ctx->rc != NGX_OK) {
            return ngx_http_replay_end(r, ctx, ctx->rc);
        }

        rc = ngx_http_replay_resolve_key(r, ctx, rlcf);

        if (rc == NGX_AGAIN) {
            ctx->phase = NGX_HTTP_REPLAY_WAIT_LOOKUP;
            return ngx_http_replay_wait(r, ctx);
        }

        ctx->rc = rc;

        /* fall through */

    case NGX_HTTP_REPLAY_WAIT_LOOKUP:

        r->connection->log->action = NULL;

        rc = ctx->rc;

        if (rc == NGX_OK) {
            rc = ngx_http_replay_check_key(r, ctx, rlcf);
        }

        if (rc == NGX_OK
            && ngx_http_replay_mem_measure(r, ctx, NGX_HTTP_REPLAY_MEM_LOOKUP)
               != NGX_OK)
        {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc != NGX_OK) {
            return ngx_http_replay_end(r, ctx, rc);
        }

        /* they may have expired during the lookup */
        if (ngx_http_replay_creds_get(rlcf->creds) == NULL) {
            return ngx_http_replay_end(r, ctx,
                       ngx_http_replay_creds_unavailable(r, rlcf->creds,
                                                         &ctx->retry_after));
        }

        if (rlcf->redirect) {
            return ngx_http_replay_end(r, ctx,
                                       ngx_http_replay_s3_redirect(r, ctx));
        }

        if (ngx_http_replay_s3_prepare(r, ctx) != NGX_OK) {
            return ngx_http_replay_end(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        /* the proxy module's content handler takes it from here */
        ctx->phase = NGX_HTTP_REPLAY_PROXY;
        ctx->proxy_handler = r->content_handler;
        r->content_handler = ngx_http_replay_content_handler;

        return NGX_DECLINED;

    default:
        return NGX_DECLINED;
    }
}


/*
 * The proxy's own content handler, with one difference: with a session
 * token, the proxy module's debug lines would print it (they dump the
 * request it builds, and every variable copied into it), so the
 * connection's debug log is off while the request to S3 is built.
 */

static ngx_int_t
ngx_http_replay_content_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_uint_t                   level;
    ngx_log_t                   *log;
    ngx_http_replay_ctx_t       *ctx;
    ngx_http_replay_loc_conf_t  *rlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (ctx == NULL || ctx->proxy_handler == NULL) {
        /* the phase handler set it: nothing else can get here */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "replay: content handler without a prepared request");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    log = r->connection->log;
    level = log->log_level;

    if ((level & NGX_LOG_DEBUG_ALL) && rlcf->creds
        && ngx_http_replay_creds_token_max(rlcf->creds))
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "replay: no debug log while the proxy builds the S3 "
                       "request: it would hold the session token");

        log->log_level &= ~NGX_LOG_DEBUG_ALL;
    }

    rc = ctx->proxy_handler(r);

    log->log_level = level;

    return rc;
}


static ngx_http_replay_ctx_t *
ngx_http_replay_create_ctx(ngx_http_request_t *r)
{
    ngx_http_cleanup_t     *cln;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_replay_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    /* run when the request is terminated or freed, whichever first */
    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NULL;
    }

    ctx->request = r;
    ctx->rc = NGX_OK;

    cln->handler = ngx_http_replay_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_replay_module);

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_IN_FLIGHT, 1);

    if (ngx_http_replay_mem_start(r, ctx) != NGX_OK) {
        return NULL;
    }

    (void) ngx_http_replay_mem_add(r, ctx, sizeof(ngx_http_replay_ctx_t),
                                   "context");

    return ctx;
}


/*
 * Only GET and HEAD reach S3, whatever limit_except lets through; what S3
 * would refuse in a forwarded header is the client's error, not a 502.
 */

static ngx_int_t
ngx_http_replay_check_request(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        if (ngx_http_replay_add_header(r, "Allow", (u_char *) "GET, HEAD", 9)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "replay: method %V not allowed", &r->method_name);

        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_replay_check_headers(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* a GET's body means nothing to S3; nginx's proxy then reads none */
    return ngx_http_discard_request_body(r);
}


/* the key from replay_s3_key, or from the database: NGX_AGAIN waits */

static ngx_int_t
ngx_http_replay_resolve_key(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_loc_conf_t *rlcf)
{
    if (rlcf->query) {
        r->connection->log->action = "looking up the replay key";

        return ngx_http_replay_lookup_start(r, ctx,
                                            ngx_http_replay_lookup_done,
                                            ctx);
    }

    if (ngx_http_complex_value(r, rlcf->key, &ctx->key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_http_replay_mem_add(r, ctx, ctx->key.len, "key");

    return NGX_OK;
}


/*
 * Waits for a step: the request is off the phases until the step's
 * handler runs them again, and a client that closes (even with its
 * request, before anything was read again) ends it at once.
 */

static ngx_int_t
ngx_http_replay_wait(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ctx->waiting = 1;

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (r == r->connection->data) {
        ngx_http_test_reading(r);
    }

    return NGX_DONE;
}


static void
ngx_http_replay_lookup_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_http_replay_step_done(r, data, rc);
}


/* a step is over: the phases go on from the module's handler */

static void
ngx_http_replay_step_done(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_replay_log_request(r, NULL);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "replay: step %d done: %i", ctx->phase, rc);

    ctx->waiting = 0;
    ctx->rc = rc;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/*
 * The context is done before S3 (an error, a redirect): what the phase
 * handler returns to nginx, which answers with it (error_page included).
 */

static ngx_int_t
ngx_http_replay_end(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_int_t rc)
{
    u_char  *p;
    size_t   len;

    ctx->phase = NGX_HTTP_REPLAY_DONE;

    if (rc > 0) {
        ctx->status = rc;
    }

    ngx_http_replay_mem_release(r, ctx);

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* a busy database or budget, credentials to come: try again */
        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_sprintf(p, "%T", ctx->retry_after ? ctx->retry_after : 1)
              - p;

        if (ngx_http_replay_add_header(r, "Retry-After", p, len) == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return rc;
}


/* the request ends: its counters, and what it holds of the budget */

static void
ngx_http_replay_cleanup(void *data)
{
    ngx_http_replay_ctx_t *ctx = data;

    ngx_http_replay_mem_done(ctx->request, ctx);
    ngx_http_replay_status_done(ctx->request, ctx);
}


/*
 * S3 takes any key up to 1,024 bytes, but a server that normalises paths
 * (some do, the suite's own among them) reads "a/../b" as "b", and ".."
 * could then reach out of the bucket: such keys are nobody's replays.
 */

static ngx_int_t
ngx_http_replay_check_key(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_loc_conf_t *rlcf)
{
    u_char  *p, *seg, *last;
    u_char   text[NGX_HTTP_REPLAY_LOG_VALUE_LEN];

    if (ctx->key.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the object key is empty");
        return NGX_HTTP_NOT_FOUND;
    }

    if (ctx->key.len > NGX_HTTP_REPLAY_MAX_KEY) {

        /* from the database, the server's data is wrong, not the client */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the object key %s is %uz bytes long, "
                      "S3 allows %d",
                      rlcf->query ? "from the database" : "of the request",
                      ctx->key.len, NGX_HTTP_REPLAY_MAX_KEY);

        return rlcf->query ? NGX_HTTP_INTERNAL_SERVER_ERROR
                           : NGX_HTTP_BAD_REQUEST;
    }

    last = ctx->key.data + ctx->key.len;
    seg = ctx->key.data;

    for (p = seg; p <= last; p++) {

        if (p < last && *p != '/') {
            continue;
        }

        if (p - seg == 0
            || (p - seg == 1 && seg[0] == '.')
            || (p - seg == 2 && seg[0] == '.' && seg[1] == '.'))
        {
            p = ngx_http_replay_escape(text, sizeof(text), ctx->key.data,
                                       ctx->key.len);

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "replay: the object key \"%*s\" has an empty, "
                          "\".\" or \"..\" segment", p - text, text);

            return NGX_HTTP_NOT_FOUND;
        }

        seg = p + 1;
    }

    return NGX_OK;
}


/*
 * The client's headers passed on to S3 (ngx_http_replay_stream.c) must be
 * valid there: nginx takes control characters in a header value, but S3
 * (any strict HTTP server) refuses the whole request, which would reach
 * the client as a 502.
 */

static ngx_int_t
ngx_http_replay_check_headers(ngx_http_request_t *r)
{
    u_char           *p, *last;
    ngx_uint_t        i;
    ngx_table_elt_t  *h[6];

    h[0] = r->headers_in.range;
    h[1] = r->headers_in.if_range;
    h[2] = r->headers_in.if_match;
    h[3] = r->headers_in.if_none_match;
    h[4] = r->headers_in.if_modified_since;
    h[5] = r->headers_in.if_unmodified_since;

    for (i = 0; i < 6; i++) {
        if (h[i] == NULL) {
            continue;
        }

        last = h[i]->value.data + h[i]->value.len;

        for (p = h[i]->value.data; p < last; p++) {
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "replay: the client's \"%V\" header holds a "
                              "control character", &h[i]->key);
                return NGX_HTTP_BAD_REQUEST;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_preconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_replay_s3_add_variables(cf) != NGX_OK
        || ngx_http_replay_stream_add_variables(cf) != NGX_OK
        || ngx_http_replay_mem_add_variables(cf) != NGX_OK
        || ngx_http_replay_cache_add_variables(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_replay_status_add_variables(cf);
}


static ngx_int_t
ngx_http_replay_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    /*
     * Precontent: after rewrites, if, access and limit_except have had
     * their say, before the content handler (the proxy's).  Added last,
     * it runs before try_files and mirror in that phase.
     */
    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_replay_handler;

    return ngx_http_replay_stream_init_filters(cf);
}


static void *
ngx_http_replay_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_replay_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rmcf->budget = 0;
     *     rmcf->reserved = 0;
     *     rmcf->nwaiting = 0;
     *     rmcf->status = 0;
     *     rmcf->stats = NULL;
     *     rmcf->dbs = NULL;
     */

    rmcf->budget_queue = NGX_CONF_UNSET_UINT;
    rmcf->budget_timeout = NGX_CONF_UNSET_MSEC;

    ngx_queue_init(&rmcf->waiting);

    return rmcf;
}


static char *
ngx_http_replay_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_replay_main_conf_t *rmcf = conf;

    ngx_conf_init_uint_value(rmcf->budget_queue, 128);
    ngx_conf_init_msec_value(rmcf->budget_timeout, 3000);

    return ngx_http_replay_status_init_zone(cf, rmcf);
}


static void *
ngx_http_replay_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_replay_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->endpoint = { 0, NULL };
     *     conf->scheme = { 0, NULL };
     *     conf->endpoint_host = { 0, NULL };
     *     conf->bucket = { 0, NULL };
     *     conf->region = { 0, NULL };
     *     conf->key = NULL;
     *     conf->db = NULL;
     *     conf->query = NULL;
     *     conf->host = { 0, NULL };
     *     conf->path_prefix = { 0, NULL };
     *     conf->memory_need = 0;
     *     conf->status_loc = NULL;
     */

    conf->addressing = NGX_CONF_UNSET_UINT;
    conf->creds = NGX_CONF_UNSET_PTR;
    conf->buffering = NGX_CONF_UNSET;
    conf->server_timing = NGX_CONF_UNSET;
    conf->memory_limit = NGX_CONF_UNSET_SIZE;
    conf->redirect = NGX_CONF_UNSET_UINT;
    conf->presign_expires = NGX_CONF_UNSET;
    conf->key_param_max = NGX_CONF_UNSET_SIZE;
    conf->key_cache = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_replay_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_replay_loc_conf_t *prev = parent;
    ngx_http_replay_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /*
     * "if" and "limit_except" blocks serve what their location serves,
     * as the proxy module lets them inherit proxy_pass
     */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->noname && conf->endpoint.len == 0 && prev->endpoint.len) {
        conf->endpoint = prev->endpoint;
        conf->scheme = prev->scheme;
        conf->endpoint_host = prev->endpoint_host;
        conf->peer = prev->peer;
        conf->peer_name = prev->peer_name;
        conf->status_loc = prev->status_loc;

        if (conf->key == NULL && conf->query == NULL) {
            conf->key = prev->key;
            conf->query = prev->query;
        }
    }

    ngx_conf_merge_str_value(conf->bucket, prev->bucket, "");
    ngx_conf_merge_str_value(conf->region, prev->region, "us-east-1");
    ngx_conf_merge_uint_value(conf->addressing, prev->addressing,
                              NGX_HTTP_REPLAY_PATH_STYLE);
    ngx_conf_merge_ptr_value(conf->creds, prev->creds, NULL);
    ngx_conf_merge_value(conf->buffering, prev->buffering, 0);
    ngx_conf_merge_value(conf->server_timing, prev->server_timing, 0);
    ngx_conf_merge_size_value(conf->memory_limit, prev->memory_limit, 0);
    ngx_conf_merge_uint_value(conf->redirect, prev->redirect, 0);
    ngx_conf_merge_sec_value(conf->presign_expires, prev->presign_expires,
                             900);

    /* the zone and its lifetime come from one directive: both or none */
    if (conf->key_cache == NGX_CONF_UNSET_PTR) {
        conf->key_cache = (prev->key_cache == NGX_CONF_UNSET_PTR)
                          ? NULL : prev->key_cache;
        conf->key_cache_valid = prev->key_cache_valid;
        conf->key_cache_stale = prev->key_cache_stale;
        conf->key_cache_notify = prev->key_cache_notify;
    }

    if (ngx_http_replay_db_merge(cf, prev, conf) != NGX_CONF_OK
        || ngx_http_replay_lookup_merge(cf, conf) != NGX_CONF_OK
        || ngx_http_replay_s3_merge(cf, conf) != NGX_CONF_OK
        || ngx_http_replay_stream_merge(cf, conf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_http_replay_mem_merge(cf, conf);
}


/*
 * "replay_s3_endpoint URL [keepalive=N] [ssl_verify=on|off]
 * [ssl_trusted_certificate=FILE]": the location's content handler becomes
 * proxy_pass's, set up here.
 */

static char *
ngx_http_replay_s3_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    ngx_int_t                     n;
    ngx_str_t                    *value, ca;
    ngx_uint_t                    i, verify, keepalive;

    if (rlcf->endpoint.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_replay_s3_parse_endpoint(cf, rlcf, &value[1])
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    verify = 1;
    keepalive = 32;
    ngx_str_null(&ca);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "keepalive=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            keepalive = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "ssl_verify=on") == 0) {
            verify = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "ssl_verify=off") == 0) {
            verify = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "ssl_trusted_certificate=", 24) == 0
            && value[i].len > 24)
        {
            ca.data = value[i].data + 24;
            ca.len = value[i].len - 24;
            continue;
        }

        goto invalid;
    }

    if ((!verify || ca.len) && rlcf->scheme.len != 5) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_endpoint \"%V\": ssl_verify and "
                           "ssl_trusted_certificate are for https",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* its gauges in replay_status */
    rlcf->status_loc = ngx_http_replay_status_location(cf);
    if (rlcf->status_loc == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_replay_stream_wire_proxy(cf, rlcf, keepalive, verify,
                                             &ca);

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_replay_redirect(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    ngx_str_t  *value;

    if (rlcf->redirect != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        rlcf->redirect = 0;

    } else if (ngx_strcmp(value[1].data, "on") == 0
               || ngx_strcmp(value[1].data, "302") == 0)
    {
        rlcf->redirect = NGX_HTTP_MOVED_TEMPORARILY;

    } else if (ngx_strcmp(value[1].data, "307") == 0) {
        rlcf->redirect = NGX_HTTP_TEMPORARY_REDIRECT;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be \"off\", "
                           "\"on\", \"302\" or \"307\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* what ends up in a Host header or a path must not be able to break it */

static char *
ngx_http_replay_check_bucket(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *s = data;

    u_char  *p, *last;

    if (s->len < 3 || s->len > 255) {
        return "must be 3 to 255 characters long";
    }

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'
              || *p == '_'))
        {
            return "may hold only letters, digits, \".\", \"-\" and \"_\"";
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_replay_check_region(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *s = data;

    u_char  *p, *last;

    if (s->len == 0 || s->len > 64) {
        return "must be 1 to 64 characters long";
    }

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '-'))
        {
            return "may hold only lower-case letters, digits and \"-\"";
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_replay_check_expires(ngx_conf_t *cf, void *post, void *data)
{
    time_t  *sp = data;

    /* SigV4 presigned URLs live at most seven days */
    if (*sp < 1 || *sp > 7 * 86400) {
        return "must be from 1s to 7d";
    }

    return NGX_CONF_OK;
}
