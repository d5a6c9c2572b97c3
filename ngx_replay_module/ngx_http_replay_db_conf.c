
/*
 * replay_db and replay_key_query.
 *
 * The connection string is parsed by libpq itself, so that anything libpq
 * takes is taken, then split: libpq's options on one side, the host list
 * (host, hostaddr, port) on the other.  No host name is ever left for
 * libpq to resolve in a worker: with a "resolver" in replay_db's block
 * the connections resolve names with it each time they connect; without
 * one, names are resolved here, once, into "hostaddr".
 */


#include "ngx_http_replay_db.h"

#include <ngx_md5.h>


#define NGX_HTTP_REPLAY_DB_MAX_PARAMS  65535


/* what SQL names are made of (any byte above ASCII included) */
#define ngx_http_replay_db_name_char(ch)                                      \
    (((ch) >= 'a' && (ch) <= 'z') || ((ch) >= 'A' && (ch) <= 'Z')            \
     || ((ch) >= '0' && (ch) <= '9') || (ch) == '_' || (ch) >= 0x80)


static char *ngx_http_replay_db_options(ngx_conf_t *cf,
    ngx_http_replay_db_t *db, PQconninfoOption *opts);
static ngx_int_t ngx_http_replay_db_split(ngx_conf_t *cf, const char *s,
    ngx_array_t *list);
static char *ngx_http_replay_db_hosts(ngx_conf_t *cf,
    ngx_http_replay_db_t *db, const char *host, const char *hostaddr,
    const char *port);
static char *ngx_http_replay_db_name(ngx_conf_t *cf,
    ngx_http_replay_db_t *db, const char *host, const char *port,
    const char *dbname);
static char *ngx_http_replay_db_params(ngx_conf_t *cf,
    ngx_http_replay_db_t *db, ngx_str_t *value);
static char *ngx_http_replay_db_init(ngx_conf_t *cf,
    ngx_http_replay_db_t *db);
static char *ngx_http_replay_db_resolve_now(ngx_conf_t *cf,
    ngx_http_replay_db_t *db);
static char *ngx_http_replay_db_host_keywords(ngx_conf_t *cf,
    ngx_http_replay_db_t *db);
static ngx_int_t ngx_http_replay_db_count_params(ngx_str_t *sql);
static u_char *ngx_http_replay_db_skip_quoted(u_char *p, u_char *last,
    ngx_uint_t escapes);
static u_char *ngx_http_replay_db_skip_dollar(u_char *p, u_char *last);


char *
ngx_http_replay_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    char                         *err, *rv;
    u_char                        text[NGX_HTTP_REPLAY_DB_TEXT_LEN];
    size_t                        len;
    ngx_str_t                    *value;
    ngx_array_t                  *dbs;
    PQconninfoOption             *opts;
    ngx_http_replay_db_t         *db, **dbp;
    ngx_http_replay_main_conf_t  *rmcf;

    if (rlcf->db) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* libpq's own parser: anything libpq takes is taken */

    err = NULL;
    opts = PQconninfoParse((char *) value[1].data, &err);

    if (opts == NULL) {
        if (err == NULL) {
            return NGX_CONF_ERROR;
        }

        len = ngx_http_replay_db_text(text, sizeof(text), err, 1);
        PQfreemem(err);

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid database connection string: %*s",
                           len, text);
        return NGX_CONF_ERROR;
    }

    db = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_db_t));
    if (db == NULL) {
        PQconninfoFree(opts);
        return NGX_CONF_ERROR;
    }

    db->conninfo = value[1];
    db->file = cf->conf_file->file.name.data;
    db->line = cf->conf_file->line;
    db->clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    rv = ngx_http_replay_db_options(cf, db, opts);

    PQconninfoFree(opts);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    rv = ngx_http_replay_db_params(cf, db, value);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

#if !(NGX_HTTP_REPLAY_DB_PIPELINE)
    if (db->pipeline > 1) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "replay_db \"%V\": this libpq has no pipeline "
                           "mode (libpq 14 and later), queries go one at "
                           "a time", &db->name);
        db->pipeline = 1;
    }
