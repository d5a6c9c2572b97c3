
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
 * The connection tells its pool what happened through pgc->handler; it
 * knows nothing of requests.
 */


#include "ngx_http_replay_db.h"
#include "ngx_http_replay_status.h"

#include <openssl/ssl.h>


#define NGX_HTTP_REPLAY_DB_RESOLVING   0
#define NGX_HTTP_REPLAY_DB_CONNECTING  1
#define NGX_HTTP_REPLAY_DB_IDLE        2
#define NGX_HTTP_REPLAY_DB_PREPARING   3
#define NGX_HTTP_REPLAY_DB_QUERYING    4
#define NGX_HTTP_REPLAY_DB_CANCELING   5

#define NGX_HTTP_REPLAY_DB_POOL_SIZE   1024




static void ngx_http_replay_db_resolve(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_replay_db_start(ngx_http_replay_db_conn_t *pgc,
    const char **keywords, const char **values);
static void ngx_http_replay_db_connect_step(ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_send(ngx_http_replay_db_conn_t *pgc);
static ngx_int_t ngx_http_replay_db_flush(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_handler(ngx_event_t *ev);
static void ngx_http_replay_db_idle_event(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_process(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t write);
static ngx_int_t ngx_http_replay_db_consume(PGconn *pg);
static void ngx_http_replay_db_result(ngx_http_replay_db_conn_t *pgc,
    PGresult *res);
static void ngx_http_replay_db_end_of_command(
    ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_failed(ngx_http_replay_db_conn_t *pgc,
    const char *what);
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
static void ngx_http_replay_db_cancel_read(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t write);
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

    pgc->state = NGX_HTTP_REPLAY_DB_RESOLVING;

    return pgc;
}


/* a job's lines name its request, and its lines the database */

void
ngx_http_replay_db_conn_attach(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job)
{
    pgc->job = job;
    job->conn = pgc;
    pgc->log.connection = job->log->connection;
}


void
ngx_http_replay_db_conn_detach(ngx_http_replay_db_conn_t *pgc)
{
    if (pgc->job) {
        pgc->job->conn = NULL;
        pgc->job = NULL;
    }

    pgc->log.connection = pgc->c ? pgc->c->number : 0;
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

    pgc->entries = ngx_array_create(pgc->pool, db->hosts->nelts,
                                    sizeof(ngx_http_replay_db_host_t));
    if (pgc->entries == NULL) {
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

        e = ngx_array_push(pgc->entries);
        if (e == NULL) {
            ngx_http_replay_db_failed(pgc, NULL);
            return;
        }

        *e = h[pgc->host];
    }

    if (pgc->entries->nelts == 0) {
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

    e = pgc->entries->elts;
    len = 0;

    for (i = 0; i < pgc->entries->nelts; i++) {
        len += e[i].host.len + e[i].hostaddr.len + e[i].port.len + 3;
    }

    p = ngx_pnalloc(pgc->pool, len);
    if (p == NULL) {
        ngx_http_replay_db_failed(pgc, NULL);
        return;
    }

    keywords[n] = "host";
    values[n] = (char *) p;

    for (i = 0; i < pgc->entries->nelts; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &e[i].host);
    }

    *p++ = '\0';

    keywords[n + 1] = "hostaddr";
    values[n + 1] = (char *) p;

    for (i = 0; i < pgc->entries->nelts; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &e[i].hostaddr);
    }

    *p++ = '\0';

    keywords[n + 2] = "port";
    values[n + 2] = (char *) p;

    for (i = 0; i < pgc->entries->nelts; i++) {
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
            e = ngx_array_push(pgc->entries);
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
                pgc->entries->nelts--;
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

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECTS, 1);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: connected, fd:%d, backend:%d, ssl:%d",
                   PQsocket(pgc->pg), PQbackendPID(pgc->pg),
                   PQsslInUse(pgc->pg));

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CONNECTED);
    return;

failed:

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);
    ngx_http_replay_db_failed(pgc, "database connection failed");
}


/*
 * Sends the job's query.  NGX_ERROR: the connection is broken and
 * nothing of the query has left (it is safe to send it elsewhere).
 */

ngx_int_t
ngx_http_replay_db_conn_send(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job)
{
    u_char  text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t  len;

    ngx_http_replay_db_conn_attach(pgc, job);

    /*
     * A pooled connection whose server has gone may not have said so to
     * the event loop yet: a read now tells, before anything is sent.
     */

    if (pgc->state == NGX_HTTP_REPLAY_DB_IDLE
        && (ngx_http_replay_db_consume(pgc->pg) != NGX_OK
            || PQstatus(pgc->pg) != CONNECTION_OK))
    {
        goto failed;
    }

    pgc->c->idle = 0;
    pgc->query = job->query;
    pgc->rows = 0;
    pgc->status = NGX_OK;
    pgc->sent = 0;
    pgc->got_result = 0;
    pgc->answered = 0;
    pgc->resend = 0;

    if (ngx_http_replay_db_send(pgc) == NGX_OK) {
        return NGX_OK;
    }

failed:

    len = ngx_http_replay_db_text(text, sizeof(text),
                                  PQerrorMessage(pgc->pg), 0);

    ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                  "replay: database connection failed before the query "
                  "left: %*s", len, text);

    return NGX_ERROR;
}


