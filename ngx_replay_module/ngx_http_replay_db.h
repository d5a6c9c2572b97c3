
/*
 * The PostgreSQL client, private to its files:
 *
 *   ngx_http_replay_db_conn.c  one libpq connection on nginx's events:
 *                              resolving, connecting, sending a job's
 *                              query, reading its results, cancelling,
 *                              closing; no HTTP types
 *   ngx_http_replay_db_cancel.c  cancel requests on a thread of the worker
 *   ngx_http_replay_db_pool.c  the worker's pool of connections to one
 *                              replay_db: idle, busy, the waiting jobs,
 *                              the timeouts; it never sees the protocol
 *   ngx_http_replay_db_conf.c  replay_db and replay_key_query
 *   ngx_http_replay_lookup.c   the request's side (ngx_http_replay_lookup.h)
 *
 * A job is one query to run: whoever runs it fills in the query, the
 * values and a handler; the pool calls the handler once, from a posted
 * event, unless the job was abandoned first.
 */


#ifndef _NGX_HTTP_REPLAY_DB_H_INCLUDED_
#define _NGX_HTTP_REPLAY_DB_H_INCLUDED_


#include "ngx_http_replay_lookup.h"

#include <libpq-fe.h>


#define NGX_HTTP_REPLAY_DB_TEXT_LEN  1024

/* what a connection tells its pool (ngx_http_replay_db_conn_t.handler) */
#define NGX_HTTP_REPLAY_DB_CONNECTED   1   /* ready for a job */
#define NGX_HTTP_REPLAY_DB_ANSWERED    2   /* the job has its answer */
#define NGX_HTTP_REPLAY_DB_DONE        3   /* ready for the next job */
#define NGX_HTTP_REPLAY_DB_CLOSE       4   /* broken, or cancelled: close */


typedef struct ngx_http_replay_db_conn_s  ngx_http_replay_db_conn_t;
typedef struct ngx_http_replay_db_job_s   ngx_http_replay_db_job_t;
typedef struct ngx_http_replay_db_cancel_s  ngx_http_replay_db_cancel_t;


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
    ngx_queue_t                   queue;         /* in db->waiting */
    ngx_event_t                   wait;          /* queue_timeout */
    ngx_event_t                   done;          /* posted: the handler */

    unsigned                      queued:1;
    unsigned                      sync:1;        /* in ..._db_run() */
    unsigned                      finished:1;
};


/* a cancel request, made off the event loop (ngx_http_replay_db_cancel.c) */
struct ngx_http_replay_db_cancel_s {
    PGcancel                     *cancel;
    ngx_http_replay_db_conn_t    *pgc;          /* NULL once closed */
    ngx_http_replay_db_t         *db;
    ngx_pool_t                   *pool;
    void                        (*handler)(ngx_http_replay_db_cancel_t *cn);
    ngx_http_replay_db_cancel_t  *next;
    int                           ok;           /* PQcancel()'s */
    char                          err[256];
};


typedef void (*ngx_http_replay_db_conn_handler_pt)(
    ngx_http_replay_db_conn_t *pgc, ngx_uint_t what);


struct ngx_http_replay_db_conn_s {
    ngx_queue_t                   queue;         /* in db->idle or busy */
    ngx_http_replay_db_t         *db;
    ngx_pool_t                   *pool;
    ngx_log_t                     log;           /* names the database */
    PGconn                       *pg;
    ngx_connection_t             *c;

    /* the pool's: connect_timeout, query_timeout */
    ngx_event_t                   timer;
    ngx_http_replay_db_conn_handler_pt  handler;

    ngx_http_replay_db_job_t     *job;           /* NULL: none, or gone */
    ngx_http_replay_db_query_t   *query;         /* being prepared or run */
    u_char                       *prepared;      /* a flag per query */
    ngx_uint_t                    state;
    ngx_uint_t                    rows;

    /* resolving the host names */
    ngx_resolver_ctx_t           *resolving;
    ngx_uint_t                    host;          /* being resolved */
    ngx_array_t                  *entries;       /* ..._db_host_t */

    ngx_http_replay_db_cancel_t  *cancel;        /* its cancel request */
    ngx_int_t                     status;        /* the command's */

    unsigned                      pooled:1;      /* in db->idle */
    unsigned                      connected:1;   /* the pool's flags */
    unsigned                      canceling:1;
    unsigned                      sent:1;        /* the job's query left */
    unsigned                      got_result:1;
    unsigned                      flushing:1;
    unsigned                      resend:1;      /* as unnamed statement */
    unsigned                      answered:1;    /* the job has its answer */
    unsigned                      over:1;        /* the cancelled query */
};


/* ngx_http_replay_db_conn.c */
ngx_http_replay_db_conn_t *ngx_http_replay_db_conn_create(
    ngx_http_replay_db_t *db);
void ngx_http_replay_db_conn_connect(ngx_http_replay_db_conn_t *pgc);
void ngx_http_replay_db_conn_attach(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job);
void ngx_http_replay_db_conn_detach(ngx_http_replay_db_conn_t *pgc);
ngx_int_t ngx_http_replay_db_conn_send(ngx_http_replay_db_conn_t *pgc,
    ngx_http_replay_db_job_t *job);
void ngx_http_replay_db_conn_idle(ngx_http_replay_db_conn_t *pgc);
ngx_uint_t ngx_http_replay_db_conn_reusable(ngx_http_replay_db_conn_t *pgc);
ngx_int_t ngx_http_replay_db_conn_cancel(ngx_http_replay_db_conn_t *pgc);
void ngx_http_replay_db_conn_close(ngx_http_replay_db_conn_t *pgc);
size_t ngx_http_replay_db_text(u_char *buf, size_t size, const char *msg,
    ngx_uint_t redact);

/* ngx_http_replay_db_cancel.c */
ngx_int_t ngx_http_replay_db_cancel_post(ngx_http_replay_db_cancel_t *cn,
    ngx_log_t *log);
void ngx_http_replay_db_cancel_exit(void);

/* ngx_http_replay_db_pool.c */
ngx_int_t ngx_http_replay_db_run(ngx_http_replay_db_t *db,
    ngx_http_replay_db_job_t *job);
void ngx_http_replay_db_abandon(ngx_http_replay_db_job_t *job);
void ngx_http_replay_db_close_all(ngx_http_replay_db_t *db);


#endif /* _NGX_HTTP_REPLAY_DB_H_INCLUDED_ */
