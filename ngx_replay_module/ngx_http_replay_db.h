
/*
 * The PostgreSQL client, private to its files:
 *
 *   ngx_http_replay_db_conn.c  one libpq connection on nginx's events:
 *                              resolving, connecting, sending a batch of
 *                              jobs' queries (libpq's pipeline mode),
 *                              reading their results, cancelling,
 *                              closing; no HTTP types
 *   ngx_http_replay_db_cancel.c  cancel requests without blocking: on
 *                              nginx's events (libpq 17 and later), or
 *                              on a thread of the worker
 *   ngx_http_replay_db_pool.c  the worker's pool of connections to one
 *                              replay_db: idle, busy, the waiting jobs,
 *                              the timeouts; it never sees the protocol
 *   ngx_http_replay_db_listen.c  a LISTEN connection per worker: the
 *                              NOTIFYs of a channel, to a handler
 *   ngx_http_replay_db_conf.c  replay_db and replay_key_query
 *   ngx_http_replay_lookup.c   the request's side (ngx_http_replay_lookup.h)
 *
 * A job is one query to run: whoever runs it fills in the query, the
 * values and a handler; the pool calls the handler once, from a posted
 * event, unless the job was abandoned first.  On a connection a job is an
 * entry: what is sent for it and what its results have said, which
 * outlives a job that goes.
 */


#ifndef _NGX_HTTP_REPLAY_DB_H_INCLUDED_
#define _NGX_HTTP_REPLAY_DB_H_INCLUDED_


#include "ngx_http_replay_lookup.h"

#include <libpq-fe.h>


/* libpq 14 and later: pipeline mode, many queries in one write */
#if defined(LIBPQ_HAS_PIPELINING)
#define NGX_HTTP_REPLAY_DB_PIPELINE  1
#else
#define NGX_HTTP_REPLAY_DB_PIPELINE  0
#endif

#define NGX_HTTP_REPLAY_DB_TEXT_LEN  1024

/* the most times a query cancelled as a bystander goes again (< 16) */
#define NGX_HTTP_REPLAY_DB_RETRIES   8

/* libpq 17's cancel connections: PQcancelStart(), PQcancelPoll() */
#ifdef LIBPQ_HAS_ASYNC_CANCEL
#define NGX_HTTP_REPLAY_DB_ASYNC_CANCEL  1
#else
#define NGX_HTTP_REPLAY_DB_ASYNC_CANCEL  0
#endif

/* what a connection tells its owner (ngx_http_replay_db_conn_t.handler) */
#define NGX_HTTP_REPLAY_DB_CONNECTED   1   /* ready for jobs */
#define NGX_HTTP_REPLAY_DB_ANSWERED    2   /* pgc->job has its answer */
#define NGX_HTTP_REPLAY_DB_DONE        3   /* nothing left: ready again */
#define NGX_HTTP_REPLAY_DB_CLOSE       4   /* broken, or cancelled: close */
#define NGX_HTTP_REPLAY_DB_NOTIFY      5   /* pgc->notify has come */
#define NGX_HTTP_REPLAY_DB_RETRY       6   /* pgc->job's query was rolled
                                              back: run it elsewhere */

/* the most queries of one batch: replay_db ... pipeline=N */
#define NGX_HTTP_REPLAY_DB_MAX_PIPELINE  1024


typedef struct ngx_http_replay_db_conn_s   ngx_http_replay_db_conn_t;
typedef struct ngx_http_replay_db_job_s    ngx_http_replay_db_job_t;
typedef struct ngx_http_replay_db_entry_s  ngx_http_replay_db_entry_t;
typedef struct ngx_http_replay_db_cancel_s  ngx_http_replay_db_cancel_t;
typedef struct ngx_http_replay_db_listen_s  ngx_http_replay_db_listen_t;


/* one entry of the host list libpq gets */
typedef struct {
    ngx_str_t                     host;      /* as written */
    ngx_str_t                     hostaddr;  /* given, or resolved */
    ngx_str_t                     port;      /* empty: libpq's default */
    unsigned                      resolve:1; /* by the resolver, each time */
} ngx_http_replay_db_host_t;


struct ngx_http_replay_db_s {
    /* "host=... port=... dbname=...": for log lines, never a password */
    ngx_str_t                     name;
    ngx_str_t                     conninfo;      /* as written */

    /*
     * libpq's keywords and values as parsed, then host, hostaddr, port
     * (when there are hosts), NULL: ready for PQconnectStartParams()
     * when no host is left to resolve
     */
    const char                  **keywords;
    const char                  **values;
    ngx_uint_t                    nopts;         /* before the host ones */

    ngx_array_t                  *hosts;         /* of ..._db_host_t */
    ngx_uint_t                    nresolve;      /* names left to resolve */

    void                         *clcf;          /* of replay_db's block */
    ngx_resolver_t               *resolver;      /* NULL: none */
    ngx_msec_t                    resolver_timeout;