/* prepares the statement first if it is to be and this connection has not */

static ngx_int_t
ngx_http_replay_db_send(ngx_http_replay_db_conn_t *pgc)
{
    int                          ok;
    ngx_http_replay_db_t        *db;
    ngx_http_replay_db_job_t    *job;
    ngx_http_replay_db_query_t  *q;

    db = pgc->db;
    job = pgc->job;
    q = pgc->query;

    if (job == NULL) {
        return NGX_ERROR;
    }

    pgc->log.action = "sending the key query to the database";

    if (db->prepare && !db->unnamed && !pgc->prepared[q->index]) {
        ok = PQsendPrepare(pgc->pg, q->name, q->sql, (int) q->nparams, NULL);
        pgc->state = NGX_HTTP_REPLAY_DB_PREPARING;

    } else {
        if (db->prepare && !db->unnamed) {
            ok = PQsendQueryPrepared(pgc->pg, q->name, (int) q->nparams,
                                     job->values, NULL, NULL, 0);

        } else {
            /* the unnamed statement: parse, bind, execute in one message */
            ok = PQsendQueryParams(pgc->pg, q->sql, (int) q->nparams, NULL,
                                   job->values, NULL, NULL, 0);
        }

        ok = ok && PQsetSingleRowMode(pgc->pg);
        pgc->state = NGX_HTTP_REPLAY_DB_QUERYING;
    }

    /*
     * libpq writes what it can at once: a failed send left nothing
     * complete on the wire, a successful one may have been run.
     */

    if (!ok) {
        return NGX_ERROR;
    }

    pgc->sent = 1;
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


/* the connection waits for the next job */

void
ngx_http_replay_db_conn_idle(ngx_http_replay_db_conn_t *pgc)
{
    pgc->state = NGX_HTTP_REPLAY_DB_IDLE;
    pgc->query = NULL;
    pgc->c->idle = 1;
    pgc->log.action = "keeping the database connection";

    ngx_http_replay_db_conn_detach(pgc);
}


ngx_uint_t
ngx_http_replay_db_conn_reusable(ngx_http_replay_db_conn_t *pgc)
{
    return pgc->pg
           && pgc->c
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

    case NGX_HTTP_REPLAY_DB_CANCELING:
        ngx_http_replay_db_cancel_read(pgc, ev->write);
        return;

    default:
        ngx_http_replay_db_process(pgc, ev->write);
        return;
    }
}


/*
 * An idle connection is readable: the server went away (a restart, an
 * administrator), or said something in passing; or the worker is
 * shutting down (c->close).
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


static void
ngx_http_replay_db_result(ngx_http_replay_db_conn_t *pgc, PGresult *res)
{
    u_char                     text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                     len;
    ExecStatusType             st;
    ngx_http_replay_db_job_t  *job;

    job = pgc->job;
    st = PQresultStatus(res);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: result %s, state:%ui",
                   PQresStatus(st), pgc->state);

    if (pgc->state == NGX_HTTP_REPLAY_DB_PREPARING) {

        if (st == PGRES_FATAL_ERROR
            && ngx_http_replay_db_sqlstate(res, ngx_http_replay_db_duplicate))
        {
            /* the same name is the same query: see the configuration */
            PQclear(res);
            return;
        }

        if (st != PGRES_COMMAND_OK && pgc->status == NGX_OK) {
            len = ngx_http_replay_db_text(text, sizeof(text),
                                          PQresultErrorMessage(res), 0);

            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
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

        if (job == NULL || pgc->answered) {
            break;
        }

        job->rows = pgc->rows;

        if (pgc->rows == 1) {
            if (pgc->status == NGX_OK) {
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
        pgc->answered = 1;

        pgc->handler(pgc, NGX_HTTP_REPLAY_DB_ANSWERED);
        return;

    case PGRES_TUPLES_OK:
        break;

    case PGRES_FATAL_ERROR:
        if (pgc->status != NGX_OK) {
            break;
        }

        if (pgc->db->prepare && !pgc->db->unnamed
            && ngx_http_replay_db_sqlstate(res,
                                           ngx_http_replay_db_no_statement))
        {
            /*
             * A statement prepared on this connection is gone: a pooler
             * in transaction mode sends each statement to any server
             * connection.  Nothing ran; the query goes again, unnamed,
             * and so do all of this worker's from now on.
             */

            ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                          "replay: prepared statements do not last on "
                          "this database's connections (a pooler in "
                          "transaction mode?); using unnamed statements "
                          "(replay_db ... prepare=off says so at once)");

            pgc->db->unnamed = 1;
            pgc->resend = 1;
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
            pgc->status = NGX_HTTP_BAD_REQUEST;

        } else {
            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: database query failed: %*s", len, text);
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    case PGRES_COMMAND_OK:
        if (pgc->status == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: the key query returned no rows at all; "
                          "it must be a SELECT or have a RETURNING clause");
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;

    default:
        if (pgc->status == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                          "replay: unexpected database result %s",
                          PQresStatus(st));
            ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
            pgc->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        break;
    }

    PQclear(res);
}


static void
ngx_http_replay_db_end_of_command(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_job_t  *job;

    job = pgc->job;

    if (pgc->state == NGX_HTTP_REPLAY_DB_PREPARING
        && pgc->status == NGX_OK)
    {
        pgc->prepared[pgc->query->index] = 1;

        if (job) {
            if (ngx_http_replay_db_send(pgc) != NGX_OK) {
                ngx_http_replay_db_failed(pgc, "database connection failed");
            }

            return;
        }

    } else if (pgc->resend && job) {
        pgc->resend = 0;
        pgc->rows = 0;
        pgc->got_result = 0;

        if (ngx_http_replay_db_send(pgc) != NGX_OK) {
            ngx_http_replay_db_failed(pgc, "database connection failed");
        }

        return;
    }

    if (job && !pgc->answered && job->rc == NGX_OK) {
        job->rc = pgc->status;
    }

    pgc->query = NULL;

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_DONE);
}


