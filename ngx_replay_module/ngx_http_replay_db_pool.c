
/*
 * The worker's pool of connections to one replay_db: idle connections
 * (most recently used first), busy ones, and a FIFO queue of the jobs
 * that wait for one, each with its timer.  The pool hands jobs to
 * connections and keeps their time; what a query says on the wire is
 * the connection's business (ngx_http_replay_db_conn.c).
 *
 * A job ends exactly once: its handler runs from a posted event, so that
 * whoever ends it (a connection's event, a timer) is back in a
 * consistent state first, and never from inside ngx_http_replay_db_run(),
 * which returns the status instead.  A job abandoned first never ends.
 */


#include "ngx_http_replay_db.h"
#include "ngx_http_replay_status.h"


static ngx_int_t ngx_http_replay_db_assign(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job);
static ngx_int_t ngx_http_replay_db_connect(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job);
static ngx_int_t ngx_http_replay_db_enqueue(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job);
static void ngx_http_replay_db_dispatch(ngx_http_replay_db_t *db);
static void ngx_http_replay_db_conn_handler(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t what);
static void ngx_http_replay_db_release(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_close(ngx_http_replay_db_conn_t *pgc);
static void ngx_http_replay_db_timeout(ngx_event_t *ev);
static void ngx_http_replay_db_wait_timeout(ngx_event_t *ev);
static void ngx_http_replay_db_finish(ngx_http_replay_db_job_t *job,
    ngx_int_t rc);
static void ngx_http_replay_db_job_done(ngx_event_t *ev);


/*
 * Gives the job a connection, or a place in the queue.  NGX_AGAIN: it
 * runs, and job->handler is called later; anything else is the status
 * the job ends with at once.
 */

ngx_int_t
ngx_http_replay_db_run(ngx_http_replay_db_t *db, ngx_http_replay_db_job_t *job)
{
    ngx_int_t  rc;

    job->rc = NGX_OK;
    job->rows = 0;

    job->wait.handler = ngx_http_replay_db_wait_timeout;
    job->wait.data = job;
    job->wait.log = job->log;

    job->done.handler = ngx_http_replay_db_job_done;
    job->done.data = job;
    job->done.log = job->log;

    job->sync = 1;

    /* first come, first served: behind others that wait, wait too */

    rc = (db->nwaiting == 0) ? ngx_http_replay_db_assign(db, job)
                             : NGX_DECLINED;

    if (rc == NGX_DECLINED) {
        rc = ngx_http_replay_db_enqueue(db, job);
    }

    job->sync = 0;

    if (job->finished) {
        return job->rc;
    }

    if (rc != NGX_AGAIN) {
        job->finished = 1;
        job->rc = rc;
    }

    return rc;
}


/* the job's owner is gone: nothing may point to the job any more */

void
ngx_http_replay_db_abandon(ngx_http_replay_db_job_t *job)
{
    if (job->queued) {
        ngx_queue_remove(&job->queue);
        job->query->db->nwaiting--;
        job->queued = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);
    }

    if (job->wait.timer_set) {
        ngx_del_timer(&job->wait);
    }

    if (job->done.posted) {
        ngx_delete_posted_event(&job->done);
    }

    if (job->conn) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, job->log, 0,
                       "replay db: request gone, connection goes on");

        ngx_http_replay_db_conn_detach(job->conn);
    }

    job->finished = 1;
}


/*
 * NGX_AGAIN: the job has a connection; NGX_DECLINED: the pool is busy;
 * anything else is the status to end with.
 */

