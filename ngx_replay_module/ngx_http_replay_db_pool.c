
/*
 * The worker's pool of connections to one replay_db: idle connections
 * (most recently used first), busy ones, and a FIFO queue of the jobs
 * that wait for one, each with its timer.  The pool hands jobs to
 * connections and keeps their time; what a query says on the wire is
 * the connection's business (ngx_http_replay_db_conn.c).
 *
 * A connection runs one batch at a time: the jobs given to it before the
 * batch leaves (the same turn of the event loop, at most "pipeline" of
 * them), sent together in libpq's pipeline mode.  A job that arrives
 * joins the batch being formed, or starts one on an idle connection, or
 * a new connection while the pool has room, or waits in the queue; a
 * connection done with its batch takes the next one from the queue.
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
static ngx_uint_t ngx_http_replay_db_room(ngx_http_replay_db_t *db);
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

        ngx_http_replay_db_conn_detach(job->conn, job);
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
    ngx_int_t                   rc;
    ngx_queue_t                *q;
    ngx_http_replay_db_conn_t  *pgc;

    /* a batch that has not left yet takes it */

    pgc = db->filling;

    if (pgc && pgc->open && pgc->njobs < db->pipeline) {
        if (ngx_http_replay_db_conn_add(pgc, job) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (!job->wait.timer_set && job->entry
            && &job->entry->queue != ngx_queue_head(&pgc->entries))
        {
            /* behind others of its batch until the server starts on it */
            ngx_add_timer(&job->wait, db->queue_timeout);
        }

        return NGX_AGAIN;
    }

    while (!ngx_queue_empty(&db->idle)) {

        q = ngx_queue_head(&db->idle);
        pgc = ngx_queue_data(q, ngx_http_replay_db_conn_t, queue);

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&db->busy, q);
        pgc->pooled = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_IDLE, -1);
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, 1);

        rc = ngx_http_replay_db_conn_add(pgc, job);

        if (rc == NGX_OK) {
            if (pgc->open) {
                db->filling = pgc;
            }

            return NGX_AGAIN;
        }

        /* broken before the query left: it goes on another connection */

        ngx_http_replay_db_close(pgc);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
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

    if (ngx_http_replay_db_conn_add(pgc, job) != NGX_OK) {
        ngx_http_replay_db_conn_close(pgc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_queue_insert_tail(&db->busy, &pgc->queue);
    db->nconns++;

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_BUSY, 1);

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


/* whether a job of the queue would get a connection now */

static ngx_uint_t
ngx_http_replay_db_room(ngx_http_replay_db_t *db)
{
    return (db->filling && db->filling->open
            && db->filling->njobs < db->pipeline)
           || !ngx_queue_empty(&db->idle)
           || db->nconns < db->max_conns;
}


/* serves the queue while the pool has room */

static void
ngx_http_replay_db_dispatch(ngx_http_replay_db_t *db)
{
    ngx_int_t                  rc;
    ngx_queue_t               *q;
    ngx_http_replay_db_job_t  *job;

    while (db->nwaiting && ngx_http_replay_db_room(db)) {

        q = ngx_queue_head(&db->waiting);
        job = ngx_queue_data(q, ngx_http_replay_db_job_t, queue);

        ngx_queue_remove(q);
        db->nwaiting--;
        job->queued = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);

        /* its queue_timeout runs on until the server starts on it */

        rc = ngx_http_replay_db_assign(db, job);

        if (rc != NGX_AGAIN) {
            if (job->wait.timer_set) {
                ngx_del_timer(&job->wait);
            }

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

    switch (what) {

    case NGX_HTTP_REPLAY_DB_CONNECTED:
        pgc->connected = 1;

        if (pgc->timer.timer_set) {
            ngx_del_timer(&pgc->timer);
        }

        if (pgc->open) {
            /* the queue's jobs join the first batch */
            db->filling = pgc;
        }

        break;

    case NGX_HTTP_REPLAY_DB_ANSWERED:
        job = pgc->job;

        if (job) {
            ngx_http_replay_db_conn_detach(pgc, job);
            ngx_http_replay_db_finish(job, job->rc);
        }

        return;

    case NGX_HTTP_REPLAY_DB_DONE:
        ngx_http_replay_db_release(pgc);
        break;

    case NGX_HTTP_REPLAY_DB_NOTIFY:
        return;

    case NGX_HTTP_REPLAY_DB_RETRY:
        job = pgc->job;

        if (job == NULL) {
            return;
        }

        /* first in the queue: it came first; this connection is going */

        ngx_http_replay_db_conn_detach(pgc, job);

        job->retries++;
        job->rc = NGX_OK;
        job->rows = 0;

        ngx_queue_insert_head(&db->waiting, &job->queue);
        db->nwaiting++;
        job->queued = 1;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, 1);

        if (job->wait.timer_set) {
            ngx_del_timer(&job->wait);
        }

        ngx_add_timer(&job->wait, db->queue_timeout);

        break;

    default: /* NGX_HTTP_REPLAY_DB_CLOSE */

        /*
         * The connection logged why.  A query that has left may have
         * run: it is not sent again.
         */

        ngx_http_replay_db_close(pgc);
        break;
    }

    ngx_http_replay_db_dispatch(db);
}


/* a connection is done with its batch: to the idle list, or closed */

static void
ngx_http_replay_db_release(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_t  *db;

    db = pgc->db;

    if (pgc->timer.timer_set) {
        ngx_del_timer(&pgc->timer);
    }

    if (db->filling == pgc) {
        db->filling = NULL;
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


/* a connection goes: the jobs still on it end with 503 */

static void
ngx_http_replay_db_close(ngx_http_replay_db_conn_t *pgc)
{
    ngx_http_replay_db_job_t  *job;

    while ((job = ngx_http_replay_db_conn_take(pgc)) != NULL) {
        if (job->wait.timer_set) {
            ngx_del_timer(&job->wait);
        }

        ngx_http_replay_db_finish(job, NGX_HTTP_SERVICE_UNAVAILABLE);
    }

    if (pgc->db->filling == pgc) {
        pgc->db->filling = NULL;
    }

    ngx_queue_remove(&pgc->queue);
    pgc->db->nconns--;

    ngx_http_replay_stat(pgc->pooled ? NGX_HTTP_REPLAY_ST_DB_IDLE
                                     : NGX_HTTP_REPLAY_ST_DB_BUSY, -1);

    ngx_http_replay_db_conn_close(pgc);
}


/*
 * connect_timeout, query_timeout of the query at the head of the
 * connection's pipeline, or a cancel request that takes too long.  A
 * query past its time is cancelled before its connection goes: closing
 * alone leaves the server running it until it next writes.  Until then
 * the connection keeps its place in the pool, so that the server never
 * runs more of the worker's queries than the pool allows; the queries
 * behind it in its batch go on, each with its own query_timeout.
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

    } else {
        ngx_log_error(level, &pgc->log, 0,
                      "replay: database query timed out after %M ms",
                      db->query_timeout);

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_QUERY_TIMEOUTS, 1);

        if (job) {
            ngx_http_replay_db_conn_detach(pgc, job);
            ngx_http_replay_db_finish(job, NGX_HTTP_GATEWAY_TIME_OUT);
        }

        if (ngx_http_replay_db_conn_cancel(pgc) == NGX_OK) {
            ngx_add_timer(&pgc->timer, db->connect_timeout);
            return;
        }
    }

    ngx_http_replay_db_close(pgc);
    ngx_http_replay_db_dispatch(db);
}


/* queue_timeout: in the queue, or behind other queries of its batch */

static void
ngx_http_replay_db_wait_timeout(ngx_event_t *ev)
{
    ngx_http_replay_db_t      *db;
    ngx_http_replay_db_job_t  *job;

    job = ev->data;
    db = job->query->db;

    if (job->queued) {
        ngx_queue_remove(&job->queue);
        db->nwaiting--;
        job->queued = 0;

        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_DB_WAITING, -1);

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "replay: no database connection was free within %M ms "
                      "for database \"%V\"", db->queue_timeout, &db->name);

    } else {
        /* its query is out, behind a slow one: it runs, unheard */

        if (job->conn) {
            ngx_http_replay_db_conn_detach(job->conn, job);
        }

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "replay: no database connection was free within %M ms "
                      "for database \"%V\" (the query waited behind "
                      "another of its connection)",
                      db->queue_timeout, &db->name);
    }

    ngx_http_replay_db_finish(job, NGX_HTTP_SERVICE_UNAVAILABLE);
}


static void
ngx_http_replay_db_finish(ngx_http_replay_db_job_t *job, ngx_int_t rc)
{
    if (job->finished) {
        return;
    }

    if (job->wait.timer_set) {
        ngx_del_timer(&job->wait);
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