/* logs libpq's error, if asked to, and tells the pool to close it */

static void
ngx_http_replay_db_failed(ngx_http_replay_db_conn_t *pgc, const char *what)
{
    u_char      text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t      len;
    ngx_uint_t  level;

    if (what) {
        len = pgc->pg ? ngx_http_replay_db_text(text, sizeof(text),
                                                PQerrorMessage(pgc->pg), 0)
                      : 0;

        level = (pgc->job || pgc->state != NGX_HTTP_REPLAY_DB_IDLE)
                ? NGX_LOG_ERR : NGX_LOG_WARN;

        ngx_log_error(level, &pgc->log, 0, "replay: %s: %*s", what, len, text);
    }

    if (pgc->query) {
        /* a query it was running has failed */
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS, 1);
    }

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
}


/*
 * A query runs past its time: the server is asked to cancel it, and the
 * connection goes once it has been (the pool closes it on
 * NGX_HTTP_REPLAY_DB_CLOSE).  NGX_DECLINED: it cannot be, close it now.
 */

ngx_int_t
ngx_http_replay_db_conn_cancel(ngx_http_replay_db_conn_t *pgc)
{
    ngx_pool_t                   *pool;
    ngx_http_replay_db_t         *db;
    ngx_http_replay_db_cancel_t  *cn;

    db = pgc->db;

    if (pgc->pg == NULL) {
        return NGX_DECLINED;
    }

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

    cn->cancel = PQgetCancel(pgc->pg);
    if (cn->cancel == NULL) {
        ngx_destroy_pool(pool);
        return NGX_DECLINED;
    }

    cn->pgc = pgc;
    cn->db = db;
    cn->pool = pool;
    cn->handler = ngx_http_replay_db_cancel_done;

    if (ngx_http_replay_db_cancel_post(cn, &pgc->log) != NGX_OK) {
        PQfreeCancel(cn->cancel);
        ngx_destroy_pool(pool);
        return NGX_DECLINED;
    }

    db->ncancels++;

    pgc->cancel = cn;
    pgc->state = NGX_HTTP_REPLAY_DB_CANCELING;
    pgc->log.action = "cancelling the key query";

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: cancelling the query of backend %d",
                   PQbackendPID(pgc->pg));

    return NGX_OK;
}


/*
 * While the cancel request is out, the connection reads what is left of
 * the query's answer, and drops it.  It goes once both are done: when
 * the server has said the query is over, the backend no longer runs it.
 */

static void
ngx_http_replay_db_cancel_read(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t write)
{
    PGresult  *res;

    if (!write && ngx_http_replay_db_consume(pgc->pg) != NGX_OK) {
        goto failed;
    }

    if (pgc->flushing && ngx_http_replay_db_flush(pgc) != NGX_OK) {
        goto failed;
    }

    while (!pgc->over && !PQisBusy(pgc->pg)) {
        res = PQgetResult(pgc->pg);

        if (res == NULL) {
            pgc->over = 1;
            break;
        }

        PQclear(res);
    }

    if (!pgc->over) {
        if (PQstatus(pgc->pg) != CONNECTION_OK) {
            goto failed;
        }

        return;
    }

    if (pgc->cancel) {
        /* nothing more to read: no events until the request is done */
        if (ngx_http_replay_db_events(pgc, 0, 0) != NGX_OK) {
            goto failed;
        }

        return;
    }

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
    return;

failed:

    pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
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

    PQfreeCancel(cn->cancel);
    ngx_destroy_pool(cn->pool);

    if (pgc) {
        pgc->cancel = NULL;

        if (pgc->over) {
            pgc->handler(pgc, NGX_HTTP_REPLAY_DB_CLOSE);
        }
    }
}


void
ngx_http_replay_db_conn_close(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_cancel_t  *cn;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                   "replay db: close, fd:%d",
                   pgc->pg ? PQsocket(pgc->pg) : -1);

    ngx_http_replay_db_conn_detach(pgc);

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    if (pgc->timer.posted) {
        ngx_delete_posted_event(&pgc->timer);
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
