
/*
 * What operators see inside: counters that every worker adds to in a
 * shared memory zone, shown by "replay_status" in Prometheus's text format
 * or as JSON; the timing variables and the Server-Timing header.
 */


#ifndef _NGX_HTTP_REPLAY_STATUS_H_INCLUDED_
#define _NGX_HTTP_REPLAY_STATUS_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* how a request ended: ctx->outcome, or derived from its status */
enum {
    NGX_HTTP_REPLAY_OK = 1,
    NGX_HTTP_REPLAY_NOT_FOUND,
    NGX_HTTP_REPLAY_BAD_REQUEST,
    NGX_HTTP_REPLAY_DB_ERROR,
    NGX_HTTP_REPLAY_S3_ERROR,
    NGX_HTTP_REPLAY_TIMEOUT,
    NGX_HTTP_REPLAY_BUDGET,
    NGX_HTTP_REPLAY_MEMORY_LIMIT,
    NGX_HTTP_REPLAY_CLIENT_CLOSED,
    NGX_HTTP_REPLAY_INCOMPLETE,
    NGX_HTTP_REPLAY_ERROR,
    NGX_HTTP_REPLAY_OUTCOMES
};


/* the counters: slots of ngx_atomic_t in the zone */
enum {
    NGX_HTTP_REPLAY_ST_REQUESTS = 0,
    NGX_HTTP_REPLAY_ST_RESPONSES = NGX_HTTP_REPLAY_ST_REQUESTS
                                   + NGX_HTTP_REPLAY_OUTCOMES - 1,
    NGX_HTTP_REPLAY_ST_SENT_BYTES = NGX_HTTP_REPLAY_ST_RESPONSES + 5,
    NGX_HTTP_REPLAY_ST_IN_FLIGHT,
    NGX_HTTP_REPLAY_ST_MEMORY,
    NGX_HTTP_REPLAY_ST_MEMORY_PEAK,
    NGX_HTTP_REPLAY_ST_RESERVED,
    NGX_HTTP_REPLAY_ST_BUDGET_WAITS,
    NGX_HTTP_REPLAY_ST_BUDGET_FULL,
    NGX_HTTP_REPLAY_ST_BUDGET_TIMEOUTS,
    NGX_HTTP_REPLAY_ST_BUDGET_WAITING,
    NGX_HTTP_REPLAY_ST_DB_IDLE,
    NGX_HTTP_REPLAY_ST_DB_BUSY,
    NGX_HTTP_REPLAY_ST_DB_WAITING,
    NGX_HTTP_REPLAY_ST_DB_CONNECTS,
    NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES,
    NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS,
    NGX_HTTP_REPLAY_ST_DB_QUERY_TIMEOUTS,
    NGX_HTTP_REPLAY_ST_DB_QUERIES,
    NGX_HTTP_REPLAY_ST_DB_BATCHES,
    NGX_HTTP_REPLAY_ST_KEY_CACHE,                   /* hit, miss, stale */
    NGX_HTTP_REPLAY_ST_KEY_CACHE_DROPS = NGX_HTTP_REPLAY_ST_KEY_CACHE + 3,
    NGX_HTTP_REPLAY_ST_S3_RESPONSES,
    NGX_HTTP_REPLAY_ST_S3_TTFB = NGX_HTTP_REPLAY_ST_S3_RESPONSES + 5,
    NGX_HTTP_REPLAY_ST_S3_TTFB_SUM = NGX_HTTP_REPLAY_ST_S3_TTFB + 12,
    NGX_HTTP_REPLAY_ST_S3_TTFB_COUNT,
    NGX_HTTP_REPLAY_ST_SLOTS
};


/* the labels of replay_key_cache_lookups_total */
#define NGX_HTTP_REPLAY_ST_KEY_CACHE_HIT   NGX_HTTP_REPLAY_ST_KEY_CACHE
#define NGX_HTTP_REPLAY_ST_KEY_CACHE_MISS  (NGX_HTTP_REPLAY_ST_KEY_CACHE + 1)
#define NGX_HTTP_REPLAY_ST_KEY_CACHE_STALE (NGX_HTTP_REPLAY_ST_KEY_CACHE + 2)


/*
 * A replay location's gauges: what its requests in progress hold, by
 * kind (the first NGX_HTTP_REPLAY_MEM_KINDS), in temporary files, and
 * how many they are.
 */
enum {
    NGX_HTTP_REPLAY_LOC_POOL = 0,
    NGX_HTTP_REPLAY_LOC_BUFFERS,
    NGX_HTTP_REPLAY_LOC_ROW,
    NGX_HTTP_REPLAY_LOC_TLS,
    NGX_HTTP_REPLAY_LOC_TEMP_FILE,
    NGX_HTTP_REPLAY_LOC_IN_FLIGHT,
    NGX_HTTP_REPLAY_LOC_SLOTS
};

#define NGX_HTTP_REPLAY_MEM_KINDS  (NGX_HTTP_REPLAY_LOC_TLS + 1)

struct ngx_http_replay_status_loc_s {
    ngx_str_t                       name;            /* the location's */
    ngx_atomic_t                   *slots;           /* in the zone */
};


/* adds n to a counter; nothing without a status zone */
void ngx_http_replay_stat(ngx_uint_t slot, ngx_atomic_int_t n);

/* adds n to a location's gauge; nothing without a zone or a location */
void ngx_http_replay_stat_loc(ngx_http_replay_status_loc_t *loc,
    ngx_uint_t slot, ngx_atomic_int_t n);

/*
 * The gauges of the location being configured (one set per location
 * name), registered when it gets replay_s3_endpoint; NULL on error.
 */
ngx_http_replay_status_loc_t *ngx_http_replay_status_location(
    ngx_conf_t *cf);

/* adds to the memory in use, and raises its peak */
void ngx_http_replay_stat_memory(ngx_atomic_int_t n);

/* a request of ours ends (from its pool's cleanup): its outcome */
void ngx_http_replay_status_done(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/* S3's response header has come: its status and time to it */
void ngx_http_replay_status_s3(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_uint_t status);

/* "Server-Timing: db;dur=1.2, sign;dur=0.01, s3;dur=3.4", once */
ngx_int_t ngx_http_replay_server_timing(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/* the longest Server-Timing value, for the memory a request may need */
#define NGX_HTTP_REPLAY_TIMING_LEN                                            \
    (sizeof("db;dur=., sign;dur=., s3;dur=.") - 1 + 3 * (NGX_INT64_LEN + 3))

/* the "replay_status" directive, and its zone once the http block is read */
char *ngx_http_replay_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_replay_status_init_zone(ngx_conf_t *cf,
    ngx_http_replay_main_conf_t *rmcf);

/* the module's version and libraries, at notice, when nginx starts */
ngx_int_t ngx_http_replay_status_init_module(ngx_cycle_t *cycle);

/* $replay_db_time, $replay_s3_time, $replay_sign_time */
ngx_int_t ngx_http_replay_status_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_REPLAY_STATUS_H_INCLUDED_ */
