
/*
 * The key lookup: what the rest of the module sees of the database.
 * ngx_http_replay_lookup.c binds the request's values to the location's
 * replay_key_query, answers from replay_key_cache when it can, and runs
 * the query on the worker's pool of PostgreSQL connections otherwise
 * (ngx_http_replay_db*.c, behind ngx_http_replay_db.h).
 */


#ifndef _NGX_HTTP_REPLAY_LOOKUP_H_INCLUDED_
#define _NGX_HTTP_REPLAY_LOOKUP_H_INCLUDED_


#include "ngx_http_replay_module.h"


typedef void (*ngx_http_replay_lookup_handler_pt)(ngx_http_request_t *r,
    void *data, ngx_int_t rc);


/*
 * Starts the lookup of the location's replay_key_query for r.
 *   NGX_OK     answered at once (replay_key_cache): ctx->key,
 *              ctx->content_type, ctx->file_name are set;
 *   NGX_AGAIN  running: handler(r, data, rc) is called exactly once,
 *              later, from an event handler (never from inside this
 *              call), with NGX_OK (ctx->key... set) or the HTTP status
 *              to answer with.  It is never called if the request ends
 *              first: the lookup registers a cleanup on the request
 *              (ngx_http_cleanup_add(), which nginx runs on terminate
 *              and free) and detaches itself there;
 *   other      the HTTP status to answer with at once (400 for an
 *              empty, too long or NUL value, 503 queue full, 500).
 * The lookup never touches r's read/write event handlers nor adds
 * response headers (module.c adds Retry-After to a 503): waiting for
 * the client is the caller's business.  It may set ctx->outcome,
 * ctx->db_time / db_timed, ctx->key_cache and count memory with
 * ngx_http_replay_mem_*().
 */
ngx_int_t ngx_http_replay_lookup_start(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_http_replay_lookup_handler_pt handler,
    void *data);


/* configuration (ngx_http_replay_db_conf.c) */

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

/* the LISTENs of replay_key_cache ... notify= (ngx_http_replay_lookup.c) */
char *ngx_http_replay_lookup_merge(ngx_conf_t *cf,
    ngx_http_replay_loc_conf_t *conf);
ngx_int_t ngx_http_replay_lookup_init_process(ngx_cycle_t *cycle);

/* stops them, and closes the database connections */
void ngx_http_replay_lookup_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_REPLAY_LOOKUP_H_INCLUDED_ */
