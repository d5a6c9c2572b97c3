
/*
 * One PostgreSQL connection on nginx's events.
 *
 * libpq runs in non-blocking mode; its socket is wrapped in an
 * ngx_connection_t so that nginx's event loop calls back into it.  Host
 * names are never left to libpq, whose getaddrinfo() would block the
 * worker: they were resolved when the configuration was read, or are
 * resolved here with nginx's resolver before libpq starts, and libpq gets
 * them as "hostaddr" (it keeps "host" for TLS verification and the
 * passfile).  A query that times out is cancelled before the connection
 * goes: PQcancel() blocks, so it runs on a thread of the worker
 * (ngx_http_replay_db_cancel.c).
 *
 * Queries go in batches: with libpq 14 or later the connection is in
 * pipeline mode, and the queries given to it in one turn of the event
 * loop leave in one write, each with its own Sync (its own implicit
 * transaction, its own error), their answers read in order as they come.
 * Without pipeline mode (replay_db ... pipeline=off, or an older libpq)
 * a batch is one query.  Each query is an entry in pgc->entries, kept
 * until its answer has been read, whether its job still waits or not.
 *
 * The connection tells its owner (the pool, or a LISTEN) what happened
 * through pgc->handler; it knows nothing of requests.
 */


#include "ngx_http_replay_db.h"
#include "ngx_http_replay_status.h"

#include <openssl/ssl.h>


#define NGX_HTTP_REPLAY_DB_RESOLVING   0
#define NGX_HTTP_REPLAY_DB_CONNECTING  1
#define NGX_HTTP_REPLAY_DB_IDLE        2
#define NGX_HTTP_REPLAY_DB_BUSY        3    /* entries sent, or to send */

/* pgc->prepared[query->index] */
#define NGX_HTTP_REPLAY_DB_UNPREPARED  0
#define NGX_HTTP_REPLAY_DB_PREPARING   1    /* its PREPARE is out */
#define NGX_HTTP_REPLAY_DB_PREPARED    2

#define NGX_HTTP_REPLAY_DB_POOL_SIZE   1024




