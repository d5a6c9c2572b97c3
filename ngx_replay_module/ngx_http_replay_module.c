
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
#include "ngx_http_replay_db.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_cache.h"


static ngx_int_t ngx_http_replay_handler(ngx_http_request_t *r);
static void ngx_http_replay_cleanup(void *data);
static ngx_int_t ngx_http_replay_check_key(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static ngx_int_t ngx_http_replay_not_allowed(ngx_http_request_t *r);
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
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
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
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_replay_s3_credentials,
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
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
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
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_replay_db_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_replay_handler(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_pool_cleanup_t     *cln;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_replay_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;

    cln->handler = ngx_http_replay_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_replay_module);

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_IN_FLIGHT, 1);

    if (ngx_http_replay_mem_add(r, ctx, sizeof(ngx_http_replay_ctx_t),
                                "context")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_replay_not_allowed(r);
    }

    /* what S3 would refuse is the client's error: 400, not S3's 502 */
    rc = ngx_http_replay_check_headers(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* a GET's body means nothing to S3; nginx's proxy then reads none */
    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_replay_mem_reserve(r, ctx);

    if (rc == NGX_AGAIN) {
        /* the budget calls ngx_http_replay_start() once it has room */
        r->main->count++;
        return NGX_DONE;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_replay_start(r, ctx);
}


ngx_int_t
ngx_http_replay_start(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->query) {
        rc = ngx_http_replay_db_lookup(r, ctx);

        if (rc == NGX_AGAIN) {
            /* ngx_http_replay_lookup_done() goes on from here */
            r->main->count++;
            return NGX_DONE;
        }

        if (rc != NGX_OK) {
            return rc;
        }

        /* answered at once, from replay_key_cache */
        return ngx_http_replay_check_key(r, ctx);
    }

    if (ngx_http_complex_value(r, rlcf->key, &ctx->key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->key.len <= NGX_HTTP_REPLAY_MAX_KEY
        && ngx_http_replay_mem_add(r, ctx, ctx->key.len, "key") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_replay_check_key(r, ctx);
}


/* the request is over: its counters and its share of the budget */

static void
ngx_http_replay_cleanup(void *data)
{
    ngx_http_replay_ctx_t *ctx = data;

    ngx_http_replay_mem_release(ctx->request, ctx);
    ngx_http_replay_status_done(ctx->request, ctx);
}


uint64_t
ngx_http_replay_usec(void)
{
#if (NGX_HAVE_CLOCK_MONOTONIC)
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
#else
    struct timeval   tv;

    ngx_gettimeofday(&tv);

    return (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
#endif
}


void
ngx_http_replay_lookup_done(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t       *c;
    ngx_http_replay_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (rc == NGX_OK) {
        rc = ngx_http_replay_check_key(r, ctx);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_replay_check_key(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    if (ctx->key.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the object key is empty");
        return NGX_HTTP_NOT_FOUND;
    }

    if (ctx->key.len > NGX_HTTP_REPLAY_MAX_KEY) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the object key is %uz bytes long, "
                      "S3 allows %d", ctx->key.len, NGX_HTTP_REPLAY_MAX_KEY);
        return NGX_HTTP_BAD_REQUEST;
    }

    return ngx_http_replay_s3_send(r, ctx);
}


static ngx_int_t
ngx_http_replay_not_allowed(ngx_http_request_t *r)
{
    if (ngx_http_replay_add_header(r, "Allow", (u_char *) "GET, HEAD", 9)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "replay: method %V not allowed", &r->method_name);

    return NGX_HTTP_NOT_ALLOWED;
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


ngx_table_elt_t *
ngx_http_replay_add_header(ngx_http_request_t *r, char *key, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    /* h->next (nginx 1.23+) and h->lowcase_key: NULL */
    ngx_memzero(h, sizeof(ngx_table_elt_t));

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return h;
}


ngx_int_t
ngx_http_replay_add_variables(ngx_conf_t *cf, ngx_http_variable_t *vars)
{
    ngx_http_variable_t  *var, *v;

    for (v = vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_preconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_replay_s3_add_variables(cf) != NGX_OK
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
     *     conf->proxy_handler = NULL;
     *     conf->bucket = { 0, NULL };
     *     conf->region = { 0, NULL };
     *     conf->key = NULL;
     *     conf->db = NULL;
     *     conf->query = NULL;
     *     conf->dbs = NULL;
     *     conf->host = { 0, NULL };
     *     conf->path_prefix = { 0, NULL };
     *     conf->memory_need = 0;
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
    }

    if (ngx_http_replay_db_merge(cf, prev, conf) != NGX_CONF_OK
        || ngx_http_replay_s3_merge(cf, conf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_http_replay_mem_merge(cf, conf);
}


static char *
ngx_http_replay_s3_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (rlcf->endpoint.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_replay_s3_parse_endpoint(cf, rlcf, &value[1])
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_replay_stream_wire_proxy(cf, rlcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /* ours runs first, then hands the signed request to proxy_pass's */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_replay_handler;

    return NGX_CONF_OK;
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
