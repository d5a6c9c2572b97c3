
/*
 * AWS credentials, see ngx_http_replay_creds.h and docs/design.md.
 *
 * Each "replay_s3_credentials" is a set.  Its current credentials live in
 * an entry of the "replay_credentials" shared zone, with the set's state
 * (expiry, last refresh, failures, when to try next) and a lease: the one
 * worker that holds it fetches, the others wait for the entry's
 * generation to move.  Static sources (env, file=) are read by the master
 * while it loads the configuration and written to the entry there; a
 * worker re-reads file= when the file changes.  The others (imds,
 * container, web_identity) are fetched by the workers with the
 * asynchronous client of ngx_http_replay_client.c, on timers.
 *
 * A worker signs with a copy of the entry's credentials of its own (a
 * heap block with the signer's struct, whose signing key is derived once
 * per day), replaced when the generation moves; requests copy the token
 * they send, so the block can go at once.
 */


#include <ngx_md5.h>

#include "ngx_http_replay_creds.h"
#include "ngx_http_replay_client.h"
#include "ngx_http_replay_creds_parse.h"


#define NGX_HTTP_REPLAY_CREDS_ENV           1
#define NGX_HTTP_REPLAY_CREDS_FILE          2
#define NGX_HTTP_REPLAY_CREDS_IMDS          3
#define NGX_HTTP_REPLAY_CREDS_CONTAINER     4
#define NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY  5

/* credentials are not used in their last seconds: a request signed with
 * them must reach S3 before they expire */
#define NGX_HTTP_REPLAY_CREDS_MARGIN        2

#define NGX_HTTP_REPLAY_CREDS_MAX_FILE      65536
#define NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE  16384
#define NGX_HTTP_REPLAY_CREDS_ERRLEN        200

/* what STS takes in a role session name, IMDS gives in a role name */
#define ngx_http_replay_creds_name_char(c)                                   \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= '0' && (c) <= '9') || ngx_strchr("_+=,.@-", c))

/* the longest a failed refresh waits before the next try */
#define NGX_HTTP_REPLAY_CREDS_MAX_BACKOFF   32

/* IMDSv2: the lifetime asked for the session token, its most */
#define NGX_HTTP_REPLAY_CREDS_IMDS_TTL      "21600"

#define NGX_HTTP_REPLAY_CREDS_IMDS_TOKEN    0
#define NGX_HTTP_REPLAY_CREDS_IMDS_ROLE     1
#define NGX_HTTP_REPLAY_CREDS_IMDS_CREDS    2


/* a set's entry in the shared zone */

typedef struct ngx_http_replay_creds_shm_s  ngx_http_replay_creds_shm_t;

struct ngx_http_replay_creds_shm_s {
    ngx_http_replay_creds_shm_t    *next;
    u_char                          id[16];

    ngx_atomic_t                    generation;      /* 0: never had any */
    ngx_atomic_t                    refused;         /* 503s for want */

    time_t                          expires;         /* 0: never */
    time_t                          refreshed;       /* got at */
    time_t                          due;             /* next try; 0: now */
    time_t                          failed;          /* last failure at */
    ngx_uint_t                      refreshes;
    ngx_uint_t                      failures;
    ngx_uint_t                      consecutive;

    ngx_pid_t                       refresher;       /* holds the lease */
    time_t                          lease;           /* until */

    /* file=: the file as last read */
    time_t                          mtime;
    time_t                          ctime;
    off_t                           size;
    ngx_file_uniq_t                 uniq;

    size_t                          error_len;
    u_char                          error[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    size_t                          key_id_len;
    size_t                          secret_len;
    size_t                          token_len;
    u_char                          key_id[NGX_REPLAY_CREDS_MAX_KEY_ID];
    u_char                          secret[NGX_REPLAY_CREDS_MAX_SECRET];
    u_char                          token[NGX_REPLAY_CREDS_MAX_TOKEN];
};


/* a worker's copy, one heap block: the struct, then the strings */

typedef struct {
    ngx_replay_sigv4_creds_t        sigv4;
    size_t                          size;
} ngx_http_replay_creds_local_t;


struct ngx_http_replay_creds_s {
    ngx_uint_t                      source;
    ngx_str_t                       name;            /* "imds", ... */
    ngx_str_t                       conf;            /* "nginx.conf:12" */
    u_char                          id[16];

    /* what the sources need */
    ngx_str_t                       file;            /* file=, token files */
    ngx_str_t                       token;           /* a secret */
    ngx_str_t                       role;
    ngx_str_t                       session_name;
    ngx_str_t                       sts_region;
    ngx_str_t                       ca;
    ngx_str_t                       url;             /* the endpoint's */
    ngx_http_replay_endpoint_t      endpoint;
    time_t                          duration;
    time_t                          check;
    ngx_msec_t                      timeout;
    ngx_flag_t                      imds_v1;

    /* env, file=: as the master read them */
    ngx_replay_creds_parsed_t      *loaded;
    ngx_file_info_t                 loaded_info;

    ngx_str_t                       region;
    ngx_str_t                       service;
    ngx_flag_t                      used;

    ngx_http_replay_creds_shm_t    *shm;
    ngx_slab_pool_t                *shpool;