static ngx_int_t
ngx_http_replay_db_assign(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job)
{
    ngx_queue_t                *q;
    ngx_http_replay_db_conn_t  *pgc;

    while (!ngx_queue_empty(&db->idle)) {

        q = ngx_queue_head(&db->idle);
        pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&db->busy, q);
        pgc->pooled = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_IDLE, -1);
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, 1);

        if (ngx_http_replay_db_conn_send(pgc, job) == NGX_OK) {
            ngx_add_timer(&pgc->timer, db->query_timeout);
            return NGX_AGAIN;
        }

        /* broken before the query left: it goes on another connection */

        ngx_http_replay_db_close(pgc);
    }

    if (db->nconns < db->max_conns) {
        return ngx_http_replay_db_connect(db, job);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_replay_db_connect(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job)
{
    ngx_http_replay_db_conn_t  *pgc;

    pgc = ngx_http_replay_db_conn_create(db);
    if (pgc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pgc->handler = ngx_http_replay_db_conn_handler;
    pgc->timer.handler = ngx_http_replay_db_timeout;

    ngx_queue_insert_tail(&db->busy, &pgc->queue);
    db->nconns++;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, 1);

    ngx_http_replay_db_conn_attach(pgc, job);

    /* resolving the names included */
    ngx_add_timer(&pgc->timer, db->connect_timeout);

    /* what happens next comes through the handler, maybe at once */
    ngx_http_replay_db_conn_connect(pgc);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_replay_db_enqueue(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job)
{
    if (db->nwaiting >= db->max_waiting) {
        ngx_log_error(NGX_LOG_ERR, job->log, 0,
                      "replay: lookup queue is full (%ui waiting) for "
                      "database \"%V\"", db->nwaiting, &db->name);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_queue_insert_tail(&db->waiting, &job->queue);
    db->nwaiting++;
    job->queued = 1;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, 1);

    ngx_add_timer(&job->wait, db->queue_timeout);

    return NGX_AGAIN;
}


/* serves the queue while the pool has room */

static void
ngx_http_replay_db_dispatch(ngx_http_replay_db_t *db)
{
    ngx_int_t                  rc;
    ngx_queue_t               *q;
    ngx_http_replay_db_job_t  *job;

    while (db->nwaiting
           && (!ngx_queue_empty(&db->idle) || db->nconns < db->max_conns))
    {
        q = ngx_queue_head(&db->waiting);
        job = ngx_queue_data(q, ngx_http_replay_db_job_t, queue);

        ngx_queue_remove(q);
        db->nwaiting--;
        job->queued = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);

        if (job->wait.timer_set) {
            ngx_del_timer(&job->wait);
        }

        rc = ngx_http_replay_db_assign(db, job);

        if (rc != NGX_AGAIN) {
            ngx_http_replay_db_finish(job,
                                      rc == NGX_DECLINED
                                      ? NGX_HTTP_SERVICE_UNAVAILABLE : rc);
        }
    }
}


/* what a connection says */

static void
ngx_http_replay_db_conn_handler(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t what)
{
    ngx_http_replay_db_t      *db;
    ngx_http_replay_db_job_t  *job;

    db = pgc->db;
    job = pgc->job;

    switch (what) {

    case NGX_HTTP_REPLAY_DB_CONNECTED:
        pgc->connected = 1;

        if (pgc->timer.timer_set) {
            ngx_del_timer(&pgc->timer);
        }

        if (job == NULL) {
            ngx_http_replay_db_release(pgc);
            break;
        }

        if (ngx_http_replay_db_conn_send(pgc, job) != NGX_OK) {
            ngx_http_replay_db_close(pgc);
            ngx_http_replay_db_finish(job, NGX_HTTP_SERVICE_UNAVAILABLE);
            break;
        }

        ngx_add_timer(&pgc->timer, db->query_timeout);
        return;

    case NGX_HTTP_REPLAY_DB_ANSWERED:
        if (job) {
            ngx_http_replay_db_conn_detach(pgc);
            ngx_http_replay_db_finish(job, job->rc);
        }

        return;

    case NGX_HTTP_REPLAY_DB_DONE:
        if (job) {
            ngx_http_replay_db_conn_detach(pgc);
            ngx_http_replay_db_finish(job, job->rc);
        }

        ngx_http_replay_db_release(pgc);
        break;

    default: /* NGX_HTTP_REPLAY_DB_CLOSE */

        /*
         * The connection logged why.  A query that has left may have
         * run: it is not sent again.
         */

        ngx_http_replay_db_close(pgc);

        if (job) {
            ngx_http_replay_db_finish(job, NGX_HTTP_SERVICE_UNAVAILABLE);
        }

        break;
    }

    ngx_http_replay_db_dispatch(db);
}


/* a connection is done with a job: to the idle list, or closed */

static void
ngx_http_replay_db_release(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_t  *db;

    db = pgc->db;

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    if (ngx_exiting || ngx_terminate
        || !ngx_http_replay_db_conn_reusable(pgc))
    {
        ngx_http_replay_db_close(pgc);
        return;
    }

    ngx_http_replay_db_conn_idle(pgc);

    ngx_queue_remove(&pgc->queue);
    ngx_queue_insert_head(&db->idle, &pgc->queue);
    pgc->pooled = 1;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, -1);
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_IDLE, 1);
}


