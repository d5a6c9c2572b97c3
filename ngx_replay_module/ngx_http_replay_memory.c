
/*
 * Memory accounting and the memory budget.
 *
 * A request counts what it holds for the module as it is allocated: its
 * context, key, S3 path, signature, the database's parameters and row,
 * the S3 error head, and the proxy's buffers once S3 answers (one buffer
 * of proxy_buffer_size unbuffered; buffered, proxy_buffers on top of it,
 * counted whole).  Everything else a location's request may need is known
 * from its configuration (memory_need), so that "nginx -t" can refuse a
 * replay_memory_limit it cannot keep; only a database row brings more,
 * and it is checked when it comes.
 *
 * replay_memory_budget: each request of a worker reserves its most when
 * it starts; one that would take the worker past the budget waits in a
 * FIFO queue, for at most the timeout.  Reservations go back when
 * requests end; a request that has started is never cut.
 */


#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_s3.h"
#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_db.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_util.h"


static void ngx_http_replay_mem_account_cleanup(void *data);
static void ngx_http_replay_mem_take(ngx_http_replay_main_conf_t *rmcf,
    ngx_http_replay_account_t *acct, size_t size);
static void ngx_http_replay_mem_give(ngx_http_replay_main_conf_t *rmcf,
    ngx_http_replay_account_t *acct);
static void ngx_http_replay_mem_work(ngx_http_replay_ctx_t *ctx);
static void ngx_http_replay_mem_dequeue(ngx_http_replay_main_conf_t *rmcf,
    ngx_http_replay_ctx_t *ctx);
static void ngx_http_replay_mem_wake(ngx_http_replay_main_conf_t *rmcf);
static void ngx_http_replay_mem_wait_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_replay_mem_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_replay_mem_vars[] = {

    { ngx_string("replay_memory"), NULL, ngx_http_replay_mem_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_replay_mem_add(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    size_t size, const char *what)
{
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->memory_limit && ctx->mem + size > rlcf->memory_limit) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: %s (%uz bytes) would take the request to "
                      "%uz bytes, past replay_memory_limit %uz",
                      what, size, ctx->mem + size, rlcf->memory_limit);

        ctx->outcome = NGX_HTTP_REPLAY_MEMORY_LIMIT;

        return NGX_ERROR;
    }

    ctx->mem += size;

    if (ctx->mem > ctx->mem_peak) {
        ctx->mem_peak = ctx->mem;
    }

    ngx_http_replay_stat_memory(size);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: memory +%uz for %s: %uz", size, what, ctx->mem);

    return NGX_OK;
}


void *
ngx_http_replay_mem_alloc(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    size_t size, const char *what)
{
    if (ngx_http_replay_mem_add(r, ctx, size, what) != NGX_OK) {
        return NULL;
    }

    return ngx_pnalloc(r->pool, size);
}


ngx_int_t
ngx_http_replay_mem_row(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    size_t size)
{
    ngx_http_replay_loc_conf_t   *rlcf;
    ngx_http_replay_main_conf_t  *rmcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (rlcf->memory_limit && rlcf->memory_need + size > rlcf->memory_limit)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the key query's row needs %uz bytes, "
                      "replay_memory_limit %uz leaves it %uz",
                      size, rlcf->memory_limit,
                      rlcf->memory_limit - rlcf->memory_need);

        ctx->outcome = NGX_HTTP_REPLAY_MEMORY_LIMIT;

        return NGX_ERROR;
    }

    /* it has started: the budget lets it have what it needs */

    if (ctx->working) {
        rmcf = ngx_http_get_module_main_conf(r, ngx_http_replay_module);
        ngx_http_replay_mem_take(rmcf, ctx->account, size);
    }

    return NGX_OK;
}


/* the context's own count leaves the gauge; its reservation, if held */

void
ngx_http_replay_mem_done(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_http_replay_mem_release(r, ctx);

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_MEMORY,
                         -(ngx_atomic_int_t) ctx->mem);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: request memory: %uz bytes at peak, %uz at "
                   "the end", ctx->mem_peak, ctx->mem);

    ctx->mem = 0;
}


/*
 * The budget is reserved once per main request, whatever internal
 * redirects and subrequests it makes: the account hangs on the main
 * request's pool, found again as realip finds its context, since a
 * redirect clears every module's context.
 */

static ngx_http_replay_account_t *
ngx_http_replay_mem_account(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_replay_account_t  *acct;

    for (cln = r->main->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_replay_mem_account_cleanup) {
            return cln->data;
        }
    }

    cln = ngx_pool_cleanup_add(r->main->pool,
                               sizeof(ngx_http_replay_account_t));
    if (cln == NULL) {
        return NULL;
    }

    acct = cln->data;
    acct->reserved = 0;
    acct->works = 0;

    cln->handler = ngx_http_replay_mem_account_cleanup;

    return acct;
}