    /* the worker's */
    ngx_http_replay_creds_local_t  *local;
    ngx_atomic_uint_t               local_gen;
    time_t                          local_expires;
    ngx_event_t                     timer;
    ngx_http_replay_client_t       *client;
    ngx_uint_t                      step;
    size_t                          imds_token_len;
    size_t                          imds_role_len;
    u_char                          imds_token[128];
    u_char                          imds_role[128];
};


typedef struct {
    ngx_array_t                     sets;    /* ngx_http_replay_creds_t * */
    ngx_shm_zone_t                 *zone;
} ngx_http_replay_creds_main_conf_t;


typedef struct {
    ngx_uint_t                      entries;
    ngx_http_replay_creds_shm_t    *first;
} ngx_http_replay_creds_zone_t;


static char *ngx_http_replay_creds_param(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds, ngx_str_t *param);
static char *ngx_http_replay_creds_source(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds);
static char *ngx_http_replay_creds_chain(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds);
static char *ngx_http_replay_creds_env(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds);
static char *ngx_http_replay_creds_file_conf(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds);
static char *ngx_http_replay_creds_container_conf(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds);
static char *ngx_http_replay_creds_web_identity_conf(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds);
static ngx_int_t ngx_http_replay_creds_getenv(ngx_conf_t *cf, char *name,
    ngx_str_t *value);
static ngx_int_t ngx_http_replay_creds_read_file(ngx_str_t *name,
    size_t max, u_char **buf, size_t *len, ngx_file_info_t *fi,
    u_char *err);
static void ngx_http_replay_creds_errno(u_char *p, u_char *last,
    ngx_err_t err);
static ngx_int_t ngx_http_replay_creds_parse_file(ngx_str_t *name,
    u_char *buf, size_t len, ngx_replay_creds_parsed_t *out, u_char *err);
static ngx_int_t ngx_http_replay_creds_token_file(
    ngx_http_replay_creds_t *creds, u_char **buf, size_t *len, u_char *err);
static void *ngx_http_replay_creds_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_replay_creds_init_main_conf(ngx_conf_t *cf,
    void *conf);
static ngx_int_t ngx_http_replay_creds_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_replay_creds_store(ngx_http_replay_creds_shm_t *sh,
    ngx_replay_creds_parsed_t *parsed, time_t now);
static ngx_int_t ngx_http_replay_creds_init_process(ngx_cycle_t *cycle);
static void ngx_http_replay_creds_exit_process(ngx_cycle_t *cycle);
static void ngx_http_replay_creds_tick(ngx_event_t *ev);
static void ngx_http_replay_creds_refresh(ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_refresh_file(
    ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_imds(ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_container(ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_sts(ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_send(ngx_http_replay_creds_t *creds,
    char *method, ngx_str_t *path, ngx_str_t *headers, ngx_str_t *body,
    char *content_type);
static void ngx_http_replay_creds_answer(ngx_http_replay_client_t *hc);
static ngx_int_t ngx_http_replay_creds_imds_answer(
    ngx_http_replay_creds_t *creds, ngx_http_replay_client_t *hc,
    u_char *err);
static void ngx_http_replay_creds_done(ngx_http_replay_creds_t *creds,
    ngx_replay_creds_parsed_t *parsed, u_char *err, ngx_uint_t changed);
static void ngx_http_replay_creds_failed(ngx_http_replay_creds_t *creds,
    u_char *err);
static u_char *ngx_http_replay_creds_parse_error(u_char *p, u_char *last,
    int rc, ngx_replay_creds_parsed_t *parsed);
static void ngx_http_replay_creds_schedule(ngx_http_replay_creds_t *creds,
    time_t at);
static void ngx_http_replay_creds_adopt(ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_free_local(ngx_http_replay_creds_t *creds);
static u_char *ngx_http_replay_creds_iso8601(u_char *p, time_t t);
static ngx_array_t *ngx_http_replay_creds_sets(void);
static u_char *ngx_http_replay_creds_escape(u_char *p, ngx_str_t *s,
    ngx_uint_t json);


static ngx_http_module_t  ngx_http_replay_creds_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_replay_creds_create_main_conf, /* create main configuration */
    ngx_http_replay_creds_init_main_conf,  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_replay_creds_module = {
    NGX_MODULE_V1,
    &ngx_http_replay_creds_module_ctx,     /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_replay_creds_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_replay_creds_exit_process,    /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_replay_creds_names[] = {
    ngx_null_string,
    ngx_string("env"),
    ngx_string("file"),
    ngx_string("imds"),
    ngx_string("container"),
    ngx_string("web_identity")
};


/* ------------------------------------------------------------------ */
/* configuration                                                       */


char *
ngx_http_replay_creds(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    char                                *rv;
    u_char                              *p;
    ngx_str_t                           *value, name;
    ngx_md5_t                            md5;
    ngx_uint_t                           i;
    ngx_http_replay_creds_t             *creds, **set;
    ngx_http_replay_creds_main_conf_t   *cmcf;

    if (rlcf->creds != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    creds = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_creds_t));
    if (creds == NULL) {
        return NGX_CONF_ERROR;
    }

    creds->duration = NGX_CONF_UNSET;
    creds->check = NGX_CONF_UNSET;
    creds->timeout = NGX_CONF_UNSET_MSEC;
    creds->imds_v1 = NGX_CONF_UNSET;
    ngx_str_set(&creds->service, "s3");

    /* where it is written, for the log and replay_status */

    name = cf->conf_file->file.name;

    for (p = name.data + name.len; p > name.data && p[-1] != '/'; p--) {
        /* void */
    }

    creds->conf.len = name.data + name.len - p + 1 + NGX_INT_T_LEN;
    creds->conf.data = ngx_pnalloc(cf->pool, creds->conf.len);
    if (creds->conf.data == NULL) {
        return NGX_CONF_ERROR;
    }

    creds->conf.len = ngx_sprintf(creds->conf.data, "%*s:%ui",
                                  (size_t) (name.data + name.len - p), p,
                                  cf->conf_file->line)
                      - creds->conf.data;

    if (ngx_strcmp(value[1].data, "env") == 0) {
        creds->source = NGX_HTTP_REPLAY_CREDS_ENV;

    } else if (ngx_strncmp(value[1].data, "file=", 5) == 0
               && value[1].len > 5)
    {
        creds->source = NGX_HTTP_REPLAY_CREDS_FILE;
        creds->file.data = value[1].data + 5;
        creds->file.len = value[1].len - 5;

    } else if (ngx_strcmp(value[1].data, "imds") == 0) {
        creds->source = NGX_HTTP_REPLAY_CREDS_IMDS;

    } else if (ngx_strcmp(value[1].data, "container") == 0) {
        creds->source = NGX_HTTP_REPLAY_CREDS_CONTAINER;

    } else if (ngx_strcmp(value[1].data, "web_identity") == 0) {
        creds->source = NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY;

    } else if (ngx_strcmp(value[1].data, "chain") == 0) {
        creds->source = 0;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", it must be \"env\", "
                           "\"file=PATH\", \"imds\", \"container\", "
                           "\"web_identity\" or \"chain\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_http_replay_creds_param(cf, creds, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    ngx_conf_init_msec_value(creds->timeout, 5000);
    ngx_conf_init_value(creds->check, 5);
    ngx_conf_init_value(creds->imds_v1, 0);

    rv = (creds->source == 0) ? ngx_http_replay_creds_chain(cf, creds)
                              : ngx_http_replay_creds_source(cf, creds);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    creds->name = ngx_http_replay_creds_names[creds->source];

    /* the set's identity: what it is fetched from, not what it holds */

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, creds->name.data, creds->name.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, creds->file.data, creds->file.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, creds->role.data, creds->role.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, creds->endpoint.url.data, creds->endpoint.url.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, creds->session_name.data, creds->session_name.len);
    ngx_md5_final(creds->id, &md5);

    cmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_replay_creds_module);

    set = ngx_array_push(&cmcf->sets);
    if (set == NULL) {
        return NGX_CONF_ERROR;
    }

    *set = creds;
    rlcf->creds = creds;

    return NGX_CONF_OK;
}


static char *
ngx_http_replay_creds_param(ngx_conf_t *cf, ngx_http_replay_creds_t *creds,
    ngx_str_t *param)
{
    u_char     *eq;
    ngx_str_t   name, value;
    ngx_int_t   n;

    eq = ngx_strlchr(param->data, param->data + param->len, '=');

    if (eq == NULL || eq == param->data || eq + 1 == param->data + param->len)
    {
        goto invalid;
    }

    name.data = param->data;
    name.len = eq - param->data;
    value.data = eq + 1;
    value.len = param->data + param->len - value.data;

#define ngx_http_replay_creds_is(s)                                          \
    (name.len == sizeof(s) - 1 && ngx_strncmp(name.data, s, name.len) == 0)

    if (ngx_http_replay_creds_is("timeout")) {
        n = ngx_parse_time(&value, 0);
        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        creds->timeout = (ngx_msec_t) n;
        return NGX_CONF_OK;
    }

    switch (creds->source) {

    case NGX_HTTP_REPLAY_CREDS_FILE:

        if (ngx_http_replay_creds_is("check")) {
            n = ngx_parse_time(&value, 1);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            creds->check = n;
            return NGX_CONF_OK;
        }

        break;

    case NGX_HTTP_REPLAY_CREDS_IMDS:

        if (ngx_http_replay_creds_is("endpoint")) {
            creds->url = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("role")) {
            creds->role = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("imds_v1")) {
            if (ngx_strcmp(value.data, "on") == 0) {
                creds->imds_v1 = 1;
                return NGX_CONF_OK;
            }

            if (ngx_strcmp(value.data, "off") == 0) {
                creds->imds_v1 = 0;
                return NGX_CONF_OK;
            }

            goto invalid;
        }

        break;

    case NGX_HTTP_REPLAY_CREDS_CONTAINER:

        if (ngx_http_replay_creds_is("endpoint")) {
            creds->url = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("token_file")) {
            creds->file = value;
            return NGX_CONF_OK;
        }

        break;

    case NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY:

        if (ngx_http_replay_creds_is("token_file")) {
            creds->file = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("sts_endpoint")) {
            creds->url = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("role_arn")) {
            creds->role = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("session_name")) {
            creds->session_name = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("sts_region")) {
            creds->sts_region = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("ca")) {
            creds->ca = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_creds_is("duration")) {
            n = ngx_parse_time(&value, 1);

            /* what AssumeRoleWithWebIdentity takes */
            if (n == NGX_ERROR || n < 900 || n > 43200) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\": STS takes "
                                   "15m to 12h", param);
                return NGX_CONF_ERROR;
            }

            creds->duration = n;
            return NGX_CONF_OK;
        }

        break;
    }

#undef ngx_http_replay_creds_is

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       param);

    return NGX_CONF_ERROR;
}


/*
 * The variables of the AWS SDKs' default chain decide, in its order:
 * the environment's keys, a web identity token, the container endpoint,
 * then the instance's metadata service.  The master reads them while it
 * loads the configuration; the workers get what follows from them.
 */

static char *
ngx_http_replay_creds_chain(ngx_conf_t *cf, ngx_http_replay_creds_t *creds)
{
    char       *why;
    ngx_str_t   a, b;

    if (ngx_http_replay_creds_getenv(cf, "AWS_ACCESS_KEY_ID", &a) == NGX_OK
        && ngx_http_replay_creds_getenv(cf, "AWS_SECRET_ACCESS_KEY", &b)
           == NGX_OK)
    {
        creds->source = NGX_HTTP_REPLAY_CREDS_ENV;
        why = "AWS_ACCESS_KEY_ID is set";

    } else if (ngx_http_replay_creds_getenv(cf, "AWS_WEB_IDENTITY_TOKEN_FILE",
                                            &a) == NGX_OK
               && ngx_http_replay_creds_getenv(cf, "AWS_ROLE_ARN", &b)
                  == NGX_OK)
    {
        creds->source = NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY;
        why = "AWS_WEB_IDENTITY_TOKEN_FILE is set";

    } else if (ngx_http_replay_creds_getenv(cf,
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", &a) == NGX_OK
               || ngx_http_replay_creds_getenv(cf,
                      "AWS_CONTAINER_CREDENTIALS_FULL_URI", &a) == NGX_OK)
    {
        creds->source = NGX_HTTP_REPLAY_CREDS_CONTAINER;
        why = "AWS_CONTAINER_CREDENTIALS_*_URI is set";

    } else if (ngx_http_replay_creds_getenv(cf, "AWS_EC2_METADATA_DISABLED",
                                            &a) == NGX_OK
               && a.len == 4 && ngx_strncasecmp(a.data, (u_char *) "true", 4)
                                == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials chain: no source in "
                           "nginx's environment (no AWS_ACCESS_KEY_ID, "
                           "AWS_WEB_IDENTITY_TOKEN_FILE or "
                           "AWS_CONTAINER_CREDENTIALS_*_URI, and "
                           "AWS_EC2_METADATA_DISABLED is true)");
        return NGX_CONF_ERROR;

    } else {
        creds->source = NGX_HTTP_REPLAY_CREDS_IMDS;
        why = "none of the other sources' variables is set";
    }

    ngx_conf_log_error(NGX_LOG_INFO, cf, 0,
                       "replay_s3_credentials chain: %V (%s)",
                       &ngx_http_replay_creds_names[creds->source], why);

    return ngx_http_replay_creds_source(cf, creds);
}


static char *
ngx_http_replay_creds_source(ngx_conf_t *cf, ngx_http_replay_creds_t *creds)
{
    switch (creds->source) {

    case NGX_HTTP_REPLAY_CREDS_ENV:
        return ngx_http_replay_creds_env(cf, creds);

    case NGX_HTTP_REPLAY_CREDS_FILE:
        return ngx_http_replay_creds_file_conf(cf, creds);

    case NGX_HTTP_REPLAY_CREDS_IMDS:

        if (creds->url.len == 0
            && ngx_http_replay_creds_getenv(cf,
                   "AWS_EC2_METADATA_SERVICE_ENDPOINT", &creds->url)
               != NGX_OK)
        {
            ngx_str_set(&creds->url, "http://169.254.169.254");
        }

        return ngx_http_replay_endpoint_parse(cf, &creds->endpoint,
                                              &creds->url);

    case NGX_HTTP_REPLAY_CREDS_CONTAINER:
        return ngx_http_replay_creds_container_conf(cf, creds);

    default: /* NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY */
        return ngx_http_replay_creds_web_identity_conf(cf, creds);
    }
}


/*
 * Read in the master process while the configuration loads: its
 * environment is whole there, so no "env" directive is needed for them.
 */

static char *
ngx_http_replay_creds_env(ngx_conf_t *cf, ngx_http_replay_creds_t *creds)
{
    ngx_uint_t                  i;
    ngx_str_t                   value;
    ngx_replay_creds_parsed_t  *parsed;

    static char                *names[] = {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"
    };

    parsed = ngx_pcalloc(cf->pool, sizeof(ngx_replay_creds_parsed_t));
    if (parsed == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < 3; i++) {
        if (ngx_http_replay_creds_getenv(cf, names[i], &value) != NGX_OK) {
            if (i == 2) {
                break;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials env: %s is not set "
                               "in nginx's environment", names[i]);
            return NGX_CONF_ERROR;
        }

        switch (i) {

        case 0:
            parsed->key_id_len = value.len;
            ngx_memcpy(parsed->key_id, value.data,
                       ngx_min(value.len, sizeof(parsed->key_id)));
            break;

        case 1:
            parsed->secret_len = value.len;
            ngx_memcpy(parsed->secret, value.data,
                       ngx_min(value.len, sizeof(parsed->secret)));
            break;

        default:
            parsed->token_len = value.len;
            ngx_memcpy(parsed->token, value.data,
                       ngx_min(value.len, sizeof(parsed->token)));
            break;
        }
    }

    if (ngx_replay_creds_check(parsed) != NGX_REPLAY_CREDS_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials env: %s is too long or "
                           "holds a character it may not",
                           parsed->field[0] == 'A' ? names[0]
                           : parsed->field[0] == 'S' ? names[1] : names[2]);
        return NGX_CONF_ERROR;
    }

    creds->loaded = parsed;

    return NGX_CONF_OK;
}


/*
 * The file is read at startup by the master process (usually root), and
 * again by a worker when it changes, so that a secrets agent may rotate
 * it: it must then be readable by the workers' user too.
 */

static char *
ngx_http_replay_creds_file_conf(ngx_conf_t *cf, ngx_http_replay_creds_t *creds)
{
    u_char                     *buf;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_replay_creds_parsed_t  *parsed;
    u_char                      err[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    if (ngx_conf_full_name(cf->cycle, &creds->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    parsed = ngx_pcalloc(cf->pool, sizeof(ngx_replay_creds_parsed_t));
    if (parsed == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_replay_creds_read_file(&creds->file,
                                        NGX_HTTP_REPLAY_CREDS_MAX_FILE, &buf,
                                        &len, &creds->loaded_info, err)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    rc = ngx_http_replay_creds_parse_file(&creds->file, buf, len, parsed,
                                          err);

    ngx_explicit_memzero(buf, len);
    ngx_free(buf);

    if (rc != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    creds->loaded = parsed;

    return NGX_CONF_OK;
}


/* ECS task roles and EKS Pod Identity */

static char *
ngx_http_replay_creds_container_conf(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds)
{
    u_char                      *p;
    ngx_str_t                    rel, *host;
    ngx_uint_t                   i;
    ngx_replay_creds_parsed_t    check;
    ngx_http_replay_endpoint_t  *ep;

    static char                 *allowed[] = {
        "localhost", "::1", "169.254.170.2", "169.254.170.23",
        "fd00:ec2::23", NULL
    };

    if (creds->url.len == 0) {
        if (ngx_http_replay_creds_getenv(cf,
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", &rel) == NGX_OK)
        {
            if (rel.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "replay_s3_credentials container: "
                                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI "
                                   "does not start with \"/\"");
                return NGX_CONF_ERROR;
            }

            creds->url.len = sizeof("http://169.254.170.2") - 1 + rel.len;
            creds->url.data = ngx_pnalloc(cf->pool, creds->url.len);
            if (creds->url.data == NULL) {
                return NGX_CONF_ERROR;
            }

            p = ngx_cpymem(creds->url.data, "http://169.254.170.2",
                           sizeof("http://169.254.170.2") - 1);
            ngx_memcpy(p, rel.data, rel.len);

        } else if (ngx_http_replay_creds_getenv(cf,
                       "AWS_CONTAINER_CREDENTIALS_FULL_URI", &creds->url)
                   != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials container: neither "
                               "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor "
                               "AWS_CONTAINER_CREDENTIALS_FULL_URI is set in "
                               "nginx's environment, and no endpoint= is "
                               "given");
            return NGX_CONF_ERROR;
        }
    }

    ep = &creds->endpoint;

    if (ngx_http_replay_endpoint_parse(cf, ep, &creds->url) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * As the AWS SDKs: over plain http the credentials may come only from
     * this host or from the ECS / EKS link-local endpoints.
     */

    if (!ep->https) {
        host = &ep->host;

        for (i = 0; allowed[i]; i++) {
            if (host->len == ngx_strlen(allowed[i])
                && ngx_strncasecmp(host->data, (u_char *) allowed[i],
                                   host->len) == 0)
            {
                break;
            }
        }

        if (allowed[i] == NULL
            && !(ep->ip && host->len > 4
                 && ngx_strncmp(host->data, "127.", 4) == 0))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials container: \"%V\" is "
                               "plain http to a host that is neither a "
                               "loopback address nor the ECS or EKS "
                               "endpoint; use https", &ep->host);
            return NGX_CONF_ERROR;
        }
    }

    if (creds->file.len == 0
        && ngx_http_replay_creds_getenv(cf,
               "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &creds->file)
           != NGX_OK
        && ngx_http_replay_creds_getenv(cf, "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                        &creds->token) == NGX_OK)
    {
        /* a token of its own: it goes in a header, so no control byte */

        ngx_memzero(&check, sizeof(ngx_replay_creds_parsed_t));
        check.key_id[0] = 'A';
        check.key_id_len = 1;
        check.secret[0] = 's';
        check.secret_len = 1;
        check.token_len = ngx_min(creds->token.len, sizeof(check.token));
        ngx_memcpy(check.token, creds->token.data, check.token_len);

        if (creds->token.len > sizeof(check.token)
            || ngx_replay_creds_check(&check) != NGX_REPLAY_CREDS_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials container: "
                               "AWS_CONTAINER_AUTHORIZATION_TOKEN is too long "
                               "or holds a character it may not");
            return NGX_CONF_ERROR;
        }

        ngx_explicit_memzero(check.token, check.token_len);
    }

    if (creds->file.len
        && ngx_conf_full_name(cf->cycle, &creds->file, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* EKS IRSA and others: AssumeRoleWithWebIdentity with a token file */

static char *
ngx_http_replay_creds_web_identity_conf(ngx_conf_t *cf,
    ngx_http_replay_creds_t *creds)
{
    u_char      *p, *last;
    ngx_str_t    v;

    if (creds->role.len == 0
        && ngx_http_replay_creds_getenv(cf, "AWS_ROLE_ARN", &creds->role)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials web_identity: no role_arn= "
                           "and no AWS_ROLE_ARN in nginx's environment");
        return NGX_CONF_ERROR;
    }

    if (creds->file.len == 0
        && ngx_http_replay_creds_getenv(cf, "AWS_WEB_IDENTITY_TOKEN_FILE",
                                        &creds->file)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials web_identity: no "
                           "token_file= and no AWS_WEB_IDENTITY_TOKEN_FILE in "
                           "nginx's environment");
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &creds->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (creds->session_name.len == 0) {
        (void) ngx_http_replay_creds_getenv(cf, "AWS_ROLE_SESSION_NAME",
                                            &creds->session_name);
    }

    /* STS's rule for RoleSessionName: [\w+=,.@-]{2,64} */

    if (creds->session_name.len) {
        last = creds->session_name.data + creds->session_name.len;

        for (p = creds->session_name.data; p < last; p++) {
            if (*p == '\0' || !ngx_http_replay_creds_name_char(*p)) {
                break;
            }
        }

        if (p < last || creds->session_name.len < 2
            || creds->session_name.len > 64)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials web_identity: the "
                               "session name \"%V\" is not 2 to 64 of "
                               "letters, digits and _+=,.@-",
                               &creds->session_name);
            return NGX_CONF_ERROR;
        }
    }

    if (creds->sts_region.len == 0
        && ngx_http_replay_creds_getenv(cf, "AWS_REGION", &creds->sts_region)
           != NGX_OK)
    {
        (void) ngx_http_replay_creds_getenv(cf, "AWS_DEFAULT_REGION",
                                            &creds->sts_region);
    }

    if (creds->ca.len == 0) {
        (void) ngx_http_replay_creds_getenv(cf, "AWS_CA_BUNDLE", &creds->ca);
    }

    if (creds->url.len == 0
        && ngx_http_replay_creds_getenv(cf, "AWS_ENDPOINT_URL_STS", &v)
           == NGX_OK)
    {
        creds->url = v;
    }

    if (creds->url.len == 0) {
        /* https://sts.REGION.amazonaws.com, once the region is known */
        return NGX_CONF_OK;
    }

    if (ngx_http_replay_endpoint_parse(cf, &creds->endpoint, &creds->url)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (!creds->endpoint.https) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials web_identity: the STS "
                           "endpoint \"%V\" must be https: the token is "
                           "sent to it", &creds->url);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* an AWS_* variable of the master's environment, copied; empty is unset */

static ngx_int_t
ngx_http_replay_creds_getenv(ngx_conf_t *cf, char *name, ngx_str_t *value)
{
    char  *v;

    v = getenv(name);

    if (v == NULL || v[0] == '\0') {
        return NGX_DECLINED;
    }

    value->len = ngx_strlen(v);
    value->data = ngx_pnalloc(cf->pool, value->len + 1);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(value->data, v, value->len + 1);

    return NGX_OK;
}


/*
 * A small file, whole, into a heap buffer of "max" bytes that the caller
 * wipes and frees; fi is its state as read.  On an error, err says why
 * (NUL-terminated, no content of the file).
 */

static ngx_int_t
ngx_http_replay_creds_read_file(ngx_str_t *name, size_t max, u_char **buf,
    size_t *len, ngx_file_info_t *fi, u_char *err)
{
    u_char     *last;
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_err_t   e;
    ngx_int_t   rc;

    last = err + NGX_HTTP_REPLAY_CREDS_ERRLEN - 1;

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        e = ngx_errno;
        ngx_http_replay_creds_errno(ngx_slprintf(err, last, ngx_open_file_n
                                                 " \"%V\" failed", name),
                                    last, e);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    *buf = NULL;

    if (ngx_fd_info(fd, fi) == NGX_FILE_ERROR) {
        e = ngx_errno;
        ngx_http_replay_creds_errno(ngx_slprintf(err, last, ngx_fd_info_n
                                                 " \"%V\" failed", name),
                                    last, e);
        goto done;
    }

    if (ngx_file_size(fi) > (off_t) max) {
        *ngx_slprintf(err, last, "\"%V\" is too large", name) = '\0';
        goto done;
    }

    *buf = ngx_alloc(max, ngx_cycle->log);
    if (*buf == NULL) {
        *ngx_slprintf(err, last, "no memory to read \"%V\"", name) = '\0';
        goto done;
    }

    *len = 0;

    do {
        n = ngx_read_fd(fd, *buf + *len, max - *len);

        if (n == -1) {
            e = ngx_errno;
            ngx_http_replay_creds_errno(ngx_slprintf(err, last, ngx_read_fd_n
                                                     " \"%V\" failed", name),
                                        last, e);
            goto done;
        }

        *len += n;

    } while (n > 0 && *len < max);

    rc = NGX_OK;

done:

    if (rc != NGX_OK && *buf) {
        ngx_explicit_memzero(*buf, max);
        ngx_free(*buf);
        *buf = NULL;
    }

    (void) ngx_close_file(fd);

    return rc;
}


/* " (2: No such file or directory)", NUL-terminated before last */

static void
ngx_http_replay_creds_errno(u_char *p, u_char *last, ngx_err_t err)
{
    p = ngx_slprintf(p, last, " (%d: ", err);
    p = ngx_strerror(err, p, last - p);

    if (p < last) {
        *p++ = ')';
    }

    *p = '\0';
}


/*
 * The format of ~/.aws/credentials: "aws_access_key_id = ...",
 * "aws_secret_access_key = ...", "aws_session_token = ...", with an
 * optional "[default]" header; "#" and ";" start comments.  The lines
 * are read by the signer's parser (for t/fuzz/); errors name the line,
 * never its text.
 */

static ngx_int_t
ngx_http_replay_creds_parse_file(ngx_str_t *name, u_char *buf, size_t len,
    ngx_replay_creds_parsed_t *out, u_char *err)
{
    u_char                  *p, *eol, *dst, *last;
    size_t                  *dlen, size;
    ngx_uint_t               line;
    ngx_replay_sigv4_str_t   value;

    last = err + NGX_HTTP_REPLAY_CREDS_ERRLEN - 1;

    out->key_id_len = 0;
    out->secret_len = 0;
    out->token_len = 0;
    out->expiration = 0;

    p = buf;

    for (line = 1; p < buf + len; line++, p = eol + 1) {
        eol = ngx_strlchr(p, buf + len, '\n');
        if (eol == NULL) {
            eol = buf + len;
        }

        switch (ngx_replay_sigv4_creds_line(p, eol - p, &value)) {

        case NGX_REPLAY_SIGV4_CREDS_ACCESS_KEY_ID:
            dst = out->key_id;
            dlen = &out->key_id_len;
            size = sizeof(out->key_id);
            break;

        case NGX_REPLAY_SIGV4_CREDS_SECRET_ACCESS_KEY:
            dst = out->secret;
            dlen = &out->secret_len;
            size = sizeof(out->secret);
            break;

        case NGX_REPLAY_SIGV4_CREDS_SESSION_TOKEN:
            dst = out->token;
            dlen = &out->token_len;
            size = sizeof(out->token);
            break;

        case NGX_REPLAY_SIGV4_CREDS_PROFILE:
            *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                          "only the \"[default]\" profile is read", name,
                          line) = '\0';
            return NGX_ERROR;

        case NGX_REPLAY_SIGV4_CREDS_NO_EQUALS:
            *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                          "\"name = value\" expected", name, line) = '\0';
            return NGX_ERROR;

        default: /* NGX_REPLAY_SIGV4_CREDS_SKIP: blank, comment, other keys */
            continue;
        }

        if (*dlen) {
            *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                          "duplicate key", name, line) = '\0';
            return NGX_ERROR;
        }

        if (value.len == 0) {
            *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                          "empty value", name, line) = '\0';
            return NGX_ERROR;
        }

        if (value.len > size) {
            *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                          "the value is too long", name, line) = '\0';
            return NGX_ERROR;
        }

        ngx_memcpy(dst, value.data, value.len);
        *dlen = value.len;
    }

    if (out->key_id_len == 0 || out->secret_len == 0) {
        *ngx_slprintf(err, last, "credentials file \"%V\": both an access "
                      "key id and a secret access key are needed", name)
            = '\0';
        return NGX_ERROR;
    }

    if (ngx_replay_creds_check(out) != NGX_REPLAY_CREDS_OK) {
        *ngx_slprintf(err, last, "credentials file \"%V\": the %s holds a "
                      "character it may not", name,
                      out->field[0] == 'A' ? "access key id"
                      : out->field[0] == 'S' ? "secret access key"
                      : "session token") = '\0';
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a token file (web identity, container authorization), read each time */

static ngx_int_t
ngx_http_replay_creds_token_file(ngx_http_replay_creds_t *creds, u_char **buf,
    size_t *len, u_char *err)
{
    u_char           *p;
    ngx_file_info_t   fi;

    if (ngx_http_replay_creds_read_file(&creds->file,
                                        NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE,
                                        buf, len, &fi, err)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a final newline is not the token's */

    while (*len && ((*buf)[*len - 1] == '\n' || (*buf)[*len - 1] == '\r'
                    || (*buf)[*len - 1] == ' ' || (*buf)[*len - 1] == '\t'))
    {
        (*len)--;
    }

    for (p = *buf; p < *buf + *len; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            break;
        }
    }

    if (*len == 0 || p < *buf + *len) {
        *ngx_slprintf(err, err + NGX_HTTP_REPLAY_CREDS_ERRLEN - 1,
                      "the token file \"%V\" is empty or holds a character "
                      "a token may not", &creds->file) = '\0';
        ngx_explicit_memzero(*buf, NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE);
        ngx_free(*buf);
        *buf = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


char *
ngx_http_replay_creds_merge(ngx_conf_t *cf, ngx_http_replay_creds_t *creds,
    ngx_str_t *region)
{
    u_char                    *p;
    ngx_str_t                  sts_region;
    ngx_http_core_loc_conf_t  *clcf;

    if (creds->region.len == 0) {
        /* credentials may be shared by locations of one region */
        creds->region = *region;

    } else if (creds->region.len != region->len
               || ngx_strncmp(creds->region.data, region->data, region->len)
                  != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials are shared by locations "
                           "with different replay_s3_region values; "
                           "repeat replay_s3_credentials in each location");
        return NGX_CONF_ERROR;
    }

    if (creds->used) {
        return NGX_CONF_OK;
    }

    creds->used = 1;

    if (creds->source == NGX_HTTP_REPLAY_CREDS_ENV
        || creds->source == NGX_HTTP_REPLAY_CREDS_FILE)
    {
        return NGX_CONF_OK;
    }

    if (creds->source == NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY
        && creds->url.len == 0)
    {
        /* the regional endpoint, of the STS region or the bucket's */

        sts_region = creds->sts_region.len ? creds->sts_region : *region;

        creds->url.len = sizeof("https://sts..amazonaws.com") - 1
                         + sts_region.len;
        creds->url.data = ngx_pnalloc(cf->pool, creds->url.len);
        if (creds->url.data == NULL) {
            return NGX_CONF_ERROR;
        }

        p = ngx_sprintf(creds->url.data, "https://sts.%V.amazonaws.com",
                        &sts_region);
        creds->url.len = p - creds->url.data;

        if (ngx_http_replay_endpoint_parse(cf, &creds->endpoint, &creds->url)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* the resolver where the credentials are first used, if it has one */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    return ngx_http_replay_endpoint_init(cf, &creds->endpoint, clcf->resolver,
                                         clcf->resolver_timeout, &creds->ca);
}


size_t
ngx_http_replay_creds_key_id_max(ngx_http_replay_creds_t *creds)
{
    return creds->loaded ? creds->loaded->key_id_len
                         : NGX_REPLAY_CREDS_MAX_KEY_ID;
}


size_t
ngx_http_replay_creds_token_max(ngx_http_replay_creds_t *creds)
{
    /* a rotated file may bring a token: counted as the longest */
    return (creds->source == NGX_HTTP_REPLAY_CREDS_ENV)
           ? creds->loaded->token_len : NGX_REPLAY_CREDS_MAX_TOKEN;
}


static void *
ngx_http_replay_creds_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_replay_creds_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_creds_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&cmcf->sets, cf->pool, 2,
                       sizeof(ngx_http_replay_creds_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return cmcf;
}


/*
 * The zone, once every set is known; its size follows from their number,
 * so that a reload with as many keeps it, and the credentials in it.
 */

static char *
ngx_http_replay_creds_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_replay_creds_main_conf_t *cmcf = conf;

    size_t      entry;
    ngx_str_t   name;

    if (cmcf->sets.nelts == 0) {
        return NGX_CONF_OK;
    }

    ngx_str_set(&name, "replay_credentials");

    entry = ngx_align(sizeof(ngx_http_replay_creds_shm_t), ngx_pagesize);

    cmcf->zone = ngx_shared_memory_add(cf, &name,
                                       8 * ngx_pagesize
                                       + (cmcf->sets.nelts + 1) * entry,
                                       &ngx_http_replay_creds_module);
    if (cmcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->zone->init = ngx_http_replay_creds_init_zone;
    cmcf->zone->data = cmcf;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_replay_creds_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    time_t                               now;
    ngx_uint_t                           i;
    ngx_slab_pool_t                     *shpool;
    ngx_http_replay_creds_t            **sets, *creds;
    ngx_http_replay_creds_shm_t         *sh;
    ngx_http_replay_creds_zone_t        *zone;
    ngx_http_replay_creds_main_conf_t   *cmcf;

    cmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data || shm_zone->shm.exists) {
        /* a reload: the sets found again keep their credentials */
        zone = shpool->data;

    } else {
        zone = ngx_slab_calloc(shpool, sizeof(ngx_http_replay_creds_zone_t));
        if (zone == NULL) {
            return NGX_ERROR;
        }

        shpool->data = zone;
        shpool->log_ctx = (u_char *) " in replay_credentials zone";
    }

    now = ngx_time();
    sets = cmcf->sets.elts;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < cmcf->sets.nelts; i++) {
        creds = sets[i];

        for (sh = zone->first; sh; sh = sh->next) {
            if (ngx_memcmp(sh->id, creds->id, 16) == 0) {
                break;
            }
        }

        if (sh == NULL) {
            sh = ngx_slab_calloc_locked(shpool,
                                        sizeof(ngx_http_replay_creds_shm_t));
            if (sh == NULL) {
                ngx_shmtx_unlock(&shpool->mutex);
                return NGX_ERROR;
            }

            ngx_memcpy(sh->id, creds->id, 16);
            sh->next = zone->first;
            zone->first = sh;
            zone->entries++;
        }

        creds->shm = sh;
        creds->shpool = shpool;

        if (creds->loaded == NULL) {
            continue;
        }

        /* env and file=: what the master has just read */

        ngx_http_replay_creds_store(sh, creds->loaded, now);

        if (creds->source == NGX_HTTP_REPLAY_CREDS_FILE) {
            sh->mtime = ngx_file_mtime(&creds->loaded_info);
            sh->ctime = creds->loaded_info.st_ctime;
            sh->size = ngx_file_size(&creds->loaded_info);
            sh->uniq = ngx_file_uniq(&creds->loaded_info);
            sh->due = now + creds->check;

        } else {
            sh->due = NGX_MAX_TIME_T_VALUE;
        }

        /* the configuration's copy is no longer needed */
        ngx_explicit_memzero(creds->loaded->secret,
                             sizeof(creds->loaded->secret));
        ngx_explicit_memzero(creds->loaded->token,
                             sizeof(creds->loaded->token));
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/* new credentials in the entry; the zone's mutex is held */

static void
ngx_http_replay_creds_store(ngx_http_replay_creds_shm_t *sh,
    ngx_replay_creds_parsed_t *parsed, time_t now)
{
    ngx_explicit_memzero(sh->secret, sizeof(sh->secret));
    ngx_explicit_memzero(sh->token, sizeof(sh->token));

    ngx_memcpy(sh->key_id, parsed->key_id, parsed->key_id_len);
    ngx_memcpy(sh->secret, parsed->secret, parsed->secret_len);
    ngx_memcpy(sh->token, parsed->token, parsed->token_len);

    sh->key_id_len = parsed->key_id_len;
    sh->secret_len = parsed->secret_len;
    sh->token_len = parsed->token_len;
    sh->expires = parsed->expiration;
    sh->refreshed = now;
    sh->refreshes++;
    sh->consecutive = 0;
    sh->error_len = 0;

    (void) ngx_atomic_fetch_add(&sh->generation, 1);
}


/* ------------------------------------------------------------------ */
/* the workers: refreshing                                             */


static ngx_int_t
ngx_http_replay_creds_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_array_t               *sets;
    ngx_http_replay_creds_t  **set, *creds;

    /* not in the cache manager and loader */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    sets = ngx_http_replay_creds_sets();
    if (sets == NULL) {
        return NGX_OK;
    }

    set = sets->elts;

    for (i = 0; i < sets->nelts; i++) {
        creds = set[i];

        if (!creds->used || creds->source == NGX_HTTP_REPLAY_CREDS_ENV) {
            continue;
        }

        creds->timer.handler = ngx_http_replay_creds_tick;
        creds->timer.data = creds;
        creds->timer.log = cycle->log;
        creds->timer.cancelable = 1;

        /* the first fetch at once, from the event loop */
        ngx_add_timer(&creds->timer, 1);
    }

    return NGX_OK;
}


static void
ngx_http_replay_creds_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_array_t               *sets;
    ngx_http_replay_creds_t  **set, *creds;

    sets = ngx_http_replay_creds_sets();
    if (sets == NULL) {
        return;
    }

    set = sets->elts;

    for (i = 0; i < sets->nelts; i++) {
        creds = set[i];

        if (creds->timer.timer_set) {
            ngx_del_timer(&creds->timer);
        }

        if (creds->client) {
            ngx_http_replay_client_destroy(creds->client);
            creds->client = NULL;

            /* another worker may take over at once */

            ngx_shmtx_lock(&creds->shpool->mutex);

            if (creds->shm->refresher == ngx_pid) {
                creds->shm->refresher = 0;
            }

            ngx_shmtx_unlock(&creds->shpool->mutex);
        }

        ngx_explicit_memzero(creds->imds_token, sizeof(creds->imds_token));
        ngx_http_replay_creds_free_local(creds);
    }
}


/*
 * A set's timer: when its entry is due, the worker that takes the lease
 * refreshes; the others sleep until the new due time, or the lease's end
 * should that worker go away.
 */

static void
ngx_http_replay_creds_tick(ngx_event_t *ev)
{
    ngx_http_replay_creds_t *creds = ev->data;

    time_t                        now, at;
    ngx_uint_t                    take;
    ngx_http_replay_creds_shm_t  *sh;

    if (ngx_exiting || ngx_quit || ngx_terminate || creds->client) {
        return;
    }

    now = ngx_time();
    sh = creds->shm;
    take = 0;

    ngx_shmtx_lock(&creds->shpool->mutex);

    at = sh->due;

    if (now >= sh->due) {
        if (sh->refresher == 0 || sh->lease <= now) {
            sh->refresher = ngx_pid;
            sh->lease = now + 3 * (creds->timeout / 1000 + 1) + 2;
            take = 1;

        } else {
            at = sh->lease;
        }
    }

    ngx_shmtx_unlock(&creds->shpool->mutex);

    if (!take) {
        ngx_http_replay_creds_schedule(creds, at);
        return;
    }

    ngx_http_replay_creds_refresh(creds);
}


static void
ngx_http_replay_creds_schedule(ngx_http_replay_creds_t *creds, time_t at)
{
    time_t  delay;

    delay = at - ngx_time();

    if (delay < 1) {
        delay = 1;

    } else if (delay > 86400) {
        delay = 86400;
    }

    ngx_add_timer(&creds->timer, (ngx_msec_t) delay * 1000);
}


static void
ngx_http_replay_creds_refresh(ngx_http_replay_creds_t *creds)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay: refreshing AWS credentials from %V",
                   &creds->name);

    switch (creds->source) {

    case NGX_HTTP_REPLAY_CREDS_FILE:
        ngx_http_replay_creds_refresh_file(creds);
        return;

    case NGX_HTTP_REPLAY_CREDS_IMDS:
        creds->step = NGX_HTTP_REPLAY_CREDS_IMDS_TOKEN;
        creds->imds_token_len = 0;

        if (creds->role.len) {
            /* a role given: no need to ask for it */
            creds->imds_role_len = ngx_min(creds->role.len,
                                           sizeof(creds->imds_role));
            ngx_memcpy(creds->imds_role, creds->role.data,
                       creds->imds_role_len);
        }

        ngx_http_replay_creds_imds(creds);
        return;

    case NGX_HTTP_REPLAY_CREDS_CONTAINER:
        ngx_http_replay_creds_container(creds);
        return;

    default: /* NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY */
        ngx_http_replay_creds_sts(creds);
        return;
    }
}


/* file=: read again when it has changed (a secrets agent rotated it) */

static void
ngx_http_replay_creds_refresh_file(ngx_http_replay_creds_t *creds)
{
    u_char                       *buf;
    size_t                        len;
    ngx_int_t                     rc;
    ngx_uint_t                    same;
    ngx_file_info_t               fi;
    ngx_http_replay_creds_shm_t  *sh;
    ngx_replay_creds_parsed_t    *parsed;
    u_char                        err[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    sh = creds->shm;

    if (ngx_file_info(creds->file.data, &fi) == NGX_FILE_ERROR) {
        ngx_http_replay_creds_errno(ngx_slprintf(err, err + sizeof(err) - 1,
                                                 ngx_file_info_n
                                                 " \"%V\" failed",
                                                 &creds->file),
                                    err + sizeof(err) - 1, ngx_errno);
        ngx_http_replay_creds_done(creds, NULL, err, 1);
        return;
    }

    ngx_shmtx_lock(&creds->shpool->mutex);

    same = (sh->mtime == ngx_file_mtime(&fi)
            && sh->ctime == fi.st_ctime
            && sh->size == ngx_file_size(&fi)
            && sh->uniq == ngx_file_uniq(&fi));

    ngx_shmtx_unlock(&creds->shpool->mutex);

    if (same) {
        ngx_http_replay_creds_done(creds, NULL, NULL, 0);
        return;
    }

    parsed = ngx_alloc(sizeof(ngx_replay_creds_parsed_t), ngx_cycle->log);
    if (parsed == NULL) {
        ngx_http_replay_creds_done(creds, NULL, (u_char *) "no memory", 1);
        return;
    }

    rc = ngx_http_replay_creds_read_file(&creds->file,
                                         NGX_HTTP_REPLAY_CREDS_MAX_FILE, &buf,
                                         &len, &fi, err);

    if (rc == NGX_OK) {
        rc = ngx_http_replay_creds_parse_file(&creds->file, buf, len, parsed,
                                              err);

        ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_CREDS_MAX_FILE);
        ngx_free(buf);

        /* the file as read, changed or not: not read again unless it
         * changes again */

        ngx_shmtx_lock(&creds->shpool->mutex);

        sh->mtime = ngx_file_mtime(&fi);
        sh->ctime = fi.st_ctime;
        sh->size = ngx_file_size(&fi);
        sh->uniq = ngx_file_uniq(&fi);

        ngx_shmtx_unlock(&creds->shpool->mutex);
    }

    ngx_http_replay_creds_done(creds, rc == NGX_OK ? parsed : NULL, err, 1);

    ngx_explicit_memzero(parsed, sizeof(ngx_replay_creds_parsed_t));
    ngx_free(parsed);
}


/*
 * EC2's instance metadata service, IMDSv2: a session token (PUT, with
 * the lifetime asked for in a header), the role's name (unless given),
 * then its credentials, each request with the token.  Without a token
 * (no answer to the PUT, or 404 / 405 from an IMDS without v2), IMDSv1
 * only with imds_v1=on.
 */

static void
ngx_http_replay_creds_imds(ngx_http_replay_creds_t *creds)
{
    u_char     *p;
    ngx_str_t   path, headers;
    u_char      buf[sizeof("/latest/meta-data/iam/security-credentials/")
                    + sizeof(creds->imds_role)];
    u_char      hdr[sizeof("X-aws-ec2-metadata-token: \r\n")
                    + sizeof(creds->imds_token)];

    if (creds->step == NGX_HTTP_REPLAY_CREDS_IMDS_TOKEN) {
        ngx_str_set(&path, "/latest/api/token");
        ngx_str_set(&headers, "X-aws-ec2-metadata-token-ttl-seconds: "
                              NGX_HTTP_REPLAY_CREDS_IMDS_TTL "\r\n");

        ngx_http_replay_creds_send(creds, "PUT", &path, &headers, NULL, NULL);
        return;
    }

    path.data = buf;
    p = ngx_cpymem(buf, "/latest/meta-data/iam/security-credentials/",
                   sizeof("/latest/meta-data/iam/security-credentials/") - 1);

    if (creds->step == NGX_HTTP_REPLAY_CREDS_IMDS_CREDS) {
        p = ngx_cpymem(p, creds->imds_role, creds->imds_role_len);
    }

    path.len = p - buf;

    ngx_str_null(&headers);

    if (creds->imds_token_len) {
        headers.data = hdr;
        p = ngx_cpymem(hdr, "X-aws-ec2-metadata-token: ",
                       sizeof("X-aws-ec2-metadata-token: ") - 1);
        p = ngx_cpymem(p, creds->imds_token, creds->imds_token_len);
        *p++ = CR; *p++ = LF;
        headers.len = p - hdr;
    }

    ngx_http_replay_creds_send(creds, "GET", &path, &headers, NULL, NULL);

    ngx_explicit_memzero(hdr, sizeof(hdr));
}


/* ECS and EKS Pod Identity: one GET, with the authorization token if any */

static void
ngx_http_replay_creds_container(ngx_http_replay_creds_t *creds)
{
    u_char     *p, *buf;
    size_t      len;
    ngx_str_t   headers, token;
    u_char      err[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    ngx_str_null(&headers);
    buf = NULL;
    token = creds->token;

    if (creds->file.len) {
        if (ngx_http_replay_creds_token_file(creds, &buf, &len, err)
            != NGX_OK)
        {
            ngx_http_replay_creds_done(creds, NULL, err, 1);
            return;
        }

        token.data = buf;
        token.len = len;
    }

    if (token.len) {
        headers.len = sizeof("Authorization: \r\n") - 1 + token.len;
        headers.data = ngx_alloc(headers.len, ngx_cycle->log);

        if (headers.data == NULL) {
            if (buf) {
                ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE);
                ngx_free(buf);
            }

            ngx_http_replay_creds_done(creds, NULL, (u_char *) "no memory",
                                       1);
            return;
        }

        p = ngx_cpymem(headers.data, "Authorization: ",
                       sizeof("Authorization: ") - 1);
        p = ngx_cpymem(p, token.data, token.len);
        *p++ = CR; *p = LF;
    }

    if (buf) {
        ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE);
        ngx_free(buf);
    }

    ngx_http_replay_creds_send(creds, "GET", NULL, &headers, NULL, NULL);

    if (headers.data) {
        ngx_explicit_memzero(headers.data, headers.len);
        ngx_free(headers.data);
    }
}


/*
 * AssumeRoleWithWebIdentity: a form POST to the regional STS endpoint,
 * over TLS, the token file read again each time (it is rotated).
 */

static void
ngx_http_replay_creds_sts(ngx_http_replay_creds_t *creds)
{
    u_char     *p, *buf;
    size_t      len, size;
    ngx_str_t   body, session;
    u_char      name[NGX_INT64_LEN + sizeof("ngx-replay-")];
    u_char      err[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    if (ngx_http_replay_creds_token_file(creds, &buf, &len, err) != NGX_OK) {
        ngx_http_replay_creds_done(creds, NULL, err, 1);
        return;
    }

    session = creds->session_name;

    if (session.len == 0) {
        session.data = name;
        session.len = ngx_sprintf(name, "ngx-replay-%T", ngx_time()) - name;
    }

    size = sizeof("Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
                  "&RoleArn=&RoleSessionName=&WebIdentityToken="
                  "&DurationSeconds=") - 1 + NGX_TIME_T_LEN
           + 3 * (creds->role.len + session.len + len);

    body.data = ngx_alloc(size, ngx_cycle->log);
    if (body.data == NULL) {
        ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE);
        ngx_free(buf);
        ngx_http_replay_creds_done(creds, NULL, (u_char *) "no memory", 1);
        return;
    }

    p = ngx_cpymem(body.data, "Action=AssumeRoleWithWebIdentity"
                   "&Version=2011-06-15&RoleArn=",
                   sizeof("Action=AssumeRoleWithWebIdentity"
                          "&Version=2011-06-15&RoleArn=") - 1);
    p += ngx_replay_sigv4_uri_encode(p, creds->role.data, creds->role.len, 0);
    p = ngx_cpymem(p, "&RoleSessionName=", sizeof("&RoleSessionName=") - 1);
    p += ngx_replay_sigv4_uri_encode(p, session.data, session.len, 0);
    p = ngx_cpymem(p, "&WebIdentityToken=", sizeof("&WebIdentityToken=") - 1);
    p += ngx_replay_sigv4_uri_encode(p, buf, len, 0);

    if (creds->duration != NGX_CONF_UNSET) {
        p = ngx_sprintf(p, "&DurationSeconds=%T", creds->duration);
    }

    body.len = p - body.data;

    ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_CREDS_MAX_TOKEN_FILE);
    ngx_free(buf);

    ngx_http_replay_creds_send(creds, "POST", NULL, NULL, &body,
                               "application/x-www-form-urlencoded; "
                               "charset=utf-8");

    ngx_explicit_memzero(body.data, size);
    ngx_free(body.data);
}


/* one request of a refresh; its answer comes to ..._answer() */

static void
ngx_http_replay_creds_send(ngx_http_replay_creds_t *creds, char *method,
    ngx_str_t *path, ngx_str_t *headers, ngx_str_t *body, char *content_type)
{
    ngx_str_t                  action;
    ngx_http_replay_client_t  *hc;
    u_char                     buf[64];

    action.data = buf;
    action.len = ngx_snprintf(buf, sizeof(buf),
                              "fetching AWS credentials (%V)", &creds->name)
                 - buf;

    hc = ngx_http_replay_client_create(ngx_cycle->log, &action);
    if (hc == NULL) {
        ngx_http_replay_creds_done(creds, NULL, (u_char *) "no memory", 1);
        return;
    }

    /* the client keeps its own copy of the action */
    hc->action.data = ngx_pstrdup(hc->pool, &action);
    if (hc->action.data == NULL) {
        ngx_http_replay_client_destroy(hc);
        ngx_http_replay_creds_done(creds, NULL, (u_char *) "no memory", 1);
        return;
    }

    hc->endpoint = &creds->endpoint;
    hc->method.data = (u_char *) method;
    hc->method.len = ngx_strlen(method);
    hc->timeout = creds->timeout;
    hc->handler = ngx_http_replay_creds_answer;
    hc->data = creds;

    if (path) {
        hc->path = *path;
    }

    if (headers) {
        hc->headers = *headers;
    }

    if (body) {
        hc->body = *body;
        hc->content_type.data = (u_char *) content_type;
        hc->content_type.len = ngx_strlen(content_type);
    }

    if (ngx_http_replay_client_start(hc) != NGX_OK) {
        ngx_http_replay_client_destroy(hc);
        ngx_http_replay_creds_done(creds, NULL, (u_char *) "no memory", 1);
        return;
    }

    creds->client = hc;
}


static void
ngx_http_replay_creds_answer(ngx_http_replay_client_t *hc)
{
    ngx_http_replay_creds_t *creds = hc->data;

    int                         rc;
    u_char                     *p, *last;
    ngx_int_t                   next;
    ngx_replay_creds_parsed_t  *parsed;
    u_char                      err[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    creds->client = NULL;

    p = err;
    last = err + sizeof(err) - 1;
    parsed = NULL;

    if (creds->source == NGX_HTTP_REPLAY_CREDS_IMDS
        && creds->step != NGX_HTTP_REPLAY_CREDS_IMDS_CREDS)
    {
        next = ngx_http_replay_creds_imds_answer(creds, hc, err);

        ngx_http_replay_client_destroy(hc);

        if (next == NGX_OK) {
            ngx_http_replay_creds_imds(creds);

        } else {
            ngx_explicit_memzero(creds->imds_token,
                                 sizeof(creds->imds_token));
            ngx_http_replay_creds_done(creds, NULL, err, 1);
        }

        return;
    }

    if (creds->source == NGX_HTTP_REPLAY_CREDS_IMDS) {
        p = ngx_slprintf(p, last, "the role's credentials: ");
        ngx_explicit_memzero(creds->imds_token, sizeof(creds->imds_token));
    }

    if (hc->status == 0) {
        p = ngx_slprintf(p, last, "%V", &hc->error);
        goto failed;
    }

    parsed = ngx_alloc(sizeof(ngx_replay_creds_parsed_t), ngx_cycle->log);
    if (parsed == NULL) {
        p = ngx_slprintf(p, last, "no memory");
        goto failed;
    }

    if (creds->source == NGX_HTTP_REPLAY_CREDS_WEB_IDENTITY) {
        rc = ngx_replay_creds_parse_sts(hc->response.data, hc->response.len,
                                        parsed);

    } else {
        rc = ngx_replay_creds_parse_json(hc->response.data, hc->response.len,
                                         parsed);
    }

    if (hc->status != NGX_HTTP_OK) {
        p = ngx_slprintf(p, last, "HTTP %ui", hc->status);

        if (rc == NGX_REPLAY_CREDS_SERVICE_ERROR) {
            p = ngx_slprintf(p, last, ", %s", parsed->code);
        }

        goto failed;
    }

    if (rc != NGX_REPLAY_CREDS_OK) {
        p = ngx_http_replay_creds_parse_error(p, last, rc, parsed);
        goto failed;
    }

    ngx_http_replay_client_destroy(hc);

    ngx_http_replay_creds_done(creds, parsed, NULL, 1);

    ngx_explicit_memzero(parsed, sizeof(ngx_replay_creds_parsed_t));
    ngx_free(parsed);

    return;

failed:

    *p = '\0';

    ngx_http_replay_client_destroy(hc);

    if (parsed) {
        ngx_explicit_memzero(parsed, sizeof(ngx_replay_creds_parsed_t));
        ngx_free(parsed);
    }

    ngx_http_replay_creds_done(creds, NULL, err, 1);
}


/* the token and role steps of IMDS: NGX_OK to go on, else err is set */

static ngx_int_t
ngx_http_replay_creds_imds_answer(ngx_http_replay_creds_t *creds,
    ngx_http_replay_client_t *hc, u_char *err)
{
    u_char  *p, *q, *end, *last;

    last = err + NGX_HTTP_REPLAY_CREDS_ERRLEN - 1;

    if (creds->step == NGX_HTTP_REPLAY_CREDS_IMDS_TOKEN) {

        if (hc->status == NGX_HTTP_OK) {
            p = hc->response.data;
            end = p + hc->response.len;

            while (end > p && (end[-1] == CR || end[-1] == LF)) {
                end--;
            }

            for (q = p; q < end && *q > 0x20 && *q < 0x7f; q++) {
                /* void */
            }

            if (q == p || q < end
                || (size_t) (end - p) > sizeof(creds->imds_token))
            {
                *ngx_slprintf(err, last, "the session token (PUT "
                              "/latest/api/token): not a token") = '\0';
                return NGX_ERROR;
            }

            creds->imds_token_len = end - p;
            ngx_memcpy(creds->imds_token, p, end - p);

        } else if (creds->imds_v1
                   && (hc->status == 0 || hc->status == NGX_HTTP_NOT_FOUND
                       || hc->status == NGX_HTTP_NOT_ALLOWED))
        {
            if (hc->status) {
                ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                              "replay: no IMDSv2 session token (HTTP %ui), "
                              "trying IMDSv1 (imds_v1=on)", hc->status);

            } else {
                ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                              "replay: no IMDSv2 session token (%V), "
                              "trying IMDSv1 (imds_v1=on)", &hc->error);
            }

        } else {
            p = ngx_slprintf(err, last, "the session token (PUT "
                             "/latest/api/token): ");
            p = hc->status ? ngx_slprintf(p, last, "HTTP %ui", hc->status)
                           : ngx_slprintf(p, last, "%V", &hc->error);
            *p = '\0';
            return NGX_ERROR;
        }

        creds->step = creds->role.len ? NGX_HTTP_REPLAY_CREDS_IMDS_CREDS
                                      : NGX_HTTP_REPLAY_CREDS_IMDS_ROLE;
        return NGX_OK;
    }

    /* the role: the first line of the listing */

    if (hc->status != NGX_HTTP_OK) {
        p = ngx_slprintf(err, last, "the role's name (GET "
                         "/latest/meta-data/iam/security-credentials/): ");

        if (hc->status == NGX_HTTP_NOT_FOUND) {
            p = ngx_slprintf(p, last, "HTTP 404, no IAM role is attached to "
                             "the instance");

        } else {
            p = hc->status ? ngx_slprintf(p, last, "HTTP %ui", hc->status)
                           : ngx_slprintf(p, last, "%V", &hc->error);
        }

        *p = '\0';
        return NGX_ERROR;
    }

    p = hc->response.data;
    end = p + hc->response.len;

    for (q = p; q < end && *q != CR && *q != LF; q++) {
        if (*q == '\0' || !ngx_http_replay_creds_name_char(*q)) {
            break;
        }
    }

    if (q == p || (q < end && *q != CR && *q != LF)
        || (size_t) (q - p) > sizeof(creds->imds_role))
    {
        *ngx_slprintf(err, last, "the role's name (GET "
                      "/latest/meta-data/iam/security-credentials/): not a "
                      "role name") = '\0';
        return NGX_ERROR;
    }

    creds->imds_role_len = q - p;
    ngx_memcpy(creds->imds_role, p, q - p);

    creds->step = NGX_HTTP_REPLAY_CREDS_IMDS_CREDS;

    return NGX_OK;
}


static u_char *
ngx_http_replay_creds_parse_error(u_char *p, u_char *last, int rc,
    ngx_replay_creds_parsed_t *parsed)
{
    switch (rc) {

    case NGX_REPLAY_CREDS_SERVICE_ERROR:
        return ngx_slprintf(p, last, "the service answered %s",
                            parsed->code);

    case NGX_REPLAY_CREDS_MISSING:
        return ngx_slprintf(p, last, "no %s in the answer", parsed->field);

    case NGX_REPLAY_CREDS_INVALID:
        return ngx_slprintf(p, last, "the answer's %s is refused (too long, "
                            "or a character it may not hold)", parsed->field);

    default: /* NGX_REPLAY_CREDS_SYNTAX */
        return ngx_slprintf(p, last, "the answer is not what the service "
                            "documents");
    }
}


static u_char *
ngx_http_replay_creds_iso8601(u_char *p, time_t t)
{
    ngx_tm_t  tm;

    ngx_gmtime(t, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02dZ", tm.ngx_tm_year,
                       tm.ngx_tm_mon, tm.ngx_tm_mday, tm.ngx_tm_hour,
                       tm.ngx_tm_min, tm.ngx_tm_sec);
}


/*
 * A refresh ends: new credentials (parsed), nothing new (a file that has
 * not changed: changed 0), or a failure (err).  The entry is updated, the
 * lease given back, the next refresh scheduled.
 */

static void
ngx_http_replay_creds_done(ngx_http_replay_creds_t *creds,
    ngx_replay_creds_parsed_t *parsed, u_char *err, ngx_uint_t changed)
{
    time_t                        now, life, delay;
    ngx_http_replay_creds_shm_t  *sh;
    u_char                        expires[sizeof("2024-01-01T00:00:00Z")];
    u_char                        buf[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    now = ngx_time();
    sh = creds->shm;

    if (parsed && parsed->expiration
        && parsed->expiration <= now + NGX_HTTP_REPLAY_CREDS_MARGIN)
    {
        *ngx_http_replay_creds_iso8601(ngx_cpymem(buf, "the credentials "
                                       "got expire too soon, at ",
                                       sizeof("the credentials got expire "
                                              "too soon, at ") - 1),
                                       parsed->expiration) = '\0';
        parsed = NULL;
        err = buf;
    }

    if (parsed) {
        ngx_shmtx_lock(&creds->shpool->mutex);

        ngx_http_replay_creds_store(sh, parsed, now);

        if (sh->expires) {
            /* 80 % of their life or 5 minutes before they expire,
             * whichever comes first, but not before half their life */
            life = sh->expires - now;
            delay = ngx_min(life * 8 / 10, ngx_max(life - 300, life / 2));

        } else {
            delay = creds->check;
        }

        sh->due = now + ngx_max(delay, 1);

        if (sh->refresher == ngx_pid) {
            sh->refresher = 0;
        }

        ngx_shmtx_unlock(&creds->shpool->mutex);

        if (sh->expires) {
            *ngx_http_replay_creds_iso8601(expires, sh->expires) = '\0';

            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "replay: AWS credentials from %V (%V) refreshed, "
                          "they expire at %s, next refresh in %Ts",
                          &creds->name, &creds->conf, expires,
                          ngx_max(delay, 1));

        } else {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "replay: AWS credentials from %V (%V) read again",
                          &creds->name, &creds->conf);
        }

        ngx_http_replay_creds_schedule(creds, now + ngx_max(delay, 1));
        return;
    }

    if (!changed) {
        ngx_shmtx_lock(&creds->shpool->mutex);

        sh->due = now + creds->check;

        if (sh->refresher == ngx_pid) {
            sh->refresher = 0;
        }

        ngx_shmtx_unlock(&creds->shpool->mutex);

        ngx_http_replay_creds_schedule(creds, now + creds->check);
        return;
    }

    ngx_http_replay_creds_failed(creds, err);
}


static void
ngx_http_replay_creds_failed(ngx_http_replay_creds_t *creds, u_char *err)
{
    char                         *state;
    size_t                        len;
    time_t                        now, delay, expires;
    ngx_uint_t                    repeat, level;
    ngx_http_replay_creds_shm_t  *sh;
    u_char                        at[sizeof("2024-01-01T00:00:00Z")];

    now = ngx_time();
    sh = creds->shm;
    len = ngx_strlen(err);

    ngx_shmtx_lock(&creds->shpool->mutex);

    repeat = (sh->consecutive && sh->error_len == len
              && ngx_memcmp(sh->error, err, len) == 0);

    sh->failures++;
    sh->consecutive++;
    sh->failed = now;
    sh->error_len = ngx_min(len, sizeof(sh->error));
    ngx_memcpy(sh->error, err, sh->error_len);

    if (creds->source == NGX_HTTP_REPLAY_CREDS_FILE) {
        /* the file is looked at as usual: it is read when it changes */
        delay = creds->check;

    } else {
        /* 1, 2, 4 ... 32 s, but within half what is left of those held */
        delay = (time_t) 1 << ngx_min(sh->consecutive - 1, 5);
        delay = ngx_min(delay, NGX_HTTP_REPLAY_CREDS_MAX_BACKOFF);

        if (sh->expires > now) {
            delay = ngx_max(ngx_min(delay, (sh->expires - now) / 2), 1);
        }
    }

    sh->due = now + delay;
    expires = sh->expires;

    if (sh->refresher == ngx_pid) {
        sh->refresher = 0;
    }

    if (sh->generation == 0) {
        state = "there are none yet";

    } else if (expires == 0) {
        state = "those held do not expire";

    } else if (expires > now) {
        state = "those held expire at ";

    } else {
        state = "those held have expired at ";
    }

    ngx_shmtx_unlock(&creds->shpool->mutex);

    *ngx_http_replay_creds_iso8601(at, expires) = '\0';

    /* a file that stays broken is said once, not at every look */

    level = (repeat && creds->source == NGX_HTTP_REPLAY_CREDS_FILE)
            ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, ngx_cycle->log, 0,
                  "replay: refreshing AWS credentials from %V (%V) failed: "
                  "%s; %s%s, next try in %Ts", &creds->name, &creds->conf,
                  err, state, (expires && sh->generation) ? (char *) at : "",
                  delay);