static void
ngx_http_replay_db_close(ngx_http_replay_db_conn_t *pgc)
{
    ngx_queue_remove(&pgc->queue);
    pgc->db->nconns--;

    ngx_http_replay_stat(pgc->pooled ? NGX_HTTP_REPLAY_ST_DB_IDLE
                                     : NGX_HTTP_REPLAY_ST_DB_BUSY, -1);

    ngx_http_replay_db_conn_close(pgc);
}


/*
 * connect_timeout, query_timeout, or a cancel request that takes too
 * long.  A query past its time is cancelled before its connection goes:
 * closing alone leaves the server running it until it next writes.
 * Until then the connection keeps its place in the pool, so that the
 * server never runs more of the worker's queries than the pool allows.
 */

static void
ngx_http_replay_db_timeout(ngx_event_t *ev)
{
    ngx_uint_t                  level;
    ngx_http_replay_db_t       *db;
    ngx_http_replay_db_job_t   *job;
    ngx_http_replay_db_conn_t  *pgc;

    pgc = ev->data;
    db = pgc->db;
    job = pgc->job;
    level = job ? NGX_LOG_ERR : NGX_LOG_WARN;

    if (pgc->canceling) {
        ngx_log_error(NGX_LOG_WARN, &pgc->log, 0,
                      "replay: the cancel request is not done after %M ms, "
                      "closing the connection", db->connect_timeout);

    } else if (!pgc->connected) {
        ngx_log_error(level, &pgc->log, 0,
                      "replay: database connection timed out after %M ms",
                      db->connect_timeout);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES, 1);

        if (job) {
            ngx_http_replay_db_conn_detach(pgc);
            ngx_http_replay_db_finish(job, NGX_HTTP_SERVICE_UNAVAILABLE);
        }

    } else {
        ngx_log_error(level, &pgc->log, 0,
                      "replay: database query timed out after %M ms",
                      db->query_timeout);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_TIMEOUTS, 1);

        if (job) {
            ngx_http_replay_db_conn_detach(pgc);
            ngx_http_replay_db_finish(job, NGX_HTTP_GATEWAY_TIME_OUT);
        }

        if (ngx_http_replay_db_conn_cancel(pgc) == NGX_OK) {
            pgc->canceling = 1;
            ngx_add_timer(&pgc->timer, db->connect_timeout);
            return;
        }
    }

    ngx_http_replay_db_close(pgc);
    ngx_http_replay_db_dispatch(db);
}


static void
ngx_http_replay_db_wait_timeout(ngx_event_t *ev)
{
    ngx_http_replay_db_t      *db;
    ngx_http_replay_db_job_t  *job;

    job = ev->data;
    db = job->query->db;

    ngx_queue_remove(&job->queue);
    db->nwaiting--;
    job->queued = 0;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);

    ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                  "replay: no database connection was free within %M ms "
                  "for database \"%V\"", db->queue_timeout, &db->name);

    ngx_http_replay_db_finish(job, NGX_HTTP_SERVICE_UNAVAILABLE);
}


static void
ngx_http_replay_db_finish(ngx_http_replay_db_job_t *job, ngx_int_t rc)
{
    if (job->finished) {
        return;
    }

    job->finished = 1;
    job->rc = rc;

    if (job->sync) {
        /* ngx_http_replay_db_run() returns it */
        return;
    }

    ngx_post_event(&job->done, &ngx_posted_events);
}


static void
ngx_http_replay_db_job_done(ngx_event_t *ev)
{
    ngx_http_replay_db_job_t *job = ev->data;

    job->handler(job);
}


/* the worker goes: every connection of the pool is closed */

void
ngx_http_replay_db_close_all(ngx_http_replay_db_t *db)
{
    ngx_queue_t                *q;
    ngx_http_replay_db_job_t   *job;
    ngx_http_replay_db_conn_t  *pgc;

    while (!ngx_queue_empty(&db->waiting)) {
        q = ngx_queue_head(&db->waiting);
        job = ngx_queue_data(q, ngx_http_replay_db_job_t, queue);

        ngx_queue_remove(q);
        job->queued = 0;
    }

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING,
                         -(ngx_atomic_int_t) db->nwaiting);
    db->nwaiting = 0;

    while (!ngx_queue_empty(&db->busy)) {
        q = ngx_queue_head(&db->busy);
        pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

        ngx_http_replay_db_close(pgc);
    }

    while (!ngx_queue_empty(&db->idle)) {
        q = ngx_queue_head(&db->idle);
        pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

        ngx_http_replay_db_close(pgc);
    }
}