ngx_int_t
ngx_http_replay_mem_reserve(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_done_pt handler)
{
    size_t                        need;
    ngx_http_replay_account_t    *acct;
    ngx_http_replay_loc_conf_t   *rlcf;
    ngx_http_replay_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_replay_module);

    if (rmcf->budget == 0) {
        return NGX_OK;
    }

    acct = ngx_http_replay_mem_account(r);
    if (acct == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    need = rlcf->memory_need;

    ctx->account = acct;

    /*
     * The request holds a reservation already (a redirect, a subrequest):
     * it has started, so it gets what this location needs more, at once.
     */

    if (acct->reserved) {
        if (need > acct->reserved) {
            ngx_http_replay_mem_take(rmcf, acct, need - acct->reserved);
        }

        ngx_http_replay_mem_work(ctx);
        return NGX_OK;
    }

    /* first come, first served: behind others that wait, wait too */

    if (rmcf->nwaiting == 0 && rmcf->reserved + need <= rmcf->budget) {
        ngx_http_replay_mem_take(rmcf, acct, need);
        ngx_http_replay_mem_work(ctx);
        return NGX_OK;
    }

    if (rmcf->nwaiting >= rmcf->budget_queue) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: memory budget %uz is taken (%uz reserved) "
                      "and %ui requests wait already",
                      rmcf->budget, rmcf->reserved, rmcf->nwaiting);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_BUDGET_FULL, 1);

        ctx->outcome = NGX_HTTP_REPLAY_BUDGET;

        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: waiting for %uz bytes of the memory budget, "
                   "%uz reserved, %ui waiting",
                   need, rmcf->reserved, rmcf->nwaiting);

    ngx_queue_insert_tail(&rmcf->waiting, &ctx->queue);
    rmcf->nwaiting++;
    ctx->queued = 1;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_BUDGET_WAITS, 1);
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_BUDGET_WAITING, 1);

    ctx->budget_handler = handler;

    ctx->wait.handler = ngx_http_replay_mem_wait_handler;
    ctx->wait.data = ctx;
    ctx->wait.log = r->connection->log;

    ngx_add_timer(&ctx->wait, rmcf->budget_timeout);

    return NGX_AGAIN;
}


/*
 * The context is done with S3 (its body ended, it failed, it was
 * redirected, or it is going away): the request's reservation goes back
 * once no context of it works any more.
 */

void
ngx_http_replay_mem_release(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_http_replay_account_t    *acct;
    ngx_http_replay_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_replay_module);

    if (ctx->queued) {
        ngx_http_replay_mem_dequeue(rmcf, ctx);

        /* the head of the queue may have been what held the others */
        ngx_http_replay_mem_wake(rmcf);
    }

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    if (ctx->wait.posted) {
        ngx_delete_posted_event(&ctx->wait);
    }

    if (!ctx->working) {
        return;
    }

    ctx->working = 0;

    acct = ctx->account;

    if (--acct->works) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: %uz bytes of the memory budget released",
                   acct->reserved);

    ngx_http_replay_mem_give(rmcf, acct);
}


/* the main request is freed: whatever it still holds goes back */

static void
ngx_http_replay_mem_account_cleanup(void *data)
{
    ngx_http_replay_account_t *acct = data;

    ngx_http_replay_main_conf_t  *rmcf;

    if (acct->reserved == 0) {
        return;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_replay_module);

    acct->works = 0;

    ngx_http_replay_mem_give(rmcf, acct);
}


static void
ngx_http_replay_mem_take(ngx_http_replay_main_conf_t *rmcf,
    ngx_http_replay_account_t *acct, size_t size)
{
    acct->reserved += size;
    rmcf->reserved += size;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_RESERVED, size);
}


static void
ngx_http_replay_mem_give(ngx_http_replay_main_conf_t *rmcf,
    ngx_http_replay_account_t *acct)
{
    rmcf->reserved -= acct->reserved;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_RESERVED,
                         -(ngx_atomic_int_t) acct->reserved);

    acct->reserved = 0;

    ngx_http_replay_mem_wake(rmcf);
}


static void
ngx_http_replay_mem_work(ngx_http_replay_ctx_t *ctx)
{
    if (!ctx->working) {
        ctx->working = 1;
        ctx->account->works++;
    }
}