static void ngx_http_replay_db_resolve(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_replay_db_start(ngx_http_replay_db_conn_t *pgc,
    const char **keywords, const char **values);
static void ngx_http_replay_db_connect_step(ngx_http_replay_db_conn_t *pgc);
static ngx_http_replay_db_entry_t *ngx_http_replay_db_entry(
    ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_entry_free(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e);
static void ngx_http_replay_db_set_head(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e);
static void ngx_http_replay_db_send_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_replay_db_send_next(ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_flush(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_handler(ngx_event_t *ev);
static void ngx_http_replay_db_idle_event(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_process(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t write);
static ngx_int_t ngx_http_replay_db_consume(PGconn *pg);
static ngx_int_t ngx_http_replay_db_result(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e, PGresult *res);
static ngx_int_t ngx_http_replay_db_entry_end(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e);
static void ngx_http_replay_db_failed(ngx_http_replay_db_conn_t *pgc,
    const char *what);
static ngx_int_t ngx_http_replay_db_cancel_send(
    ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_watch(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_unwatch(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t flags);
static ngx_int_t ngx_http_replay_db_events(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t rd, ngx_uint_t wr);
static u_char *ngx_http_replay_db_log_error(ngx_log_t *log, u_char *buf,
    size_t len);
static void ngx_http_replay_db_notice(void *arg, const char *message);
static ngx_uint_t ngx_http_replay_db_sqlstate(PGresult *res,
    const char **states);
static void ngx_http_replay_db_cancel_done(ngx_http_replay_db_cancel_t *cn);


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

/* our statement is not on this server connection (PgBouncer) */
static const char  *ngx_http_replay_db_no_statement[] = {
    "26000",    /* invalid_sql_statement_name */
    NULL
};

/* another client of the same server connection prepared it (PgBouncer) */
static const char  *ngx_http_replay_db_duplicate[] = {
    "42P05",    /* duplicate_prepared_statement */
    NULL
};

/* a cancel request: another query's, late, or an administrator's */
static const char  *ngx_http_replay_db_canceled[] = {
    "57014",    /* query_canceled */
    NULL
};


ngx_http_replay_db_conn_t *
ngx_http_replay_db_conn_create(ngx_http_replay_db_t *db)
{
    ngx_pool_t                 *pool;
    ngx_http_replay_db_conn_t  *pgc;

    pool = ngx_create_pool(NGX_HTTP_REPLAY_DB_POOL_SIZE, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    pgc = ngx_pcalloc(pool, sizeof(ngx_http_replay_db_conn_t));
    if (pgc == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    pgc->prepared = ngx_pcalloc(pool, db->nqueries);
    if (pgc->prepared == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    pgc->pool = pool;
    pgc->db = db;

    /* its own log: the lines name the database, and the request if any */

    pgc->log = *ngx_cycle->log;
    pgc->log.handler = ngx_http_replay_db_log_error;
    pgc->log.data = pgc;
    pgc->log.action = "connecting to the database";

    pool->log = &pgc->log;

    pgc->timer.data = pgc;
    pgc->timer.log = &pgc->log;

    pgc->send.handler = ngx_http_replay_db_send_handler;
    pgc->send.data = pgc;
    pgc->send.log = &pgc->log;

    ngx_queue_init(&pgc->entries);
    ngx_queue_init(&pgc->free);

    pgc->state = NGX_HTTP_REPLAY_DB_RESOLVING;

    return pgc;
}


/*
 * Resolves what is left to resolve, then starts libpq.  Tells the pool
 * NGX_HTTP_REPLAY_DB_CONNECTED or NGX_HTTP_REPLAY_DB_CLOSE, maybe at once.
 */

void
ngx_http_replay_db_conn_connect(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_t  *db;

    db = pgc->db;

    if (db->nresolve == 0 || db->resolver == NULL) {
        ngx_http_replay_db_start(pgc, db->keywords, db->values);
        return;
    }

    pgc->addrs = ngx_array_create(pgc->pool, db->hosts->nelts,
                                    sizeof(ngx_http_replay_db_host_t));
    if (pgc->addrs == NULL) {
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    pgc->log.action = "resolving the database's host name";
    pgc->host = 0;

    ngx_http_replay_db_resolve(pgc);
}


/* the next host of the list, in order: libpq tries them in that order */

static void
ngx_http_replay_db_resolve(ngx_http_replay_db_conn_t *pgc)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i, n;
    const char                **keywords, **values;
    ngx_resolver_ctx_t         *ctx;
    ngx_http_replay_db_t       *db;
    ngx_http_replay_db_host_t  *h, *e;

    db = pgc->db;
    h = db->hosts->elts;

    for ( /* void */ ; pgc->host < db->hosts->nelts; pgc->host++) {

        if (h[pgc->host].resolve) {
            ctx = ngx_resolve_start(db->resolver, NULL);
            if (ctx == NULL) {
                ngx_http_replay_db_failed(pgc, NULL);
                return;
            }

            ctx->name = h[pgc->host].host;
            ctx->handler = ngx_http_replay_db_resolved;
            ctx->data = pgc;
            ctx->timeout = db->resolver_timeout;

            pgc->resolving = ctx;

            /* a cached name is answered from inside */

            if (ngx_resolve_name(ctx) != NGX_OK) {
                pgc->resolving = NULL;
                ngx_http_replay_db_failed(pgc, NULL);
            }

            return;
        }

        e = ngx_array_push(pgc->addrs);
        if (e == NULL) {
            ngx_http_replay_db_failed(pgc, NULL);
            return;
        }

        *e = h[pgc->host];
    }

    if (pgc->addrs->nelts == 0) {
        ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                      "replay: no address for any host of the database");
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    /* libpq's options, then the three lists of the addresses found */

    n = db->nopts;

    keywords = ngx_palloc(pgc->pool, (n + 4) * sizeof(char *));
    values = ngx_palloc(pgc->pool, (n + 4) * sizeof(char *));
    if (keywords == NULL || values == NULL) {
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    ngx_memcpy(keywords, db->keywords, n * sizeof(char *));
    ngx_memcpy(values, db->values, n * sizeof(char *));

    e = pgc->addrs->elts;
    len = 0;

    for (i = 0; i < pgc->addrs->nelts; i++) {
        len += e[i].host.len + e[i].hostaddr.len + e[i].port.len + 3;
    }

    p = ngx_pnalloc(pgc->pool, len);
    if (p == NULL) {
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    keywords[n] = "host";
    values[n] = (char *) p;

    for (i = 0; i < pgc->addrs->nelts; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &e[i].host);
    }

    *p++ = '\0';

    keywords[n + 1] = "hostaddr";
    values[n + 1] = (char *) p;

    for (i = 0; i < pgc->addrs->nelts; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &e[i].hostaddr);
    }

    *p++ = '\0';

    keywords[n + 2] = "port";
    values[n + 2] = (char *) p;

    for (i = 0; i < pgc->addrs->nelts; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &e[i].port);
    }

    *p = '\0';

    keywords[n + 3] = NULL;
    values[n + 3] = NULL;

    ngx_http_replay_db_start(pgc, keywords, values);
}


static void
ngx_http_replay_db_resolved(ngx_resolver_ctx_t *ctx)
{
    u_char                      text[NGX_SOCKADDR_STRLEN];
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_replay_db_host_t  *h, *e;
    ngx_http_replay_db_conn_t  *pgc;

    pgc = ctx->data;
    h = pgc->db->hosts->elts;
    h += pgc->host;

    if (ctx->state) {
        ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                      "replay: could not resolve the database host \"%V\" "
                      "(%i: %s)", &ctx->name, ctx->state,
                      ngx_resolver_strerror(ctx->state));

    } else {
        for (i = 0; i < ctx->naddrs; i++) {
            e = ngx_array_push(pgc->addrs);
            if (e == NULL) {
                break;
            }

            len = ngx_sock_ntop(ctx->addrs[i].sockaddr, ctx->addrs[i].socklen,
                                text, NGX_SOCKADDR_STRLEN, 0);

            *e = *h;
            e->resolve = 0;
            e->hostaddr.data = ngx_pstrdup(pgc->pool,
                                           &(ngx_str_t) { len, text });
            e->hostaddr.len = len;

            if (e->hostaddr.data == NULL) {
                pgc->addrs->nelts--;
                break;
            }

            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                           "replay db: \"%V\" is %V", &e->host, &e->hostaddr);
        }
    }

    ngx_resolve_name_done(ctx);
    pgc->resolving = NULL;

    pgc->host++;
    ngx_http_replay_db_resolve(pgc);
}


static void
ngx_http_replay_db_start(ngx_http_replay_db_conn_t *pgc,
    const char **keywords, const char **values)
{
    u_char  text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t  len;

    pgc->log.action = "connecting to the database";
    pgc->state = NGX_HTTP_REPLAY_DB_CONNECTING;

    pgc->pg = PQconnectStartParams(keywords, values, 0);
    if (pgc->pg == NULL) {
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    if (PQstatus(pgc->pg) == CONNECTION_BAD) {
        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQerrorMessage(pgc->pg), 0);

        ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                      "replay: database connection failed: %*s", len, text);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    PQsetNoticeProcessor(pgc->pg, ngx_http_replay_db_notice, pgc);

    /* libpq's connection sequence starts by waiting to write */

    if (ngx_http_replay_db_watch(pgc) != NGX_OK
        || ngx_http_replay_db_events(pgc, 0, 1) != NGX_OK)
    {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);
        ngx_http_replay_db_failed(pgc, NULL);
    }
}


static void
ngx_http_replay_db_connect_step(ngx_http_replay_db_conn_t *pgc)
{
    socklen_t                  socklen;
    ngx_sockaddr_t             sa;
    PostgresPollingStatusType  st;

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

#if (NGX_HTTP_REPLAY_DB_PIPELINE)
    if (pgc->db->pipeline > 1 && !pgc->nopipeline
        && PQenterPipelineMode(pgc->pg))
    {
        pgc->pipeline = 1;
    }
#endif

    socklen = sizeof(ngx_sockaddr_t);

    if (getsockname(PQsocket(pgc->pg), &sa.sockaddr, &socklen) == 0
        && sa.sockaddr.sa_family != AF_UNIX)
    {
        pgc->tcp = 1;
    }

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECTS, 1);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: connected, fd:%d, backend:%d, ssl:%d, "
                   "pipeline:%d", PQsocket(pgc->pg), PQbackendPID(pgc->pg),
                   PQsslInUse(pgc->pg), (int) pgc->pipeline);

    /* what was given while connecting leaves, with what the owner adds */

    if (ngx_queue_empty(&pgc->entries)) {
        pgc->state = NGX_HTTP_REPLAY_DB_IDLE;

    } else {
        pgc->state = NGX_HTTP_REPLAY_DB_BUSY;
        pgc->open = pgc->pipeline;
        ngx_post_event(&pgc->send, &ngx_posted_events);
    }

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CONNECTED);
    return;

failed:

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);
    ngx_http_replay_db_failed(pgc, "database connection failed");
}


/*
 * Gives the job's query to the connection: its entry (and, the first
 * time this connection runs the query as a prepared statement, a PREPARE
 * before it).  On a pooled connection that starts a batch the connection
 * is read first: one whose server has gone is found here.  NGX_DECLINED:
 * it is broken and nothing of the job has left (the job goes elsewhere);
 * NGX_ERROR: no memory.
 *
 * In pipeline mode the batch leaves from a posted event, so that the
 * jobs of the same turn of the event loop go out together; one at a time,
 * the query leaves now.
 */

ngx_int_t
ngx_http_replay_db_conn_add(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job)
{
    u_char                       text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                       len;
    ngx_uint_t                   start;
    ngx_http_replay_db_t        *db;
    ngx_http_replay_db_entry_t  *e, *p;
    ngx_http_replay_db_query_t  *q;

    db = pgc->db;
    q = job->query;
    start = (pgc->state == NGX_HTTP_REPLAY_DB_IDLE);

    /*
     * A pooled connection whose server has gone may not have said so to
     * the event loop yet: a read now tells, before anything is sent.
     */

    if (start
        && (ngx_http_replay_db_consume(pgc->pg) != NGX_OK
            || PQstatus(pgc->pg) != CONNECTION_OK))
    {
        /* the line names the request */
        pgc->job = job;
        pgc->log.connection = job->log->connection;

        goto broken;
    }

    p = NULL;

    if (db->prepare && !db->unnamed
        && pgc->prepared[q->index] == NGX_HTTP_REPLAY_DB_UNPREPARED)
    {
        p = ngx_http_replay_db_entry(pgc);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p->query = q;
        p->prepare = 1;
    }

    e = ngx_http_replay_db_entry(pgc);
    if (e == NULL) {
        return NGX_ERROR;
    }

    e->query = q;
    e->unnamed = !(db->prepare && !db->unnamed);

    if (p) {
        ngx_queue_insert_tail(&pgc->entries, &p->queue);
        pgc->prepared[q->index] = NGX_HTTP_REPLAY_DB_PREPARING;
    }

    ngx_queue_insert_tail(&pgc->entries, &e->queue);
    pgc->njobs++;

    e->job = job;
    job->conn = pgc;
    job->entry = e;

    if (pgc->job == NULL) {
        ngx_http_replay_db_set_head(pgc,
                                    ngx_queue_data(ngx_queue_head(&pgc->entries),
                                                   ngx_http_replay_db_entry_t,
                                                   queue));
    }

    if (!start) {
        /* connecting, or a batch that has not left yet */
        return NGX_OK;
    }

    pgc->state = NGX_HTTP_REPLAY_DB_BUSY;
    pgc->c->idle = 0;

    if (pgc->pipeline) {
        pgc->open = 1;
        ngx_post_event(&pgc->send, &ngx_posted_events);
        return NGX_OK;
    }

    if (ngx_http_replay_db_send_next(pgc) == NGX_OK) {
        return NGX_OK;
    }

    /* libpq writes what it can at once: a failed send left nothing */

broken:

    len = ngx_http_replay_db_text(text, sizeof(text),
                                  PQerrorMessage(pgc->pg), 0);

    ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                  "replay: database connection failed before the query "
                  "left: %*s", len, text);

    ngx_http_replay_db_conn_detach(pgc, job);

    return NGX_DECLINED;
}


/*
 * An SQL command without values on a connection of its own (a LISTEN):
 * sent once connected; the owner hears ..._DB_DONE when it has run, or
 * ..._DB_CLOSE.
 */

ngx_int_t
ngx_http_replay_db_conn_command(ngx_http_replay_db_conn_t *pgc,
    const char *sql)
{
    ngx_http_replay_db_entry_t  *e;

    e = ngx_http_replay_db_entry(pgc);
    if (e == NULL) {
        return NGX_ERROR;
    }

    e->command = sql;

    ngx_queue_insert_tail(&pgc->entries, &e->queue);

    return NGX_OK;
}


static ngx_http_replay_db_entry_t *
ngx_http_replay_db_entry(ngx_http_replay_db_conn_t *pgc)
{
    ngx_queue_t                 *q;
    ngx_http_replay_db_entry_t  *e;

    if (!ngx_queue_empty(&pgc->free)) {
        q = ngx_queue_head(&pgc->free);
        ngx_queue_remove(q);
        e = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

    } else {
        e = ngx_palloc(pgc->pool, sizeof(ngx_http_replay_db_entry_t));
        if (e == NULL) {
            return NULL;
        }
    }

    ngx_memzero(e, sizeof(ngx_http_replay_db_entry_t));
    e->status = NGX_OK;

    return e;
}


/*
 * The job's owner is gone, or the job has its answer: the query goes on
 * (its results are read and dropped), the job is no longer told.
 */

void
ngx_http_replay_db_conn_detach(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job)
{
    if (job->entry) {
        job->entry->job = NULL;
        job->entry = NULL;
    }

    job->conn = NULL;

    if (pgc->job == job) {
        pgc->job = NULL;
        pgc->log.connection = pgc->c ? pgc->c->number : 0;
    }
}


/* the jobs still waiting on a connection that goes, one by one */

ngx_http_replay_db_job_t *
ngx_http_replay_db_conn_take(ngx_http_replay_db_conn_t *pgc)
{
    ngx_queue_t                 *q;
    ngx_http_replay_db_job_t    *job;
    ngx_http_replay_db_entry_t  *e;

    for (q = ngx_queue_head(&pgc->entries);
         q != ngx_queue_sentinel(&pgc->entries);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

        if (e->job) {
            job = e->job;
            ngx_http_replay_db_conn_detach(pgc, job);
            return job;
        }
    }

    return NULL;
}


/* the head of the pipeline: its job names the log lines, its time runs */

static void
ngx_http_replay_db_set_head(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e)
{
    ngx_queue_t                 *q;
    ngx_http_replay_db_job_t    *job;
    ngx_http_replay_db_entry_t  *n;

    /* a PREPARE is for the job behind it */

    job = NULL;

    for (n = e; n; n = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue)) {
        if (n->job || !n->prepare) {
            job = n->job;
            break;
        }

        q = ngx_queue_next(&n->queue);

        if (q == ngx_queue_sentinel(&pgc->entries)) {
            break;
        }
    }

    pgc->job = job;
    pgc->log.connection = job ? job->log->connection
                              : (pgc->c ? pgc->c->number : 0);

    if (e == NULL || !e->sent || e->started || pgc->canceling) {
        return;
    }

    /* the server starts on it: query_timeout from now */

    e->started = 1;

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    if (e->command == NULL) {
        ngx_add_timer(&pgc->timer, pgc->db->query_timeout);
    }

    if (job && job->wait.timer_set) {
        ngx_del_timer(&job->wait);
    }
}


