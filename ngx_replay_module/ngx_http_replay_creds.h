
/*
 * AWS credentials: "replay_s3_credentials" and its sources (env, file=,
 * imds, container, web_identity, chain), fetched and refreshed by the
 * workers on the event loop, shared by them in a shared memory zone.
 * Each worker signs with its own copy of the current set, whose signing
 * key the signer derives once per day.
 */


#ifndef _NGX_HTTP_REPLAY_CREDS_H_INCLUDED_
#define _NGX_HTTP_REPLAY_CREDS_H_INCLUDED_


#include "ngx_http_replay_module.h"


typedef struct ngx_http_replay_creds_s  ngx_http_replay_creds_t;


/* the process hooks and the zone: a module of its own, in the same .so */
extern ngx_module_t  ngx_http_replay_creds_module;


/* "replay_s3_credentials SOURCE [PARAM=VALUE ...]" */
char *ngx_http_replay_creds(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/*
 * A location with replay_s3_endpoint uses the set: its region is bound
 * (a set serves one region), its endpoints are resolved or given the
 * location's resolver.
 */
char *ngx_http_replay_creds_merge(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds, ngx_str_t *region);

/* the most the set's access key id and session token may take */
size_t ngx_http_replay_creds_key_id_max(ngx_http_replay_creds_t *creds);
size_t ngx_http_replay_creds_token_max(ngx_http_replay_creds_t *creds);

/*
 * The worker's current credentials, with region and service; NULL when
 * there are none (not yet, or expired).  Valid until the worker goes
 * back to its event loop: a request copies what it keeps (the token).
 */
ngx_replay_sigv4_creds_t *ngx_http_replay_creds_get(
    ngx_http_replay_creds_t *creds);

/*
 * No credentials: logs why, returns 503, and in *retry_after the seconds
 * until the next refresh is due (1 to 60), for a Retry-After.
 */
ngx_int_t ngx_http_replay_creds_unavailable(ngx_http_request_t *r,
    ngx_http_replay_creds_t *creds, time_t *retry_after);

/* each set's state, for replay_status: Prometheus lines or a JSON member */
size_t ngx_http_replay_creds_status_size(void);
u_char *ngx_http_replay_creds_prometheus(u_char *p);
u_char *ngx_http_replay_creds_json(u_char *p);


#endif /* _NGX_HTTP_REPLAY_CREDS_H_INCLUDED_ */