    ngx_uint_t                    max_conns;
    ngx_uint_t                    max_waiting;
    ngx_uint_t                    pipeline;      /* queries per batch */
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    query_timeout;
    ngx_msec_t                    queue_timeout;
    ngx_flag_t                    prepare;

    ngx_uint_t                    nqueries;

    u_char                       *file;          /* where replay_db is */
    ngx_uint_t                    line;

    /* the pool of this worker */
    ngx_queue_t                   idle;          /* most recently used first */
    ngx_queue_t                   busy;
    ngx_queue_t                   waiting;
    ngx_http_replay_db_conn_t    *filling;       /* whose batch takes jobs */
    ngx_uint_t                    nconns;
    ngx_uint_t                    nwaiting;
    ngx_uint_t                    ncancels;      /* cancel requests out */

    unsigned                      ready:1;       /* merged */
    unsigned                      unnamed:1;     /* statements do not last */
};


struct ngx_http_replay_db_query_s {
    ngx_http_replay_db_t         *db;
    ngx_uint_t                    index;         /* of its statement */
    char                         *name;          /* of its statement */
    char                         *sql;
    ngx_http_complex_value_t     *params;
    ngx_uint_t                    nparams;

    /* of the connection string and the SQL: its replay_key_cache keys */
    u_char                        ident[16];
};


typedef void (*ngx_http_replay_db_job_handler_pt)(
    ngx_http_replay_db_job_t *job);
typedef void (*ngx_http_replay_db_row_pt)(ngx_http_replay_db_job_t *job,
    PGresult *res);


struct ngx_http_replay_db_job_s {
    /* the caller's */
    ngx_http_replay_db_query_t   *query;
    const char                  **values;
    ngx_log_t                    *log;           /* for its lines */
    ngx_http_replay_db_row_pt     row;           /* the first row */
    ngx_http_replay_db_job_handler_pt  handler;  /* once, with rc */
    void                         *data;

    /* NGX_OK, or the status the job ends with; the rows it saw */
    ngx_int_t                     rc;
    ngx_uint_t                    rows;

    /* the pool's */
    ngx_http_replay_db_conn_t    *conn;          /* running it, if any */
    ngx_http_replay_db_entry_t   *entry;         /* its entry there */
    ngx_queue_t                   queue;         /* in db->waiting */

    /*
     * queue_timeout, until the server starts on its query: in the queue,
     * or behind other queries of its batch (the connection removes it
     * when the query reaches the head of its pipeline)
     */
    ngx_event_t                   wait;
    ngx_event_t                   done;          /* posted: the handler */

    unsigned                      queued:1;
    unsigned                      sync:1;        /* in ..._db_run() */
    unsigned                      finished:1;
    unsigned                      retries:4;     /* times sent again */
};


/*
 * A cancel request (ngx_http_replay_db_cancel.c).  Its caller fills in
 * pgc, db, pool and handler; the handler runs once, on the event loop,
 * with ok and err set and libpq's part already freed.
 */
struct ngx_http_replay_db_cancel_s {
    ngx_http_replay_db_conn_t    *pgc;          /* NULL once closed */
    ngx_http_replay_db_t         *db;
    ngx_pool_t                   *pool;
    void                        (*handler)(ngx_http_replay_db_cancel_t *cn);
    int                           ok;
    char                          err[256];

#if (NGX_HTTP_REPLAY_DB_ASYNC_CANCEL)
    PGcancelConn                 *cancel;
    ngx_connection_t             *c;            /* on its socket */
    ngx_event_t                   timer;
    ngx_queue_t                   queue;        /* the ones out */
#else
    PGcancel                     *cancel;
    ngx_http_replay_db_cancel_t  *next;         /* the thread's lists */
#endif
};


typedef void (*ngx_http_replay_db_conn_handler_pt)(
    ngx_http_replay_db_conn_t *pgc, ngx_uint_t what);


/* one query on a connection, in the order sent */
struct ngx_http_replay_db_entry_s {
    ngx_queue_t                   queue;         /* in pgc->entries, free */
    ngx_http_replay_db_job_t     *job;           /* NULL: none, or gone */
    ngx_http_replay_db_query_t   *query;
    const char                   *command;       /* SQL without values */
    ngx_uint_t                    rows;
    ngx_int_t                     status;        /* NGX_OK, or the job's */

    unsigned                      prepare:1;     /* PREPARE, not a run */
    unsigned                      unnamed:1;     /* the unnamed statement */
    unsigned                      sent:1;
    unsigned                      ended:1;       /* its results are read */
    unsigned                      answered:1;    /* the job was told */
    unsigned                      resend:1;      /* again, unnamed */
    unsigned                      retry:1;       /* again, elsewhere */
    unsigned                      timedout:1;    /* cancelled */
    unsigned                      started:1;     /* at the head, timed */
};