#endif

    ngx_queue_init(&db->idle);
    ngx_queue_init(&db->busy);
    ngx_queue_init(&db->waiting);

    /* the main configuration keeps every database, for the workers' exit */

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_replay_module);

    dbs = rmcf->dbs;

    if (dbs == NULL) {
        dbs = ngx_array_create(cf->pool, 2, sizeof(ngx_http_replay_db_t *));
        if (dbs == NULL) {
            return NGX_CONF_ERROR;
        }

        rmcf->dbs = dbs;
    }

    dbp = ngx_array_push(dbs);
    if (dbp == NULL) {
        return NGX_CONF_ERROR;
    }

    *dbp = db;
    rlcf->db = db;

    return NGX_CONF_OK;
}


/* libpq's options, but for the host list, which goes to db->hosts */

static char *
ngx_http_replay_db_options(ngx_conf_t *cf, ngx_http_replay_db_t *db,
    PQconninfoOption *opts)
{
    char               *rv;
    size_t              len;
    ngx_uint_t          n, i, hosts;
    const char         *host, *hostaddr, *port, *dbname, *user;
    PQconninfoOption   *o;

    host = NULL;
    hostaddr = NULL;
    port = NULL;
    dbname = NULL;
    user = NULL;
    n = 0;

    for (o = opts; o->keyword; o++) {

        if (o->val == NULL) {
            continue;
        }

        if (ngx_strcmp(o->keyword, "service") == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the database connection string names a "
                               "\"service\": libpq would read its file and "
                               "resolve its host in the worker; write its "
                               "settings in the string instead");
            return NGX_CONF_ERROR;
        }

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = o->val;

        } else if (ngx_strcmp(o->keyword, "port") == 0) {
            port = o->val;

        } else if (ngx_strcmp(o->keyword, "dbname") == 0) {
            dbname = o->val;

        } else if (ngx_strcmp(o->keyword, "user") == 0) {
            user = o->val;
        }

        n++;
    }

    hosts = (host && host[0]) || (hostaddr && hostaddr[0]);

    /* the options, then host, hostaddr, port and NULL, or NULL */

    db->keywords = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    db->values = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    if (db->keywords == NULL || db->values == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the string may name the application itself */

    db->keywords[0] = "fallback_application_name";
    db->values[0] = "nginx-replay";
    i = 1;

    for (o = opts; o->keyword; o++) {

        if (o->val == NULL) {
            continue;
        }

        if (hosts
            && (ngx_strcmp(o->keyword, "host") == 0
                || ngx_strcmp(o->keyword, "hostaddr") == 0
                || ngx_strcmp(o->keyword, "port") == 0))
        {
            continue;
        }

        /* copies: the options are freed after this */

        len = ngx_strlen(o->keyword) + 1;
        db->keywords[i] = ngx_pnalloc(cf->pool, len);

        if (db->keywords[i] == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy((char *) db->keywords[i], o->keyword, len);

        len = ngx_strlen(o->val) + 1;
        db->values[i] = ngx_pnalloc(cf->pool, len);

        if (db->values[i] == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy((char *) db->values[i], o->val, len);

        i++;
    }

    db->nopts = i;

    rv = ngx_http_replay_db_name(cf, db, host ? host : hostaddr, port,
                                 dbname ? dbname : user);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (!hosts) {
        /* libpq's default: a unix socket, nothing to resolve */
        return NGX_CONF_OK;
    }

    return ngx_http_replay_db_hosts(cf, db, host, hostaddr, port);
}


/* "a,b,,c" into its elements, empty ones included */

static ngx_int_t
ngx_http_replay_db_split(ngx_conf_t *cf, const char *s, ngx_array_t *list)
{
    u_char     *p, *q, *last;
    ngx_str_t  *e;

    if (s == NULL || s[0] == '\0') {
        return NGX_OK;
    }

    p = (u_char *) s;
    last = p + ngx_strlen(s);

    for ( ;; ) {
        q = ngx_strlchr(p, last, ',');

        if (q == NULL) {
            q = last;
        }

        e = ngx_array_push(list);
        if (e == NULL) {
            return NGX_ERROR;
        }

        e->len = q - p;
        e->data = ngx_pstrdup(cf->pool, &(ngx_str_t) { e->len, p });

        if (e->data == NULL && e->len) {
            return NGX_ERROR;
        }

        if (q == last) {
            return NGX_OK;
        }

        p = q + 1;
    }
}


static char *
ngx_http_replay_db_hosts(ngx_conf_t *cf, ngx_http_replay_db_t *db,
    const char *host, const char *hostaddr, const char *port)
{
    ngx_uint_t                  i, n;
    ngx_str_t                  *hs, *as, *ps;
    ngx_addr_t                  addr;
    ngx_array_t                 hl, al, pl;
    ngx_http_replay_db_host_t  *h;

    if (ngx_array_init(&hl, cf->temp_pool, 4, sizeof(ngx_str_t)) != NGX_OK
        || ngx_array_init(&al, cf->temp_pool, 4, sizeof(ngx_str_t)) != NGX_OK
        || ngx_array_init(&pl, cf->temp_pool, 4, sizeof(ngx_str_t)) != NGX_OK
        || ngx_http_replay_db_split(cf, host, &hl) != NGX_OK
        || ngx_http_replay_db_split(cf, hostaddr, &al) != NGX_OK
        || ngx_http_replay_db_split(cf, port, &pl) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* libpq's own rules, said here rather than at the first connection */

    if (hl.nelts && al.nelts && hl.nelts != al.nelts) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the database connection string has %ui host "
                           "names and %ui hostaddr values: give one of "
                           "each per host", hl.nelts, al.nelts);
        return NGX_CONF_ERROR;
    }

    n = ngx_max(hl.nelts, al.nelts);

    if (pl.nelts > 1 && pl.nelts != n) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the database connection string has %ui hosts "
                           "and %ui ports: give one port, or one per host",
                           n, pl.nelts);
        return NGX_CONF_ERROR;
    }

    db->hosts = ngx_array_create(cf->pool, n, sizeof(ngx_http_replay_db_host_t));
    if (db->hosts == NULL) {
        return NGX_CONF_ERROR;
    }

    hs = hl.elts;
    as = al.elts;
    ps = pl.elts;

    for (i = 0; i < n; i++) {
        h = ngx_array_push(db->hosts);
        if (h == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(h, sizeof(ngx_http_replay_db_host_t));

        if (hl.nelts) {
            h->host = hs[i];
        }

        if (al.nelts) {
            h->hostaddr = as[i];
        }

        if (pl.nelts) {
            h->port = ps[pl.nelts > 1 ? i : 0];
        }

        if (h->hostaddr.len
            || h->host.len == 0
            || h->host.data[0] == '/'
            || h->host.data[0] == '@')
        {
            /* an address given, libpq's default, or a unix socket */
            continue;
        }

        if (ngx_parse_addr(cf->temp_pool, &addr, h->host.data, h->host.len)
            == NGX_OK)
        {
            /* an address: as "hostaddr" libpq never calls getaddrinfo() */
            h->hostaddr = h->host;
            continue;
        }

        h->resolve = 1;
        db->nresolve++;
    }

    return NGX_CONF_OK;
}


