
/*
 * Memory accounting: what each request holds for the module, counted as
 * it is allocated, against replay_memory_limit; and replay_memory_budget,
 * the memory all of a worker's requests may reserve at once.
 */


#ifndef _NGX_HTTP_REPLAY_MEMORY_H_INCLUDED_
#define _NGX_HTTP_REPLAY_MEMORY_H_INCLUDED_


#include "ngx_http_replay_module.h"


/*
 * Counts size bytes held for "what"; NGX_ERROR, logged, if that would
 * take the request past replay_memory_limit.
 */
ngx_int_t ngx_http_replay_mem_add(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, size_t size, const char *what);

/* ngx_pnalloc() from the request's pool, counted; NULL past the limit */
void *ngx_http_replay_mem_alloc(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, size_t size, const char *what);

/*
 * A database row brings "size" bytes more than the configuration can
 * foresee: NGX_OK, and the request's reservation grows by them, or
 * NGX_ERROR, logged, if the request could then pass its limit.
 */
ngx_int_t ngx_http_replay_mem_row(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, size_t size);

/*
 * Reserves the location's most from the worker's budget, once per main
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

/* the context ends: release, and its count leaves the memory gauge */
void ngx_http_replay_mem_done(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx);

/* a location's most per request, checked against limit and budget */
char *ngx_http_replay_mem_merge(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *rlcf);

/* "replay_memory_budget SIZE [queue=N] [timeout=TIME]" */
char *ngx_http_replay_memory_budget(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* $replay_memory */
ngx_int_t ngx_http_replay_mem_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_REPLAY_MEMORY_H_INCLUDED_ */
