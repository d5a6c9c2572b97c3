
/*
 * Memory: what each request really holds (its pool, its buffers, its row,
 * the TLS buffers of its connections), measured at the moments that
 * matter and checked against replay_memory_limit; the bound the
 * configuration gives ($replay_memory_bound, for nginx -t); and
 * replay_memory_budget, the bounds all of a worker's requests may reserve
 * at once.
 */


#ifndef _NGX_HTTP_REPLAY_MEMORY_H_INCLUDED_
#define _NGX_HTTP_REPLAY_MEMORY_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* when a request's memory is measured */
typedef enum {
    NGX_HTTP_REPLAY_MEM_LOOKUP = 0,  /* its key is known */
    NGX_HTTP_REPLAY_MEM_HEADER,      /* S3's header has come */
    NGX_HTTP_REPLAY_MEM_BODY,        /* a body buffer went on: cheap */
    NGX_HTTP_REPLAY_MEM_END          /* the context ends */
} ngx_http_replay_mem_moment_e;


/* a new context: it measures into its main request's account */
ngx_int_t ngx_http_replay_mem_start(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/*
 * Measures what the request holds now and counts it; at
 * NGX_HTTP_REPLAY_MEM_BODY only what a body buffer can change (the TLS
 * buffers, the pipe's buffers, the temporary file), the pool being
 * walked again only when the pipe has allocated a buffer.  NGX_ERROR,
 * logged once, if the request is past replay_memory_limit: the caller
 * stops it.
 */
ngx_int_t ngx_http_replay_mem_measure(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_mem_moment_e moment);

/*
 * The module's own data: size bytes for "what", named in the debug log
 * (the pool's walk counts them); always NGX_OK.
 */
ngx_int_t ngx_http_replay_mem_add(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, size_t size, const char *what);

/* ngx_pnalloc() from the request's pool, named as above; NULL if none */
void *ngx_http_replay_mem_alloc(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, size_t size, const char *what);

/*
 * A database row brings "size" bytes more than the configuration can
 * foresee: NGX_OK, and the request's bound and reservation grow by them,
 * or NGX_ERROR, logged, if its bound would then pass its limit.
 */
ngx_int_t ngx_http_replay_mem_row(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, size_t size);

/*
 * Reserves the location's bound from the worker's budget, once per main
 * request.  NGX_OK; or NGX_AGAIN: it waits, and handler(r, ctx, rc) is
 * called from an event once there is room (NGX_OK) or the wait timed out
 * (503, logged); or the status to answer with at once (503, logged).
 */
ngx_int_t ngx_http_replay_mem_reserve(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_done_pt handler);

/*
 * The context is done with S3: it leaves the queue, and the request's
 * reservation goes back when no other context of it still works.
 */
void ngx_http_replay_mem_release(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/*
 * The context ends: release, a last measure, and once its request's
 * last context has ended, the request leaves the memory gauges.
 */
void ngx_http_replay_mem_done(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/* a location's bound per request, checked against limit and budget */
char *ngx_http_replay_mem_merge(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf);

/* "replay_memory_budget SIZE [queue=N] [timeout=TIME]" */
char *ngx_http_replay_memory_budget(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* $replay_memory, $replay_memory_bound */
ngx_int_t ngx_http_replay_mem_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_REPLAY_MEMORY_H_INCLUDED_ */