/* "host=a,b port=5432 dbname=x", escaped, for log lines */

static char *
ngx_http_replay_db_name(ngx_conf_t *cf, ngx_http_replay_db_t *db,
    const char *host, const char *port, const char *dbname)
{
    u_char  buf[NGX_HTTP_REPLAY_DB_TEXT_LEN], *p, *last;
    size_t  len;

    p = buf;
    last = buf + sizeof(buf);

    if (host && host[0]) {
        p = ngx_cpymem(p, "host=", 5);
        p += ngx_http_replay_db_text(p, last - p, host, 0);
    }

    if (port && port[0] && last - p > 7) {
        p = ngx_cpymem(p, p > buf ? " port=" : "port=", p > buf ? 6 : 5);
        p += ngx_http_replay_db_text(p, last - p, port, 0);
    }

    if (dbname && dbname[0] && last - p > 9) {
        p = ngx_cpymem(p, p > buf ? " dbname=" : "dbname=", p > buf ? 8 : 7);
        p += ngx_http_replay_db_text(p, last - p, dbname, 0);
    }

    len = p - buf;

    if (len == 0) {
        ngx_str_set(&db->name, "libpq's defaults");
        return NGX_CONF_OK;
    }

    db->name.data = ngx_pnalloc(cf->pool, len);
    if (db->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(db->name.data, buf, len);
    db->name.len = len;

    return NGX_CONF_OK;
}


/*
 * pool=N queue=N connect_timeout= query_timeout= queue_timeout= prepare=
 * pipeline=N|off
 */

static char *
ngx_http_replay_db_params(ngx_conf_t *cf, ngx_http_replay_db_t *db,
    ngx_str_t *value)
{
    ngx_int_t    n;
    ngx_str_t    s;
    ngx_uint_t   i;
    ngx_msec_t  *msp;

    db->max_conns = 4;
    db->max_waiting = 128;
    db->connect_timeout = 3000;
    db->query_timeout = 5000;
    db->queue_timeout = 3000;
    db->prepare = 1;
    db->pipeline = 32;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "pool=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);

            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            db->max_conns = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "queue=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            db->max_waiting = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "pipeline=off") == 0) {
            db->pipeline = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "pipeline=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);

            if (n == NGX_ERROR || n == 0
                || n > NGX_HTTP_REPLAY_DB_MAX_PIPELINE)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\": pipeline= "
                                   "takes 1 to %d, or \"off\"", &value[i],
                                   NGX_HTTP_REPLAY_DB_MAX_PIPELINE);
                return NGX_CONF_ERROR;
            }

            db->pipeline = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "prepare=on") == 0) {
            db->prepare = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "prepare=off") == 0) {
            db->prepare = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;
            msp = &db->connect_timeout;

        } else if (ngx_strncmp(value[i].data, "query_timeout=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;
            msp = &db->query_timeout;

        } else if (ngx_strncmp(value[i].data, "queue_timeout=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;
            msp = &db->queue_timeout;

        } else {
            goto invalid;
        }

        n = ngx_parse_time(&s, 0);

        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        *msp = (ngx_msec_t) n;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


char *
ngx_http_replay_key_query(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    ngx_int_t                          max;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_replay_db_query_t        *q;
    ngx_http_compile_complex_value_t   ccv;

    if (rlcf->query) {
        return "is duplicate";
    }

    value = cf->args->elts;

    q = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_db_query_t));
    if (q == NULL) {
        return NGX_CONF_ERROR;
    }

    q->sql = (char *) value[1].data;
    q->nparams = cf->args->nelts - 2;

    max = ngx_http_replay_db_count_params(&value[1]);

    if (max == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the query has a parameter number above %d",
                           NGX_HTTP_REPLAY_DB_MAX_PARAMS);
        return NGX_CONF_ERROR;
    }

    if (max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the query has no parameter: values are bound "
                           "to $1, $2, ... in the query, never pasted "
                           "into it");
        return NGX_CONF_ERROR;
    }

    if ((ngx_uint_t) max != q->nparams) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the query has parameters up to $%i but %ui "
                           "value%s given: give one for each",
                           max, q->nparams,
                           q->nparams == 1 ? " is" : "s are");
        return NGX_CONF_ERROR;
    }

    q->params = ngx_pcalloc(cf->pool,
                            q->nparams * sizeof(ngx_http_complex_value_t));
    if (q->params == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < q->nparams; i++) {
        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[i + 2];
        ccv.complex_value = &q->params[i];

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    rlcf->query = q;

    return NGX_CONF_OK;
}


