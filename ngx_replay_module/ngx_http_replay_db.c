
/*
 * The PostgreSQL key lookup.
 *
 * Each replay_db directive is one database.  Every worker keeps its own
 * pool of connections to it: libpq in non-blocking mode, its socket
 * wrapped in an ngx_connection_t so that nginx's event loop drives it.
 * A connection prepares each key query once, then runs it with the
 * request's values bound as parameters, in single-row mode so that at
 * most one row is ever held.  Requests that find every connection busy
 * wait in a bounded FIFO queue.
 *
 * A request may go away at any moment: its pool cleanup detaches it, and
 * the connection finishes what it was doing and goes back to the pool.
 * Whatever happens, ngx_http_replay_lookup_done() is called once for a
 * request that is still there, and never for one that is gone.
 */


#include "ngx_http_replay_db.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_stream.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_cache.h"
#include "ngx_http_replay_util.h"

#include <ngx_md5.h>
#include <libpq-fe.h>
#include <openssl/ssl.h>


#define NGX_HTTP_REPLAY_DB_CONNECTING  0
#define NGX_HTTP_REPLAY_DB_IDLE        1
#define NGX_HTTP_REPLAY_DB_PREPARING   2
#define NGX_HTTP_REPLAY_DB_QUERYING    3

#define NGX_HTTP_REPLAY_DB_POOL_SIZE   512
#define NGX_HTTP_REPLAY_DB_TEXT_LEN    1024
#define NGX_HTTP_REPLAY_DB_MAX_PARAMS  65535


/* what SQL names are made of (any byte above ASCII included) */
#define ngx_http_replay_db_name_char(ch)                                      \
    (((ch) >= 'a' && (ch) <= 'z') || ((ch) >= 'A' && (ch) <= 'Z')            \
     || ((ch) >= '0' && (ch) <= '9') || (ch) == '_' || (ch) >= 0x80)


typedef struct {
    const char                   *keywords[3];
    const char                   *values[3];

    ngx_uint_t                    max_conns;
    ngx_uint_t                    max_waiting;
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    query_timeout;
    ngx_msec_t                    queue_timeout;

    ngx_uint_t                    nqueries;

    /* the pool of this worker */
    ngx_queue_t                   idle;         /* most recently used first */
    ngx_queue_t                   busy;
    ngx_queue_t                   waiting;
    ngx_uint_t                    nconns;
    ngx_uint_t                    nwaiting;
} ngx_http_replay_db_t;


typedef struct {
    ngx_http_replay_db_t         *db;
    ngx_uint_t                    index;        /* of its statement */
    char                         *name;         /* of its statement */
    char                         *sql;
    ngx_http_complex_value_t     *params;
    ngx_uint_t                    nparams;

    /* of the connection string and the SQL: its replay_key_cache keys */
    u_char                        ident[16];
} ngx_http_replay_db_query_t;


typedef struct ngx_http_replay_db_conn_s  ngx_http_replay_db_conn_t;


typedef struct {
    ngx_http_request_t           *request;
    ngx_http_replay_ctx_t        *ctx;
    ngx_http_replay_lookup_handler_pt  handler;
    void                         *data;
    ngx_http_replay_db_query_t   *query;
    ngx_http_replay_db_conn_t    *conn;         /* serving it, if any */
    ngx_queue_t                   queue;        /* in db->waiting */
    ngx_event_t                   wait;         /* queue_timeout */
    const char                  **values;       /* in params */
    ngx_str_t                     params;       /* the key cache's key */
    uint64_t                      start;        /* microseconds */
    ngx_int_t                     rc;

    unsigned                      fresh:1;      /* wants a new connection */
    unsigned                      retried:1;
    unsigned                      queued:1;
    unsigned                      sync:1;
    unsigned                      done:1;
    unsigned                      cache:1;      /* to keep its answer */
} ngx_http_replay_db_req_t;


struct ngx_http_replay_db_conn_s {
    ngx_queue_t                   queue;        /* in db->idle or db->busy */
    ngx_http_replay_db_t         *db;
    ngx_pool_t                   *pool;
    PGconn                       *pg;
    ngx_connection_t             *c;
    ngx_event_t                   timer;
    ngx_http_replay_db_req_t     *req;
    ngx_http_replay_db_query_t   *query;       /* being prepared or run */
    u_char                       *prepared;    /* a flag per query */
    ngx_uint_t                    state;
    ngx_uint_t                    rows;
    ngx_int_t                     status;      /* what the result says */

    unsigned                      reused:1;
    unsigned                      got_result:1;
    unsigned                      flushing:1;
    unsigned                      pooled:1;     /* in db->idle */
};


static ngx_int_t ngx_http_replay_db_run(ngx_http_replay_db_req_t *req);
static ngx_int_t ngx_http_replay_db_assign(ngx_http_replay_db_t *db,
    ngx_http_replay_db_req_t *req);
static ngx_int_t ngx_http_replay_db_enqueue(ngx_http_replay_db_req_t *req);
static void ngx_http_replay_db_dispatch(ngx_http_replay_db_t *db);
static ngx_int_t ngx_http_replay_db_connect(ngx_http_replay_db_t *db,
    ngx_http_replay_db_req_t *req);