/* the batch leaves, from a posted event (pipeline mode, or connected) */

static void
ngx_http_replay_db_send_handler(ngx_event_t *ev)
{
    ngx_http_replay_db_conn_t  *pgc;

    pgc = ev->data;

    pgc->open = 0;

    if (ngx_http_replay_db_send_next(pgc) != NGX_OK) {
        ngx_http_replay_db_failed(pgc, "database connection failed");
        return;
    }

    if (ngx_queue_empty(&pgc->entries)) {
        /* every job of the batch went before it left */
        pgc->handler(pgc, NGX_HTTP_REPLAY_DB_DONE);
    }
}


/*
 * Sends what is to be sent: in pipeline mode every entry not sent yet,
 * each with its own Sync (each query its own implicit transaction: an
 * error in one aborts no other), in one write, up to a PREPARE; one at a
 * time, the head if it has not left.
 */

static ngx_int_t
ngx_http_replay_db_send_next(ngx_http_replay_db_conn_t *pgc)
{
    int                          ok;
    ngx_uint_t                   n, corked;
    ngx_queue_t                 *q, *next;
    ngx_http_replay_db_job_t    *job;
    ngx_http_replay_db_entry_t  *e;
    ngx_http_replay_db_query_t  *query;

    n = 0;
    corked = 0;

    for (q = ngx_queue_head(&pgc->entries);
         q != ngx_queue_sentinel(&pgc->entries);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

        if (e->sent) {
            if (!pgc->pipeline || e->prepare) {
                /* one at a time: the head is out; or a PREPARE is */
                break;
            }

            continue;
        }

        job = e->job;
        query = e->query;

        if (e->command == NULL && !e->prepare) {

            if (job == NULL) {
                /* its request went before it left: never sent */
                ngx_queue_remove(&e->queue);
                pgc->njobs--;
                ngx_http_replay_db_entry_free(pgc, e);
                continue;
            }
        }

        /*
         * A batch of several: one segment, not one per query (libpq
         * before 17 flushes at each Sync)
         */

        if (pgc->pipeline && pgc->tcp && !corked
            && next != ngx_queue_sentinel(&pgc->entries))
        {
            (void) ngx_tcp_nopush(PQsocket(pgc->pg));
            corked = 1;
        }

        pgc->log.action = "sending the key query to the database";

        if (e->command) {
            ok = PQsendQuery(pgc->pg, e->command);

        } else if (e->prepare) {
            ok = PQsendPrepare(pgc->pg, query->name, query->sql,
                               (int) query->nparams, NULL);

        } else if (!e->unnamed) {
            ok = PQsendQueryPrepared(pgc->pg, query->name,
                                     (int) query->nparams, job->values,
                                     NULL, NULL, 0);

        } else {
            /* the unnamed statement: parse, bind, execute in one message */
            ok = PQsendQueryParams(pgc->pg, query->sql, (int) query->nparams,
                                   NULL, job->values, NULL, NULL, 0);
        }

        if (ok && !pgc->pipeline && e->command == NULL && !e->prepare) {
            ok = PQsetSingleRowMode(pgc->pg);
        }

#if (NGX_HTTP_REPLAY_DB_PIPELINE)
        if (ok && pgc->pipeline) {
            ok = PQpipelineSync(pgc->pg);
        }
#endif

        if (!ok) {
            if (corked) {
                (void) ngx_tcp_push(PQsocket(pgc->pg));
            }

            return NGX_ERROR;
        }

        e->sent = 1;

        if (e->command == NULL && !e->prepare) {
            n++;
        }

        /*
         * A PREPARE goes alone, its runs after its answer: behind a
         * pooler in transaction mode they then land where the statement
         * is not, and the pooler is found out at the first lookup
         */

        if (!pgc->pipeline || e->prepare) {
            break;
        }
    }

    if (corked) {
        (void) ngx_tcp_push(PQsocket(pgc->pg));
    }

    if (n) {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERIES, n);
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BATCHES, 1);
    }

    if (ngx_queue_empty(&pgc->entries)) {
        return NGX_OK;
    }

    q = ngx_queue_head(&pgc->entries);
    ngx_http_replay_db_set_head(pgc,
                        ngx_queue_data(q, ngx_http_replay_db_entry_t, queue));

    pgc->log.action = "waiting for the database's answer";

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