char *
ngx_http_replay_db_merge(ngx_conf_t *cf, ngx_http_replay_loc_conf_t *prev,
    ngx_http_replay_loc_conf_t *conf)
{
    u_char                      *p;
    ngx_md5_t                    md5;
    ngx_http_replay_db_t        *db;
    ngx_http_replay_db_query_t  *q;

    if (conf->db == NULL) {
        conf->db = prev->db;
    }

    ngx_conf_merge_size_value(conf->key_param_max, prev->key_param_max, 256);

    if (conf->key_param_max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_key_param_max_length must not be 0");
        return NGX_CONF_ERROR;
    }

    db = conf->db;

    /* the core module's merge has run: replay_db's block has its resolver */

    if (db && !db->ready) {
        if (ngx_http_replay_db_init(cf, db) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }
    }

    q = conf->query;

    if (q == NULL || q->db) {
        return NGX_CONF_OK;
    }

    if (db == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_key_query is set but no replay_db is "
                           "given in the location or above it");
        return NGX_CONF_ERROR;
    }

    if (conf->endpoint.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_key_query is set but replay_s3_endpoint "
                           "is not");
        return NGX_CONF_ERROR;
    }

    q->db = db;
    q->index = db->nqueries++;

    /* the connection string with its NUL, then the query */

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, db->conninfo.data, db->conninfo.len + 1);
    ngx_md5_update(&md5, q->sql, ngx_strlen(q->sql));
    ngx_md5_final(q->ident, &md5);

    /*
     * The statement's name is the query's identity: the same in every
     * worker and every configuration that has this query, and only then,
     * since behind a pooler another worker's statement of that name may
     * be found on the server connection.
     */

    p = ngx_pnalloc(cf->pool, sizeof("ngx_replay_") + 2 * sizeof(q->ident));
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    q->name = (char *) p;

    p = ngx_cpymem(p, "ngx_replay_", sizeof("ngx_replay_") - 1);
    p = ngx_hex_dump(p, q->ident, sizeof(q->ident));
    *p = '\0';

    return NGX_CONF_OK;
}


