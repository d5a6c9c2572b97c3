
/*
 * A LISTEN connection of the worker.
 *
 * One connection of its own to a replay_db, outside its pool, runs
 * "LISTEN channel" and then only waits: each NOTIFY on the channel goes
 * to ls->notify(ls, payload).  PostgreSQL keeps no notification for a
 * listener that is not there, so each time the connection is listening
 * (again), ls->listening(ls) is told: what was sent meanwhile is lost.  A
 * connection that fails or breaks is made again after 1 s, then 2, 4, up
 * to 30 s.  Its timers are cancelable: a worker that shuts down does not
 * wait for them.
 */


#include "ngx_http_replay_db.h"


#define NGX_HTTP_REPLAY_DB_LISTEN_RETRY      1000
#define NGX_HTTP_REPLAY_DB_LISTEN_RETRY_MAX  30000


static void ngx_http_replay_db_listen_connect(ngx_http_replay_db_listen_t *ls);
static void ngx_http_replay_db_listen_handler(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t what);
static void ngx_http_replay_db_listen_timeout(ngx_event_t *ev);
static void ngx_http_replay_db_listen_retry(ngx_event_t *ev);
static void ngx_http_replay_db_listen_lost(ngx_http_replay_db_listen_t *ls);


ngx_int_t
ngx_http_replay_db_listen_start(ngx_http_replay_db_listen_t *ls)
{
    u_char  *p;

    /* the channel is a plain name (checked with the configuration) */

    p = ngx_pnalloc(ngx_cycle->pool, sizeof("LISTEN ") + ls->channel.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ls->command = (char *) p;
    p = ngx_cpymem(p, "LISTEN ", sizeof("LISTEN ") - 1);
    p = ngx_cpymem(p, ls->channel.data, ls->channel.len);
    *p = '\0';

    ls->retry.handler = ngx_http_replay_db_listen_retry;
    ls->retry.data = ls;
    ls->retry.log = ngx_cycle->log;
    ls->retry.cancelable = 1;

    ls->backoff = NGX_HTTP_REPLAY_DB_LISTEN_RETRY;

    ngx_http_replay_db_listen_connect(ls);

    return NGX_OK;
}


void
ngx_http_replay_db_listen_stop(ngx_http_replay_db_listen_t *ls)
{
    if (ls->retry.timer_set) {
        ngx_del_timer(&ls->retry);
    }

    if (ls->pgc) {
        ngx_http_replay_db_conn_close(ls->pgc);
        ls->pgc = NULL;
    }

    ls->up = 0;
}


static void
ngx_http_replay_db_listen_connect(ngx_http_replay_db_listen_t *ls)
{
    ngx_http_replay_db_conn_t  *pgc;

    pgc = ngx_http_replay_db_conn_create(ls->db);

    if (pgc == NULL
        || ngx_http_replay_db_conn_command(pgc, ls->command) != NGX_OK)
    {
        if (pgc) {
            ngx_http_replay_db_conn_close(pgc);
        }

        ngx_http_replay_db_listen_lost(ls);
        return;
    }

    pgc->handler = ngx_http_replay_db_listen_handler;
    pgc->data = ls;
    pgc->nopipeline = 1;

    pgc->timer.handler = ngx_http_replay_db_listen_timeout;
    pgc->timer.cancelable = 1;

    ls->pgc = pgc;

    /* connecting and the LISTEN itself */
    ngx_add_timer(&pgc->timer, ls->db->connect_timeout);

    /* what happens next comes through the handler, maybe at once */
    ngx_http_replay_db_conn_connect(pgc);
}


static void
ngx_http_replay_db_listen_handler(ngx_http_replay_db_conn_t *pgc,
    ngx_uint_t what)
{
    ngx_str_t                     payload;
    ngx_uint_t                    level;
    ngx_http_replay_db_listen_t  *ls;

    ls = pgc->data;

    switch (what) {

    case NGX_HTTP_REPLAY_DB_CONNECTED:
        pgc->connected = 1;
        return;

    case NGX_HTTP_REPLAY_DB_DONE:

        /* the LISTEN has run: waits, idle, for notifications */

        if (pgc->timer.timer_set) {
            ngx_del_timer(&pgc->timer);
        }

        ngx_http_replay_db_conn_idle(pgc);
        pgc->log.action = "listening for notifications";

        ls->up = 1;
        ls->backoff = NGX_HTTP_REPLAY_DB_LISTEN_RETRY;

        level = ls->failed ? NGX_LOG_NOTICE : NGX_LOG_INFO;

        ngx_log_error(level, &pgc->log, 0,
                      "replay: listening on channel \"%V\"", &ls->channel);

        ls->failed = 0;
        ls->listening(ls, NULL);
        return;

    case NGX_HTTP_REPLAY_DB_NOTIFY:
        payload.data = (u_char *) pgc->notify->extra;
        payload.len = ngx_strlen(payload.data);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &pgc->log, 0,
                       "replay db: notification on \"%s\": \"%V\"",
                       pgc->notify->relname, &payload);

        ls->notify(ls, &payload);
        return;

    default: /* NGX_HTTP_REPLAY_DB_CLOSE, broken: the connection said why */
        ngx_http_replay_db_listen_lost(ls);
        return;
    }
}


static void
ngx_http_replay_db_listen_timeout(ngx_event_t *ev)
{
    ngx_http_replay_db_conn_t    *pgc;
    ngx_http_replay_db_listen_t  *ls;

    pgc = ev->data;
    ls = pgc->data;

    ngx_log_error(NGX_LOG_ERR, &pgc->log, 0,
                  "replay: the LISTEN on channel \"%V\" did not run within "
                  "%M ms", &ls->channel, ls->db->connect_timeout);

    ngx_http_replay_db_listen_lost(ls);
}


static void
ngx_http_replay_db_listen_retry(ngx_event_t *ev)
{
    ngx_http_replay_db_listen_connect(ev->data);
}


/* the connection goes; another one is made, later, unless the worker goes */

static void
ngx_http_replay_db_listen_lost(ngx_http_replay_db_listen_t *ls)
{
    if (ls->pgc) {
        ngx_http_replay_db_conn_close(ls->pgc);
        ls->pgc = NULL;
    }

    ls->up = 0;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!ls->failed) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "replay: not listening on channel \"%V\" of database "
                      "\"%V\", trying again in %M ms", &ls->channel,
                      &ls->db->name, ls->backoff);
        ls->failed = 1;
    }

    ngx_add_timer(&ls->retry, ls->backoff);

    ls->backoff = ngx_min(ls->backoff * 2,
                          NGX_HTTP_REPLAY_DB_LISTEN_RETRY_MAX);
}