    ngx_http_replay_creds_schedule(creds, now + delay);
}


/* ------------------------------------------------------------------ */
/* the workers: signing                                                */


ngx_replay_sigv4_creds_t *
ngx_http_replay_creds_get(ngx_http_replay_creds_t *creds)
{
    if (creds->shm->generation != creds->local_gen) {
        ngx_http_replay_creds_adopt(creds);
    }

    if (creds->local == NULL
        || (creds->local_expires
            && ngx_time() >= creds->local_expires
                             - NGX_HTTP_REPLAY_CREDS_MARGIN))
    {
        return NULL;
    }

    return &creds->local->sigv4;
}


/*
 * The entry's credentials in a fresh block of the worker's, so that the
 * signer derives a signing key for them; the old block goes at once: no
 * request holds on to it.
 */

static void
ngx_http_replay_creds_adopt(ngx_http_replay_creds_t *creds)
{
    u_char                         *p;
    size_t                          size;
    time_t                          expires;
    ngx_atomic_uint_t               gen;
    ngx_http_replay_creds_shm_t    *sh;
    ngx_http_replay_creds_local_t  *local;

    sh = creds->shm;
    local = NULL;

    ngx_shmtx_lock(&creds->shpool->mutex);

    gen = sh->generation;
    expires = sh->expires;

    size = sizeof(ngx_http_replay_creds_local_t) + sh->key_id_len
           + sh->secret_len + sh->token_len;

    if (sh->key_id_len) {
        local = ngx_calloc(size, ngx_cycle->log);
    }

    if (local) {
        local->size = size;
        p = (u_char *) (local + 1);

        local->sigv4.access_key_id.data = p;
        local->sigv4.access_key_id.len = sh->key_id_len;
        p = ngx_cpymem(p, sh->key_id, sh->key_id_len);

        local->sigv4.secret_access_key.data = p;
        local->sigv4.secret_access_key.len = sh->secret_len;
        p = ngx_cpymem(p, sh->secret, sh->secret_len);

        local->sigv4.session_token.data = p;
        local->sigv4.session_token.len = sh->token_len;
        ngx_memcpy(p, sh->token, sh->token_len);
    }

    ngx_shmtx_unlock(&creds->shpool->mutex);

    if (local == NULL) {
        /* none yet, or no memory: tried again at the next request */
        return;
    }

    local->sigv4.region.data = creds->region.data;
    local->sigv4.region.len = creds->region.len;
    local->sigv4.service.data = creds->service.data;
    local->sigv4.service.len = creds->service.len;

    ngx_http_replay_creds_free_local(creds);

    creds->local = local;
    creds->local_gen = gen;
    creds->local_expires = expires;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay: AWS credentials from %V, generation %uA",
                   &creds->name, gen);
}