/*
 * Once per database, after the core module's merge: the resolver of
 * replay_db's block, or the names resolved now.  "nginx -t" says which.
 */

static char *
ngx_http_replay_db_init(ngx_conf_t *cf, ngx_http_replay_db_t *db)
{
    ngx_http_core_loc_conf_t  *clcf;

    db->ready = 1;

    clcf = db->clcf;

    if (db->nresolve
        && clcf->resolver
        && clcf->resolver->connections.nelts)
    {
        db->resolver = clcf->resolver;

        /* the http level's own configuration is never merged */
        db->resolver_timeout = (clcf->resolver_timeout == NGX_CONF_UNSET_MSEC)
                               ? 30000 : clcf->resolver_timeout;

        ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                      "replay_db \"%V\" in %s:%ui: host names are resolved "
                      "by the resolver at each new connection",
                      &db->name, db->file, db->line);

    } else if (db->nresolve) {
        if (ngx_http_replay_db_resolve_now(cf, db) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (db->nresolve == 0) {
        return ngx_http_replay_db_host_keywords(cf, db);
    }

    return NGX_CONF_OK;
}


/* no resolver: each name becomes its addresses, a host entry each */

static char *
ngx_http_replay_db_resolve_now(ngx_conf_t *cf, ngx_http_replay_db_t *db)
{
    u_char                     *p;
    size_t                      len;
    ngx_url_t                   u;
    ngx_uint_t                  i, j;
    ngx_array_t                *hosts;
    ngx_http_replay_db_host_t  *h, *e;

    hosts = ngx_array_create(cf->pool, db->hosts->nelts + 4,
                             sizeof(ngx_http_replay_db_host_t));
    if (hosts == NULL) {
        return NGX_CONF_ERROR;
    }

    h = db->hosts->elts;

    for (i = 0; i < db->hosts->nelts; i++) {

        if (!h[i].resolve) {
            e = ngx_array_push(hosts);
            if (e == NULL) {
                return NGX_CONF_ERROR;
            }

            *e = h[i];
            continue;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.host = h[i].host;
        u.port = 5432;

        if (ngx_inet_resolve_host(cf->pool, &u) != NGX_OK) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "replay_db \"%V\" in %s:%ui: host \"%V\" not "
                          "found%s%s", &db->name, db->file, db->line,
                          &h[i].host, u.err ? ": " : "",
                          u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        for (j = 0; j < u.naddrs; j++) {
            e = ngx_array_push(hosts);
            if (e == NULL) {
                return NGX_CONF_ERROR;
            }

            *e = h[i];
            e->resolve = 0;

            p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN);
            if (p == NULL) {
                return NGX_CONF_ERROR;
            }

            len = ngx_sock_ntop(u.addrs[j].sockaddr, u.addrs[j].socklen,
                                p, NGX_SOCKADDR_STRLEN, 0);

            e->hostaddr.data = p;
            e->hostaddr.len = len;

            ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                          "replay_db \"%V\" in %s:%ui: no resolver, host "
                          "\"%V\" resolved now to %V; a new address needs "
                          "a reload", &db->name, db->file, db->line,
                          &e->host, &e->hostaddr);
        }
    }

    db->hosts = hosts;
    db->nresolve = 0;

    return NGX_CONF_OK;
}


/* the host list, resolved, as libpq's host, hostaddr and port values */

