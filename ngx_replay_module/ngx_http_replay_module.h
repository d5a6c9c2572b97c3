
/*
 * ngx_replay_module: serves objects from S3, resolved from a request
 * variable, signed with AWS Signature V4 and streamed through nginx's own
 * proxy machinery.
 *
 * What the module's files share: the location configuration and the
 * per-request context.
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

/* S3's own limit on a key's length */
#define NGX_HTTP_REPLAY_MAX_KEY        1024


typedef struct {
    /* replay_s3_endpoint: set only in the locations that serve replays */
    ngx_str_t                       endpoint;        /* as written */
    ngx_str_t                       scheme;          /* "http", "https" */
    ngx_str_t                       endpoint_host;   /* host[:port] */
    ngx_http_handler_pt             proxy_handler;   /* proxy_pass's */

    ngx_str_t                       bucket;
    ngx_str_t                       region;
    ngx_uint_t                      addressing;
    ngx_replay_sigv4_creds_t       *creds;
    ngx_http_complex_value_t       *key;

    /* the PostgreSQL lookup (ngx_http_replay_db.c), NULL if none */
    void                           *db;
    void                           *query;
    size_t                          key_param_max;
    void                           *dbs;             /* http level: all */

    /* replay_key_cache (ngx_http_replay_cache.c): its zone, or NULL */
    ngx_shm_zone_t                 *key_cache;
    time_t                          key_cache_valid;

    ngx_flag_t                      buffering;
    ngx_flag_t                      server_timing;
    size_t                          memory_limit;    /* 0: none */

    ngx_uint_t                      redirect;        /* 0, 302 or 307 */
    time_t                          presign_expires;

    /* derived at merge time */
    ngx_str_t                       host;            /* Host we sign */
    ngx_str_t                       path_prefix;     /* "/bucket/" or "/" */
    size_t                          memory_need;     /* a request's most */
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
} ngx_http_replay_main_conf_t;


typedef struct {
    ngx_http_request_t             *request;

    ngx_str_t                       key;
    ngx_str_t                       uri;             /* path sent to S3 */
    ngx_str_t                       authorization;
    u_char                          amz_date[NGX_REPLAY_SIGV4_DATE_LEN];

    /* optional columns 2 and 3 of the lookup's row */
    ngx_str_t                       content_type;
    ngx_str_t                       file_name;

    void                           *db;              /* the lookup's state */

    ngx_uint_t                      s3_status;       /* S3's, if an error */
    ngx_buf_t                      *s3_error;        /* head of its body */

    /* our memory the request holds (ngx_http_replay_memory.c) */
    size_t                          mem;
    size_t                          mem_peak;
    size_t                          reserved;        /* of the budget */
    ngx_queue_t                     queue;           /* waiting for it */
    ngx_event_t                     wait;

    /* durations in microseconds, and when the S3 request went out */
    uint64_t                        db_time;
    uint64_t                        sign_time;
    uint64_t                        s3_time;
    uint64_t                        s3_start;

    ngx_uint_t                      outcome;         /* if known early */
    ngx_uint_t                      key_cache;       /* MISS, HIT, ... */

    unsigned                        signed_request:1;
    unsigned                        error:1;
    unsigned                        error_done:1;
    unsigned                        queued:1;
    unsigned                        db_timed:1;
    unsigned                        s3_timed:1;
    unsigned                        timing_sent:1;
    unsigned                        streaming:1;     /* S3's body */
    unsigned                        last_sent:1;
} ngx_http_replay_ctx_t;


extern ngx_module_t  ngx_http_replay_module;


/*
 * Resolves the key and hands the request on: what a content handler
 * returns.  The handler calls it, or the memory budget once it has room.
 */
ngx_int_t ngx_http_replay_start(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/*
 * Called by an asynchronous lookup when it ends: rc is NGX_OK with
 * ctx->key set, or the HTTP status to answer with.
 */
void ngx_http_replay_lookup_done(ngx_http_request_t *r, ngx_int_t rc);

/* a monotonic clock, in microseconds */
uint64_t ngx_http_replay_usec(void);

/* registers a ngx_http_null_variable-terminated list */
ngx_int_t ngx_http_replay_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);

/* adds a response header; the strings must outlive the request's header */
ngx_table_elt_t *ngx_http_replay_add_header(ngx_http_request_t *r,
    char *key, u_char *value, size_t len);


#endif /* _NGX_HTTP_REPLAY_MODULE_H_INCLUDED_ */
