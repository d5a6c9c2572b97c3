
/*
 * Memory: measured, bounded, budgeted.
 *
 * What a request holds is measured, not foreseen: at the moments that
 * matter (its key is known, S3's header has come, it ends) the request's
 * pool is walked, blocks and large allocations at the sizes the allocator
 * gave them (malloc_usable_size(): ngx_pool_large_t keeps no size), and
 * so are the pools of its client connection and of its S3 connection.
 * Of that, the upstream's buffer and the pipe's buffers (as many as it
 * has allocated) are "buffers", the database row is "row", nginx's and
 * OpenSSL's TLS buffers are "tls", and the rest is "pool"; a temporary
 * file is counted apart (disk, not memory).  Between those moments, each
 * body buffer looks only at what a body buffer can change, in O(1): the
 * TLS buffers held, the pipe's count of buffers (the pool is walked again
 * when it grew), the temporary file's size.
 *
 * Each main request has one account, found through its pool as realip
 * finds its context after a redirect: what its contexts measured, its
 * share of the gauges, and its reservation of replay_memory_budget.
 *
 * The configuration gives each location a bound (memory_need: the
 * module's own data at their most, the proxy's buffers), which nginx -t
 * checks against replay_memory_limit and replay_memory_budget reserves;
 * a request whose measured memory passes replay_memory_limit is stopped.
 */


#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_s3.h"
#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_lookup.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_util.h"

#if (NGX_LINUX)
#include <malloc.h>
#define ngx_http_replay_usable_size(p)  malloc_usable_size(p)
#elif (NGX_FREEBSD)
#include <malloc_np.h>
#define ngx_http_replay_usable_size(p)  malloc_usable_size(p)
#elif (NGX_DARWIN)
#include <malloc/malloc.h>
#define ngx_http_replay_usable_size(p)  malloc_size(p)
#endif


#if (NGX_HTTP_SSL) && defined SSL3_RT_SEND_MAX_ENCRYPTED_OVERHEAD

/*
 * OpenSSL's record buffers, from its public constants: what it allocates
 * to read (nginx sets read_ahead) and to write a record.  With
 * SSL_MODE_RELEASE_BUFFERS, which nginx sets, it holds the first while it
 * holds unread data, the second while a write is pending.
 */
#define NGX_HTTP_REPLAY_TLS_ALIGN                                             \
    (SSL3_ALIGN_PAYLOAD ? SSL3_ALIGN_PAYLOAD - 1 : 0)
#define NGX_HTTP_REPLAY_TLS_RBUF                                              \
    (SSL3_RT_MAX_PLAIN_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD                \
     + SSL3_RT_HEADER_LENGTH + NGX_HTTP_REPLAY_TLS_ALIGN)
#define NGX_HTTP_REPLAY_TLS_WBUF                                              \
    (SSL3_RT_MAX_PLAIN_LENGTH + SSL3_RT_SEND_MAX_ENCRYPTED_OVERHEAD           \
     + SSL3_RT_HEADER_LENGTH + NGX_HTTP_REPLAY_TLS_ALIGN)

#endif


/*
 * A main request's memory and reservation, whatever internal redirects
 * and subrequests it goes through.  Its contexts' parts (buffers, S3
 * connections, temporary files) are summed here as each measures them.
 */
struct ngx_http_replay_account_s {
    /* replay_memory_budget */
    size_t                          reserved;
    ngx_uint_t                      works;           /* contexts using it */

    /* as last measured */
    size_t                          walked;          /* its pool */
    size_t                          client;          /* the client's pool */
    size_t                          client_tls;
    size_t                          row;             /* database rows */
    size_t                          buffers;         /* contexts' parts */
    size_t                          s3;
    size_t                          s3_tls;
    off_t                           temp;

    /* what it counts in the gauges, and in which location's */
    size_t                          kind[NGX_HTTP_REPLAY_MEM_KINDS];
    size_t                          total;
    off_t                           counted_temp;
    ngx_http_replay_status_loc_t   *loc;

    size_t                          peak;
    ngx_uint_t                      contexts;        /* not yet ended */
    unsigned                        stopped:1;       /* past its limit */
};