static void ngx_http_replay_db_connect_step(ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_attach(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_req_t *req);
static ngx_int_t ngx_http_replay_db_send(ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_flush(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_handler(ngx_event_t *ev);
static void ngx_http_replay_db_idle(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_process(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t write);
static ngx_int_t ngx_http_replay_db_consume(PGconn *pg);
static void ngx_http_replay_db_result(ngx_http_replay_db_conn_t *pgc,
    PGresult *res);
static void ngx_http_replay_db_row(ngx_http_replay_db_conn_t *pgc,
    PGresult *res);
static ngx_int_t ngx_http_replay_db_copy(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *dst, ngx_str_t *src);
static void ngx_http_replay_db_end_of_command(
    ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_release(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_conn_error(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_timeout(ngx_event_t *ev);
static void ngx_http_replay_db_wait_timeout(ngx_event_t *ev);
static void ngx_http_replay_db_close(ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_watch(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_unwatch(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t flags);
static ngx_int_t ngx_http_replay_db_events(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t rd, ngx_uint_t wr);
static void ngx_http_replay_db_detach(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_finish(ngx_http_replay_db_req_t *req,
    ngx_int_t rc);
static ngx_int_t ngx_http_replay_db_end(ngx_http_replay_db_req_t *req,
    ngx_int_t rc);
static ngx_int_t ngx_http_replay_db_cache_get(ngx_http_replay_db_req_t *req,
    ngx_http_replay_ctx_t *ctx);
static void ngx_http_replay_db_cleanup(void *data);
static ngx_log_t *ngx_http_replay_db_log(ngx_http_replay_db_req_t *req);
static void ngx_http_replay_db_notice(void *arg, const char *message);
static size_t ngx_http_replay_db_text(u_char *buf, size_t size,
    const char *msg, ngx_uint_t redact);
static ngx_uint_t ngx_http_replay_db_bad_param(PGresult *res);
static ngx_int_t ngx_http_replay_db_count_params(ngx_str_t *sql);
static u_char *ngx_http_replay_db_skip_quoted(u_char *p, u_char *last,
    ngx_uint_t escapes);
static u_char *ngx_http_replay_db_skip_dollar(u_char *p, u_char *last);


/* SQLSTATEs that mean a value cannot be what the query takes */

static const char  *ngx_http_replay_db_param_errors[] = {
    "22001",    /* string_data_right_truncation */
    "22003",    /* numeric_value_out_of_range */
    "22007",    /* invalid_datetime_format */
    "22008",    /* datetime_field_overflow */
    "22021",    /* character_not_in_repertoire: not UTF-8 */
    "22P02",    /* invalid_text_representation */
    "22P05",    /* untranslatable_character */
    NULL
};


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
    ngx_http_replay_db_req_t    *req;
    ngx_http_replay_db_query_t  *q;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    q = rlcf->query;

    /* the request's state, the values' pointers, the values as evaluated */

    len = sizeof(ngx_http_replay_db_req_t)
          + q->nparams * (sizeof(char *) + sizeof(ngx_str_t));

    if (ngx_http_replay_mem_add(r, ctx, len, "database request") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* aligned: ngx_http_replay_mem_alloc() is for strings */

    req = ngx_pcalloc(r->pool, len);
    if (req == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    req->values = (const char **) (req + 1);
    v = (ngx_str_t *) (req->values + q->nparams);

    req->request = r;
    req->ctx = ctx;
    req->query = q;
    req->handler = handler;
    req->data = data;
    ctx->db = req;

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

    req->params.data = p;
    req->params.len = len;

    p = ngx_cpymem(p, q->ident, sizeof(q->ident));

    for (i = 0; i < q->nparams; i++) {
        req->values[i] = (const char *) p;
        p = ngx_cpymem(p, v[i].data, v[i].len);
        *p++ = '\0';
    }

    if (rlcf->key_cache) {
        rc = ngx_http_replay_db_cache_get(req, ctx);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    /* nginx runs it when the request is terminated or freed */
    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_replay_db_cleanup;
    cln->data = req;

    req->wait.handler = ngx_http_replay_db_wait_timeout;
    req->wait.data = req;
    req->wait.log = r->connection->log;

    req->start = ngx_http_replay_usec();

    /* the handler has not counted the request yet: no lookup_done() now */
    req->sync = 1;
    rc = ngx_http_replay_db_run(req);
    req->sync = 0;

    if (rc != NGX_AGAIN) {
        return ngx_http_replay_db_end(req, rc);
    }

    if (req->done) {
        return req->rc;
    }

    return NGX_AGAIN;
}


/*
 * Gives the request a connection, or a place in the queue.  NGX_AGAIN: it
 * has one; anything else is the status to answer with.
 */

static ngx_int_t
ngx_http_replay_db_run(ngx_http_replay_db_req_t *req)
{
    ngx_int_t              rc;
    ngx_http_replay_db_t  *db;

    db = req->query->db;

    /* first come, first served: behind others that wait, wait too */

    if (db->nwaiting == 0) {
        rc = ngx_http_replay_db_assign(db, req);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    return ngx_http_replay_db_enqueue(req);
}


/*
 * NGX_AGAIN: the request has a connection; NGX_DECLINED: the pool is busy;
 * anything else is the status to answer with.
 */

static ngx_int_t
ngx_http_replay_db_assign(ngx_http_replay_db_t *db,
    ngx_http_replay_db_req_t *req)
{
    ngx_queue_t                *q;
    ngx_http_replay_db_conn_t  *pgc;

    while (!ngx_queue_empty(&db->idle)) {

        if (!req->fresh) {
            q = ngx_queue_head(&db->idle);
            pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

            if (ngx_http_replay_db_attach(pgc, req) == NGX_OK) {
                return NGX_AGAIN;
            }

            /* the pooled connection was broken: once more, on a new one */

            if (req->retried) {
                return NGX_HTTP_SERVICE_UNAVAILABLE;
            }

            req->retried = 1;
            req->fresh = 1;

            continue;
        }

        if (db->nconns < db->max_conns) {
            break;
        }

        /* make room for the new connection asked for */

        q = ngx_queue_last(&db->idle);
        pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

        ngx_http_replay_db_close(pgc);
    }

    if (db->nconns < db->max_conns) {
        return ngx_http_replay_db_connect(db, req);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_replay_db_enqueue(ngx_http_replay_db_req_t *req)
{
    ngx_http_replay_db_t  *db;

    db = req->query->db;

    if (db->nwaiting >= db->max_waiting) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_replay_db_log(req), 0,
                      "replay: lookup queue is full (%ui waiting)",
                      db->nwaiting);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* a request whose connection broke under it has waited already */

    if (req->retried) {
        ngx_queue_insert_head(&db->waiting, &req->queue);

    } else {
        ngx_queue_insert_tail(&db->waiting, &req->queue);
    }

    db->nwaiting++;
    req->queued = 1;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, 1);

    ngx_add_timer(&req->wait, db->queue_timeout);

    return NGX_AGAIN;
}


/* serves the queue while the pool has room */

static void
ngx_http_replay_db_dispatch(ngx_http_replay_db_t *db)
{
    ngx_int_t                  rc;
    ngx_queue_t               *q;
    ngx_http_replay_db_req_t  *req;

    while (db->nwaiting
           && (!ngx_queue_empty(&db->idle) || db->nconns < db->max_conns))
    {
        q = ngx_queue_head(&db->waiting);
        req = ngx_queue_data(q, ngx_http_replay_db_req_t, queue);

        ngx_queue_remove(q);
        db->nwaiting--;
        req->queued = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);

        if (req->wait.timer_set) {
            ngx_del_timer(&req->wait);
        }

        rc = ngx_http_replay_db_assign(db, req);

        if (rc != NGX_AGAIN) {
            ngx_http_replay_db_finish(req, rc);
        }
    }
}


static ngx_int_t
ngx_http_replay_db_connect(ngx_http_replay_db_t *db,
    ngx_http_replay_db_req_t *req)
{
    u_char                      text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                      len;
    ngx_pool_t                 *pool;
    ngx_http_replay_db_conn_t  *pgc;

    pool = ngx_create_pool(NGX_HTTP_REPLAY_DB_POOL_SIZE, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pgc = ngx_pcalloc(pool, sizeof(ngx_http_replay_db_conn_t));
    if (pgc == NULL) {
        ngx_destroy_pool(pool);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pgc->prepared = ngx_pcalloc(pool, db->nqueries);
    if (pgc->prepared == NULL) {
        ngx_destroy_pool(pool);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pgc->pg = PQconnectStartParams(db->keywords, db->values, 1);
    if (pgc->pg == NULL) {
        ngx_destroy_pool(pool);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (PQstatus(pgc->pg) == CONNECTION_BAD) {
        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQerrorMessage(pgc->pg), 0);

        ngx_log_error(NGX_LOG_ERR, ngx_http_replay_db_log(req), 0,
                      "replay: database connection failed: %*s", len, text);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);

        PQfinish(pgc->pg);
        ngx_destroy_pool(pool);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    PQsetNoticeProcessor(pgc->pg, ngx_http_replay_db_notice, NULL);

    pgc->pool = pool;
    pgc->db = db;
    pgc->state = NGX_HTTP_REPLAY_DB_CONNECTING;

    pgc->timer.handler = ngx_http_replay_db_timeout;
    pgc->timer.data = pgc;
    pgc->timer.log = ngx_cycle->log;

    ngx_queue_insert_tail(&db->busy, &pgc->queue);
    db->nconns++;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, 1);

    pgc->req = req;
    req->conn = pgc;

    ngx_add_timer(&pgc->timer, db->connect_timeout);

    /* libpq's connection sequence starts by waiting to write */

    if (ngx_http_replay_db_watch(pgc) != NGX_OK
        || ngx_http_replay_db_events(pgc, 0, 1) != NGX_OK)
    {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);

        ngx_http_replay_db_detach(pgc);
        ngx_http_replay_db_close(pgc);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    return NGX_AGAIN;
}


static void
ngx_http_replay_db_connect_step(ngx_http_replay_db_conn_t *pgc)
{
    u_char                     text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                     len;
    ngx_http_replay_db_t      *db;
    PostgresPollingStatusType  st;
    ngx_http_replay_db_req_t  *req;

    /*
     * With several hosts libpq closes the socket and opens another one
     * (maybe with the same number): let go of this one first.
     */

    ngx_http_replay_db_unwatch(pgc, 0);

    st = PQconnectPoll(pgc->pg);

    switch (st) {

    case PGRES_POLLING_READING:
        if (ngx_http_replay_db_watch(pgc) != NGX_OK
            || ngx_http_replay_db_events(pgc, 1, 0) != NGX_OK)
        {
            goto failed;
        }

        return;

    case PGRES_POLLING_WRITING:
        if (ngx_http_replay_db_watch(pgc) != NGX_OK
            || ngx_http_replay_db_events(pgc, 0, 1) != NGX_OK)
        {
            goto failed;
        }

        return;

    case PGRES_POLLING_OK:
        break;

    default:
        goto failed;
    }

    if (PQsetnonblocking(pgc->pg, 1) != 0
        || ngx_http_replay_db_watch(pgc) != NGX_OK
        || ngx_http_replay_db_events(pgc, 1, 0) != NGX_OK)
    {
        goto failed;
    }

    ngx_del_timer(&pgc->timer);

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECTS, 1);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay db: connected, fd:%d", PQsocket(pgc->pg));

    if (pgc->req == NULL) {
        ngx_http_replay_db_release(pgc);
        return;
    }

    if (ngx_http_replay_db_send(pgc) != NGX_OK) {
        ngx_http_replay_db_conn_error(pgc);
    }

    return;

failed:

    db = pgc->db;
    req = pgc->req;

    len = ngx_http_replay_db_text(text, sizeof(text),
                                  PQerrorMessage(pgc->pg), 0);

    ngx_log_error(NGX_LOG_ERR, ngx_http_replay_db_log(req), 0,
                  "replay: database connection failed: %*s", len, text);

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);

    ngx_http_replay_db_detach(pgc);
    ngx_http_replay_db_close(pgc);

    if (req) {
        ngx_http_replay_db_finish(req, NGX_HTTP_SERVICE_UNAVAILABLE);
    }

    ngx_http_replay_db_dispatch(db);
}


/* an idle connection takes a request: NGX_ERROR means it was closed */

static ngx_int_t
ngx_http_replay_db_attach(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_req_t *req)
{
    u_char  text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t  len;

    ngx_queue_remove(&pgc->queue);
    ngx_queue_insert_tail(&pgc->db->busy, &pgc->queue);
    pgc->pooled = 0;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_IDLE, -1);
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, 1);

    pgc->c->idle = 0;
    pgc->reused = 1;
    pgc->req = req;
    req->conn = pgc;

    if (ngx_http_replay_db_send(pgc) == NGX_OK) {
        return NGX_OK;
    }

    len = ngx_http_replay_db_text(text, sizeof(text),
                                  PQerrorMessage(pgc->pg), 0);

    ngx_log_error(NGX_LOG_WARN, ngx_http_replay_db_log(req), 0,
                  "replay: pooled database connection failed: %*s",
                  len, text);

    ngx_http_replay_db_detach(pgc);
    ngx_http_replay_db_close(pgc);

    return NGX_ERROR;
}


/* sends the request's query, preparing it first if this connection has not */

static ngx_int_t
ngx_http_replay_db_send(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_req_t    *req;
    ngx_http_replay_db_query_t  *q;

    req = pgc->req;
    q = req->query;

    pgc->query = q;
    pgc->rows = 0;
    pgc->status = NGX_OK;
    pgc->got_result = 0;

    if (!pgc->prepared[q->index]) {
        if (!PQsendPrepare(pgc->pg, q->name, q->sql, (int) q->nparams,
                           NULL))
        {
            return NGX_ERROR;
        }

        pgc->state = NGX_HTTP_REPLAY_DB_PREPARING;

    } else {
        if (!PQsendQueryPrepared(pgc->pg, q->name, (int) q->nparams,
                                 req->values, NULL, NULL, 0))
        {
            return NGX_ERROR;
        }

        if (!PQsetSingleRowMode(pgc->pg)) {
            return NGX_ERROR;
        }

        pgc->state = NGX_HTTP_REPLAY_DB_QUERYING;
    }

    /* one timer covers the statement's preparation and its run */

    if (!pgc->timer.timer_set) {
        ngx_add_timer(&pgc->timer, pgc->db->query_timeout);
    }

    return ngx_http_replay_db_flush(pgc);
}


static ngx_int_t
ngx_http_replay_db_flush(ngx_http_replay_db_conn_t *pgc)
{
    int  rc;

    rc = PQflush(pgc->pg);

    if (rc == -1) {
        return NGX_ERROR;
    }

    pgc->flushing = (rc == 1);

    return ngx_http_replay_db_events(pgc, 1, pgc->flushing);
}


static void
ngx_http_replay_db_handler(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_replay_db_conn_t  *pgc;

    c = ev->data;
    pgc = c->data;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "replay db: %s event, state:%ui",
                   ev->write ? "write" : "read", pgc->state);

    switch (pgc->state) {

    case NGX_HTTP_REPLAY_DB_CONNECTING:
        ngx_http_replay_db_connect_step(pgc);
        return;

    case NGX_HTTP_REPLAY_DB_IDLE:
        ngx_http_replay_db_idle(pgc);
        return;

    default:
        ngx_http_replay_db_process(pgc, ev->write);
        return;
    }
}


/*
 * An idle connection is readable: the server went away (a restart, an
 * administrator), or said something in passing.
 */

static void
ngx_http_replay_db_idle(ngx_http_replay_db_conn_t *pgc)
{
    u_char                 text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                 len;
    PGnotify              *n;
    PGresult              *res;
    ngx_http_replay_db_t  *db;

    db = pgc->db;

    /* the worker is shutting down */

    if (pgc->c->close) {
        ngx_http_replay_db_close(pgc);
        return;
    }

    if (ngx_http_replay_db_consume(pgc->pg) != NGX_OK
        || PQstatus(pgc->pg) != CONNECTION_OK)
    {
        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQerrorMessage(pgc->pg), 0);

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "replay: idle database connection closed: %*s",
                      len, text);
        goto close;
    }

    while ((n = PQnotifies(pgc->pg)) != NULL) {
        PQfreemem(n);
    }

    if (!PQisBusy(pgc->pg)) {
        res = PQgetResult(pgc->pg);

        if (res != NULL) {
            PQclear(res);

            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "replay: unexpected result on an idle database "
                          "connection, closing it");
            goto close;
        }
    }

    return;

close:

    ngx_http_replay_db_close(pgc);
    ngx_http_replay_db_dispatch(db);
}


static void
ngx_http_replay_db_process(ngx_http_replay_db_conn_t *pgc, ngx_uint_t write)
{
    PGresult  *res;

    if (!write && ngx_http_replay_db_consume(pgc->pg) != NGX_OK) {
        goto failed;
    }

    if (pgc->flushing && ngx_http_replay_db_flush(pgc) != NGX_OK) {
        goto failed;
    }

    while (!PQisBusy(pgc->pg)) {

        res = PQgetResult(pgc->pg);

        if (res == NULL) {
            ngx_http_replay_db_end_of_command(pgc);
            return;
        }

        ngx_http_replay_db_result(pgc, res);
    }

    if (PQstatus(pgc->pg) != CONNECTION_OK) {
        goto failed;
    }

    return;

failed:

    ngx_http_replay_db_conn_error(pgc);
}


static ngx_int_t
ngx_http_replay_db_consume(PGconn *pg)
{
    SSL         *ssl;
    ngx_uint_t   n;

    if (!PQconsumeInput(pg)) {
        return NGX_ERROR;
    }

    /*
     * libpq may leave the rest of a TLS record in OpenSSL's buffer, where
     * no socket event would announce it
     */

    ssl = PQsslInUse(pg) ? PQsslStruct(pg, "OpenSSL") : NULL;

    for (n = 0; ssl && SSL_pending(ssl) > 0 && n < 64; n++) {
        if (!PQconsumeInput(pg)) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_replay_db_result(ngx_http_replay_db_conn_t *pgc, PGresult *res)
{
    u_char                     text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                     len;
    ngx_log_t                 *log;
    ExecStatusType             st;
    ngx_http_replay_db_req_t  *req;

    req = pgc->req;
    log = ngx_http_replay_db_log(req);
    st = PQresultStatus(res);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "replay db: result %s, state:%ui",
                   PQresStatus(st), pgc->state);

    if (pgc->state == NGX_HTTP_REPLAY_DB_PREPARING) {

        if (st != PGRES_COMMAND_OK && pgc->status == NGX_OK) {
            len = ngx_http_replay_db_text(text, sizeof(text),
                                          PQresultErrorMessage(res), 0);

            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "replay: database query failed: %*s", len, text);

            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);

            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        PQclear(res);
        return;
    }

    pgc->got_result = 1;

    switch (st) {

    case PGRES_SINGLE_TUPLE:
        pgc->rows++;

        if (req == NULL) {
            break;
        }

        if (pgc->rows == 1) {
            ngx_http_replay_db_row(pgc, res);
            break;
        }

        /* the answer is known: the rest of the rows are only read */

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "replay: the key query returned more than one row; "
                      "it must return one row");

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);

        PQclear(res);

        ngx_http_replay_db_detach(pgc);
        ngx_http_replay_db_finish(req, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;

    case PGRES_TUPLES_OK:
        break;

    case PGRES_FATAL_ERROR:
        if (pgc->status != NGX_OK) {
            break;
        }

        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQresultErrorMessage(res), 0);

        if (ngx_http_replay_db_bad_param(res)) {
            ngx_log_error(NGX_LOG_INFO, log, 0,
                          "replay: the database rejected a parameter: %*s",
                          len, text);
            pgc->status = NGX_HTTP_BAD_REQUEST;

        } else {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "replay: database query failed: %*s", len, text);
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    case PGRES_COMMAND_OK:
        if (pgc->status == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "replay: the key query returned no rows at all; "
                          "it must be a SELECT or have a RETURNING clause");
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    default:
        if (pgc->status == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "replay: unexpected database result %s",
                          PQresStatus(st));
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;
    }

    PQclear(res);
}


/* the first row: column 1 is the key, 2 the Content-Type, 3 a file name */

static void
ngx_http_replay_db_row(ngx_http_replay_db_conn_t *pgc, PGresult *res)
{
    int                     n;
    ngx_str_t               key, type, name;
    ngx_http_request_t     *r;
    ngx_http_replay_ctx_t  *ctx;

    r = pgc->req->request;
    ctx = pgc->req->ctx;

    if (pgc->status != NGX_OK) {
        return;
    }

    n = PQnfields(res);

    if (n < 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the key query returns no column");
        pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }

    if (PQgetisnull(res, 0, 0) || PQgetlength(res, 0, 0) == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: the key query returned %s key",
                      PQgetisnull(res, 0, 0) ? "a NULL" : "an empty");
        pgc->status = NGX_HTTP_NOT_FOUND;
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

    if (ngx_http_replay_db_set_row(r, ctx, &key, &type, &name) != NGX_OK) {
        pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


ngx_int_t
ngx_http_replay_db_set_row(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_str_t *key, ngx_str_t *type, ngx_str_t *name)
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

    if (ngx_http_replay_db_copy(r, ctx, &ctx->key, key) != NGX_OK
        || ngx_http_replay_db_copy(r, ctx, &ctx->content_type, type)
           != NGX_OK
        || ngx_http_replay_db_copy(r, ctx, &ctx->file_name, name) != NGX_OK)
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
ngx_http_replay_db_copy(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
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


static void
ngx_http_replay_db_end_of_command(ngx_http_replay_db_conn_t *pgc)
{
    ngx_int_t                  rc;
    ngx_http_replay_db_req_t  *req;

    req = pgc->req;
    rc = pgc->status;

    if (pgc->state == NGX_HTTP_REPLAY_DB_PREPARING) {

        if (rc == NGX_OK) {
            pgc->prepared[pgc->query->index] = 1;

            if (req) {
                if (ngx_http_replay_db_send(pgc) != NGX_OK) {
                    ngx_http_replay_db_conn_error(pgc);
                }

                return;
            }
        }

    } else if (req && rc == NGX_OK && pgc->rows == 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_http_replay_db_log(req), 0,
                      "replay: the key query returned no row");
        rc = NGX_HTTP_NOT_FOUND;
    }

    ngx_http_replay_db_detach(pgc);
    ngx_http_replay_db_release(pgc);

    if (req) {
        ngx_http_replay_db_finish(req, rc);
    }
}


/* a connection is done with a request: to the next one, or to the pool */

static void
ngx_http_replay_db_release(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_t  *db;

    db = pgc->db;

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    pgc->query = NULL;

    if (ngx_exiting
        || ngx_terminate
        || PQstatus(pgc->pg) != CONNECTION_OK
        || PQtransactionStatus(pgc->pg) != PQTRANS_IDLE)
    {
        ngx_http_replay_db_close(pgc);
        ngx_http_replay_db_dispatch(db);
        return;
    }

    pgc->state = NGX_HTTP_REPLAY_DB_IDLE;
    pgc->c->idle = 1;

    ngx_queue_remove(&pgc->queue);
    ngx_queue_insert_head(&db->idle, &pgc->queue);
    pgc->pooled = 1;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, -1);
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_IDLE, 1);

    ngx_http_replay_db_dispatch(db);
}


/*
 * The connection broke.  A request that it had taken from the pool and
 * that has seen nothing yet tries once more on a new connection.
 */

static void
ngx_http_replay_db_conn_error(ngx_http_replay_db_conn_t *pgc)
{
    u_char                     text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                     len;
    ngx_int_t                  rc;
    ngx_uint_t                 retry, level;
    ngx_http_replay_db_t      *db;
    ngx_http_replay_db_req_t  *req;

    db = pgc->db;
    req = pgc->req;

    retry = (req && pgc->reused && !pgc->got_result && !req->retried);
    level = req ? NGX_LOG_ERR : NGX_LOG_WARN;

    len = ngx_http_replay_db_text(text, sizeof(text),
                                  PQerrorMessage(pgc->pg), 0);

    if (retry) {
        ngx_log_error(NGX_LOG_WARN, ngx_http_replay_db_log(req), 0,
                      "replay: pooled database connection failed, "
                      "trying a new one: %*s", len, text);

    } else {
        ngx_log_error(level, ngx_http_replay_db_log(req), 0,
                      "replay: database connection failed: %*s", len, text);
    }

    /* a query it was running has failed */
    if (pgc->query) {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
    }

    ngx_http_replay_db_detach(pgc);
    ngx_http_replay_db_close(pgc);

    if (req) {
        if (retry) {
            req->retried = 1;
            req->fresh = 1;

            rc = ngx_http_replay_db_assign(db, req);

            if (rc == NGX_DECLINED) {
                rc = ngx_http_replay_db_enqueue(req);
            }

        } else {
            rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        if (rc != NGX_AGAIN) {
            ngx_http_replay_db_finish(req, rc);
        }
    }

    ngx_http_replay_db_dispatch(db);
}


/*
 * connect_timeout or query_timeout.  The connection is closed rather
 * than reused: the server aborts a query whose client has gone.
 */

static void
ngx_http_replay_db_timeout(ngx_event_t *ev)
{
    ngx_int_t                   rc;
    ngx_uint_t                  level;
    ngx_msec_t                  timeout;
    ngx_http_replay_db_t       *db;
    ngx_http_replay_db_req_t   *req;
    ngx_http_replay_db_conn_t  *pgc;

    pgc = ev->data;
    db = pgc->db;
    req = pgc->req;
    level = req ? NGX_LOG_ERR : NGX_LOG_WARN;

    if (pgc->state == NGX_HTTP_REPLAY_DB_CONNECTING) {
        timeout = db->connect_timeout;

        ngx_log_error(level, ngx_http_replay_db_log(req), 0,
                      "replay: database connection timed out after %M ms",
                      timeout);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);

        rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else {
        timeout = db->query_timeout;

        ngx_log_error(level, ngx_http_replay_db_log(req), 0,
                      "replay: database query timed out after %M ms",
                      timeout);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_TIMEOUTS, 1);

        rc = NGX_HTTP_GATEWAY_TIME_OUT;
    }

    ngx_http_replay_db_detach(pgc);
    ngx_http_replay_db_close(pgc);

    if (req) {
        ngx_http_replay_db_finish(req, rc);
    }

    ngx_http_replay_db_dispatch(db);
}


static void
ngx_http_replay_db_wait_timeout(ngx_event_t *ev)
{
    ngx_http_replay_db_t      *db;
    ngx_http_replay_db_req_t  *req;

    req = ev->data;
    db = req->query->db;

    ngx_queue_remove(&req->queue);
    db->nwaiting--;
    req->queued = 0;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);

    ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                  "replay: no database connection was free within %M ms",
                  db->queue_timeout);

    ngx_http_replay_db_finish(req, NGX_HTTP_SERVICE_UNAVAILABLE);
}


static void
ngx_http_replay_db_close(ngx_http_replay_db_conn_t *pgc)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay db: close, fd:%d", PQsocket(pgc->pg));

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    /* PQfinish() closes the socket, which takes it off the event list */

    ngx_http_replay_db_unwatch(pgc, NGX_CLOSE_EVENT);

    ngx_queue_remove(&pgc->queue);
    pgc->db->nconns--;

    ngx_http_replay_stat(pgc->pooled ? NGX_HTTP_REPLAY_ST_DB_IDLE
                                     : NGX_HTTP_REPLAY_ST_DB_BUSY, -1);

    PQfinish(pgc->pg);
    ngx_destroy_pool(pgc->pool);
}


/* wraps libpq's socket in a connection of nginx's, for its events */

static ngx_int_t
ngx_http_replay_db_watch(ngx_http_replay_db_conn_t *pgc)
{
    ngx_socket_t       s;
    ngx_connection_t  *c;

    s = PQsocket(pgc->pg);

    if (s == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(s, ngx_cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pgc;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    c->read->handler = ngx_http_replay_db_handler;
    c->write->handler = ngx_http_replay_db_handler;
    c->read->log = c->log;
    c->write->log = c->log;

    pgc->c = c;

    return NGX_OK;
}


/*
 * Gives the connection back to nginx; the socket stays libpq's, so it
 * is not closed here.
 */

static void
ngx_http_replay_db_unwatch(ngx_http_replay_db_conn_t *pgc, ngx_uint_t flags)
{
    ngx_connection_t  *c;

    c = pgc->c;

    if (c == NULL) {
        return;
    }

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, flags);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
    pgc->c = NULL;
}


/*
 * Level-triggered: libpq reads and writes by itself, and does not always
 * drain the socket, so an edge would be missed.
 */

static ngx_int_t
ngx_http_replay_db_events(ngx_http_replay_db_conn_t *pgc, ngx_uint_t rd,
    ngx_uint_t wr)
{
    ngx_connection_t  *c;

    c = pgc->c;

    if (rd && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!rd && c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (wr && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!wr && c->write->active) {
        if (ngx_del_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_replay_db_detach(ngx_http_replay_db_conn_t *pgc)
{
    if (pgc->req) {
        pgc->req->conn = NULL;
        pgc->req = NULL;
    }
}


static void
ngx_http_replay_db_finish(ngx_http_replay_db_req_t *req, ngx_int_t rc)
{
    rc = ngx_http_replay_db_end(req, rc);

    if (req->sync) {
        req->rc = rc;
        return;
    }

    /* the last thing done: the handler may finalize the request */
    req->handler(req->request, req->data, rc);
}


/* the lookup is over: the status the request is to get */

static ngx_int_t
ngx_http_replay_db_end(ngx_http_replay_db_req_t *req, ngx_int_t rc)
{
    ngx_http_request_t     *r;
    ngx_http_replay_ctx_t  *ctx;

    r = req->request;
    ctx = req->ctx;

    req->done = 1;

    ctx->db_time = ngx_http_replay_usec() - req->start;
    ctx->db_timed = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay db: lookup done: %i, %uL us", rc, ctx->db_time);

    if (rc == NGX_OK) {
        if (req->cache) {
            ngx_http_replay_cache_put(r, ctx, &req->params);
        }

        return rc;
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
 * Looks the request's values up in replay_key_cache.  NGX_OK: the cache
 * had the row; NGX_DECLINED: the database is to be asked, and its answer
 * is kept (ngx_http_replay_db_end()).
 */

static ngx_int_t
ngx_http_replay_db_cache_get(ngx_http_replay_db_req_t *req,
    ngx_http_replay_ctx_t *ctx)
{
    uint64_t   start;
    ngx_int_t  rc;

    start = ngx_http_replay_usec();

    rc = ngx_http_replay_cache_get(req->request, ctx, &req->params);

    if (rc == NGX_DECLINED) {
        req->cache = 1;
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


/* the request is gone: nothing may point to it any more */

static void
ngx_http_replay_db_cleanup(void *data)
{
    ngx_http_replay_db_req_t *req = data;

    if (req->queued) {
        ngx_queue_remove(&req->queue);
        req->query->db->nwaiting--;
        req->queued = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);
    }

    if (req->wait.timer_set) {
        ngx_del_timer(&req->wait);
    }

    if (req->conn) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "replay db: request gone, connection goes on");

        req->conn->req = NULL;
        req->conn = NULL;
    }
}


static ngx_log_t *
ngx_http_replay_db_log(ngx_http_replay_db_req_t *req)
{
    return req ? req->request->connection->log : ngx_cycle->log;
}


static void
ngx_http_replay_db_notice(void *arg, const char *message)
{
    u_char  text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t  len;

    len = ngx_http_replay_db_text(text, sizeof(text), message, 0);

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "replay: database said: %*s", len, text);
}


/*
 * libpq's messages on one line.  With "redact", what they quote is left
 * out but for single characters: a conninfo they failed to parse may hold
 * a password.
 */

static size_t
ngx_http_replay_db_text(u_char *buf, size_t size, const char *msg,
    ngx_uint_t redact)
{
    u_char      *p, *last, *q, ch;
    ngx_uint_t   space;

    if (msg == NULL) {
        return 0;
    }

    if (redact
        && ngx_strncmp(msg, "invalid connection option",
                       sizeof("invalid connection option") - 1) == 0)
    {
        /* it quotes a keyword */
        redact = 0;
    }

    p = buf;
    last = buf + size;
    space = 0;

    for ( /* void */ ; *msg && p < last; msg++) {
        ch = (u_char) *msg;

        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
            space = 1;
            continue;
        }

        if (space && p > buf) {
            *p++ = ' ';

            if (p == last) {
                break;
            }
        }

        space = 0;

        if (redact && ch == '"') {
            q = (u_char *) ngx_strchr(msg + 1, '"');

            if (last - p < 5) {
                break;
            }

            if (q == NULL) {
                p = ngx_cpymem(p, "\"...", 4);
                break;
            }

            if (q - (u_char *) msg > 2) {
                p = ngx_cpymem(p, "\"...\"", 5);

            } else {
                p = ngx_cpymem(p, msg, q - (u_char *) msg + 1);
            }

            msg = (const char *) q;
            continue;
        }

        *p++ = ch;
    }

    return p - buf;
}


static ngx_uint_t
ngx_http_replay_db_bad_param(PGresult *res)
{
    char         *state;
    ngx_uint_t    i;

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state == NULL) {
        return 0;
    }

    for (i = 0; ngx_http_replay_db_param_errors[i]; i++) {
        if (ngx_strcmp(state, ngx_http_replay_db_param_errors[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


/* the worker goes: every connection of its pools is closed */

void
ngx_http_replay_db_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    ngx_queue_t                 *q;
    ngx_array_t                 *dbs;
    ngx_http_replay_db_t       **db;
    ngx_http_conf_ctx_t         *ctx;
    ngx_http_replay_db_req_t    *req;
    ngx_http_replay_db_conn_t   *pgc;
    ngx_http_replay_loc_conf_t  *rlcf;

    ctx = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
    if (ctx == NULL) {
        return;
    }

    rlcf = ctx->loc_conf[ngx_http_replay_module.ctx_index];
    dbs = rlcf->dbs;

    if (dbs == NULL) {
        return;
    }

    db = dbs->elts;

    for (i = 0; i < dbs->nelts; i++) {

        while (!ngx_queue_empty(&db[i]->waiting)) {
            q = ngx_queue_head(&db[i]->waiting);
            req = ngx_queue_data(q, ngx_http_replay_db_req_t, queue);

            ngx_queue_remove(q);
            req->queued = 0;
        }

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING,
                             -(ngx_atomic_int_t) db[i]->nwaiting);
        db[i]->nwaiting = 0;

        while (!ngx_queue_empty(&db[i]->busy)) {
            q = ngx_queue_head(&db[i]->busy);
            pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

            ngx_http_replay_db_detach(pgc);
            ngx_http_replay_db_close(pgc);
        }

        while (!ngx_queue_empty(&db[i]->idle)) {
            q = ngx_queue_head(&db[i]->idle);
            pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

            ngx_http_replay_db_close(pgc);
        }
    }
}


/* configuration */

char *
ngx_http_replay_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    char                        *err;
    u_char                       text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                       len;
    ngx_int_t                    n;
    ngx_str_t                   *value, s;
    ngx_uint_t                   i;
    ngx_msec_t                  *msp;
    ngx_array_t                 *dbs;
    PQconninfoOption            *opts;
    ngx_http_conf_ctx_t         *ctx;
    ngx_http_replay_db_t        *db, **dbp;
    ngx_http_replay_loc_conf_t  *hlcf;

    if (rlcf->db) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* libpq's own parser: anything libpq takes is taken */

    err = NULL;
    opts = PQconninfoParse((char *) value[1].data, &err);

    if (opts == NULL) {
        if (err == NULL) {
            return NGX_CONF_ERROR;
        }

        len = ngx_http_replay_db_text(text, sizeof(text), err, 1);
        PQfreemem(err);

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid database connection string: %*s",
                           len, text);
        return NGX_CONF_ERROR;
    }

    PQconninfoFree(opts);

    db = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_db_t));
    if (db == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the conninfo comes after, so that it may name the application */

    db->keywords[0] = "fallback_application_name";
    db->values[0] = "nginx-replay";
    db->keywords[1] = "dbname";
    db->values[1] = (const char *) value[1].data;
    db->keywords[2] = NULL;
    db->values[2] = NULL;

    db->max_conns = 4;
    db->max_waiting = 128;
    db->connect_timeout = 3000;
    db->query_timeout = 5000;
    db->queue_timeout = 3000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "pool=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);

            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            db->max_conns = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "queue=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            db->max_waiting = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;
            msp = &db->connect_timeout;

        } else if (ngx_strncmp(value[i].data, "query_timeout=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;
            msp = &db->query_timeout;

        } else if (ngx_strncmp(value[i].data, "queue_timeout=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;
            msp = &db->queue_timeout;

        } else {
            goto invalid;
        }

        n = ngx_parse_time(&s, 0);

        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        *msp = (ngx_msec_t) n;
    }

    ngx_queue_init(&db->idle);
    ngx_queue_init(&db->busy);
    ngx_queue_init(&db->waiting);

    /* the http level keeps every database, for the workers' exit */

    ctx = (ngx_http_conf_ctx_t *) cf->cycle->conf_ctx[ngx_http_module.index];
    hlcf = ctx->loc_conf[ngx_http_replay_module.ctx_index];

    dbs = hlcf->dbs;

    if (dbs == NULL) {
        dbs = ngx_array_create(cf->pool, 2, sizeof(ngx_http_replay_db_t *));
        if (dbs == NULL) {
            return NGX_CONF_ERROR;
        }

        hlcf->dbs = dbs;
    }

    dbp = ngx_array_push(dbs);
    if (dbp == NULL) {
        return NGX_CONF_ERROR;
    }

    *dbp = db;
    rlcf->db = db;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


char *
ngx_http_replay_key_query(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    ngx_int_t                          max;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_replay_db_query_t        *q;
    ngx_http_compile_complex_value_t   ccv;

    if (rlcf->query) {
        return "is duplicate";
    }

    value = cf->args->elts;

    q = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_db_query_t));
    if (q == NULL) {
        return NGX_CONF_ERROR;
    }

    q->sql = (char *) value[1].data;
    q->nparams = cf->args->nelts - 2;

    max = ngx_http_replay_db_count_params(&value[1]);

    if (max == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the query has a parameter number above %d",
                           NGX_HTTP_REPLAY_DB_MAX_PARAMS);
        return NGX_CONF_ERROR;
    }

    if (max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the query has no parameter: values are bound "
                           "to $1, $2, ... in the query, never pasted "
                           "into it");
        return NGX_CONF_ERROR;
    }

    if ((ngx_uint_t) max != q->nparams) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the query has parameters up to $%i but %ui "
                           "value%s given: give one for each",
                           max, q->nparams,
                           q->nparams == 1 ? " is" : "s are");
        return NGX_CONF_ERROR;
    }

    q->params = ngx_pcalloc(cf->pool,
                            q->nparams * sizeof(ngx_http_complex_value_t));
    if (q->params == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < q->nparams; i++) {
        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[i + 2];
        ccv.complex_value = &q->params[i];

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    rlcf->query = q;

    return NGX_CONF_OK;
}


