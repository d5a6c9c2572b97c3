
/*
 * Cancel requests, without blocking the worker.
 *
 * libpq 17 and later: a cancel connection of libpq's (PQcancelCreate(),
 * PQcancelStart(), PQcancelPoll()) on nginx's events, as the query's
 * connection is; it goes to the address the query's connection reached,
 * over TLS when that one is, and is bounded by the database's
 * connect_timeout.
 *
 * Before 17, libpq cancels a query only with PQcancel(), which connects
 * to the server, sends the backend's key and waits for the server to
 * close: it blocks.  It is documented to be safe from another thread (it
 * is meant for signal handlers: no allocation, no shared state), so a
 * worker runs its cancel requests on one thread of its own, started at
 * the first one: a worker that never cancels has no thread.  The thread
 * only calls PQcancel(); it hands each request back through a pipe whose
 * read end is on nginx's event loop, where the request's handler runs.
 * nginx's own thread pool would do, but it starts its 32 threads in
 * every worker at start-up, for cancels that are rare.
 */


#include "ngx_http_replay_db.h"


#if (NGX_HTTP_REPLAY_DB_ASYNC_CANCEL)

static ngx_int_t ngx_http_replay_db_cancel_watch(
    ngx_http_replay_db_cancel_t *cn, PostgresPollingStatusType st);
static void ngx_http_replay_db_cancel_handler(ngx_event_t *ev);
static void ngx_http_replay_db_cancel_timeout(ngx_event_t *ev);
static void ngx_http_replay_db_cancel_end(ngx_http_replay_db_cancel_t *cn,
    int ok, const char *err);


/* the requests out, for the worker's exit */
static ngx_queue_t  ngx_http_replay_db_cancels;
static ngx_uint_t   ngx_http_replay_db_cancels_init;


/* starts a cancel request: cn->handler(cn) runs on the event loop later */

ngx_int_t
ngx_http_replay_db_cancel_post(ngx_http_replay_db_cancel_t *cn, PGconn *pg,
    ngx_log_t *log)
{
    u_char  text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t  len;

    if (!ngx_http_replay_db_cancels_init) {
        ngx_queue_init(&ngx_http_replay_db_cancels);
        ngx_http_replay_db_cancels_init = 1;
    }

    cn->cancel = PQcancelCreate(pg);
    if (cn->cancel == NULL) {
        return NGX_ERROR;
    }

    if (PQcancelStatus(cn->cancel) == CONNECTION_BAD
        || !PQcancelStart(cn->cancel))
    {
        len = ngx_http_replay_db_text(text, sizeof(text),
                                      PQcancelErrorMessage(cn->cancel), 0);

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "replay: cannot start a cancel request to database "
                      "\"%V\": %*s", &cn->db->name, len, text);

        PQcancelFinish(cn->cancel);
        cn->cancel = NULL;
        return NGX_ERROR;
    }

    /* as after PQconnectStart(): the socket is to be writable first */

    if (ngx_http_replay_db_cancel_watch(cn, PGRES_POLLING_WRITING) != NGX_OK) {
        if (cn->c) {
            ngx_http_replay_db_free_connection(cn->c, 0);
            cn->c = NULL;
        }

        PQcancelFinish(cn->cancel);
        cn->cancel = NULL;
        return NGX_ERROR;
    }

    cn->timer.handler = ngx_http_replay_db_cancel_timeout;
    cn->timer.data = cn;
    cn->timer.log = ngx_cycle->log;

    ngx_add_timer(&cn->timer, cn->db->connect_timeout);

    ngx_queue_insert_tail(&ngx_http_replay_db_cancels, &cn->queue);

    return NGX_OK;
}


/* level-triggered on the one event libpq waits for, as the query's */