static void
ngx_http_replay_mem_dequeue(ngx_http_replay_main_conf_t *rmcf,
    ngx_http_replay_ctx_t *ctx)
{
    ngx_queue_remove(&ctx->queue);
    rmcf->nwaiting--;
    ctx->queued = 0;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_BUDGET_WAITING, -1);
}


/*
 * Starts the waiting requests that the budget has room for, in their
 * order.  They go on from a posted event: the request that made room
 * may be being freed.
 */

static void
ngx_http_replay_mem_wake(ngx_http_replay_main_conf_t *rmcf)
{
    size_t                       need;
    ngx_queue_t                 *q;
    ngx_http_request_t          *r;
    ngx_http_replay_ctx_t       *ctx;
    ngx_http_replay_loc_conf_t  *rlcf;

    while (rmcf->nwaiting) {
        q = ngx_queue_head(&rmcf->waiting);
        ctx = ngx_queue_data(q, ngx_http_replay_ctx_t, queue);
        r = ctx->request;

        rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
        need = rlcf->memory_need;

        if (rmcf->reserved + need > rmcf->budget) {
            return;
        }

        ngx_http_replay_mem_dequeue(rmcf, ctx);
        ngx_http_replay_mem_take(rmcf, ctx->account, need);
        ngx_http_replay_mem_work(ctx);

        ngx_del_timer(&ctx->wait);
        ngx_post_event(&ctx->wait, &ngx_posted_events);
    }
}


/* the wait is over: room was made (posted), or the timeout came */

static void
ngx_http_replay_mem_wait_handler(ngx_event_t *ev)
{
    ngx_int_t                     rc;
    ngx_http_request_t           *r;
    ngx_http_replay_ctx_t        *ctx;
    ngx_http_replay_main_conf_t  *rmcf;

    ctx = ev->data;
    r = ctx->request;

    if (ev->timedout) {
        ev->timedout = 0;

        rmcf = ngx_http_get_module_main_conf(r, ngx_http_replay_module);

        ngx_http_replay_mem_dequeue(rmcf, ctx);
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_BUDGET_TIMEOUTS, 1);

        ngx_http_replay_log_request(r, NULL);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: no room in memory budget %uz within %M ms",
                      rmcf->budget, rmcf->budget_timeout);

        ctx->outcome = NGX_HTTP_REPLAY_BUDGET;

        rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "replay: %uz bytes of the memory budget reserved",
                       ctx->account->reserved);

        rc = NGX_OK;
    }

    ctx->budget_handler(r, ctx, rc);
}


/*
 * What a request of the location may hold at most, without what a
 * database row brings: the proxy's buffers and the module's own data.
 */

char *
ngx_http_replay_mem_merge(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *rlcf)
{
    u_char                        buf[NGX_HTTP_REPLAY_BUFFERS_TEXT_LEN];
    size_t                        own, buffers;
    ngx_str_t                     text;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_replay_main_conf_t  *rmcf;

    if (rlcf->endpoint.len == 0) {
        return NGX_CONF_OK;
    }

    own = sizeof(ngx_http_replay_ctx_t)
          + ngx_http_replay_s3_need(rlcf)
          + ngx_http_replay_db_need(rlcf);

    if (rlcf->server_timing) {
        own += NGX_HTTP_REPLAY_TIMING_LEN;
    }

    text.data = buf;
    buffers = ngx_http_replay_stream_need(cf, rlcf, &text);

    rlcf->memory_need = own + buffers;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (rlcf->memory_limit && rlcf->memory_need > rlcf->memory_limit) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "a request of location \"%V\" may hold %uz "
                           "bytes, past replay_memory_limit %uz: %V%uz of "
                           "the module's own (context, key, S3 path, "
                           "signature, query parameters)",
                           &clcf->name, rlcf->memory_need,
                           rlcf->memory_limit, &text, own);
        return NGX_CONF_ERROR;
    }

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_replay_module);

    if (rmcf->budget && rlcf->memory_need > rmcf->budget) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_memory_budget %uz cannot hold a single "
                           "request of location \"%V\", which may hold "
                           "%uz bytes: %V%uz of the module's own",
                           rmcf->budget, &clcf->name, rlcf->memory_need,
                           &text, own);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_replay_memory_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_main_conf_t *rmcf = conf;

    ssize_t      size;
    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i;

    if (rmcf->budget) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid memory budget \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    rmcf->budget = size;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "queue=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            rmcf->budget_queue = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            n = ngx_parse_time(&s, 0);

            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            rmcf->budget_timeout = n;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_replay_mem_add_variables(ngx_conf_t *cf)
{
    return ngx_http_replay_add_variables(cf, ngx_http_replay_mem_vars);
}


static ngx_int_t
ngx_http_replay_mem_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uz", ctx->mem_peak) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}