static void
ngx_http_replay_creds_free_local(ngx_http_replay_creds_t *creds)
{
    if (creds->local == NULL) {
        return;
    }

    ngx_explicit_memzero(creds->local, creds->local->size);
    ngx_free(creds->local);
    creds->local = NULL;
}


ngx_int_t
ngx_http_replay_creds_unavailable(ngx_http_request_t *r,
    ngx_http_replay_creds_t *creds)
{
    u_char                       *p;
    time_t                        now, retry, expires;
    ngx_uint_t                    consecutive;
    ngx_http_replay_creds_shm_t  *sh;
    u_char                        err[NGX_HTTP_REPLAY_CREDS_ERRLEN + 1];
    u_char                        at[sizeof("2024-01-01T00:00:00Z")];

    now = ngx_time();
    sh = creds->shm;

    (void) ngx_atomic_fetch_add(&sh->refused, 1);

    ngx_shmtx_lock(&creds->shpool->mutex);

    retry = sh->due - now;
    expires = sh->expires;
    consecutive = sh->consecutive;
    *ngx_cpymem(err, sh->error, sh->error_len) = '\0';

    ngx_shmtx_unlock(&creds->shpool->mutex);

    retry = ngx_max(ngx_min(retry, 60), 1);

    if (expires) {
        *ngx_http_replay_creds_iso8601(at, expires) = '\0';

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: no AWS credentials to sign with: those from "
                      "%V (%V) expired at %s, %ui refreshes failed since%s%s",
                      &creds->name, &creds->conf, at, consecutive,
                      err[0] ? ", the last: " : "", err);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: no AWS credentials to sign with yet from "
                      "%V (%V)%s%s", &creds->name, &creds->conf,
                      err[0] ? ", the last try failed: " : "", err);
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_replay_add_header(r, "Retry-After", p,
                                   ngx_sprintf(p, "%T", retry) - p)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