char *
ngx_http_replay_db_merge(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *prev,
    ngx_http_replay_loc_conf_t *conf)
{
    u_char                      *p;
    ngx_md5_t                    md5;
    ngx_http_replay_db_t        *db;
    ngx_http_replay_db_query_t  *q;

    if (conf->db == NULL) {
        conf->db = prev->db;
    }

    ngx_conf_merge_size_value(conf->key_param_max, prev->key_param_max, 256);

    if (conf->key_param_max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_key_param_max_length must not be 0");
        return NGX_CONF_ERROR;
    }

    q = conf->query;

    if (q == NULL || q->db) {
        return NGX_CONF_OK;
    }

    if (conf->db == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_key_query is set but no replay_db is "
                           "given in the location or above it");
        return NGX_CONF_ERROR;
    }

    if (conf->endpoint.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_key_query is set but replay_s3_endpoint "
                           "is not");
        return NGX_CONF_ERROR;
    }

    db = conf->db;

    /* one statement name per query of a database, the same in any worker */

    p = ngx_pnalloc(cf->pool, sizeof("ngx_replay_") + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    q->db = db;
    q->index = db->nqueries++;
    q->name = (char *) p;

    /* the connection string with its NUL, then the query */

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, db->values[1], ngx_strlen(db->values[1]) + 1);
    ngx_md5_update(&md5, q->sql, ngx_strlen(q->sql));
    ngx_md5_final(q->ident, &md5);

    ngx_sprintf(p, "ngx_replay_%ui%Z", q->index);

    return NGX_CONF_OK;
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

    return sizeof(ngx_http_replay_db_req_t)
           + q->nparams * (sizeof(char *) + sizeof(ngx_str_t)
                           + rlcf->key_param_max + 1)
           + sizeof(q->ident);
}


