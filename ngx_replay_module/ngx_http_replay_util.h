
/*
 * Small helpers every file of the module uses: the clock, variables,
 * response headers and what goes into a log line.
 */


#ifndef _NGX_HTTP_REPLAY_UTIL_H_INCLUDED_
#define _NGX_HTTP_REPLAY_UTIL_H_INCLUDED_


#include "ngx_http_replay_module.h"


/* room for one escaped value in a log line: longer ones end in "..." */
#define NGX_HTTP_REPLAY_LOG_VALUE_LEN  512


/* a monotonic clock, in microseconds */
uint64_t ngx_http_replay_usec(void);

/* registers a ngx_http_null_variable-terminated list */
ngx_int_t ngx_http_replay_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);

/* adds a response header; the strings must outlive the request's header */
ngx_table_elt_t *ngx_http_replay_add_header(ngx_http_request_t *r,
    char *key, u_char *value, size_t len);

/*
 * Writes src into dst (size bytes, at least 4) the way nginx's access log
 * escapes a value: bytes below 0x20 or above 0x7e, '"' and '\' become
 * "\xNN", so that no value can end or forge a log line.  What does not
 * fit ends in "...".  Returns the end of what was written.
 */
u_char *ngx_http_replay_escape(u_char *dst, size_t size, u_char *src,
    size_t len);

/*
 * s as a Prometheus label value (\\, \" and a line feed escaped) or, with
 * json, a JSON string's content (the other control bytes too, as \u00XX):
 * at most 6 bytes a byte.  Returns the end of what was written.
 */
u_char *ngx_http_replay_escape_label(u_char *p, ngx_str_t *s,
    ngx_uint_t json);

/*
 * The request that the connection's log lines name from now on, and what
 * it is doing ("while ..."): after an asynchronous step, the connection
 * may have logged for another (sub)request meanwhile.
 */
void ngx_http_replay_log_request(ngx_http_request_t *r, char *action);


#endif /* _NGX_HTTP_REPLAY_UTIL_H_INCLUDED_ */