static ngx_int_t
ngx_http_replay_db_cancel_watch(ngx_http_replay_db_cancel_t *cn,
    PostgresPollingStatusType st)
{
    ngx_socket_t       s;
    ngx_event_t       *on, *off;
    ngx_connection_t  *c;

    s = PQcancelSocket(cn->cancel);

    if (s == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    /*
     * libpq may have closed its socket and opened another (e.g. without
     * TLS, again): the closed one left epoll with its close
     */

    if (cn->c && cn->c->fd != s) {
        ngx_http_replay_db_free_connection(cn->c, NGX_CLOSE_EVENT);
        cn->c = NULL;
    }

    if (cn->c == NULL) {
        c = ngx_get_connection(s, ngx_cycle->log);
        if (c == NULL) {
            return NGX_ERROR;
        }

        c->data = cn;
        c->read->handler = ngx_http_replay_db_cancel_handler;
        c->write->handler = ngx_http_replay_db_cancel_handler;
        c->read->log = c->log;
        c->write->log = c->log;

        cn->c = c;
    }

    c = cn->c;

    if (st == PGRES_POLLING_READING) {
        on = c->read;
        off = c->write;

    } else {
        on = c->write;
        off = c->read;
    }

    if (off->active
        && ngx_del_event(off, off->write ? NGX_WRITE_EVENT : NGX_READ_EVENT,
                         0)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!on->active
        && ngx_add_event(on, on->write ? NGX_WRITE_EVENT : NGX_READ_EVENT,
                         NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_replay_db_cancel_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    PostgresPollingStatusType     st;
    ngx_http_replay_db_cancel_t  *cn;

    c = ev->data;
    cn = c->data;

    st = PQcancelPoll(cn->cancel);

    switch (st) {

    case PGRES_POLLING_OK:
        ngx_http_replay_db_cancel_end(cn, 1, NULL);
        return;

    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (ngx_http_replay_db_cancel_watch(cn, st) == NGX_OK) {
            return;
        }

        ngx_http_replay_db_cancel_end(cn, 0, "no events for its socket");
        return;

    default:
        ngx_http_replay_db_cancel_end(cn, 0, PQcancelErrorMessage(cn->cancel));
        return;
    }
}


static void
ngx_http_replay_db_cancel_timeout(ngx_event_t *ev)
{
    ngx_http_replay_db_cancel_end(ev->data, 0,
                                  "timed out (the database's connect_timeout)");
}


/* libpq's part freed first: the handler frees the request */

static void
ngx_http_replay_db_cancel_end(ngx_http_replay_db_cancel_t *cn, int ok,
    const char *err)
{
    if (cn->timer.timer_set) {
        ngx_del_timer(&cn->timer);
    }

    /*
     * libpq closes the socket once the cancel request is done (and
     * PQcancelFinish() does otherwise): epoll forgets it as it is closed
     */

    if (cn->c) {
        ngx_http_replay_db_free_connection(cn->c, NGX_CLOSE_EVENT);
        cn->c = NULL;
    }

    cn->ok = ok;

    if (!ok) {
        (void) ngx_cpystrn((u_char *) cn->err, (u_char *) err,
                           sizeof(cn->err));
    }

    PQcancelFinish(cn->cancel);
    cn->cancel = NULL;

    ngx_queue_remove(&cn->queue);

    cn->handler(cn);
}


/*
 * The worker exits: requests still out are dropped (the connections they
 * were for are closed already).
 */

void
ngx_http_replay_db_cancel_exit(void)
{
    ngx_queue_t                  *q;
    ngx_http_replay_db_cancel_t  *cn;

    if (!ngx_http_replay_db_cancels_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_replay_db_cancels)) {
        q = ngx_queue_head(&ngx_http_replay_db_cancels);
        ngx_queue_remove(q);

        cn = ngx_queue_data(q, ngx_http_replay_db_cancel_t, queue);

        if (cn->timer.timer_set) {
            ngx_del_timer(&cn->timer);
        }

        if (cn->c) {
            ngx_http_replay_db_free_connection(cn->c, NGX_CLOSE_EVENT);
        }

        PQcancelFinish(cn->cancel);
        ngx_destroy_pool(cn->pool);
    }
}


#else /* !NGX_HTTP_REPLAY_DB_ASYNC_CANCEL */


#include <pthread.h>


static ngx_int_t ngx_http_replay_db_cancel_start(ngx_log_t *log);
static void *ngx_http_replay_db_cancel_thread(void *data);
static void ngx_http_replay_db_cancel_read(ngx_event_t *ev);


static pthread_mutex_t               ngx_http_replay_db_cancel_mutex =
    PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t                ngx_http_replay_db_cancel_cond =
    PTHREAD_COND_INITIALIZER;

/* under the mutex */
static ngx_http_replay_db_cancel_t  *ngx_http_replay_db_cancel_todo;
static ngx_http_replay_db_cancel_t  *ngx_http_replay_db_cancel_done;
static ngx_uint_t                    ngx_http_replay_db_cancel_busy;
static ngx_uint_t                    ngx_http_replay_db_cancel_quit;

/* the event loop's */
static pthread_t                     ngx_http_replay_db_cancel_tid;
static ngx_connection_t             *ngx_http_replay_db_cancel_conn;
static ngx_socket_t                  ngx_http_replay_db_cancel_fds[2];
static ngx_uint_t                    ngx_http_replay_db_cancel_started;


/* queues a cancel request: cn->handler(cn) runs on the event loop later */

ngx_int_t
ngx_http_replay_db_cancel_post(ngx_http_replay_db_cancel_t *cn, PGconn *pg,
    ngx_log_t *log)
{
    cn->cancel = PQgetCancel(pg);
    if (cn->cancel == NULL) {
        return NGX_ERROR;
    }

    if (!ngx_http_replay_db_cancel_started
        && ngx_http_replay_db_cancel_start(log) != NGX_OK)
    {
        PQfreeCancel(cn->cancel);
        return NGX_ERROR;
    }

    pthread_mutex_lock(&ngx_http_replay_db_cancel_mutex);

    cn->next = ngx_http_replay_db_cancel_todo;
    ngx_http_replay_db_cancel_todo = cn;

    pthread_cond_signal(&ngx_http_replay_db_cancel_cond);
    pthread_mutex_unlock(&ngx_http_replay_db_cancel_mutex);

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_db_cancel_start(ngx_log_t *log)
{
    int                err;
    ngx_connection_t  *c;

    if (pipe2(ngx_http_replay_db_cancel_fds, O_NONBLOCK|O_CLOEXEC) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "replay: pipe() for cancel requests failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(ngx_http_replay_db_cancel_fds[0], log);
    if (c == NULL) {
        goto failed;
    }

    c->log = ngx_cycle->log;
    c->read->log = c->log;
    c->write->log = c->log;
    c->read->handler = ngx_http_replay_db_cancel_read;
    c->data = NULL;

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_free_connection(c);
        goto failed;
    }

    err = pthread_create(&ngx_http_replay_db_cancel_tid, NULL,
                         ngx_http_replay_db_cancel_thread, NULL);
    if (err) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      "replay: pthread_create() for cancel requests failed");
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        ngx_free_connection(c);
        goto failed;
    }

    ngx_http_replay_db_cancel_conn = c;
    ngx_http_replay_db_cancel_started = 1;

    return NGX_OK;

failed:

    (void) close(ngx_http_replay_db_cancel_fds[0]);
    (void) close(ngx_http_replay_db_cancel_fds[1]);

    return NGX_ERROR;
}


/* the thread: PQcancel() and nothing of nginx's */

static void *
ngx_http_replay_db_cancel_thread(void *data)
{
    ssize_t                       n;
    sigset_t                      set;
    ngx_http_replay_db_cancel_t  *cn;

    /* the worker's signals are the event loop's */
    sigfillset(&set);
    (void) pthread_sigmask(SIG_BLOCK, &set, NULL);

    pthread_mutex_lock(&ngx_http_replay_db_cancel_mutex);

    for ( ;; ) {
        while (ngx_http_replay_db_cancel_todo == NULL
               && !ngx_http_replay_db_cancel_quit)
        {
            pthread_cond_wait(&ngx_http_replay_db_cancel_cond,
                              &ngx_http_replay_db_cancel_mutex);
        }

        if (ngx_http_replay_db_cancel_quit) {
            break;
        }

        cn = ngx_http_replay_db_cancel_todo;
        ngx_http_replay_db_cancel_todo = cn->next;
        ngx_http_replay_db_cancel_busy = 1;

        pthread_mutex_unlock(&ngx_http_replay_db_cancel_mutex);

        cn->ok = PQcancel(cn->cancel, cn->err, sizeof(cn->err));

        pthread_mutex_lock(&ngx_http_replay_db_cancel_mutex);

        ngx_http_replay_db_cancel_busy = 0;
        cn->next = ngx_http_replay_db_cancel_done;
        ngx_http_replay_db_cancel_done = cn;

        /* a full pipe is a wake-up already pending */
        do {
            n = write(ngx_http_replay_db_cancel_fds[1], "c", 1);
        } while (n == -1 && errno == EINTR);
    }

    pthread_mutex_unlock(&ngx_http_replay_db_cancel_mutex);

    return NULL;
}


static void
ngx_http_replay_db_cancel_read(ngx_event_t *ev)
{
    u_char                        buf[64];
    ngx_http_replay_db_cancel_t  *cn, *next;

    while (read(ngx_http_replay_db_cancel_fds[0], buf, sizeof(buf)) > 0) {
        /* void */
    }

    pthread_mutex_lock(&ngx_http_replay_db_cancel_mutex);

    cn = ngx_http_replay_db_cancel_done;
    ngx_http_replay_db_cancel_done = NULL;

    pthread_mutex_unlock(&ngx_http_replay_db_cancel_mutex);

    for ( /* void */ ; cn; cn = next) {
        next = cn->next;

        /* libpq's part freed first: the handler frees the request */
        PQfreeCancel(cn->cancel);
        cn->cancel = NULL;

        cn->handler(cn);
    }
}


/*
 * The worker exits: the thread ends if it is waiting for work; one still
 * in PQcancel() (a server that does not answer) is left to the exit.
 */

void
ngx_http_replay_db_cancel_exit(void)
{
    ngx_uint_t  idle;

    if (!ngx_http_replay_db_cancel_started) {
        return;
    }

    pthread_mutex_lock(&ngx_http_replay_db_cancel_mutex);

    idle = !ngx_http_replay_db_cancel_busy;
    ngx_http_replay_db_cancel_quit = 1;

    pthread_cond_signal(&ngx_http_replay_db_cancel_cond);
    pthread_mutex_unlock(&ngx_http_replay_db_cancel_mutex);

    if (idle) {
        (void) pthread_join(ngx_http_replay_db_cancel_tid, NULL);

    } else {
        (void) pthread_detach(ngx_http_replay_db_cancel_tid);
    }

    /*
     * closed as nginx closes its own: the connection's fd set to -1, or the
     * exit's check of open sockets, which runs after this, sees it left
     */
    ngx_close_connection(ngx_http_replay_db_cancel_conn);

    if (idle) {
        /* a thread still at work writes to it when it is done */
        (void) close(ngx_http_replay_db_cancel_fds[1]);
    }

    ngx_http_replay_db_cancel_started = 0;
}


#endif /* NGX_HTTP_REPLAY_DB_ASYNC_CANCEL */