/* ------------------------------------------------------------------ */
/* replay_status                                                       */


static ngx_array_t *
ngx_http_replay_creds_sets(void)
{
    ngx_http_replay_creds_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_replay_creds_module);

    return (cmcf && cmcf->zone) ? &cmcf->sets : NULL;
}


typedef struct {
    char                           *name;
    char                           *type;
    char                           *help;
} ngx_http_replay_creds_metric_t;


static ngx_http_replay_creds_metric_t  ngx_http_replay_creds_metrics[] = {
    { "replay_credentials_valid", "gauge",
      "1 if the set has credentials to sign with now." },
    { "replay_credentials_expiry_timestamp_seconds", "gauge",
      "When the credentials held expire (0: never, or none held)." },
    { "replay_credentials_last_refresh_timestamp_seconds", "gauge",
      "When the credentials held were got." },
    { "replay_credentials_next_refresh_timestamp_seconds", "gauge",
      "When the next refresh or retry is due." },
    { "replay_credentials_refreshes_total", "counter",
      "Credentials got (the first time included)." },
    { "replay_credentials_refresh_failures_total", "counter",
      "Refreshes that failed." },
    { "replay_credentials_consecutive_failures", "gauge",
      "Refreshes that failed since the last that did not." },
    { "replay_credentials_refused_requests_total", "counter",
      "Requests answered 503 for want of credentials." },
    { NULL, NULL, NULL }
};


