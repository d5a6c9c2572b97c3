
/*
 * ngx_replay_module: serves objects from S3, resolved from a request
 * variable, signed with AWS Signature V4 and streamed through nginx's own
 * proxy machinery.
 *
 * What the module's files share: the configuration and the per-request
 * context.
 */


#ifndef _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_
#define _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_replay_sigv4.h"


/* the release, as in CHANGES and debian/changelog */
#define NGX_HTTP_REPLAY_VERSION        "0.1.0"


#define NGX_HTTP_REPLAY_PATH_STYLE     0
#define NGX_HTTP_REPLAY_VIRTUAL_STYLE  1

/* how the proxy reaches the endpoint (ngx_http_replay_stream.c) */
#define NGX_HTTP_REPLAY_PEER_ADDRESS   0     /* an IP address */
#define NGX_HTTP_REPLAY_PEER_UPSTREAM  1     /* an upstream of that name */
#define NGX_HTTP_REPLAY_PEER_RESOLVE   2     /* the resolver, at run time */

/* S3's own limit on a key's length */
#define NGX_HTTP_REPLAY_MAX_KEY        1024


/* where a request of a replay location is: ctx->phase */
typedef enum {
    NGX_HTTP_REPLAY_START = 0,       /* not looked at yet */
    NGX_HTTP_REPLAY_WAIT_BUDGET,     /* waits for the memory budget */
    NGX_HTTP_REPLAY_WAIT_LOOKUP,     /* waits for the key lookup */
    NGX_HTTP_REPLAY_PROXY,           /* with the proxy: S3's header to come */
    NGX_HTTP_REPLAY_BODY,            /* S3's body goes to the client */
    NGX_HTTP_REPLAY_DONE             /* answered, or the body has ended */
} ngx_http_replay_phase_e;


typedef struct ngx_http_replay_ctx_s  ngx_http_replay_ctx_t;

/* the PostgreSQL lookup's configuration (ngx_http_replay_db.h) */
typedef struct ngx_http_replay_db_s        ngx_http_replay_db_t;
typedef struct ngx_http_replay_db_query_s  ngx_http_replay_db_query_t;

/* what a main request holds and reserves (ngx_http_replay_memory.c) */
typedef struct ngx_http_replay_account_s  ngx_http_replay_account_t;

/* a location's gauges in replay_status (ngx_http_replay_status.c) */
typedef struct ngx_http_replay_status_loc_s  ngx_http_replay_status_loc_t;

/* an asynchronous step is over: rc is NGX_OK or the status to answer */
typedef void (*ngx_http_replay_done_pt)(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_int_t rc);


typedef struct {
    /* replay_s3_endpoint: set (or inherited by if and limit_except) only
     * in the locations that serve replays */
    ngx_str_t                       endpoint;        /* as written */
    ngx_str_t                       scheme;          /* "http", "https" */
    ngx_str_t                       endpoint_host;   /* host[:port] */
    ngx_uint_t                      peer;
    ngx_str_t                       peer_name;       /* $replay_s3_peer */

    ngx_str_t                       bucket;
    ngx_str_t                       region;
    ngx_uint_t                      addressing;
    struct ngx_http_replay_creds_s *creds;           /* ..._creds.c */
    ngx_http_complex_value_t       *key;

    /* the PostgreSQL lookup (ngx_http_replay_db_conf.c), NULL if none */
    ngx_http_replay_db_t           *db;
    ngx_http_replay_db_query_t     *query;
    size_t                          key_param_max;

    /* replay_key_cache (ngx_http_replay_cache.c): its zone, or NULL */
    ngx_shm_zone_t                 *key_cache;
    time_t                          key_cache_valid;
    time_t                          key_cache_stale;  /* 0: none */
    ngx_str_t                       key_cache_notify; /* a channel */

    ngx_flag_t                      buffering;
    ngx_flag_t                      server_timing;
    size_t                          memory_limit;    /* 0: none */

    ngx_uint_t                      redirect;        /* 0, 302 or 307 */
    time_t                          presign_expires;

    /* derived at merge time */
    ngx_str_t                       host;            /* Host we sign */
    ngx_str_t                       path_prefix;     /* "/bucket/" or "/" */
    size_t                          memory_need;     /* a request's bound */

    ngx_http_replay_status_loc_t   *status_loc;      /* its gauges */
} ngx_http_replay_loc_conf_t;


typedef struct {
    /* replay_memory_budget, for the requests of one worker */
    size_t                          budget;          /* 0: none */
    ngx_uint_t                      budget_queue;
    ngx_msec_t                      budget_timeout;

    /* the worker's own account */
    size_t                          reserved;
    ngx_queue_t                     waiting;
    ngx_uint_t                      nwaiting;

    /* replay_status: the counters every worker adds to, if any */
    ngx_flag_t                      status;
    ngx_atomic_t                   *stats;
    ngx_array_t                    *locations;       /* status_loc_t * */

    /* every replay_db, for the workers' exit */
    ngx_array_t                    *dbs;             /* of db_t * */

    /* replay_key_cache ... notify=: the workers' LISTENs (lookup.c) */
    ngx_array_t                    *listens;
} ngx_http_replay_main_conf_t;


struct ngx_http_replay_ctx_s {
    ngx_http_request_t             *request;
    ngx_http_replay_phase_e         phase;

    ngx_str_t                       key;
    ngx_str_t                       uri;             /* path sent to S3 */
    ngx_str_t                       authorization;
    ngx_str_t                       security_token;  /* signed with */
    time_t                          retry_after;     /* of a 503; 0: 1 s */
    u_char                          amz_date[NGX_REPLAY_SIGV4_DATE_LEN];

    /* optional columns 2 and 3 of the lookup's row */
    ngx_str_t                       content_type;
    ngx_str_t                       file_name;

    void                           *db;              /* the lookup's state */
    ngx_http_handler_pt             proxy_handler;   /* content's, saved */
    ngx_int_t                       rc;              /* of the last wait */

    /* what the request holds (ngx_http_replay_memory.c) */
    ngx_http_replay_account_t      *account;         /* its main request's */
    size_t                          mem_own;         /* the module's data */
    size_t                          mem_buffers;     /* its upstream's */
    size_t                          mem_s3;          /* its S3 connection's */
    size_t                          mem_s3_tls;
    off_t                           mem_temp;        /* its temporary file */
    ngx_int_t                       mem_allocated;   /* the pipe's buffers */
    ngx_queue_t                     queue;           /* waiting for it */
    ngx_event_t                     wait;
    ngx_http_replay_done_pt         budget_handler;

    /* durations in microseconds, and when the S3 request went out */
    uint64_t                        db_time;
    uint64_t                        sign_time;
    uint64_t                        s3_time;
    uint64_t                        s3_start;

    ngx_uint_t                      status;          /* what it answered */
    ngx_uint_t                      outcome;         /* if known early */
    ngx_uint_t                      key_cache;       /* MISS, HIT, ... */

    unsigned                        waiting:1;       /* a step is pending */
    unsigned                        queued:1;        /* for the budget */
    unsigned                        working:1;       /* counted in account */
    unsigned                        signed_request:1;
    unsigned                        db_timed:1;
    unsigned                        s3_timed:1;
    unsigned                        timing_sent:1;
    unsigned                        last_sent:1;
    unsigned                        settled:1;       /* counted as ended */
};


extern ngx_module_t  ngx_http_replay_module;


#endif /* _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_ */
