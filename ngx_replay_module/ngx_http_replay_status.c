
/*
 * Counters and timings.
 *
 * The counters are slots of ngx_atomic_t in a small shared memory zone,
 * "replay_status", that the workers add to; gauges (requests in flight,
 * memory, connections) move by the changes each worker makes, so their
 * sum is the whole server's.  Each replay location has gauges of its
 * own (memory by kind), found again by the location's name after a
 * reload.  The zone exists when a location has "replay_status", which
 * shows the counters in Prometheus's text format, or as JSON with
 * "?format=json".  It is kept across reloads that keep its size.
 */


#include "ngx_http_replay_status.h"
#include "ngx_http_replay_memory.h"
#include "ngx_http_replay_util.h"
#include "ngx_http_replay_creds.h"

#include <nginx.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>


#define NGX_HTTP_REPLAY_STATUS_ZONE_PAGES  8

/* the module's version, first in either format */
#define NGX_HTTP_REPLAY_BUILD_INFO                                            \
    "# HELP replay_build_info the version of ngx_http_replay_module\n"        \
    "# TYPE replay_build_info gauge\n"                                       \
    "replay_build_info{version=\"" NGX_HTTP_REPLAY_VERSION "\"} 1\n"

#define NGX_HTTP_REPLAY_JSON_VERSION                                          \
    "{\"version\":\"" NGX_HTTP_REPLAY_VERSION "\","

/* S3's time to the first byte of its response header, in microseconds */
#define NGX_HTTP_REPLAY_TTFB_BUCKETS       12


/* a location's gauges in the zone, and its name to find them again by */
typedef struct ngx_http_replay_status_entry_s  ngx_http_replay_status_entry_t;

struct ngx_http_replay_status_entry_s {
    ngx_atomic_t                     slots[NGX_HTTP_REPLAY_LOC_SLOTS];
    ngx_http_replay_status_entry_t  *next;
    size_t                           len;
    u_char                           name[1];
};


/* the zone's data: the counters, then the locations' gauges */
typedef struct {
    ngx_atomic_t                     stats[NGX_HTTP_REPLAY_ST_SLOTS];
    ngx_http_replay_status_entry_t  *locations;
} ngx_http_replay_status_shm_t;


typedef struct {
    ngx_str_t                     name;
    char                         *type;
    char                         *help;
    char                         *label;
    char                        **values;      /* NULL: no label */
    ngx_uint_t                    slot;
} ngx_http_replay_metric_t;