/* the figures of one set, copied under the zone's mutex */

typedef struct {
    ngx_atomic_uint_t               v[8];
    size_t                          error_len;
    u_char                          error[NGX_HTTP_REPLAY_CREDS_ERRLEN];
} ngx_http_replay_creds_state_t;


static void
ngx_http_replay_creds_state(ngx_http_replay_creds_t *creds,
    ngx_http_replay_creds_state_t *st)
{
    time_t                        now;
    ngx_http_replay_creds_shm_t  *sh;

    now = ngx_time();
    sh = creds->shm;

    ngx_shmtx_lock(&creds->shpool->mutex);

    st->v[0] = sh->generation
               && (sh->expires == 0
                   || now < sh->expires - NGX_HTTP_REPLAY_CREDS_MARGIN);
    st->v[1] = sh->generation ? sh->expires : 0;
    st->v[2] = sh->refreshed;
    st->v[3] = (sh->due == NGX_MAX_TIME_T_VALUE) ? 0 : sh->due;
    st->v[4] = sh->refreshes;
    st->v[5] = sh->failures;
    st->v[6] = sh->consecutive;
    st->v[7] = sh->refused;
    st->error_len = sh->error_len;
    ngx_memcpy(st->error, sh->error, sh->error_len);

    ngx_shmtx_unlock(&creds->shpool->mutex);
}


