
/*
 * The key lookup of a request: binds the request's values to the
 * location's replay_key_query, answers from replay_key_cache when it
 * can, and otherwise runs the query as a job on the worker's pool of
 * connections to its replay_db (ngx_http_replay_db_pool.c).  The row
 * becomes the request's key, Content-Type and file name.
 *
 * The caller learns the end through its handler, called once from an
 * event handler; a request that ends first detaches the job in its
 * cleanup, and its handler is never called.
 *
 * It also keeps the workers' LISTENs of "replay_key_cache ... notify=":
 * a NOTIFY names values; the entries of the zone for those values, of
 * each key query that listens on the channel, are dropped.
 */


#include "ngx_http_replay_db.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_cache.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_util.h"


typedef struct {
    ngx_http_replay_db_job_t            job;
    ngx_http_request_t                 *request;
    ngx_http_replay_ctx_t              *ctx;
    ngx_http_replay_lookup_handler_pt   handler;
    void                               *data;
    ngx_str_t                           params;     /* the key cache's key */
    uint64_t                            start;      /* microseconds */
    ngx_uint_t                          drops;      /* the zone's, before */
    unsigned                            cache:1;    /* to keep its answer */
} ngx_http_replay_lookup_t;


/* the entries a LISTEN drops: those of this query in this zone */
typedef struct {
    ngx_shm_zone_t                     *zone;
    ngx_http_replay_db_query_t         *query;
} ngx_http_replay_lookup_target_t;


/* a worker's LISTEN on a channel of a database, for these targets */
typedef struct {
    ngx_http_replay_db_listen_t         listen;
    ngx_array_t                         targets;
} ngx_http_replay_lookup_listen_t;


static ngx_int_t ngx_http_replay_lookup_cache_get(ngx_http_replay_lookup_t *lk);
static void ngx_http_replay_lookup_row(ngx_http_replay_db_job_t *job,
    PGresult *res);
static ngx_int_t ngx_http_replay_lookup_set_row(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *key, ngx_str_t *type,
    ngx_str_t *name);
static ngx_int_t ngx_http_replay_lookup_copy(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *dst, ngx_str_t *src);
static void ngx_http_replay_lookup_done(ngx_http_replay_db_job_t *job);
static ngx_int_t ngx_http_replay_lookup_end(ngx_http_replay_lookup_t *lk,
    ngx_int_t rc);
static ngx_int_t ngx_http_replay_lookup_stale(ngx_http_replay_lookup_t *lk,
    ngx_int_t rc);
static void ngx_http_replay_lookup_cleanup(void *data);
static void ngx_http_replay_lookup_notify(ngx_http_replay_db_listen_t *ls,
    ngx_str_t *payload);
static void ngx_http_replay_lookup_listening(ngx_http_replay_db_listen_t *ls,
    ngx_str_t *payload);