/* the connection waits for the next batch */

void
ngx_http_replay_db_conn_idle(ngx_http_replay_db_conn_t *pgc)
{
    pgc->state = NGX_HTTP_REPLAY_DB_IDLE;
    pgc->c->idle = 1;
    pgc->open = 0;
    pgc->log.action = "keeping the database connection";

    ngx_http_replay_db_set_head(pgc, NULL);
}


ngx_uint_t
ngx_http_replay_db_conn_reusable(ngx_http_replay_db_conn_t *pgc)
{
    return pgc->pg
           && pgc->c
           && !pgc->cancelled
           && ngx_queue_empty(&pgc->entries)
           && PQstatus(pgc->pg) == CONNECTION_OK
           && PQtransactionStatus(pgc->pg) == PQTRANS_IDLE;
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
        ngx_http_replay_db_idle_event(pgc);
        return;

    default:
        ngx_http_replay_db_process(pgc, ev->write);
        return;
    }
}


/*
 * An idle connection is readable: the server went away (a restart, an
 * administrator), said something in passing, or has a notification for
 * a LISTEN; or the worker is shutting down (c->close).
 */

static void
ngx_http_replay_db_idle_event(ngx_http_replay_db_conn_t *pgc)
{
    PGnotify  *n;
    PGresult  *res;

    if (pgc->c->close) {
        pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
        return;
    }

    if (ngx_http_replay_db_consume(pgc->pg) != NGX_OK
        || PQstatus(pgc->pg) != CONNECTION_OK)
    {
        pgc->log.connection = pgc->c->number;
        ngx_http_replay_db_failed(pgc, "idle database connection closed");
        return;
    }

    while ((n = PQnotifies(pgc->pg)) != NULL) {
        pgc->notify = n;
        pgc->handler(pgc, NGX_HTTP_REPLAY_DB_NOTIFY);
        pgc->notify = NULL;
        PQfreemem(n);
    }

    if (!PQisBusy(pgc->pg)) {
        res = PQgetResult(pgc->pg);

        if (res != NULL) {
            PQclear(res);

            ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                          "replay: unexpected result on an idle database "
                          "connection, closing it");

            pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
        }
    }
}


