
/*
 * The key cache: what replay_key_query answered, kept in a shared memory
 * zone for all workers, so that a replay asked for again skips the
 * database until its entry expires.
 */


#ifndef _NGX_HTTP_REPLAY_CACHE_H_INCLUDED_
#define _NGX_HTTP_REPLAY_CACHE_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* ctx->key_cache: what the cache said for the request */
#define NGX_HTTP_REPLAY_CACHE_MISS     1
#define NGX_HTTP_REPLAY_CACHE_HIT      2
#define NGX_HTTP_REPLAY_CACHE_EXPIRED  3
#define NGX_HTTP_REPLAY_CACHE_STALE    4   /* expired, served: no database */


/* gives the request an entry's row, copied while the entry cannot go */
typedef ngx_int_t (*ngx_http_replay_cache_row_pt)(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *key, ngx_str_t *type,
    ngx_str_t *name);

/*
 * Looks ckey up.  NGX_OK: set_row() has given the request the entry's
 * row; NGX_DECLINED: not there (or expired); NGX_ERROR: the request
 * cannot hold the entry (logged).  *drops: what ..._put() is to be given.
 */
ngx_int_t ngx_http_replay_cache_get(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *ckey,
    ngx_http_replay_cache_row_pt set_row, ngx_uint_t *drops);

/* an expired entry within "stale=", for a lookup the database failed */
ngx_int_t ngx_http_replay_cache_get_stale(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *ckey,
    ngx_http_replay_cache_row_pt set_row);

/* keeps ctx's key, content_type and file_name under ckey */
void ngx_http_replay_cache_put(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *ckey, ngx_uint_t drops);

/* the database has no row for ckey: its entry goes */
void ngx_http_replay_cache_forget(ngx_http_request_t *r, ngx_str_t *ckey);

/* a NOTIFY: drops the entry of ckey, if any (1 if there was one) */
ngx_uint_t ngx_http_replay_cache_drop(ngx_shm_zone_t *zone, ngx_str_t *ckey);

/* every entry of the zone counts as expired from now */
void ngx_http_replay_cache_expire_all(ngx_shm_zone_t *zone);

/*
 * "replay_key_cache NAME:SIZE [valid=TIME] [stale=TIME] [notify=CHANNEL]"
 * or "replay_key_cache off"
 */
char *ngx_http_replay_key_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* $replay_key_cache */
ngx_int_t ngx_http_replay_cache_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_REPLAY_CACHE_H_INCLUDED_ */
