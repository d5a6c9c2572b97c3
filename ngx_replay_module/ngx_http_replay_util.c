
/*
 * Helpers shared by the module's files.
 */


#include "ngx_http_replay_util.h"


uint64_t
ngx_http_replay_usec(void)
{
#if (NGX_HAVE_CLOCK_MONOTONIC)
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
#else
    struct timeval   tv;

    ngx_gettimeofday(&tv);

    return (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
#endif
}


ngx_int_t
ngx_http_replay_add_variables(ngx_conf_t *cf, ngx_http_variable_t *vars)
{
    ngx_http_variable_t  *var, *v;

    for (v = vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_table_elt_t *
ngx_http_replay_add_header(ngx_http_request_t *r, char *key, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    /*
     * lowcase_key, and next on nginx 1.23+ (headers of one name are
     * chained there): NULL, on every release without a version check
     */
    ngx_memzero(h, sizeof(ngx_table_elt_t));

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return h;
}


u_char *
ngx_http_replay_escape(u_char *dst, size_t size, u_char *src, size_t len)
{
    u_char  *last, *end;

    static u_char  hex[] = "0123456789ABCDEF";

    last = dst + size;
    end = src + len;

    while (src < end) {

        if (*src < 0x20 || *src > 0x7e || *src == '"' || *src == '\\') {
            if (last - dst < 4 + (src + 1 < end ? 3 : 0)) {
                break;
            }

            *dst++ = '\\';
            *dst++ = 'x';
            *dst++ = hex[*src >> 4];
            *dst++ = hex[*src & 0xf];
            src++;
            continue;
        }

        if (last - dst < 1 + (src + 1 < end ? 3 : 0)) {
            break;
        }

        *dst++ = *src++;
    }

    if (src < end) {
        dst = ngx_cpymem(dst, "...", 3);
    }

    return dst;
}


void
ngx_http_replay_log_request(ngx_http_request_t *r, char *action)
{
    ngx_http_set_log_request(r->connection->log, r);

    r->connection->log->action = action;
}


u_char *
ngx_http_replay_escape_label(u_char *p, ngx_str_t *s, ngx_uint_t json)
{
    u_char  *c, *last;

    last = s->data + s->len;

    for (c = s->data; c < last; c++) {

        if (*c == '"' || *c == '\\') {
            *p++ = '\\';
            *p++ = *c;
            continue;
        }

        if (*c == '\n') {
            *p++ = '\\';
            *p++ = 'n';
            continue;
        }

        if (json && (*c < 0x20 || *c == 0x7f)) {
            p = ngx_sprintf(p, "\\u%04xd", (int) *c);
            continue;
        }

        *p++ = *c;
    }

    return p;
}