/*
 * The results, in the order the queries were sent.  In pipeline mode a
 * query's results end with a NULL and then its Sync's result; one at a
 * time, with the NULL.  A handler that ends the connection's turn
 * (..._DB_DONE, ..._DB_CLOSE) may free it: nothing is touched after.
 */

static void
ngx_http_replay_db_process(ngx_http_replay_db_conn_t *pgc, ngx_uint_t write)
{
    PGresult                    *res;
    ngx_queue_t                 *q;
    ExecStatusType               st;
    ngx_http_replay_db_entry_t  *e;

    if (!write && ngx_http_replay_db_consume(pgc->pg) != NGX_OK) {
        goto failed;
    }

    if (pgc->flushing && ngx_http_replay_db_flush(pgc) != NGX_OK) {
        goto failed;
    }

    for ( ;; ) {

#if (NGX_HTTP_REPLAY_DB_PIPELINE)
        /*
         * libpq applies single-row mode to the query at the head of its
         * pipeline, and only before its first result: it is asked for
         * each query as it comes to the head, before PQisBusy() parses
         * anything of its answer (prepares and syncs refuse it)
         */
        if (pgc->pipeline) {
            (void) PQsetSingleRowMode(pgc->pg);
        }
#endif

        if (PQisBusy(pgc->pg)) {
            break;
        }

        q = ngx_queue_head(&pgc->entries);
        e = (q == ngx_queue_sentinel(&pgc->entries))
            ? NULL : ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

        res = PQgetResult(pgc->pg);

        if (res == NULL) {
            if (e == NULL || !e->sent || e->ended) {
                /* nothing more for now */
                break;
            }

            e->ended = 1;

            if (pgc->pipeline) {
                /* its Sync's result is next */
                continue;
            }

            if (ngx_http_replay_db_entry_end(pgc, e) != NGX_OK) {
                return;
            }

            continue;
        }

        st = PQresultStatus(res);

        if (e == NULL || !e->sent) {
            PQclear(res);

            ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                          "replay: unexpected %s result from the database, "
                          "closing the connection", PQresStatus(st));

            pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
            return;
        }

#if (NGX_HTTP_REPLAY_DB_PIPELINE)
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);

            if (ngx_http_replay_db_entry_end(pgc, e) != NGX_OK) {
                return;
            }

            continue;
        }
#endif

        if (ngx_http_replay_db_result(pgc, e, res) != NGX_OK) {
            return;
        }
    }

    if (PQstatus(pgc->pg) != CONNECTION_OK) {
        goto failed;
    }

    return;

failed:

    ngx_http_replay_db_failed(pgc, "database connection failed");
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


/*
 * One result of the head entry's query.  NGX_DONE: the connection has
 * been handed back to its owner to close, and may be gone.
 */