ngx_int_t
ngx_http_replay_lookup_start(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_lookup_handler_pt handler, void *data)
{
    u_char                      *p;
    size_t                       len;
    ngx_int_t                    rc;
    ngx_str_t                   *v;
    ngx_uint_t                   i;
    ngx_http_cleanup_t          *cln;
    ngx_http_replay_lookup_t    *lk;
    ngx_http_replay_db_query_t  *q;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    q = rlcf->query;

    /* the lookup's state, the values' pointers, the values as evaluated */

    len = sizeof(ngx_http_replay_lookup_t)
          + q->nparams * (sizeof(char *) + sizeof(ngx_str_t));

    if (ngx_http_replay_mem_add(r, ctx, len, "database request") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* aligned: ngx_http_replay_mem_alloc() is for strings */

    lk = ngx_pcalloc(r->pool, len);
    if (lk == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lk->job.values = (const char **) (lk + 1);
    v = (ngx_str_t *) (lk->job.values + q->nparams);

    lk->request = r;
    lk->ctx = ctx;
    lk->handler = handler;
    lk->data = data;

    /* bad values are answered here, the database never sees them */

    len = sizeof(q->ident);

    for (i = 0; i < q->nparams; i++) {

        if (ngx_http_complex_value(r, &q->params[i], &v[i]) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (v[i].len == 0) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "replay: empty parameter %ui of replay_key_query",
                          i + 1);
            return NGX_HTTP_BAD_REQUEST;
        }

        if (v[i].len > rlcf->key_param_max) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "replay: parameter %ui of replay_key_query is "
                          "%uz bytes long, replay_key_param_max_length "
                          "is %uz", i + 1, v[i].len, rlcf->key_param_max);
            return NGX_HTTP_BAD_REQUEST;
        }

        /* libpq takes text parameters as C strings */

        if (ngx_strlchr(v[i].data, v[i].data + v[i].len, '\0') != NULL) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "replay: parameter %ui of replay_key_query "
                          "holds a NUL byte", i + 1);
            return NGX_HTTP_BAD_REQUEST;
        }

        len += v[i].len + 1;
    }

    /*
     * One buffer: the query's identity, then each value and its NUL.  The
     * values are libpq's C strings, the whole is the replay_key_cache key.
     */

    p = ngx_http_replay_mem_alloc(r, ctx, len, "query parameters");
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lk->params.data = p;
    lk->params.len = len;

    p = ngx_cpymem(p, q->ident, sizeof(q->ident));

    for (i = 0; i < q->nparams; i++) {
        lk->job.values[i] = (const char *) p;
        p = ngx_cpymem(p, v[i].data, v[i].len);
        *p++ = '\0';
    }

    if (rlcf->key_cache) {
        rc = ngx_http_replay_lookup_cache_get(lk);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_replay_lookup_cleanup;
    cln->data = lk;

    lk->job.query = q;
    lk->job.log = r->connection->log;
    lk->job.row = ngx_http_replay_lookup_row;
    lk->job.handler = ngx_http_replay_lookup_done;
    lk->job.data = lk;

    lk->start = ngx_http_replay_usec();

    rc = ngx_http_replay_db_run(q->db, &lk->job);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_replay_lookup_end(lk, rc);
}


/*
 * Looks the request's values up in replay_key_cache.  NGX_OK: the cache
 * had the row; NGX_DECLINED: the database is to be asked, and its answer
 * is kept (ngx_http_replay_lookup_end()).
 */