static ngx_http_replay_account_t *ngx_http_replay_mem_account(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_replay_mem_count(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_mem_moment_e moment,
    ngx_uint_t walk);
static void ngx_http_replay_mem_parts(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_uint_t walk);
static ngx_int_t ngx_http_replay_mem_limit(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_mem_moment_e moment,
    size_t *before);
static void ngx_http_replay_mem_publish(ngx_http_replay_account_t *acct,
    size_t *kind, off_t temp, ngx_http_replay_status_loc_t *loc);
static size_t ngx_http_replay_mem_pool(ngx_pool_t *pool);
static size_t ngx_http_replay_mem_block(void *p, size_t size);
static size_t ngx_http_replay_mem_tls(ngx_connection_t *c, size_t *buf);
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


/* the kinds, as the log and replay_status name them */
static char  *ngx_http_replay_mem_kinds[] = {
    "pool", "buffers", "row", "TLS"
};

static char  *ngx_http_replay_mem_moments[] = {
    "after the lookup", "at S3's header", "during the body", "at the end"
};


static ngx_http_variable_t  ngx_http_replay_mem_vars[] = {

    { ngx_string("replay_memory"), NULL, ngx_http_replay_mem_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_memory_bound"), NULL, ngx_http_replay_mem_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_replay_mem_start(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_http_replay_account_t  *acct;

    acct = ngx_http_replay_mem_account(r);
    if (acct == NULL) {
        return NGX_ERROR;
    }

    ctx->account = acct;
    acct->contexts++;

    return NGX_OK;
}


ngx_int_t
ngx_http_replay_mem_measure(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_mem_moment_e moment)
{
    size_t                      buf, tls;
    off_t                       temp;
    ngx_connection_t           *pc;
    ngx_http_upstream_t        *u;
    ngx_http_replay_account_t  *acct;

    acct = ctx->account;

    if (acct == NULL || acct->contexts == 0) {
        return NGX_OK;
    }

    if (moment != NGX_HTTP_REPLAY_MEM_BODY) {
        return ngx_http_replay_mem_count(r, ctx, moment, 1);
    }

    /*
     * A body buffer: the pool is walked again only if the pipe allocated
     * a buffer; otherwise only the TLS buffers and the temporary file can
     * have changed, and they are looked at without a walk.
     */

    u = r->upstream;

    if (u == NULL) {
        return NGX_OK;
    }

    if (u->pipe && u->pipe->allocated != ctx->mem_allocated) {
        return ngx_http_replay_mem_count(r, ctx, moment, 1);
    }

    pc = u->peer.connection;
    tls = pc ? ngx_http_replay_mem_tls(pc, &buf) : 0;
    temp = (u->pipe && u->pipe->temp_file) ? u->pipe->temp_file->offset : 0;

    if (tls == ctx->mem_s3_tls && temp == ctx->mem_temp
        && (r->main->http_version >= NGX_HTTP_VERSION_20
            || ngx_http_replay_mem_tls(r->connection, &buf)
               == acct->client_tls))
    {
        return NGX_OK;
    }

    return ngx_http_replay_mem_count(r, ctx, moment, 0);
}


/*
 * What the request holds now: the walks (or, without "walk", what was
 * walked last), the parts of this context, its TLS buffers.
 */

static ngx_int_t
ngx_http_replay_mem_count(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_mem_moment_e moment, ngx_uint_t walk)
{
    size_t                       buf, kind[NGX_HTTP_REPLAY_MEM_KINDS];
    size_t                       before[NGX_HTTP_REPLAY_MEM_KINDS];
    size_t                       pool, own;
    ngx_connection_t            *c;
    ngx_http_replay_account_t   *acct;
    ngx_http_replay_loc_conf_t  *rlcf;

    acct = ctx->account;
    c = r->connection;

    ngx_http_replay_mem_parts(r, ctx, walk);

    if (walk) {
        acct->walked = ngx_http_replay_mem_pool(r->main->pool);
    }

    /*
     * The client's connection is the request's over HTTP/1.x; over
     * HTTP/2 and HTTP/3 it is shared by the streams, and not counted.
     */

    if (r->main->http_version < NGX_HTTP_VERSION_20 && c->pool != r->pool) {
        acct->client_tls = ngx_http_replay_mem_tls(c, &buf);

        if (walk) {
            pool = ngx_http_replay_mem_pool(c->pool);
            acct->client = (pool > buf) ? pool - buf : 0;
        }
    }

    /* the buffers and the row are in the pool walked: not twice */

    own = acct->buffers + acct->row;
    pool = acct->walked + acct->client + acct->s3;

    kind[NGX_HTTP_REPLAY_LOC_POOL] = (pool > own) ? pool - own : 0;
    kind[NGX_HTTP_REPLAY_LOC_BUFFERS] = acct->buffers;
    kind[NGX_HTTP_REPLAY_LOC_ROW] = acct->row;
    kind[NGX_HTTP_REPLAY_LOC_TLS] = acct->client_tls + acct->s3_tls;

    ngx_memcpy(before, acct->kind, sizeof(before));

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    ngx_http_replay_mem_publish(acct, kind, acct->temp, rlcf->status_loc);

    ngx_log_debug8(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "replay: memory %s: %uz bytes (pool %uz, buffers %uz, "
                   "row %uz, TLS %uz; the module's own %uz), temporary "
                   "file %O",
                   ngx_http_replay_mem_moments[moment], acct->total,
                   kind[NGX_HTTP_REPLAY_LOC_POOL],
                   kind[NGX_HTTP_REPLAY_LOC_BUFFERS],
                   kind[NGX_HTTP_REPLAY_LOC_ROW],
                   kind[NGX_HTTP_REPLAY_LOC_TLS], ctx->mem_own, acct->temp);

    if (moment == NGX_HTTP_REPLAY_MEM_END
        || rlcf->memory_limit == 0
        || acct->total <= rlcf->memory_limit)
    {
        return NGX_OK;
    }

    return ngx_http_replay_mem_limit(r, ctx, moment, before);
}


/*
 * This context's parts: its upstream's buffer and the pipe's buffers
 * (in the request's pool), its S3 connection's pool and TLS buffers, its
 * temporary file.  Only while it is the request's context: after an
 * internal redirect, r->upstream is another location's.
 */

static void
ngx_http_replay_mem_parts(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_uint_t walk)
{
    off_t                       temp;
    size_t                      buffers, s3, s3_tls, size, buf;
    ngx_event_pipe_t           *p;
    ngx_connection_t           *pc;
    ngx_http_upstream_t        *u;
    ngx_http_replay_account_t  *acct;

    acct = ctx->account;

    u = (ngx_http_get_module_ctx(r, ngx_http_replay_module) == ctx)
        ? r->upstream : NULL;

    buffers = 0;
    s3 = 0;
    s3_tls = 0;
    temp = 0;

    if (u) {
        if (u->buffer.start) {
            size = u->buffer.end - u->buffer.start;

            /* a large allocation unless it fits a pool block */
            buffers = (size > r->pool->max)
                      ? ngx_http_replay_mem_block(u->buffer.start, size)
                      : size;
        }

        p = u->pipe;

        if (p) {
            buffers += p->allocated * p->bufs.size;
            ctx->mem_allocated = p->allocated;

            if (p->temp_file) {
                temp = p->temp_file->offset;
            }
        }

        pc = u->peer.connection;

        if (pc) {
            s3_tls = ngx_http_replay_mem_tls(pc, &buf);

            if (!walk) {
                s3 = ctx->mem_s3;

            } else if (pc->pool) {
                size = ngx_http_replay_mem_pool(pc->pool);
                s3 = (size > buf) ? size - buf : 0;
            }
        }
    }

    acct->buffers += buffers - ctx->mem_buffers;
    acct->s3 += s3 - ctx->mem_s3;
    acct->s3_tls += s3_tls - ctx->mem_s3_tls;
    acct->temp += temp - ctx->mem_temp;

    ctx->mem_buffers = buffers;
    ctx->mem_s3 = s3;
    ctx->mem_s3_tls = s3_tls;
    ctx->mem_temp = temp;
}


/*
 * Past replay_memory_limit: one log line naming what grew most since the
 * request was last measured; the caller stops the request.
 */

static ngx_int_t
ngx_http_replay_mem_limit(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_mem_moment_e moment, size_t *before)
{
    size_t                       grew;
    ngx_uint_t                   i, k;
    ngx_http_replay_account_t   *acct;
    ngx_http_replay_loc_conf_t  *rlcf;

    acct = ctx->account;
    ctx->outcome = NGX_HTTP_REPLAY_MEMORY_LIMIT;

    if (acct->stopped) {
        return NGX_ERROR;
    }

    acct->stopped = 1;

    k = 0;
    grew = 0;

    for (i = 0; i < NGX_HTTP_REPLAY_MEM_KINDS; i++) {
        if (acct->kind[i] > before[i] && acct->kind[i] - before[i] > grew) {
            grew = acct->kind[i] - before[i];
            k = i;
        }
    }

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "replay: the request holds %uz bytes %s, past "
                  "replay_memory_limit %uz: its %s grew by %uz (pool %uz, "
                  "buffers %uz, row %uz, TLS %uz)",
                  acct->total, ngx_http_replay_mem_moments[moment],
                  rlcf->memory_limit, ngx_http_replay_mem_kinds[k], grew,
                  acct->kind[NGX_HTTP_REPLAY_LOC_POOL],
                  acct->kind[NGX_HTTP_REPLAY_LOC_BUFFERS],
                  acct->kind[NGX_HTTP_REPLAY_LOC_ROW],
                  acct->kind[NGX_HTTP_REPLAY_LOC_TLS]);

    return NGX_ERROR;
}


/*
 * The request's share of the gauges becomes what it holds now, in the
 * location that measured it last (added there before it leaves the
 * other, so that no sum is ever seen below what is held).
 */

static void
ngx_http_replay_mem_publish(ngx_http_replay_account_t *acct, size_t *kind,
    off_t temp, ngx_http_replay_status_loc_t *loc)
{
    size_t      total;
    ngx_uint_t  i;

    total = 0;

    for (i = 0; i < NGX_HTTP_REPLAY_MEM_KINDS; i++) {
        total += kind[i];
    }

    if (loc != acct->loc) {

        for (i = 0; i < NGX_HTTP_REPLAY_MEM_KINDS; i++) {
            ngx_http_replay_stat_loc(loc, i, kind[i]);
            ngx_http_replay_stat_loc(acct->loc, i,
                                     -(ngx_atomic_int_t) acct->kind[i]);
        }

        ngx_http_replay_stat_loc(loc, NGX_HTTP_REPLAY_LOC_TEMP_FILE, temp);
        ngx_http_replay_stat_loc(acct->loc, NGX_HTTP_REPLAY_LOC_TEMP_FILE,
                                 -(ngx_atomic_int_t) acct->counted_temp);

        ngx_http_replay_stat_loc(loc, NGX_HTTP_REPLAY_LOC_IN_FLIGHT, 1);
        ngx_http_replay_stat_loc(acct->loc, NGX_HTTP_REPLAY_LOC_IN_FLIGHT,
                                 -1);

        acct->loc = loc;

    } else {

        for (i = 0; i < NGX_HTTP_REPLAY_MEM_KINDS; i++) {
            if (kind[i] != acct->kind[i]) {
                ngx_http_replay_stat_loc(loc, i,
                                         (ngx_atomic_int_t) kind[i]
                                         - (ngx_atomic_int_t) acct->kind[i]);
            }
        }

        if (temp != acct->counted_temp) {
            ngx_http_replay_stat_loc(loc, NGX_HTTP_REPLAY_LOC_TEMP_FILE,
                                     temp - acct->counted_temp);
        }
    }

    if (total != acct->total) {
        ngx_http_replay_stat_memory((ngx_atomic_int_t) total
                                    - (ngx_atomic_int_t) acct->total);
    }

    ngx_memcpy(acct->kind, kind, sizeof(acct->kind));
    acct->total = total;
    acct->counted_temp = temp;

    if (total > acct->peak) {
        acct->peak = total;
    }
}


/*
 * A pool: its blocks (all of the size of the first) and its large
 * allocations, each at what the allocator gave for it.
 */

static size_t
ngx_http_replay_mem_pool(ngx_pool_t *pool)
{
    size_t             size, block;
    ngx_pool_t        *p;
    ngx_pool_large_t  *l;

    block = pool->d.end - (u_char *) pool;
    size = 0;

    for (p = pool; p; p = p->d.next) {
        size += ngx_http_replay_mem_block(p, block);
    }

    for (l = pool->large; l; l = l->next) {
        if (l->alloc) {
            /* without the allocator's word, at least what made it large */
            size += ngx_http_replay_mem_block(l->alloc, pool->max + 1);
        }
    }

    return size;
}


/*
 * What a block of malloc() takes: what it may use, and its size word;
 * "size" where the allocator cannot tell.  p must be what malloc()
 * returned.
 */

static size_t
ngx_http_replay_mem_block(void *p, size_t size)
{
#ifdef ngx_http_replay_usable_size
    return ngx_http_replay_usable_size(p) + sizeof(size_t);
#else
    return size;
#endif
}


/*
 * A connection's TLS memory that nginx and OpenSSL can tell: the SSL
 * object, OpenSSL's record buffers while it holds them, and nginx's own
 * buffer (*buf, which is in the connection's pool).  OpenSSL's other
 * state (keys, cipher contexts, the session, a peer's certificates) has
 * no size it tells.
 */

static size_t
ngx_http_replay_mem_tls(ngx_connection_t *c, size_t *buf)
{
    *buf = 0;

#if (NGX_HTTP_SSL)
    {
    size_t           size, len;
    ngx_buf_t       *b;
    ngx_ssl_conn_t  *ssl;

    if (c->ssl == NULL || c->ssl->connection == NULL) {
        return 0;
    }

    ssl = c->ssl->connection;
    size = ngx_http_replay_mem_block(ssl, 0);

    b = c->ssl->buf;

    if (b && b->start) {
        len = b->end - b->start;
        *buf = (c->pool && len > c->pool->max)
               ? ngx_http_replay_mem_block(b->start, len) : len;
        size += *buf;
    }

#ifdef NGX_HTTP_REPLAY_TLS_WBUF

    if (SSL_want_write(ssl)) {
        size += NGX_HTTP_REPLAY_TLS_WBUF;
    }

#if OPENSSL_VERSION_NUMBER >= 0x10100000L
    if (SSL_has_pending(ssl)) {
#else
    if (SSL_pending(ssl)) {
#endif
        size += NGX_HTTP_REPLAY_TLS_RBUF;
    }

#endif

    return size;
    }
#else
    return 0;
#endif
}


ngx_int_t
ngx_http_replay_mem_add(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    size_t size, const char *what)
{
    ctx->mem_own += size;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: memory +%uz for %s: %uz of the module's own",
                   size, what, ctx->mem_own);

    return NGX_OK;
}


void *
ngx_http_replay_mem_alloc(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    size_t size, const char *what)
{
    (void) ngx_http_replay_mem_add(r, ctx, size, what);

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

    ctx->account->row += size;

    /* it has started: the budget lets it have what it needs */

    if (ctx->working) {
        rmcf = ngx_http_get_module_main_conf(r, ngx_http_replay_module);
        ngx_http_replay_mem_take(rmcf, ctx->account, size);
    }

    return NGX_OK;
}


/*
 * The context ends (its request is freed or terminated): its reservation
 * goes back, it is measured once more, and the request leaves the gauges
 * with its last context.
 */

void
ngx_http_replay_mem_done(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    size_t                      kind[NGX_HTTP_REPLAY_MEM_KINDS];
    ngx_http_replay_account_t  *acct;

    ngx_http_replay_mem_release(r, ctx);

    acct = ctx->account;

    if (acct == NULL || acct->contexts == 0) {
        return;
    }

    (void) ngx_http_replay_mem_count(r, ctx, NGX_HTTP_REPLAY_MEM_END, 1);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: request memory: %uz bytes at peak, %uz at "
                   "the end", acct->peak, acct->total);

    if (--acct->contexts) {
        return;
    }

    ngx_memzero(kind, sizeof(kind));
    ngx_http_replay_mem_publish(acct, kind, 0, NULL);
}