static char *
ngx_http_replay_db_host_keywords(ngx_conf_t *cf, ngx_http_replay_db_t *db)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i, n;
    ngx_http_replay_db_host_t  *h;

    if (db->hosts == NULL) {
        return NGX_CONF_OK;
    }

    h = db->hosts->elts;
    n = db->hosts->nelts;
    len = 0;

    for (i = 0; i < n; i++) {
        len += h[i].host.len + h[i].hostaddr.len + h[i].port.len + 3;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    db->keywords[db->nopts] = "host";
    db->values[db->nopts] = (char *) p;

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &h[i].host);
    }

    *p++ = '\0';

    db->keywords[db->nopts + 1] = "hostaddr";
    db->values[db->nopts + 1] = (char *) p;

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &h[i].hostaddr);
    }

    *p++ = '\0';

    db->keywords[db->nopts + 2] = "port";
    db->values[db->nopts + 2] = (char *) p;

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, i ? ",%V" : "%V", &h[i].port);
    }

    *p = '\0';

    return NGX_CONF_OK;
}


/* the worker goes: every connection of its pools is closed */

void
ngx_http_replay_db_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_array_t                  *dbs;
    ngx_http_replay_db_t        **db;
    ngx_http_replay_main_conf_t  *rmcf;

    if (cycle->conf_ctx[ngx_http_module.index] == NULL) {
        return;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_replay_module);
    dbs = rmcf ? rmcf->dbs : NULL;

    if (dbs == NULL) {
        return;
    }

    db = dbs->elts;

    for (i = 0; i < dbs->nelts; i++) {
        ngx_http_replay_db_close_all(db[i]);
    }

    ngx_http_replay_db_cancel_exit();
}


/*
 * The highest $N of the query, out of its strings, quoted names and
 * comments; NGX_ERROR if too high.
 */

static ngx_int_t
ngx_http_replay_db_count_params(ngx_str_t *sql)
{
    u_char      *p, *start, *last;
    ngx_int_t    n, max;

    max = 0;
    start = sql->data;
    last = start + sql->len;
    p = start;

    while (p < last) {

        switch (*p) {

        case '\'':
            p = ngx_http_replay_db_skip_quoted(p, last,
                                               p > start
                                               && (p[-1] == 'E'
                                                   || p[-1] == 'e'));
            continue;

        case '"':
            p = ngx_http_replay_db_skip_quoted(p, last, 0);
            continue;

        case '-':
            if (p + 1 < last && p[1] == '-') {
                p = ngx_strlchr(p, last, '\n');

                if (p == NULL) {
                    return max;
                }
            }

            p++;
            continue;

        case '/':
            if (p + 1 < last && p[1] == '*') {
                for (p += 2; p + 1 < last; p++) {
                    if (p[0] == '*' && p[1] == '/') {
                        break;
                    }
                }

                p += 2;
                continue;
            }

            p++;
            continue;

        case '$':
            /* inside a name, "$" is just a character */

            if (p > start && ngx_http_replay_db_name_char(p[-1])) {
                p++;
                continue;
            }

            if (p + 1 < last && p[1] >= '0' && p[1] <= '9') {
                n = 0;

                for (p++; p < last && *p >= '0' && *p <= '9'; p++) {
                    n = n * 10 + (*p - '0');

                    if (n > NGX_HTTP_REPLAY_DB_MAX_PARAMS) {
                        return NGX_ERROR;
                    }
                }

                max = ngx_max(max, n);
                continue;
            }

            p = ngx_http_replay_db_skip_dollar(p, last);
            continue;

        default:
            p++;
            continue;
        }
    }

    return max;
}


static u_char *
ngx_http_replay_db_skip_quoted(u_char *p, u_char *last, ngx_uint_t escapes)
{
    u_char  quote;

    quote = *p++;

    while (p < last) {

        if (escapes && *p == '\\') {
            p += 2;
            continue;
        }

        if (*p == quote) {
            /* a doubled quote stays inside */

            if (p + 1 < last && p[1] == quote) {
                p += 2;
                continue;
            }

            return p + 1;
        }

        p++;
    }

    return last;
}


/* a $tag$...$tag$ string, or a lone "$" */

static u_char *
ngx_http_replay_db_skip_dollar(u_char *p, u_char *last)
{
    u_char  *tag, *q;
    size_t   len;

    tag = p;

    for (q = p + 1; q < last; q++) {
        if (!ngx_http_replay_db_name_char(*q)) {
            break;
        }
    }

    if (q == last || *q != '$') {
        return p + 1;
    }

    len = q - tag + 1;

    for (q++; q + len <= last; q++) {
        if (ngx_strncmp(q, tag, len) == 0) {
            return q + len;
        }
    }

    return last;
}