static ngx_int_t
ngx_http_replay_lookup_cache_get(ngx_http_replay_lookup_t *lk)
{
    uint64_t                start;
    ngx_int_t               rc;
    ngx_http_replay_ctx_t  *ctx;

    ctx = lk->ctx;
    start = ngx_http_replay_usec();

    rc = ngx_http_replay_cache_get(lk->request, ctx, &lk->params,
                                   ngx_http_replay_lookup_set_row,
                                   &lk->drops);

    if (rc == NGX_DECLINED) {
        lk->cache = 1;
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* $replay_db_time: the time the answer took, from the cache */

    ctx->db_time = ngx_http_replay_usec() - start;
    ctx->db_timed = 1;

    return NGX_OK;
}


/* the first row: column 1 is the key, 2 the Content-Type, 3 a file name */

static void
ngx_http_replay_lookup_row(ngx_http_replay_db_job_t *job, PGresult *res)
{
    int                        n;
    ngx_str_t                  key, type, name;
    ngx_http_request_t        *r;
    ngx_http_replay_lookup_t  *lk;

    lk = job->data;
    r = lk->request;

    n = PQnfields(res);

    if (n < 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the key query returns no column");
        job->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (PQgetisnull(res, 0, 0) || PQgetlength(res, 0, 0) == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the key query returned %s key",
                      PQgetisnull(res, 0, 0) ? "a NULL" : "an empty");
        job->rc = NGX_HTTP_NOT_FOUND;
        return;
    }

    /* libpq gives a NULL as an empty string */

    key.data = (u_char *) PQgetvalue(res, 0, 0);
    key.len = PQgetlength(res, 0, 0);

    ngx_str_null(&type);
    ngx_str_null(&name);

    if (n > 1) {
        type.data = (u_char *) PQgetvalue(res, 0, 1);
        type.len = PQgetlength(res, 0, 1);
    }

    if (n > 2) {
        name.data = (u_char *) PQgetvalue(res, 0, 2);
        name.len = PQgetlength(res, 0, 2);
    }

    if (ngx_http_replay_lookup_set_row(r, lk->ctx, &key, &type, &name)
        != NGX_OK)
    {
        job->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


/*
 * Gives the request its row: copies of the key, the Content-Type and the
 * file name (empty strings for none), counted against its memory limit.
 * The key cache calls it too, for an entry it holds.
 */

static ngx_int_t
ngx_http_replay_lookup_set_row(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *key, ngx_str_t *type,
    ngx_str_t *name)
{
    u_char  *p, *last;
    size_t   size;

    /* the row's copies, and the Content-Disposition its file name makes */

    size = key->len + type->len;

    if (name->len) {
        size += name->len + ngx_http_replay_stream_disposition_len(name);
    }

    if (ngx_http_replay_mem_row(r, ctx, size) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_replay_lookup_copy(r, ctx, &ctx->key, key) != NGX_OK
        || ngx_http_replay_lookup_copy(r, ctx, &ctx->content_type, type)
           != NGX_OK
        || ngx_http_replay_lookup_copy(r, ctx, &ctx->file_name, name)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the type becomes a header line: nothing may end the line early */

    last = ctx->content_type.data + ctx->content_type.len;

    for (p = ctx->content_type.data; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "replay: the key query returned a "
                          "Content-Type with control characters, "
                          "ignored");
            ctx->content_type.len = 0;
            break;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_lookup_copy(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_str_t *dst, ngx_str_t *src)
{
    if (src->len == 0) {
        ngx_str_null(dst);
        return NGX_OK;
    }

    dst->data = ngx_http_replay_mem_alloc(r, ctx, src->len, "database row");
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->len = src->len;

    return NGX_OK;
}


/* the job has ended, from a posted event: the caller's handler goes on */

static void
ngx_http_replay_lookup_done(ngx_http_replay_db_job_t *job)
{
    ngx_int_t                  rc;
    ngx_http_replay_lookup_t  *lk;

    lk = job->data;

    rc = ngx_http_replay_lookup_end(lk, job->rc);

    lk->handler(lk->request, lk->data, rc);
}


/* the lookup is over: the status the request is to get */

static ngx_int_t
ngx_http_replay_lookup_end(ngx_http_replay_lookup_t *lk, ngx_int_t rc)
{
    ngx_http_request_t     *r;
    ngx_http_replay_ctx_t  *ctx;

    r = lk->request;
    ctx = lk->ctx;

    if (rc == NGX_OK && lk->job.rows == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "replay: the key query returned no row");
        rc = NGX_HTTP_NOT_FOUND;
    }

    ctx->db_time = ngx_http_replay_usec() - lk->start;
    ctx->db_timed = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay db: lookup done: %i, %uL us", rc, ctx->db_time);

    if (rc == NGX_OK) {
        if (lk->cache) {
            ngx_http_replay_cache_put(r, ctx, &lk->params, lk->drops);
        }

        return rc;
    }

    if (ctx->key_cache == NGX_HTTP_REPLAY_CACHE_EXPIRED) {

        switch (rc) {

        case NGX_HTTP_NOT_FOUND:
            /* the replay is gone: its old key is not to be served */
            ngx_http_replay_cache_forget(r, &lk->params);
            break;

        case NGX_HTTP_SERVICE_UNAVAILABLE:
        case NGX_HTTP_GATEWAY_TIME_OUT:

            /* down, slow, or its queue full: the expired entry will do */

            if (ngx_http_replay_lookup_stale(lk, rc) == NGX_OK) {
                return NGX_OK;
            }

            break;
        }
    }

    if (ctx->outcome == 0) {
        switch (rc) {

        case NGX_HTTP_NOT_FOUND:
            ctx->outcome = NGX_HTTP_REPLAY_NOT_FOUND;
            break;

        case NGX_HTTP_BAD_REQUEST:
            ctx->outcome = NGX_HTTP_REPLAY_BAD_REQUEST;
            break;

        case NGX_HTTP_GATEWAY_TIME_OUT:
            ctx->outcome = NGX_HTTP_REPLAY_TIMEOUT;
            break;

        default:
            ctx->outcome = NGX_HTTP_REPLAY_DB_ERROR;
        }
    }

    /* $replay_key is not to show a row the lookup has refused */

    ngx_str_null(&ctx->key);
    ngx_str_null(&ctx->content_type);
    ngx_str_null(&ctx->file_name);

    return rc;
}


/*
 * replay_key_cache ... stale=: the database failed with rc; an expired
 * entry still within "stale=" answers instead.  NGX_OK: it did.
 */

static ngx_int_t
ngx_http_replay_lookup_stale(ngx_http_replay_lookup_t *lk, ngx_int_t rc)
{
    ngx_int_t                    rv;
    ngx_http_request_t          *r;
    ngx_http_replay_ctx_t       *ctx;
    ngx_http_replay_loc_conf_t  *rlcf;

    r = lk->request;
    ctx = lk->ctx;
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->key_cache_stale == 0) {
        return NGX_DECLINED;
    }

    rv = ngx_http_replay_cache_get_stale(r, ctx, &lk->params,
                                         ngx_http_replay_lookup_set_row);

    if (rv != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "replay: the database failed the lookup (%i), serving "
                  "the expired replay_key_cache entry \"%V\"", rc,
                  &ctx->key);

    return NGX_OK;
}


/* the request is gone: nothing may point to it any more */

static void
ngx_http_replay_lookup_cleanup(void *data)
{
    ngx_http_replay_lookup_t *lk = data;

    ngx_http_replay_db_abandon(&lk->job);
}


/* what a request holds for its lookup, but for the row */

size_t
ngx_http_replay_db_need(ngx_http_replay_loc_conf_t *rlcf)
{
    ngx_http_replay_db_query_t  *q;

    q = rlcf->query;

    if (q == NULL) {
        return 0;
    }

    return sizeof(ngx_http_replay_lookup_t)
           + q->nparams * (sizeof(char *) + sizeof(ngx_str_t)
                           + rlcf->key_param_max + 1)
           + sizeof(q->ident);
}


/*
 * A location whose replay_key_cache has notify=CHANNEL and whose
 * replay_key_query has a database: its query joins the targets of the
 * workers' LISTEN on that channel of that database.
 */

char *
ngx_http_replay_lookup_merge(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *conf)
{
    ngx_uint_t                        i;
    ngx_http_replay_main_conf_t      *rmcf;
    ngx_http_replay_lookup_listen_t  *ls;
    ngx_http_replay_lookup_target_t  *t;

    if (conf->key_cache == NULL
        || conf->key_cache_notify.len == 0
        || conf->query == NULL
        || conf->query->db == NULL)
    {
        return NGX_CONF_OK;
    }

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_replay_module);

    if (rmcf->listens == NULL) {
        rmcf->listens = ngx_array_create(cf->pool, 2,
                                 sizeof(ngx_http_replay_lookup_listen_t));
        if (rmcf->listens == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ls = rmcf->listens->elts;

    for (i = 0; i < rmcf->listens->nelts; i++) {
        if (ls[i].listen.db == conf->query->db
            && ls[i].listen.channel.len == conf->key_cache_notify.len
            && ngx_strncmp(ls[i].listen.channel.data,
                           conf->key_cache_notify.data,
                           conf->key_cache_notify.len) == 0)
        {
            break;
        }
    }

    if (i == rmcf->listens->nelts) {
        ls = ngx_array_push(rmcf->listens);
        if (ls == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(ls, sizeof(ngx_http_replay_lookup_listen_t));

        ls->listen.db = conf->query->db;
        ls->listen.channel = conf->key_cache_notify;

        if (ngx_array_init(&ls->targets, cf->pool, 2,
                           sizeof(ngx_http_replay_lookup_target_t))
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

    } else {
        ls = &ls[i];
    }

    /* "if" blocks merge their location's query again */

    t = ls->targets.elts;

    for (i = 0; i < ls->targets.nelts; i++) {
        if (t[i].zone == conf->key_cache && t[i].query == conf->query) {
            return NGX_CONF_OK;
        }
    }

    t = ngx_array_push(&ls->targets);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    t->zone = conf->key_cache;
    t->query = conf->query;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_replay_lookup_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_http_replay_main_conf_t      *rmcf;
    ngx_http_replay_lookup_listen_t  *ls;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (cycle->conf_ctx[ngx_http_module.index] == NULL) {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_replay_module);

    if (rmcf == NULL || rmcf->listens == NULL) {
        return NGX_OK;
    }

    ls = rmcf->listens->elts;

    for (i = 0; i < rmcf->listens->nelts; i++) {
        ls[i].listen.notify = ngx_http_replay_lookup_notify;
        ls[i].listen.listening = ngx_http_replay_lookup_listening;
        ls[i].listen.data = &ls[i];

        if (ngx_http_replay_db_listen_start(&ls[i].listen) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_replay_lookup_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_http_replay_main_conf_t      *rmcf;
    ngx_http_replay_lookup_listen_t  *ls;

    if (cycle->conf_ctx[ngx_http_module.index] != NULL) {
        rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                   ngx_http_replay_module);

        if (rmcf && rmcf->listens) {
            ls = rmcf->listens->elts;

            for (i = 0; i < rmcf->listens->nelts; i++) {
                ngx_http_replay_db_listen_stop(&ls[i].listen);
            }
        }
    }

    ngx_http_replay_db_exit_process(cycle);
}


/*
 * A NOTIFY: its payload is the values the requests bound, as text: the
 * one value of a query with one parameter, whole; the values separated
 * by tabs for a query with more.  An empty payload expires every entry
 * of the zones.
 */

static void
ngx_http_replay_lookup_notify(ngx_http_replay_db_listen_t *ls,
    ngx_str_t *payload)
{
    u_char                           *p, *start, *end, *last, *key;
    size_t                            len;
    ngx_str_t                         ckey;
    ngx_uint_t                        i, n, dropped;
    ngx_http_replay_db_query_t       *q;
    ngx_http_replay_lookup_listen_t  *lls;
    ngx_http_replay_lookup_target_t  *t;

    lls = ls->data;
    t = lls->targets.elts;

    if (payload->len == 0) {
        for (i = 0; i < lls->targets.nelts; i++) {
            ngx_http_replay_cache_expire_all(t[i].zone);
        }

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "replay: an empty NOTIFY on channel \"%V\": every "
                      "replay_key_cache entry expired", &ls->channel);
        return;
    }

    /* the identity, the payload and a NUL after each value */

    len = sizeof(t[0].query->ident) + payload->len + 1;

    key = ngx_alloc(len, ngx_cycle->log);
    if (key == NULL) {
        return;
    }

    dropped = 0;
    last = payload->data + payload->len;

    for (i = 0; i < lls->targets.nelts; i++) {
        q = t[i].query;

        p = ngx_cpymem(key, q->ident, sizeof(q->ident));
        start = payload->data;

        for (n = 0; n < q->nparams; n++) {
            end = (n + 1 < q->nparams) ? ngx_strlchr(start, last, '\t')
                                       : last;

            if (end == NULL || end == start) {
                break;
            }

            p = ngx_cpymem(p, start, end - start);
            *p++ = '\0';

            start = end + 1;
        }

        if (n < q->nparams || start < last) {
            /* not this query's number of values */
            continue;
        }

        ckey.data = key;
        ckey.len = p - key;

        dropped += ngx_http_replay_cache_drop(t[i].zone, &ckey);
    }

    ngx_free(key);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay: NOTIFY \"%V\" on \"%V\": %ui entries dropped",
                   payload, &ls->channel, dropped);
}


/* listening again: what was sent while nobody listened is lost */

static void
ngx_http_replay_lookup_listening(ngx_http_replay_db_listen_t *ls,
    ngx_str_t *payload)
{
    ngx_uint_t                        i;
    ngx_http_replay_lookup_listen_t  *lls;
    ngx_http_replay_lookup_target_t  *t;

    lls = ls->data;
    t = lls->targets.elts;

    for (i = 0; i < lls->targets.nelts; i++) {
        ngx_http_replay_cache_expire_all(t[i].zone);
    }
}