static ngx_int_t ngx_http_replay_status_init_shm(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_replay_status_init_locations(ngx_shm_zone_t *shm_zone,
    ngx_http_replay_status_shm_t *sh);
static ngx_atomic_t *ngx_http_replay_stats(void);
static ngx_int_t ngx_http_replay_status_handler(ngx_http_request_t *r);
static size_t ngx_http_replay_status_size(
    ngx_http_replay_main_conf_t *rmcf);
static u_char *ngx_http_replay_status_prometheus(u_char *p,
    ngx_http_replay_main_conf_t *rmcf);
static u_char *ngx_http_replay_status_json(u_char *p,
    ngx_http_replay_main_conf_t *rmcf);
static u_char *ngx_http_replay_status_locations(u_char *p,
    ngx_http_replay_main_conf_t *rmcf, ngx_uint_t json);
static ngx_uint_t ngx_http_replay_status_outcome(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);
static u_char *ngx_http_replay_print_ms(u_char *p, uint64_t usec);
static ngx_int_t ngx_http_replay_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static char  *ngx_http_replay_outcomes[] = {
    "ok", "not_found", "bad_request", "db_error", "s3_error", "timeout",
    "budget", "memory_limit", "client_closed", "incomplete", "error", NULL
};

static char  *ngx_http_replay_classes[] = {
    "1xx", "2xx", "3xx", "4xx", "5xx", NULL
};

static char  *ngx_http_replay_cache_results[] = {
    "hit", "miss", "stale", NULL
};

static char  *ngx_http_replay_rejects[] = {
    "queue_full", "timeout", NULL
};

static char  *ngx_http_replay_db_states[] = {
    "idle", "busy", NULL
};

/* the kinds of a location's memory, by NGX_HTTP_REPLAY_LOC_* */
static char  *ngx_http_replay_mem_kinds[] = {
    "pool", "buffers", "row", "tls", NULL
};


static ngx_http_replay_metric_t  ngx_http_replay_metrics[] = {

    { ngx_string("replay_requests_total"), "counter",
      "Requests of replay locations, by outcome.",
      "outcome", ngx_http_replay_outcomes, NGX_HTTP_REPLAY_ST_REQUESTS },

    { ngx_string("replay_responses_total"), "counter",
      "Responses of replay locations, by status class.",
      "status", ngx_http_replay_classes, NGX_HTTP_REPLAY_ST_RESPONSES },

    { ngx_string("replay_sent_bytes_total"), "counter",
      "Body bytes from S3 passed on to clients.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_SENT_BYTES },

    { ngx_string("replay_requests_in_flight"), "gauge",
      "Requests of replay locations in progress.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_IN_FLIGHT },

    { ngx_string("replay_memory_bytes"), "gauge",
      "Memory that requests in progress hold for the module.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_MEMORY },

    { ngx_string("replay_memory_peak_bytes"), "gauge",
      "The highest replay_memory_bytes since the zone was created.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_MEMORY_PEAK },

    { ngx_string("replay_memory_reserved_bytes"), "gauge",
      "Memory reserved from replay_memory_budget.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_RESERVED },

    { ngx_string("replay_budget_waits_total"), "counter",
      "Requests that waited for room in replay_memory_budget.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_BUDGET_WAITS },

    { ngx_string("replay_budget_rejects_total"), "counter",
      "Requests refused for want of room in replay_memory_budget.",
      "reason", ngx_http_replay_rejects, NGX_HTTP_REPLAY_ST_BUDGET_FULL },

    { ngx_string("replay_budget_waiting_requests"), "gauge",
      "Requests waiting for room in replay_memory_budget.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_BUDGET_WAITING },

    { ngx_string("replay_db_connections"), "gauge",
      "Database connections, by state.",
      "state", ngx_http_replay_db_states, NGX_HTTP_REPLAY_ST_DB_IDLE },

    { ngx_string("replay_db_waiting_requests"), "gauge",
      "Requests waiting for a database connection.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_WAITING },

    { ngx_string("replay_db_connects_total"), "counter",
      "Database connections established.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_CONNECTS },

    { ngx_string("replay_db_connect_failures_total"), "counter",
      "Database connections that failed or timed out.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_CONNECT_FAILURES },

    { ngx_string("replay_db_query_errors_total"), "counter",
      "Key queries that the database answered with an error.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_QUERY_ERRORS },

    { ngx_string("replay_db_query_timeouts_total"), "counter",
      "Key queries that took longer than query_timeout.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_QUERY_TIMEOUTS },

    { ngx_string("replay_db_queries_total"), "counter",
      "Key queries sent to the database.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_QUERIES },

    { ngx_string("replay_db_batches_total"), "counter",
      "Writes that sent key queries, several at once in pipeline mode.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_DB_BATCHES },

    { ngx_string("replay_key_cache_lookups_total"), "counter",
      "Lookups in replay_key_cache, by result (an expired entry is a miss; "
      "stale: an expired entry served while the database failed).",
      "result", ngx_http_replay_cache_results, NGX_HTTP_REPLAY_ST_KEY_CACHE },

    { ngx_string("replay_key_cache_notify_drops_total"), "counter",
      "Entries of replay_key_cache dropped by a NOTIFY.",
      NULL, NULL, NGX_HTTP_REPLAY_ST_KEY_CACHE_DROPS },

    { ngx_string("replay_s3_responses_total"), "counter",
      "Response headers from S3, by status class.",
      "status", ngx_http_replay_classes, NGX_HTTP_REPLAY_ST_S3_RESPONSES },

    { ngx_null_string, NULL, NULL, NULL, NULL, 0 }
};


/* a location's gauges: its memory by kind, its temporary files, its requests */
static ngx_str_t  ngx_http_replay_loc_names[] = {
    ngx_string("replay_location_memory_bytes"),
    ngx_string("replay_location_temp_file_bytes"),
    ngx_string("replay_location_requests_in_flight")
};

static char  *ngx_http_replay_loc_help[] = {
    "Memory that the requests in progress of a replay location hold, "
    "by kind.",
    "Bytes that the requests in progress of a replay location hold in "
    "temporary files (disk, not memory).",
    "Requests in progress whose memory counts in a replay location."
};


static ngx_str_t  ngx_http_replay_ttfb_name =
    ngx_string("replay_s3_first_byte_seconds");

static char  *ngx_http_replay_ttfb_help =
    "Time from sending the request to S3 to its response header.";

static uint64_t  ngx_http_replay_ttfb_bounds[NGX_HTTP_REPLAY_TTFB_BUCKETS] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, (uint64_t) -1
};

static char  *ngx_http_replay_ttfb_le[NGX_HTTP_REPLAY_TTFB_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
    "5", "10", "+Inf"
};


static ngx_http_variable_t  ngx_http_replay_status_vars[] = {

    { ngx_string("replay_db_time"), NULL, ngx_http_replay_time_variable,
      offsetof(ngx_http_replay_ctx_t, db_time), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_s3_time"), NULL, ngx_http_replay_time_variable,
      offsetof(ngx_http_replay_ctx_t, s3_time), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("replay_sign_time"), NULL, ngx_http_replay_time_variable,
      offsetof(ngx_http_replay_ctx_t, sign_time), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

      ngx_http_null_variable
};


char *
ngx_http_replay_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_replay_main_conf_t  *rmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_replay_status_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_replay_status_handler;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_replay_module);
    rmcf->status = 1;

    return NGX_CONF_OK;
}


char *
ngx_http_replay_status_init_zone(ngx_conf_t *cf,
    ngx_http_replay_main_conf_t *rmcf)
{
    size_t                          size, entry, slot, chunk;
    ngx_str_t                       name;
    ngx_uint_t                      i;
    ngx_shm_zone_t                 *zone;
    ngx_http_replay_status_loc_t  **loc;

    if (!rmcf->status) {
        return NGX_CONF_OK;
    }

    /*
     * The locations' gauges take a slab slot each (a power of two, or
     * whole pages); room for as many again, so that a reload that adds
     * locations keeps the zone, in steps of 8 pages so that one that adds
     * a few keeps its size.
     */

    size = 0;

    if (rmcf->locations) {
        loc = rmcf->locations->elts;

        for (i = 0; i < rmcf->locations->nelts; i++) {
            entry = offsetof(ngx_http_replay_status_entry_t, name)
                    + loc[i]->name.len;

            if (entry > ngx_pagesize / 2) {
                size += ngx_align(entry, ngx_pagesize);
                continue;
            }

            for (slot = 8; slot < entry; slot <<= 1) { /* void */ }

            size += slot;
        }
    }

    chunk = NGX_HTTP_REPLAY_STATUS_ZONE_PAGES * ngx_pagesize;

    size = chunk + ngx_align(2 * size, chunk);

    ngx_str_set(&name, "replay_status");

    zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_replay_module);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->init = ngx_http_replay_status_init_shm;
    zone->data = rmcf;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_replay_status_init_shm(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_replay_main_conf_t  *ormcf = data;

    ngx_slab_pool_t               *shpool;
    ngx_http_replay_status_shm_t  *sh;
    ngx_http_replay_main_conf_t   *rmcf;

    rmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* a reload keeps the counters, and the gauges of the same names */

    if (ormcf || shm_zone->shm.exists) {
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_replay_status_shm_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        shpool->data = sh;

        /* a zone too small for a location is said so below, once */
        shpool->log_nomem = 0;
    }

    rmcf->stats = sh->stats;

    ngx_http_replay_status_init_locations(shm_zone, sh);

    return NGX_OK;
}


/*
 * Each location of the configuration finds its gauges by name, or gets
 * new ones; the master does this before it starts the workers, and
 * workers never walk the list, so it needs no lock.
 */

static void
ngx_http_replay_status_init_locations(ngx_shm_zone_t *shm_zone,
    ngx_http_replay_status_shm_t *sh)
{
    ngx_uint_t                       i;
    ngx_slab_pool_t                 *shpool;
    ngx_http_replay_status_loc_t   **loc;
    ngx_http_replay_status_entry_t  *e;
    ngx_http_replay_main_conf_t     *rmcf;

    rmcf = shm_zone->data;

    if (rmcf->locations == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    loc = rmcf->locations->elts;

    for (i = 0; i < rmcf->locations->nelts; i++) {

        for (e = sh->locations; e; e = e->next) {
            if (e->len == loc[i]->name.len
                && ngx_memcmp(e->name, loc[i]->name.data, e->len) == 0)
            {
                break;
            }
        }

        if (e == NULL) {
            e = ngx_slab_calloc(shpool,
                                offsetof(ngx_http_replay_status_entry_t, name)
                                + loc[i]->name.len);

            if (e == NULL) {
                ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                              "replay_status: no room left in the zone "
                              "for the gauges of location \"%V\"; a "
                              "restart makes it anew",
                              &loc[i]->name);
                continue;
            }

            e->len = loc[i]->name.len;
            ngx_memcpy(e->name, loc[i]->name.data, e->len);

            e->next = sh->locations;
            sh->locations = e;
        }

        loc[i]->slots = e->slots;
    }
}


/* the location being configured: its gauges, one set per name */

ngx_http_replay_status_loc_t *
ngx_http_replay_status_location(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_replay_status_loc_t   *loc, **locs;
    ngx_http_replay_main_conf_t    *rmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_replay_module);

    if (rmcf->locations == NULL) {
        rmcf->locations = ngx_array_create(cf->pool, 4,
                                    sizeof(ngx_http_replay_status_loc_t *));
        if (rmcf->locations == NULL) {
            return NULL;
        }
    }

    locs = rmcf->locations->elts;

    for (i = 0; i < rmcf->locations->nelts; i++) {
        if (locs[i]->name.len == clcf->name.len
            && ngx_strncmp(locs[i]->name.data, clcf->name.data,
                           clcf->name.len)
               == 0)
        {
            return locs[i];
        }
    }

    loc = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_status_loc_t));
    if (loc == NULL) {
        return NULL;
    }

    loc->name = clcf->name;

    locs = ngx_array_push(rmcf->locations);
    if (locs == NULL) {
        return NULL;
    }

    *locs = loc;

    return loc;
}


static ngx_atomic_t *
ngx_http_replay_stats(void)
{
    ngx_http_replay_main_conf_t  *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_replay_module);

    return rmcf ? rmcf->stats : NULL;
}


void
ngx_http_replay_stat(ngx_uint_t slot, ngx_atomic_int_t n)
{
    ngx_atomic_t  *st;

    st = ngx_http_replay_stats();

    if (st) {
        (void) ngx_atomic_fetch_add(&st[slot], n);
    }
}


void
ngx_http_replay_stat_loc(ngx_http_replay_status_loc_t *loc, ngx_uint_t slot,
    ngx_atomic_int_t n)
{
    if (loc && loc->slots && n) {
        (void) ngx_atomic_fetch_add(&loc->slots[slot], n);
    }
}


void
ngx_http_replay_stat_memory(ngx_atomic_int_t n)
{
    ngx_atomic_t       *st;
    ngx_atomic_uint_t   now, peak;

    st = ngx_http_replay_stats();

    if (st == NULL) {
        return;
    }

    now = ngx_atomic_fetch_add(&st[NGX_HTTP_REPLAY_ST_MEMORY], n) + n;

    /* the peak of the sum over workers: another may raise it meanwhile */

    for ( ;; ) {
        peak = st[NGX_HTTP_REPLAY_ST_MEMORY_PEAK];

        if ((ngx_atomic_int_t) now <= (ngx_atomic_int_t) peak
            || ngx_atomic_cmp_set(&st[NGX_HTTP_REPLAY_ST_MEMORY_PEAK], peak,
                                  now))
        {
            return;
        }
    }
}


void
ngx_http_replay_status_done(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx)
{
    ngx_uint_t  status, outcome;

    if (ctx->settled) {
        return;
    }

    ctx->settled = 1;

    outcome = ngx_http_replay_status_outcome(r, ctx);
    status = ctx->status ? ctx->status : r->headers_out.status;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay: request done: %ui, %s", status,
                   ngx_http_replay_outcomes[outcome - 1]);

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_REQUESTS + outcome - 1, 1);

    if (status >= 100 && status < 600) {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_RESPONSES + status / 100 - 1,
                             1);
    }

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_IN_FLIGHT, -1);
}


/* what the module did not name as it happened follows from the status */

static ngx_uint_t
ngx_http_replay_status_outcome(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx)
{
    ngx_uint_t  status;

    if (ctx->outcome) {
        return ctx->outcome;
    }

    status = ctx->status ? ctx->status : r->headers_out.status;

    if (status >= NGX_HTTP_OK && status < NGX_HTTP_BAD_REQUEST) {

        /* a body that did not end: the client left, or S3 stopped */

        if (status < NGX_HTTP_SPECIAL_RESPONSE
            && status != NGX_HTTP_NO_CONTENT
            && !r->header_only
            && !ctx->last_sent)
        {
            return (r->connection->error || r->connection->timedout)
                   ? NGX_HTTP_REPLAY_CLIENT_CLOSED
                   : NGX_HTTP_REPLAY_INCOMPLETE;
        }

        return NGX_HTTP_REPLAY_OK;
    }

    switch (status) {

    case NGX_HTTP_NOT_FOUND:
        return NGX_HTTP_REPLAY_NOT_FOUND;

    case NGX_HTTP_REQUEST_TIME_OUT:
    case NGX_HTTP_CLIENT_CLOSED_REQUEST:
        return NGX_HTTP_REPLAY_CLIENT_CLOSED;

    case NGX_HTTP_BAD_GATEWAY:
        return NGX_HTTP_REPLAY_S3_ERROR;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        return NGX_HTTP_REPLAY_TIMEOUT;
    }

    if (status >= NGX_HTTP_BAD_REQUEST
        && status < NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        return NGX_HTTP_REPLAY_BAD_REQUEST;
    }

    return NGX_HTTP_REPLAY_ERROR;
}


void
ngx_http_replay_status_s3(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_uint_t status)
{
    ngx_uint_t  i;

    if (ctx->s3_timed) {
        return;
    }

    ctx->s3_time = ngx_http_replay_usec() - ctx->s3_start;
    ctx->s3_timed = 1;

    if (status >= 100 && status < 600) {
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_S3_RESPONSES + status / 100 - 1,
                             1);
    }

    for (i = 0; ctx->s3_time > ngx_http_replay_ttfb_bounds[i]; i++) {
        /* void */
    }

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_S3_TTFB + i, 1);
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_S3_TTFB_SUM, ctx->s3_time);
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_S3_TTFB_COUNT, 1);
}


ngx_int_t
ngx_http_replay_server_timing(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx)
{
    u_char                      *p, *last;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);

    if (!rlcf->server_timing || ctx->timing_sent) {
        return NGX_OK;
    }

    ctx->timing_sent = 1;

    if (!ctx->db_timed && !ctx->signed_request) {
        return NGX_OK;
    }

    p = ngx_http_replay_mem_alloc(r, ctx, NGX_HTTP_REPLAY_TIMING_LEN,
                                  "Server-Timing");
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = p;

    if (ctx->db_timed) {
        last = ngx_cpymem(last, "db;dur=", sizeof("db;dur=") - 1);
        last = ngx_http_replay_print_ms(last, ctx->db_time);
    }

    if (ctx->signed_request) {
        if (last != p) {
            *last++ = ',';
            *last++ = ' ';
        }

        last = ngx_cpymem(last, "sign;dur=", sizeof("sign;dur=") - 1);
        last = ngx_http_replay_print_ms(last, ctx->sign_time);
    }

    if (ctx->s3_timed) {
        last = ngx_cpymem(last, ", s3;dur=", sizeof(", s3;dur=") - 1);
        last = ngx_http_replay_print_ms(last, ctx->s3_time);
    }

    if (ngx_http_replay_add_header(r, "Server-Timing", p, last - p) == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* milliseconds, to the microsecond: "3.402" */

static u_char *
ngx_http_replay_print_ms(u_char *p, uint64_t usec)
{
    return ngx_sprintf(p, "%uL.%03uL", usec / 1000, usec % 1000);
}


static ngx_int_t
ngx_http_replay_status_handler(ngx_http_request_t *r)
{
    size_t                        size;
    ngx_int_t                     rc;
    ngx_str_t                     format;
    ngx_buf_t                    *b;
    ngx_uint_t                    json;
    ngx_chain_t                   out;
    ngx_atomic_t                 *st;
    ngx_http_replay_main_conf_t  *rmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    json = 0;

    if (ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK) {

        if (format.len == 4 && ngx_strncmp(format.data, "json", 4) == 0) {
            json = 1;

        } else if (format.len != 10
                   || ngx_strncmp(format.data, "prometheus", 10) != 0)
        {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_replay_module);
    st = rmcf->stats;

    if (st == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = ngx_http_replay_status_size(rmcf)
           + ngx_http_replay_creds_status_size();

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json) {
        b->last = ngx_http_replay_status_json(b->last, rmcf);
        ngx_str_set(&r->headers_out.content_type, "application/json");

    } else {
        b->last = ngx_http_replay_status_prometheus(b->last, rmcf);
        b->last = ngx_http_replay_creds_prometheus(b->last);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the longest either format may be */

static size_t
ngx_http_replay_status_size(ngx_http_replay_main_conf_t *rmcf)
{
    size_t                          size, line;
    ngx_uint_t                      i;
    ngx_http_replay_metric_t       *m;
    ngx_http_replay_status_loc_t  **loc;

    size = sizeof("{}\n")
           + ngx_max(sizeof(NGX_HTTP_REPLAY_BUILD_INFO),
                     sizeof(NGX_HTTP_REPLAY_JSON_VERSION));

    for (m = ngx_http_replay_metrics; m->name.len; m++) {
        size += sizeof("# HELP  \n# TYPE  \n") + 2 * m->name.len
                + ngx_strlen(m->help) + ngx_strlen(m->type);

        line = m->name.len + sizeof("{=\"\"} \n,") + NGX_ATOMIC_T_LEN;

        if (m->values == NULL) {
            size += line;
            continue;
        }

        for (i = 0; m->values[i]; i++) {
            size += line + ngx_strlen(m->label) + ngx_strlen(m->values[i]);
        }
    }

    size += sizeof("# HELP  \n# TYPE  histogram\n")
            + 2 * ngx_http_replay_ttfb_name.len
            + ngx_strlen(ngx_http_replay_ttfb_help)
            + NGX_HTTP_REPLAY_TTFB_BUCKETS
              * (ngx_http_replay_ttfb_name.len
                 + sizeof("_bucket{le=\"+Inf\"} \n,") + NGX_ATOMIC_T_LEN)
            + 2 * (ngx_http_replay_ttfb_name.len + sizeof("_count \n,")
                   + NGX_ATOMIC_T_LEN + 8)
            + sizeof("{\"buckets\":{},\"sum\":,\"count\":}");

    /* each location's lines: its name escaped (at most 6 bytes a byte) */

    for (i = 0; i < 3; i++) {
        size += sizeof("# HELP  \n# TYPE  gauge\n\"\":{},")
                + 2 * ngx_http_replay_loc_names[i].len
                + ngx_strlen(ngx_http_replay_loc_help[i]);
    }

    if (rmcf->locations) {
        loc = rmcf->locations->elts;

        for (i = 0; i < rmcf->locations->nelts; i++) {
            line = ngx_http_replay_loc_names[0].len
                   + 6 * loc[i]->name.len
                   + sizeof("{location=\"\",kind=\"buffers\"} \n,{}\"\":")
                   + NGX_ATOMIC_T_LEN;

            size += (NGX_HTTP_REPLAY_MEM_KINDS + 2) * line;
        }
    }

    return size;
}


static u_char *
ngx_http_replay_status_prometheus(u_char *p,
    ngx_http_replay_main_conf_t *rmcf)
{
    ngx_uint_t                 i;
    ngx_atomic_t              *st;
    ngx_atomic_uint_t          n, sum;
    ngx_http_replay_metric_t  *m;

    st = rmcf->stats;

    p = ngx_cpymem(p, NGX_HTTP_REPLAY_BUILD_INFO,
                   sizeof(NGX_HTTP_REPLAY_BUILD_INFO) - 1);

    for (m = ngx_http_replay_metrics; m->name.len; m++) {
        p = ngx_sprintf(p, "# HELP %V %s\n# TYPE %V %s\n",
                        &m->name, m->help, &m->name, m->type);

        if (m->values == NULL) {
            p = ngx_sprintf(p, "%V %uA\n", &m->name, st[m->slot]);
            continue;
        }

        for (i = 0; m->values[i]; i++) {
            p = ngx_sprintf(p, "%V{%s=\"%s\"} %uA\n", &m->name, m->label,
                            m->values[i], st[m->slot + i]);
        }
    }

    p = ngx_http_replay_status_locations(p, rmcf, 0);

    p = ngx_sprintf(p, "# HELP %V %s\n# TYPE %V histogram\n",
                    &ngx_http_replay_ttfb_name, ngx_http_replay_ttfb_help,
                    &ngx_http_replay_ttfb_name);

    n = 0;

    for (i = 0; i < NGX_HTTP_REPLAY_TTFB_BUCKETS; i++) {
        n += st[NGX_HTTP_REPLAY_ST_S3_TTFB + i];

        p = ngx_sprintf(p, "%V_bucket{le=\"%s\"} %uA\n",
                        &ngx_http_replay_ttfb_name,
                        ngx_http_replay_ttfb_le[i], n);
    }

    sum = st[NGX_HTTP_REPLAY_ST_S3_TTFB_SUM];

    p = ngx_sprintf(p, "%V_sum %uA.%06uA\n%V_count %uA\n",
                    &ngx_http_replay_ttfb_name, sum / 1000000, sum % 1000000,
                    &ngx_http_replay_ttfb_name,
                    st[NGX_HTTP_REPLAY_ST_S3_TTFB_COUNT]);

    return p;
}


/* the same names: {"replay_requests_total":{"ok":1,...},...} */

static u_char *
ngx_http_replay_status_json(u_char *p, ngx_http_replay_main_conf_t *rmcf)
{
    ngx_uint_t                 i;
    ngx_atomic_t              *st;
    ngx_atomic_uint_t          n, sum;
    ngx_http_replay_metric_t  *m;

    st = rmcf->stats;

    p = ngx_cpymem(p, NGX_HTTP_REPLAY_JSON_VERSION,
                   sizeof(NGX_HTTP_REPLAY_JSON_VERSION) - 1);

    for (m = ngx_http_replay_metrics; m->name.len; m++) {
        p = ngx_sprintf(p, "\"%V\":", &m->name);

        if (m->values == NULL) {
            p = ngx_sprintf(p, "%uA,", st[m->slot]);
            continue;
        }

        *p++ = '{';

        for (i = 0; m->values[i]; i++) {
            p = ngx_sprintf(p, "%s\"%s\":%uA", i ? "," : "", m->values[i],
                            st[m->slot + i]);
        }

        *p++ = '}';
        *p++ = ',';
    }

    p = ngx_http_replay_status_locations(p, rmcf, 1);

    p = ngx_sprintf(p, "\"%V\":{\"buckets\":{", &ngx_http_replay_ttfb_name);

    n = 0;

    for (i = 0; i < NGX_HTTP_REPLAY_TTFB_BUCKETS; i++) {
        n += st[NGX_HTTP_REPLAY_ST_S3_TTFB + i];

        p = ngx_sprintf(p, "%s\"%s\":%uA", i ? "," : "",
                        ngx_http_replay_ttfb_le[i], n);
    }

    sum = st[NGX_HTTP_REPLAY_ST_S3_TTFB_SUM];

    p = ngx_sprintf(p, "},\"sum\":%uA.%06uA,\"count\":%uA}",
                    sum / 1000000, sum % 1000000,
                    st[NGX_HTTP_REPLAY_ST_S3_TTFB_COUNT]);

    p = ngx_http_replay_creds_json(p);

    *p++ = '}';
    *p++ = '\n';

    return p;
}


/*
 * The replay locations' gauges: in Prometheus's format a line per
 * location (and kind), in JSON an object per metric keyed by location:
 * "replay_location_memory_bytes":{"/s3":{"pool":1,...}},...
 */

static u_char *
ngx_http_replay_status_locations(u_char *p, ngx_http_replay_main_conf_t *rmcf,
    ngx_uint_t json)
{
    ngx_uint_t                      i, j, k, n;
    ngx_atomic_t                   *slots;
    ngx_http_replay_status_loc_t  **loc;

    static ngx_atomic_t             none[NGX_HTTP_REPLAY_LOC_SLOTS];

    n = rmcf->locations ? rmcf->locations->nelts : 0;
    loc = n ? rmcf->locations->elts : NULL;

    for (j = 0; j < 3; j++) {

        if (json) {
            p = ngx_sprintf(p, "\"%V\":{", &ngx_http_replay_loc_names[j]);

        } else {
            p = ngx_sprintf(p, "# HELP %V %s\n# TYPE %V gauge\n",
                            &ngx_http_replay_loc_names[j],
                            ngx_http_replay_loc_help[j],
                            &ngx_http_replay_loc_names[j]);
        }

        for (i = 0; i < n; i++) {

            /* a location the zone had no room for shows zeros */
            slots = loc[i]->slots ? loc[i]->slots : none;

            if (json) {
                p = ngx_sprintf(p, "%s\"", i ? "," : "");
                p = ngx_http_replay_escape_label(p, &loc[i]->name, 1);
                *p++ = '"';
                *p++ = ':';
            }

            if (j == 0) {
                if (json) {
                    *p++ = '{';
                }

                for (k = 0; k < NGX_HTTP_REPLAY_MEM_KINDS; k++) {
                    if (json) {
                        p = ngx_sprintf(p, "%s\"%s\":%uA", k ? "," : "",
                                        ngx_http_replay_mem_kinds[k],
                                        slots[k]);
                        continue;
                    }

                    p = ngx_sprintf(p, "%V{location=\"",
                                    &ngx_http_replay_loc_names[j]);
                    p = ngx_http_replay_escape_label(p, &loc[i]->name, 0);
                    p = ngx_sprintf(p, "\",kind=\"%s\"} %uA\n",
                                    ngx_http_replay_mem_kinds[k], slots[k]);
                }

                if (json) {
                    *p++ = '}';
                }

                continue;
            }

            k = (j == 1) ? NGX_HTTP_REPLAY_LOC_TEMP_FILE
                         : NGX_HTTP_REPLAY_LOC_IN_FLIGHT;

            if (json) {
                p = ngx_sprintf(p, "%uA", slots[k]);
                continue;
            }

            p = ngx_sprintf(p, "%V{location=\"", &ngx_http_replay_loc_names[j]);
            p = ngx_http_replay_escape_label(p, &loc[i]->name, 0);
            p = ngx_sprintf(p, "\"} %uA\n", slots[k]);
        }

        if (json) {
            *p++ = '}';
            *p++ = ',';
        }
    }

    return p;
}


/*
 * Which module, and which OpenSSL and libpq the process loaded: what a
 * bug report needs first.  nginx calls this in the master on every start
 * and reload.
 */

ngx_int_t
ngx_http_replay_status_init_module(ngx_cycle_t *cycle)
{
    int  pq;

    pq = PQlibVersion();

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "ngx_http_replay_module/" NGX_HTTP_REPLAY_VERSION
                  " (nginx/" NGINX_VERSION ", %s, libpq %d.%d)",
                  OpenSSL_version(OPENSSL_VERSION), pq / 10000, pq % 10000);

    return NGX_OK;
}


ngx_int_t
ngx_http_replay_status_add_variables(ngx_conf_t *cf)
{
    return ngx_http_replay_add_variables(cf, ngx_http_replay_status_vars);
}


/*
 * $replay_db_time, $replay_s3_time and $replay_sign_time in seconds to the
 * microsecond ("0.000123"): a lookup or a signature takes microseconds,
 * which nginx's millisecond format ($upstream_header_time) would show as
 * "0.000"; Server-Timing has the same resolution.
 */

static ngx_int_t
ngx_http_replay_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    uint64_t                usec;
    ngx_uint_t              timed;
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case offsetof(ngx_http_replay_ctx_t, db_time):
        timed = ctx->db_timed;
        break;

    case offsetof(ngx_http_replay_ctx_t, s3_time):
        timed = ctx->s3_timed;
        break;

    default: /* sign_time */
        timed = ctx->signed_request;
        break;
    }

    if (!timed) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    usec = *(uint64_t *) ((char *) ctx + data);

    v->len = ngx_sprintf(p, "%uL.%06uL", usec / 1000000, usec % 1000000) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}