static ngx_int_t
ngx_http_replay_db_result(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e, PGresult *res)
{
    u_char                     text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                     len;
    char                      *severity;
    ExecStatusType             st;
    ngx_http_replay_db_job_t  *job;

    job = e->job;
    st = PQresultStatus(res);

    severity = (st == PGRES_FATAL_ERROR)
               ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED)
               : NULL;

    if (severity
        && (ngx_strcmp(severity, "FATAL") == 0
            || ngx_strcmp(severity, "PANIC") == 0))
    {
        /* the server ends the session (a shutdown, an administrator) */

        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQresultErrorMessage(res), 0);
        PQclear(res);

        ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                      "replay: database connection failed: %*s", len, text);

        ngx_http_replay_db_failed(pgc, NULL);
        return NGX_DONE;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: result %s, %s%s", PQresStatus(st),
                   e->prepare ? "prepare" : (e->command ? "command" : "run"),
                   e->timedout ? ", timed out" : "");

    if (e->timedout) {
        /* the query that was cancelled: nobody waits for it */
        PQclear(res);
        return NGX_OK;
    }

    if (e->prepare || e->command) {

        if (st == PGRES_FATAL_ERROR && e->prepare
            && ngx_http_replay_db_sqlstate(res, ngx_http_replay_db_duplicate))
        {
            /* the same name is the same query: see the configuration */
            PQclear(res);
            return NGX_OK;
        }

        if (st != PGRES_COMMAND_OK && e->status == NGX_OK) {
            len = ngx_http_replay_db_text(text, sizeof(text),
                                          PQresultErrorMessage(res), 0);

            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: database query failed: %*s", len, text);

            if (e->prepare) {
                ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            }

            e->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        PQclear(res);
        return NGX_OK;
    }

    switch (st) {

    case PGRES_SINGLE_TUPLE:
        e->rows++;

        if (job == NULL || e->answered) {
            break;
        }

        job->rows = e->rows;

        if (e->rows == 1) {
            if (e->status == NGX_OK) {
                job->row(job, res);
            }

            break;
        }

        /* the answer is known: the rest of the rows are only read */

        ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                      "replay: the key query returned more than one row; "
                      "it must return one row");

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);

        PQclear(res);

        job->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        e->answered = 1;

        pgc->job = job;
        pgc->handler(pgc, NGX_HTTP_REPLAY_DB_ANSWERED);
        return NGX_OK;

    case PGRES_TUPLES_OK:
        break;

    case PGRES_FATAL_ERROR:
        if (e->status != NGX_OK) {
            break;
        }

        if (!e->unnamed
            && ngx_http_replay_db_sqlstate(res,
                                           ngx_http_replay_db_no_statement))
        {
            /*
             * A statement prepared on this connection is gone: a pooler
             * in transaction mode sends each statement to any server
             * connection.  Nothing ran; the query goes again, unnamed,
             * and so do all of this worker's from now on.
             */

            if (!pgc->db->unnamed) {
                ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                              "replay: prepared statements do not last on "
                              "this database's connections (a pooler in "
                              "transaction mode?); using unnamed statements "
                              "(replay_db ... prepare=off says so at once)");

                pgc->db->unnamed = 1;
            }

            e->resend = 1;
            break;
        }

        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQresultErrorMessage(res), 0);

        if (ngx_http_replay_db_sqlstate(res,
                                        ngx_http_replay_db_param_errors))
        {
            ngx_log_error(NGX_LOG_INFO, &pgc->log, 0,
                          "replay: the database rejected a parameter: %*s",
                          len, text);
            e->status = NGX_HTTP_BAD_REQUEST;

        } else if (ngx_http_replay_db_sqlstate(res,
                                               ngx_http_replay_db_canceled))
        {
            /*
             * Another query's cancel request: PostgreSQL signals the
             * backend twice (the process and its group), and the second
             * signal may interrupt the next query of the pipeline.  The
             * query was rolled back with its own transaction: it is sent
             * again on another connection.  When this connection sent
             * that cancel, the query is only its bystander and goes again
             * each time (bounded: a queue of slow queries that all time
             * out may hit it more than once); a cancel from elsewhere
             * (pg_cancel_backend) is obeyed after one more try.
             */

            if (job
                && job->retries < (pgc->cancelled
                                   ? NGX_HTTP_REPLAY_DB_RETRIES : 1))
            {
                ngx_log_error(NGX_LOG_INFO, &pgc->log, 0,
                              "replay: the key query was cancelled, "
                              "sending it again: %*s", len, text);
                e->retry = 1;

            } else {
                ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                              "replay: database query failed: %*s",
                              len, text);
                ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
                e->status = NGX_HTTP_SERVICE_UNAVAILABLE;
            }

        } else {
            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: database query failed: %*s", len, text);
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            e->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    case PGRES_COMMAND_OK:
        if (e->status == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: the key query returned no rows at all; "
                          "it must be a SELECT or have a RETURNING clause");
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            e->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    default:
        if (e->status == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: unexpected database result %s",
                          PQresStatus(st));
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            e->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;
    }

    PQclear(res);

    return NGX_OK;
}


/*
 * The head entry's query is over.  NGX_OK: the connection goes on with
 * its next entry; NGX_DONE: its owner has been told it is done (or to
 * close it), and it may be gone.
 */