size_t
ngx_http_replay_creds_status_size(void)
{
    size_t                           size;
    ngx_uint_t                       i;
    ngx_array_t                     *sets;
    ngx_http_replay_creds_t        **set;
    ngx_http_replay_creds_metric_t  *m;

    sets = ngx_http_replay_creds_sets();
    if (sets == NULL) {
        return 0;
    }

    size = sizeof(",\"replay_credentials\":[]");

    for (m = ngx_http_replay_creds_metrics; m->name; m++) {
        size += sizeof("# HELP  \n# TYPE  \n") + 2 * ngx_strlen(m->name)
                + ngx_strlen(m->help) + ngx_strlen(m->type);
    }

    set = sets->elts;

    for (i = 0; i < sets->nelts; i++) {
        /* each byte of a name escaped takes six at most */
        size += 8 * (sizeof("replay_credentials_last_refresh_timestamp_"
                            "seconds{source=\"\",config=\"\"} \n")
                     + 6 * (set[i]->name.len + set[i]->conf.len)
                     + NGX_ATOMIC_T_LEN)
                + sizeof("{\"source\":\"\",\"config\":\"\",\"valid\":false,"
                         "\"expires\":,\"last_refresh\":,\"next_refresh\":,"
                         "\"refreshes\":,\"failures\":,"
                         "\"consecutive_failures\":,\"refused\":,"
                         "\"last_error\":\"\"},")
                + 6 * (set[i]->name.len + set[i]->conf.len)
                + 7 * NGX_ATOMIC_T_LEN
                + 6 * NGX_HTTP_REPLAY_CREDS_ERRLEN;
    }

    return size;
}