/*
 * The highest $N of the query, out of its strings, quoted names and
 * comments; NGX_ERROR if too high.
 */

static ngx_int_t
ngx_http_replay_db_count_params(ngx_str_t *sql)
{
    u_char      *p, *start, *last;
    ngx_int_t    n, max;

    max = 0;
    start = sql->data;
    last = start + sql->len;
    p = start;

    while (p < last) {

        switch (*p) {

        case '\'':
            p = ngx_http_replay_db_skip_quoted(p, last,
                                               p > start
                                               && (p[-1] == 'E'
                                                   || p[-1] == 'e'));
            continue;

        case '"':
            p = ngx_http_replay_db_skip_quoted(p, last, 0);
            continue;

        case '-':
            if (p + 1 < last && p[1] == '-') {
                p = ngx_strlchr(p, last, '\n');

                if (p == NULL) {
                    return max;
                }
            }

            p++;
            continue;

        case '/':
            if (p + 1 < last && p[1] == '*') {
                for (p += 2; p + 1 < last; p++) {
                    if (p[0] == '*' && p[1] == '/') {
                        break;
                    }
                }

                p += 2;
                continue;
            }

            p++;
            continue;

        case '$':
            /* inside a name, "$" is just a character */

            if (p > start && ngx_http_replay_db_name_char(p[-1])) {
                p++;
                continue;
            }

            if (p + 1 < last && p[1] >= '0' && p[1] <= '9') {
                n = 0;

                for (p++; p < last && *p >= '0' && *p <= '9'; p++) {
                    n = n * 10 + (*p - '0');

                    if (n > NGX_HTTP_REPLAY_DB_MAX_PARAMS) {
                        return NGX_ERROR;
                    }
                }

                max = ngx_max(max, n);
                continue;
            }

            p = ngx_http_replay_db_skip_dollar(p, last);
            continue;

        default:
            p++;
            continue;
        }
    }

    return max;
}


static u_char *
ngx_http_replay_db_skip_quoted(u_char *p, u_char *last, ngx_uint_t escapes)
{
    u_char  quote;

    quote = *p++;

    while (p < last) {

        if (escapes && *p == '\\') {
            p += 2;
            continue;
        }

        if (*p == quote) {
            /* a doubled quote stays inside */

            if (p + 1 < last && p[1] == quote) {
                p += 2;
                continue;
            }

            return p + 1;
        }

        p++;
    }

    return last;
}


/* a $tag$...$tag$ string, or a lone "$" */

static u_char *
ngx_http_replay_db_skip_dollar(u_char *p, u_char *last)
{
    u_char  *tag, *q;
    size_t   len;

    tag = p;

    for (q = p + 1; q < last; q++) {
        if (!ngx_http_replay_db_name_char(*q)) {
            break;
        }
    }

    if (q == last || *q != '$') {
        return p + 1;
    }

    len = q - tag + 1;

    for (q++; q + len <= last; q++) {
        if (ngx_strncmp(q, tag, len) == 0) {
            return q + len;
        }
    }

    return last;
}