struct ngx_http_replay_db_conn_s {
    ngx_queue_t                   queue;         /* in db->idle or busy */
    ngx_http_replay_db_t         *db;
    ngx_pool_t                   *pool;
    ngx_log_t                     log;           /* names the database */
    PGconn                       *pg;
    ngx_connection_t             *c;

    /* its owner's: connect_timeout, query_timeout of the head entry */
    ngx_event_t                   timer;
    ngx_http_replay_db_conn_handler_pt  handler;
    void                         *data;          /* the owner's */

    ngx_event_t                   send;          /* posted: a batch leaves */
    ngx_queue_t                   entries;       /* sent or to send */
    ngx_queue_t                   free;
    ngx_uint_t                    njobs;         /* run entries in it */

    ngx_http_replay_db_job_t     *job;           /* the head's, for logs */
    PGnotify                     *notify;        /* for ..._DB_NOTIFY */
    u_char                       *prepared;      /* per query: see conn.c */
    ngx_uint_t                    state;

    /* resolving the host names */
    ngx_resolver_ctx_t           *resolving;
    ngx_uint_t                    host;          /* being resolved */
    ngx_array_t                  *addrs;         /* ..._db_host_t */

    ngx_http_replay_db_cancel_t  *cancel;        /* its cancel request */

    unsigned                      pooled:1;      /* in db->idle */
    unsigned                      connected:1;   /* the owner's flags */
    unsigned                      canceling:1;   /* the head timed out */
    unsigned                      cancelled:1;   /* never reused */
    unsigned                      pipeline:1;    /* libpq's pipeline mode */
    unsigned                      open:1;        /* the batch takes jobs */
    unsigned                      flushing:1;
    unsigned                      recancel:1;    /* another head timed out */
    unsigned                      nopipeline:1;  /* the owner's wish */
    unsigned                      tcp:1;         /* TCP_CORK applies */
};


/* a LISTEN connection of the worker (ngx_http_replay_db_listen.c) */
typedef void (*ngx_http_replay_db_listen_pt)(ngx_http_replay_db_listen_t *ls,
    ngx_str_t *payload);

struct ngx_http_replay_db_listen_s {
    ngx_http_replay_db_t         *db;
    ngx_str_t                     channel;       /* checked: a plain name */
    ngx_http_replay_db_conn_t    *pgc;
    ngx_event_t                   retry;
    ngx_msec_t                    backoff;
    char                         *command;       /* "LISTEN channel" */

    /* a NOTIFY's payload; and listening (again): some may have been lost */
    ngx_http_replay_db_listen_pt  notify;
    ngx_http_replay_db_listen_pt  listening;
    void                         *data;

    unsigned                      up:1;
    unsigned                      failed:1;      /* said once */
};


/* ngx_http_replay_db_conn.c */
ngx_http_replay_db_conn_t *ngx_http_replay_db_conn_create(
    ngx_http_replay_db_t *db);
void ngx_http_replay_db_conn_connect(ngx_http_replay_db_conn_t *pgc);
ngx_int_t ngx_http_replay_db_conn_add(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job);
ngx_int_t ngx_http_replay_db_conn_command(ngx_http_replay_db_conn_t *pgc,
    const char *sql);
void ngx_http_replay_db_conn_detach(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job);
ngx_http_replay_db_job_t *ngx_http_replay_db_conn_take(
    ngx_http_replay_db_conn_t *pgc);
void ngx_http_replay_db_conn_idle(ngx_http_replay_db_conn_t *pgc);
ngx_uint_t ngx_http_replay_db_conn_reusable(ngx_http_replay_db_conn_t *pgc);
ngx_int_t ngx_http_replay_db_conn_cancel(ngx_http_replay_db_conn_t *pgc);
void ngx_http_replay_db_conn_close(ngx_http_replay_db_conn_t *pgc);
size_t ngx_http_replay_db_text(u_char *buf, size_t size, const char *msg,
    ngx_uint_t redact);
void ngx_http_replay_db_free_connection(ngx_connection_t *c, ngx_uint_t flags);

/* ngx_http_replay_db_cancel.c */
ngx_int_t ngx_http_replay_db_cancel_post(ngx_http_replay_db_cancel_t *cn,
    PGconn *pg, ngx_log_t *log);
void ngx_http_replay_db_cancel_exit(void);

/* ngx_http_replay_db_pool.c */
ngx_int_t ngx_http_replay_db_run(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job);
void ngx_http_replay_db_abandon(ngx_http_replay_db_job_t *job);
void ngx_http_replay_db_close_all(ngx_http_replay_db_t *db);

/* ngx_http_replay_db_listen.c */
ngx_int_t ngx_http_replay_db_listen_start(ngx_http_replay_db_listen_t *ls);
void ngx_http_replay_db_listen_stop(ngx_http_replay_db_listen_t *ls);


#endif /* _NGX_HTTP_REPLAY_DB_H_INCLUDED_ */
