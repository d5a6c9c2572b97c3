
/*
 * The PostgreSQL key lookup: resolves a request to its S3 object key with
 * a prepared statement on pooled, non-blocking libpq connections driven by
 * nginx's event loop.
 */


#ifndef _NGX_HTTP_REPLAY_DB_H_INCLUDED_
#define _NGX_HTTP_REPLAY_DB_H_INCLUDED_


#include "ngx_http_replay_module.h"


typedef void (*ngx_http_replay_lookup_handler_pt)(ngx_http_request_t *r,
    void *data, ngx_int_t rc);

/*
 * Starts the lookup of the location's replay_key_query for r.
 *   NGX_OK     answered at once (replay_key_cache): ctx->key,
 *              ctx->content_type, ctx->file_name are set;
 *   NGX_AGAIN  running: handler(r, data, rc) is called exactly once,
 *              later, from an event handler, with NGX_OK (ctx->key...
 *              set) or the HTTP status to answer with; never if the
 *              request ends first (a cleanup of the request detaches the
 *              lookup);
 *   other      the HTTP status to answer with at once (400 for an empty,
 *              too long or NUL value, 503 queue full, 500).
 * The lookup touches neither r's event handlers nor its response headers.
 */
ngx_int_t ngx_http_replay_lookup_start(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_lookup_handler_pt handler,
    void *data);

/*
 * Gives the request its row: copies of the key, the Content-Type and the
 * file name (empty strings for none), counted against its memory limit.
 * For ngx_http_replay_cache.c too.
 */
ngx_int_t ngx_http_replay_db_set_row(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *key, ngx_str_t *type,
    ngx_str_t *name);

/* the replay_db and replay_key_query directives */
char *ngx_http_replay_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_replay_key_query(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* inherits replay_db, checks that a replay_key_query has one */
char *ngx_http_replay_db_merge(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *prev, ngx_http_replay_loc_conf_t *conf);

/* what a request holds for its lookup, but for the row */
size_t ngx_http_replay_db_need(ngx_http_replay_loc_conf_t *rlcf);

/* closes the worker's database connections */
void ngx_http_replay_db_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_REPLAY_DB_H_INCLUDED_ */
