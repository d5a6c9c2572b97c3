
/*
 * Cancel requests off the event loop.
 *
 * libpq before 17 cancels a query only with PQcancel(), which connects
 * to the server, sends the backend's key and waits for the server to
 * close: it blocks.  It is documented to be safe from another thread (it
 * is meant for signal handlers: no allocation, no shared state), so a
 * worker runs its cancel requests on one thread of its own, started at
 * the first one: a worker that never cancels has no thread.  The thread
 * only calls PQcancel(); it hands each request back through a pipe whose
 * read end is on nginx's event loop, where the request's handler runs.
 *
 * nginx's own thread pool would do, but it starts its 32 threads in
 * every worker at start-up, for cancels that are rare.
 */


#include "ngx_http_replay_db.h"

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
ngx_http_replay_db_cancel_post(ngx_http_replay_db_cancel_t *cn, ngx_log_t *log)
{
    if (!ngx_http_replay_db_cancel_started
        && ngx_http_replay_db_cancel_start(log) != NGX_OK)
    {
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