static ngx_int_t
ngx_http_replay_db_entry_end(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e)
{
    ngx_queue_t                 *q;
    ngx_http_replay_db_job_t    *job;
    ngx_http_replay_db_entry_t  *next;

    ngx_queue_remove(&e->queue);

    if (e->timedout) {
        /* the cancelled query is over: the next one gets its own time */
        pgc->canceling = 0;

        if (pgc->timer.timer_set) {
            ngx_del_timer(&pgc->timer);
        }
    }

    job = e->job;

    if (e->prepare) {

        if (e->status == NGX_OK) {
            pgc->prepared[e->query->index] = NGX_HTTP_REPLAY_DB_PREPARED;

        } else {
            /*
             * The next request prepares it again.  Its runs here, held
             * back until now, cannot run: they end with its status.
             */

            pgc->prepared[e->query->index] = NGX_HTTP_REPLAY_DB_UNPREPARED;

            for (q = ngx_queue_head(&pgc->entries);
                 q != ngx_queue_sentinel(&pgc->entries);
                 q = ngx_queue_next(q))
            {
                next = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

                if (next->query != e->query || next->prepare
                    || next->unnamed)
                {
                    continue;
                }

                next->status = e->status;

                if (!next->sent && next->job && !next->answered) {
                    next->answered = 1;
                    next->job->rc = e->status;
                    pgc->job = next->job;
                    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_ANSWERED);
                }
            }
        }

    } else if (e->command == NULL) {
        pgc->njobs--;

        if (e->resend && job) {
            /* again as the unnamed statement, behind what is out */

            next = ngx_http_replay_db_entry(pgc);
            if (next == NULL) {
                ngx_http_replay_db_entry_free(pgc, e);
                ngx_http_replay_db_failed(pgc, NULL);
                return NGX_DONE;
            }

            next->query = e->query;
            next->unnamed = 1;
            next->job = job;
            job->entry = next;
            job->rows = 0;

            ngx_queue_insert_tail(&pgc->entries, &next->queue);
            pgc->njobs++;

            job = NULL;
            e->job = NULL;

        } else if (job && !e->answered) {
            if (job->rc == NGX_OK) {
                job->rc = e->status;
            }

            e->answered = 1;
            pgc->job = job;
            pgc->handler(pgc, e->retry ? NGX_HTTP_REPLAY_DB_RETRY
                                       : NGX_HTTP_REPLAY_DB_ANSWERED);
        }
    }

    if (e->command && e->status != NGX_OK) {
        ngx_http_replay_db_entry_free(pgc, e);
        pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
        return NGX_DONE;
    }

    ngx_http_replay_db_entry_free(pgc, e);

    /* one at a time, the next query; in a pipeline, a query sent again */

    if (ngx_http_replay_db_send_next(pgc) != NGX_OK) {
        ngx_http_replay_db_failed(pgc, "database connection failed");
        return NGX_DONE;
    }

    if (!ngx_queue_empty(&pgc->entries)) {
        return NGX_OK;
    }

    if (pgc->timer.timer_set && !pgc->canceling) {
        ngx_del_timer(&pgc->timer);
    }

    /* after a cancel, a late one could hit the next query: it goes */

    pgc->handler(pgc, pgc->cancelled ? NGX_HTTP_REPLAY_DB_CLOSE
                                     : NGX_HTTP_REPLAY_DB_DONE);
    return NGX_DONE;
}


static void
ngx_http_replay_db_entry_free(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_entry_t *e)
{
    if (e->job) {
        e->job->entry = NULL;
        e->job->conn = NULL;
    }

    if (pgc->job && pgc->job == e->job) {
        pgc->job = NULL;
    }

    ngx_queue_insert_head(&pgc->free, &e->queue);
}


/* logs libpq's error, if asked to, and tells the owner to close it */

static void
ngx_http_replay_db_failed(ngx_http_replay_db_conn_t *pgc, const char *what)
{
    u_char                       text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                       len;
    ngx_uint_t                   level, n;
    ngx_queue_t                 *q;
    ngx_http_replay_db_entry_t  *e;

    if (what) {
        len = pgc->pg ? ngx_http_replay_db_text(text, sizeof(text),
                                                PQerrorMessage(pgc->pg), 0)
                      : 0;

        level = (pgc->job || pgc->state != NGX_HTTP_REPLAY_DB_IDLE)
                ? NGX_LOG_ERR : NGX_LOG_WARN;

        ngx_log_error(level, &pgc->log, 0, "replay: %s: %*s", what, len, text);
    }

    /* the queries that had left have failed */

    n = 0;

    for (q = ngx_queue_head(&pgc->entries);
         q != ngx_queue_sentinel(&pgc->entries);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

        if (e->sent && !e->prepare && e->command == NULL) {
            n++;
        }
    }

    if (n) {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, n);
    }

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
}


/*
 * The query at the head of the pipeline runs past its time: the server
 * is asked to cancel it.  The connection takes no other batch: it goes
 * once its queries are over (the owner closes it on ..._DB_CLOSE), since
 * a late cancel request could hit the next query.  NGX_DECLINED: it
 * cannot be, close it now.
 */

ngx_int_t
ngx_http_replay_db_conn_cancel(ngx_http_replay_db_conn_t *pgc)
{
    ngx_queue_t                 *q;
    ngx_http_replay_db_entry_t  *e;

    if (pgc->pg == NULL || ngx_queue_empty(&pgc->entries)) {
        return NGX_DECLINED;
    }

    q = ngx_queue_head(&pgc->entries);
    e = ngx_queue_data(q, ngx_http_replay_db_entry_t, queue);

    e->timedout = 1;
    pgc->canceling = 1;
    pgc->cancelled = 1;

    if (pgc->cancel) {
        /* one request at a time: this one goes when that one is done */
        pgc->recancel = 1;
        return NGX_OK;
    }

    return ngx_http_replay_db_cancel_send(pgc);
}