u_char *
ngx_http_replay_creds_prometheus(u_char *p)
{
    ngx_uint_t                       i, j;
    ngx_array_t                     *sets;
    ngx_http_replay_creds_t        **set;
    ngx_http_replay_creds_state_t   *st, one;
    ngx_http_replay_creds_metric_t  *m;

    sets = ngx_http_replay_creds_sets();
    if (sets == NULL || sets->nelts == 0) {
        return p;
    }

    set = sets->elts;

    for (m = ngx_http_replay_creds_metrics, j = 0; m->name; m++, j++) {
        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help,
                        m->name, m->type);

        for (i = 0; i < sets->nelts; i++) {
            st = &one;
            ngx_http_replay_creds_state(set[i], st);

            p = ngx_sprintf(p, "%s{source=\"", m->name);
            p = ngx_http_replay_creds_escape(p, &set[i]->name, 0);
            p = ngx_cpymem(p, "\",config=\"", sizeof("\",config=\"") - 1);
            p = ngx_http_replay_creds_escape(p, &set[i]->conf, 0);
            p = ngx_sprintf(p, "\"} %uA\n", st->v[j]);
        }
    }

    return p;
}


/* ,"replay_credentials":[{...},...] for the JSON object of replay_status */

u_char *
ngx_http_replay_creds_json(u_char *p)
{
    ngx_str_t                       error;
    ngx_uint_t                      i;
    ngx_array_t                    *sets;
    ngx_http_replay_creds_t       **set;
    ngx_http_replay_creds_state_t   st;

    sets = ngx_http_replay_creds_sets();
    if (sets == NULL || sets->nelts == 0) {
        return p;
    }

    set = sets->elts;

    p = ngx_cpymem(p, ",\"replay_credentials\":[",
                   sizeof(",\"replay_credentials\":[") - 1);

    for (i = 0; i < sets->nelts; i++) {
        ngx_http_replay_creds_state(set[i], &st);

        p = ngx_cpymem(p, i ? ",{\"source\":\"" : "{\"source\":\"",
                       i ? sizeof(",{\"source\":\"") - 1
                         : sizeof("{\"source\":\"") - 1);
        p = ngx_http_replay_creds_escape(p, &set[i]->name, 1);
        p = ngx_cpymem(p, "\",\"config\":\"", sizeof("\",\"config\":\"") - 1);
        p = ngx_http_replay_creds_escape(p, &set[i]->conf, 1);

        p = ngx_sprintf(p, "\",\"valid\":%s,\"expires\":%uA,"
                        "\"last_refresh\":%uA,\"next_refresh\":%uA,"
                        "\"refreshes\":%uA,\"failures\":%uA,"
                        "\"consecutive_failures\":%uA,\"refused\":%uA,"
                        "\"last_error\":\"",
                        st.v[0] ? "true" : "false", st.v[1], st.v[2],
                        st.v[3], st.v[4], st.v[5], st.v[6], st.v[7]);

        error.data = st.error;
        error.len = st.error_len;
        p = ngx_http_replay_creds_escape(p, &error, 1);

        *p++ = '"';
        *p++ = '}';
    }

    *p++ = ']';

    return p;
}


/* a Prometheus label value or a JSON string's content: \ " and controls */

static u_char *
ngx_http_replay_creds_escape(u_char *p, ngx_str_t *s, ngx_uint_t json)
{
    u_char  *c, *last;

    last = s->data + s->len;

    for (c = s->data; c < last; c++) {
        if (*c == '\\' || *c == '"') {
            *p++ = '\\';
            *p++ = *c;

        } else if (*c == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else if (*c < 0x20 || *c == 0x7f) {
            p = json ? ngx_sprintf(p, "\\u%04xd", (ngx_uint_t) *c)
                     : ngx_sprintf(p, "\\x%02xd", (ngx_uint_t) *c);

        } else {
            *p++ = *c;
        }
    }

    return p;
}