/*
 * The budget and the measures are kept once per main request, whatever
 * internal redirects and subrequests it makes: the account hangs on the
 * main request's pool, found again as realip finds its context, since a
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
    ngx_memzero(acct, sizeof(ngx_http_replay_account_t));

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

    acct = ctx->account;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    need = rlcf->memory_need;

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

    size_t                        kind[NGX_HTTP_REPLAY_MEM_KINDS];
    ngx_http_replay_main_conf_t  *rmcf;

    if (acct->contexts) {
        /* a context that never ended: it cannot be counted any more */
        acct->contexts = 0;
        ngx_memzero(kind, sizeof(kind));
        ngx_http_replay_mem_publish(acct, kind, 0, NULL);
    }

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
 * A location's bound per request, from its configuration: the proxy's
 * buffers and the module's own data at their most, without a database
 * row.  It is what nginx -t checks against replay_memory_limit and what
 * replay_memory_budget reserves; what a request really holds (nginx's
 * own structures in its pool, TLS) comes on top and is measured.
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
                           "a request of location \"%V\" is bound to %uz "
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
                           "request of location \"%V\", bound to %uz "
                           "bytes: %V%uz of the module's own",
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


/*
 * $replay_memory: the most the request held when it was measured;
 * $replay_memory_bound: what its location's configuration bounds it to,
 * with its database rows.
 */

static ngx_int_t
ngx_http_replay_mem_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                      *p;
    size_t                       size;
    ngx_http_replay_ctx_t       *ctx;
    ngx_http_replay_loc_conf_t  *rlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL || ctx->account == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data) {
        rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
        size = rlcf->memory_need + ctx->account->row;

    } else {
        size = ctx->account->peak;
    }

    p = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uz", size) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}