static ngx_int_t
ngx_http_replay_db_cancel_send(ngx_http_replay_db_conn_t *pgc)
{
    ngx_pool_t                   *pool;
    ngx_http_replay_db_t         *db;
    ngx_http_replay_db_cancel_t  *cn;

    db = pgc->db;

    /* a server too slow to take cancel requests gets no more of them */

    if (db->ncancels >= db->max_conns) {
        ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                      "replay: %ui cancel requests to the database are "
                      "still out, closing the connection without one",
                      db->ncancels);
        return NGX_DECLINED;
    }

    /* its own pool: it may outlive the connection */

    pool = ngx_create_pool(NGX_HTTP_REPLAY_DB_POOL_SIZE, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_DECLINED;
    }

    cn = ngx_pcalloc(pool, sizeof(ngx_http_replay_db_cancel_t));
    if (cn == NULL) {
        ngx_destroy_pool(pool);
        return NGX_DECLINED;
    }

    cn->pgc = pgc;
    cn->db = db;
    cn->pool = pool;
    cn->handler = ngx_http_replay_db_cancel_done;

    if (ngx_http_replay_db_cancel_post(cn, pgc->pg, &pgc->log) != NGX_OK) {
        ngx_destroy_pool(pool);
        return NGX_DECLINED;
    }

    db->ncancels++;

    pgc->cancel = cn;
    pgc->log.action = "cancelling the key query";

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: cancelling the query of backend %d",
                   PQbackendPID(pgc->pg));

    return NGX_OK;
}


/* the cancel request is done, on the event loop */

static void
ngx_http_replay_db_cancel_done(ngx_http_replay_db_cancel_t *cn)
{
    u_char                      text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                      len;
    ngx_http_replay_db_conn_t  *pgc;

    pgc = cn->pgc;

    cn->db->ncancels--;

    if (!cn->ok) {
        len = ngx_http_replay_db_text(text, sizeof(text), cn->err, 0);

        ngx_log_error(NGX_LOG_WARN, pgc ? &pgc->log : ngx_cycle->log, 0,
                      "replay: the database did not take the cancel "
                      "request of database \"%V\": %*s",
                      &cn->db->name, len, text);

    } else {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "replay db: query cancelled");
    }

    ngx_destroy_pool(cn->pool);

    if (pgc == NULL) {
        return;
    }

    pgc->cancel = NULL;

    if (pgc->recancel && pgc->canceling) {
        /* another query of the batch timed out meanwhile */
        pgc->recancel = 0;

        /* else its deadline closes the connection */
        (void) ngx_http_replay_db_cancel_send(pgc);
    }
}


void
ngx_http_replay_db_conn_close(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_cancel_t  *cn;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: close, fd:%d",
                   pgc->pg ? PQsocket(pgc->pg) : -1);

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    if (pgc->timer.posted) {
        ngx_delete_posted_event(&pgc->timer);
    }

    if (pgc->send.posted) {
        ngx_delete_posted_event(&pgc->send);
    }

    if (pgc->resolving) {
        ngx_resolve_name_done(pgc->resolving);
        pgc->resolving = NULL;
    }

    /* a cancel request still out finds no connection when it is done */
    cn = pgc->cancel;

    if (cn) {
        cn->pgc = NULL;
    }

    /* PQfinish() closes the socket, which takes it off the event list */

    ngx_http_replay_db_unwatch(pgc, NGX_CLOSE_EVENT);

    if (pgc->pg) {
        PQfinish(pgc->pg);
    }

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

    c = ngx_get_connection(s, &pgc->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pgc;
    c->log = &pgc->log;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    c->read->handler = ngx_http_replay_db_handler;
    c->write->handler = ngx_http_replay_db_handler;
    c->read->log = c->log;
    c->write->log = c->log;

    if (pgc->job == NULL) {
        pgc->log.connection = c->number;
    }

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
    if (pgc->c) {
        ngx_http_replay_db_free_connection(pgc->c, flags);
        pgc->c = NULL;
    }
}


/* a connection of nginx's on a socket libpq owns: given back, not closed */

void
ngx_http_replay_db_free_connection(ngx_connection_t *c, ngx_uint_t flags)
{
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


/*
 * ", database: "host=... dbname=..."" after what the line says, then the
 * request's own context when the connection serves one
 */

static u_char *
ngx_http_replay_db_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char                     *p, *last;
    char                       *action;
    ngx_log_t                  *rlog;
    ngx_http_replay_db_conn_t  *pgc;

    pgc = log->data;
    p = buf;
    last = buf + len;

    if (log->action) {
        p = ngx_snprintf(p, last - p, " while %s", log->action);
    }

    p = ngx_snprintf(p, last - p, ", database: \"%V\"", &pgc->db->name);

    if (pgc->job && pgc->job->log->handler) {
        rlog = pgc->job->log;

        /* the request's log says what the request does: not here */
        action = rlog->action;
        rlog->action = NULL;

        p = rlog->handler(rlog, p, last - p);

        rlog->action = action;
    }

    return p;
}


static void
ngx_http_replay_db_notice(void *arg, const char *message)
{
    ngx_http_replay_db_conn_t *pgc = arg;

    u_char  text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t  len;

    len = ngx_http_replay_db_text(text, sizeof(text), message, 0);

    ngx_log_error(NGX_LOG_NOTICE, &pgc->log, 0,
                  "replay: database said: %*s", len, text);
}


/*
 * libpq's messages on one line, escaped: control characters, bytes
 * above ASCII and "\" as \xNN, so that nothing a server (or a row) says
 * can forge a log line.  With "redact", what they quote is left out but
 * for single characters: a conninfo they failed to parse may hold a
 * password.
 */

size_t
ngx_http_replay_db_text(u_char *buf, size_t size, const char *msg,
    ngx_uint_t redact)
{
    u_char      *p, *last, *q, ch;
    ngx_uint_t   space;

    static u_char  hex[] = "0123456789ABCDEF";

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

        if (ch < 0x20 || ch >= 0x7f || ch == '\\') {
            if (last - p < 4) {
                break;
            }

            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 0xf];
            continue;
        }

        *p++ = ch;
    }

    return p - buf;
}


static ngx_uint_t
ngx_http_replay_db_sqlstate(PGresult *res, const char **states)
{
    char        *state;
    ngx_uint_t   i;

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state == NULL) {
        return 0;
    }

    for (i = 0; states[i]; i++) {
        if (ngx_strcmp(state, states[i]) == 0) {
            return 1;
        }
    }

    return 0;
}
