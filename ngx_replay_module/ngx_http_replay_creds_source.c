
/*
 * The sources of AWS credentials, see ngx_http_replay_creds_source.h.
 *
 * env and file= are read by the master while the configuration loads
 * (its environment is whole there, and it may read a file only root
 * can); a worker reads file= again when it changes.  imds, container and
 * web_identity are fetched by a worker with the asynchronous client of
 * ngx_http_replay_client.c; the AWS_* variables they follow are read by
 * the master and kept in the configuration, so the workers need no "env"
 * directive.  Token files are read again at each fetch: they are rotated.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_md5.h>

#include "ngx_http_replay_creds_source.h"
#include "ngx_http_replay_sigv4.h"


#define NGX_HTTP_REPLAY_SOURCE_MAX_FILE      65536
#define NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE  16384

/* IMDSv2: the lifetime asked for the session token, its most */
#define NGX_HTTP_REPLAY_SOURCE_IMDS_TTL      "21600"

#define NGX_HTTP_REPLAY_SOURCE_IMDS_TOKEN    0
#define NGX_HTTP_REPLAY_SOURCE_IMDS_ROLE     1
#define NGX_HTTP_REPLAY_SOURCE_IMDS_CREDS    2

/* what STS takes in a role session name, IMDS gives in a role name */
#define ngx_http_replay_source_name_char(c)                                  \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= '0' && (c) <= '9') || ngx_strchr("_+=,.@-", c))


static char *ngx_http_replay_source_param(ngx_conf_t *cf,
    ngx_http_replay_source_t *src, ngx_str_t *param);
static char *ngx_http_replay_source_chain(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);
static char *ngx_http_replay_source_source(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);
static char *ngx_http_replay_source_env(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);
static char *ngx_http_replay_source_file_conf(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);
static char *ngx_http_replay_source_container_conf(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);
static char *ngx_http_replay_source_web_identity_conf(ngx_conf_t *cf,
    ngx_http_replay_source_t *src);
static ngx_int_t ngx_http_replay_source_getenv(ngx_conf_t *cf, char *name,
    ngx_str_t *value);
static ngx_int_t ngx_http_replay_source_read_file(ngx_str_t *name,
    size_t max, u_char **buf, size_t *len, ngx_file_info_t *fi,
    u_char *err);
static ngx_uint_t ngx_http_replay_source_field(
    ngx_replay_creds_parsed_t *parsed);
static void ngx_http_replay_source_errno(u_char *p, u_char *last,
    ngx_err_t err);
static ngx_int_t ngx_http_replay_source_parse_file(ngx_str_t *name,
    u_char *buf, size_t len, ngx_replay_creds_parsed_t *out, u_char *err);
static ngx_int_t ngx_http_replay_source_token_file(
    ngx_http_replay_source_t *src, u_char **buf, size_t *len, u_char *err);
static void ngx_http_replay_source_refresh_file(
    ngx_http_replay_source_t *src);
static void ngx_http_replay_source_imds(ngx_http_replay_source_t *src);
static void ngx_http_replay_source_container(ngx_http_replay_source_t *src);
static void ngx_http_replay_source_sts(ngx_http_replay_source_t *src);
static void ngx_http_replay_source_send(ngx_http_replay_source_t *src,
    char *method, ngx_str_t *path, ngx_str_t *headers, ngx_str_t *body,
    char *content_type);
static void ngx_http_replay_source_answer(ngx_http_replay_client_t *hc);
static ngx_int_t ngx_http_replay_source_imds_answer(
    ngx_http_replay_source_t *src, ngx_http_replay_client_t *hc,
    u_char *err);
static u_char *ngx_http_replay_source_parse_error(u_char *p, u_char *last,
    int rc, ngx_replay_creds_parsed_t *parsed);


#define ngx_http_replay_source_done(src, parsed, err, changed)              \
    (src)->handler(src, parsed, err, changed)


static ngx_str_t  ngx_http_replay_source_names[] = {
    ngx_null_string,
    ngx_string("env"),
    ngx_string("file"),
    ngx_string("imds"),
    ngx_string("container"),
    ngx_string("web_identity")
};


char *
ngx_http_replay_source_conf(ngx_conf_t *cf, ngx_http_replay_source_t *src)
{
    char        *rv;
    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    src->duration = NGX_CONF_UNSET;
    src->check = NGX_CONF_UNSET;
    src->timeout = NGX_CONF_UNSET_MSEC;
    src->imds_v1 = NGX_CONF_UNSET;

    if (ngx_strcmp(value[1].data, "env") == 0) {
        src->type = NGX_HTTP_REPLAY_SOURCE_ENV;

    } else if (ngx_strncmp(value[1].data, "file=", 5) == 0
               && value[1].len > 5)
    {
        src->type = NGX_HTTP_REPLAY_SOURCE_FILE;
        src->file.data = value[1].data + 5;
        src->file.len = value[1].len - 5;

    } else if (ngx_strcmp(value[1].data, "imds") == 0) {
        src->type = NGX_HTTP_REPLAY_SOURCE_IMDS;

    } else if (ngx_strcmp(value[1].data, "container") == 0) {
        src->type = NGX_HTTP_REPLAY_SOURCE_CONTAINER;

    } else if (ngx_strcmp(value[1].data, "web_identity") == 0) {
        src->type = NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY;

    } else if (ngx_strcmp(value[1].data, "chain") == 0) {
        src->type = 0;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", it must be \"env\", "
                           "\"file=PATH\", \"imds\", \"container\", "
                           "\"web_identity\" or \"chain\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_http_replay_source_param(cf, src, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    ngx_conf_init_msec_value(src->timeout, 5000);
    ngx_conf_init_value(src->check, 5);
    ngx_conf_init_value(src->imds_v1, 0);

    rv = (src->type == 0) ? ngx_http_replay_source_chain(cf, src)
                          : ngx_http_replay_source_source(cf, src);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    src->name = ngx_http_replay_source_names[src->type];

    return NGX_CONF_OK;
}


void
ngx_http_replay_source_id(ngx_http_replay_source_t *src, u_char *id)
{
    ngx_md5_t  md5;

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, src->name.data, src->name.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, src->file.data, src->file.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, src->role.data, src->role.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, src->url.data, src->url.len);
    ngx_md5_update(&md5, "\0", 1);
    ngx_md5_update(&md5, src->session_name.data, src->session_name.len);
    ngx_md5_final(id, &md5);
}


char *
ngx_http_replay_source_merge(ngx_conf_t *cf, ngx_http_replay_source_t *src,
    ngx_str_t *region)
{
    u_char                    *p;
    ngx_str_t                  sts_region;
    ngx_http_core_loc_conf_t  *clcf;

    if (src->type == NGX_HTTP_REPLAY_SOURCE_ENV
        || src->type == NGX_HTTP_REPLAY_SOURCE_FILE)
    {
        return NGX_CONF_OK;
    }

    if (src->type == NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY
        && src->url.len == 0)
    {
        /* the regional endpoint, of the STS region or the bucket's */

        sts_region = src->sts_region.len ? src->sts_region : *region;

        src->url.len = sizeof("https://sts..amazonaws.com") - 1
                       + sts_region.len;
        src->url.data = ngx_pnalloc(cf->pool, src->url.len);
        if (src->url.data == NULL) {
            return NGX_CONF_ERROR;
        }

        p = ngx_sprintf(src->url.data, "https://sts.%V.amazonaws.com",
                        &sts_region);
        src->url.len = p - src->url.data;

        if (ngx_http_replay_endpoint_parse(cf, &src->endpoint, &src->url)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* the resolver where the credentials are first used, if it has one */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    return ngx_http_replay_endpoint_init(cf, &src->endpoint, clcf->resolver,
                                         clcf->resolver_timeout, &src->ca);
}


void
ngx_http_replay_source_cancel(ngx_http_replay_source_t *src)
{
    if (src->client) {
        ngx_http_replay_client_destroy(src->client);
        src->client = NULL;
    }

    ngx_explicit_memzero(src->imds_token, sizeof(src->imds_token));
}


/*
 * The variables of the AWS SDKs' default chain decide, in its order:
 * the environment's keys, a web identity token, the container endpoint,
 * then the instance's metadata service.  The master reads them while it
 * loads the configuration; the workers get what follows from them.
 */

static char *
ngx_http_replay_source_chain(ngx_conf_t *cf, ngx_http_replay_source_t *src)
{
    char       *why;
    ngx_str_t   a, b;

    if (ngx_http_replay_source_getenv(cf, "AWS_ACCESS_KEY_ID", &a) == NGX_OK
        && ngx_http_replay_source_getenv(cf, "AWS_SECRET_ACCESS_KEY", &b)
           == NGX_OK)
    {
        src->type = NGX_HTTP_REPLAY_SOURCE_ENV;
        why = "AWS_ACCESS_KEY_ID is set";

    } else if (ngx_http_replay_source_getenv(cf, "AWS_WEB_IDENTITY_TOKEN_FILE",
                                            &a) == NGX_OK
               && ngx_http_replay_source_getenv(cf, "AWS_ROLE_ARN", &b)
                  == NGX_OK)
    {
        src->type = NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY;
        why = "AWS_WEB_IDENTITY_TOKEN_FILE is set";

    } else if (ngx_http_replay_source_getenv(cf,
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", &a) == NGX_OK
               || ngx_http_replay_source_getenv(cf,
                      "AWS_CONTAINER_CREDENTIALS_FULL_URI", &a) == NGX_OK)
    {
        src->type = NGX_HTTP_REPLAY_SOURCE_CONTAINER;
        why = "AWS_CONTAINER_CREDENTIALS_*_URI is set";

    } else if (ngx_http_replay_source_getenv(cf, "AWS_EC2_METADATA_DISABLED",
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
        src->type = NGX_HTTP_REPLAY_SOURCE_IMDS;
        why = "none of the other sources' variables is set";
    }

    ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                       "replay_s3_credentials chain: %V (%s)",
                       &ngx_http_replay_source_names[src->type], why);

    return ngx_http_replay_source_source(cf, src);
}


static char *
ngx_http_replay_source_source(ngx_conf_t *cf, ngx_http_replay_source_t *src)
{
    switch (src->type) {

    case NGX_HTTP_REPLAY_SOURCE_ENV:
        return ngx_http_replay_source_env(cf, src);

    case NGX_HTTP_REPLAY_SOURCE_FILE:
        return ngx_http_replay_source_file_conf(cf, src);

    case NGX_HTTP_REPLAY_SOURCE_IMDS:

        if (src->url.len == 0
            && ngx_http_replay_source_getenv(cf,
                   "AWS_EC2_METADATA_SERVICE_ENDPOINT", &src->url)
               != NGX_OK)
        {
            ngx_str_set(&src->url, "http://169.254.169.254");
        }

        return ngx_http_replay_endpoint_parse(cf, &src->endpoint,
                                              &src->url);

    case NGX_HTTP_REPLAY_SOURCE_CONTAINER:
        return ngx_http_replay_source_container_conf(cf, src);

    default: /* NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY */
        return ngx_http_replay_source_web_identity_conf(cf, src);
    }
}


/*
 * Read in the master process while the configuration loads: its
 * environment is whole there, so no "env" directive is needed for them.
 */

static char *
ngx_http_replay_source_env(ngx_conf_t *cf, ngx_http_replay_source_t *src)
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
        if (ngx_http_replay_source_getenv(cf, names[i], &value) != NGX_OK) {
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
                           names[ngx_http_replay_source_field(parsed)]);
        return NGX_CONF_ERROR;
    }

    /* as "aws configure export-credentials --format env" writes it */

    if (ngx_http_replay_source_getenv(cf, "AWS_CREDENTIAL_EXPIRATION", &value)
        == NGX_OK
        && ngx_replay_creds_parse_time(value.data, value.len,
                                       &parsed->expiration)
           != NGX_REPLAY_CREDS_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials env: "
                           "AWS_CREDENTIAL_EXPIRATION \"%V\" is not a time "
                           "like 2024-01-31T12:00:00Z", &value);
        return NGX_CONF_ERROR;
    }

    src->loaded = parsed;

    return NGX_CONF_OK;
}


/*
 * The file is read at startup by the master process (usually root), and
 * again by a worker when it changes, so that a secrets agent may rotate
 * it: it must then be readable by the workers' user too.
 */

static char *
ngx_http_replay_source_file_conf(ngx_conf_t *cf, ngx_http_replay_source_t *src)
{
    u_char                     *buf;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_file_info_t             fi;
    ngx_replay_creds_parsed_t  *parsed;
    u_char                      err[NGX_HTTP_REPLAY_SOURCE_ERRLEN];

    if (ngx_conf_full_name(cf->cycle, &src->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    parsed = ngx_pcalloc(cf->pool, sizeof(ngx_replay_creds_parsed_t));
    if (parsed == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_replay_source_read_file(&src->file,
                                         NGX_HTTP_REPLAY_SOURCE_MAX_FILE,
                                         &buf, &len, &fi, err)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    src->mtime = ngx_file_mtime(&fi);
    src->ctime = fi.st_ctime;
    src->size = ngx_file_size(&fi);
    src->uniq = ngx_file_uniq(&fi);

    rc = ngx_http_replay_source_parse_file(&src->file, buf, len, parsed,
                                          err);

    ngx_explicit_memzero(buf, len);
    ngx_free(buf);

    if (rc != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    src->loaded = parsed;

    return NGX_CONF_OK;
}


/* ECS task roles and EKS Pod Identity */

static char *
ngx_http_replay_source_container_conf(ngx_conf_t *cf,
    ngx_http_replay_source_t *src)
{
    char                        *var;
    u_char                      *p;
    ngx_str_t                    rel, *host;
    ngx_uint_t                   i;
    ngx_replay_creds_parsed_t    check;
    ngx_http_replay_endpoint_t  *ep;

    static char                 *allowed[] = {
        "localhost", "::1", "169.254.170.2", "169.254.170.23",
        "fd00:ec2::23", NULL
    };

    var = NULL;

    if (src->url.len == 0) {
        if (ngx_http_replay_source_getenv(cf,
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", &rel) == NGX_OK)
        {
            var = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";

            if (rel.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "replay_s3_credentials container: "
                                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI "
                                   "does not start with \"/\"");
                return NGX_CONF_ERROR;
            }

            src->url.len = sizeof("http://169.254.170.2") - 1 + rel.len;
            src->url.data = ngx_pnalloc(cf->pool, src->url.len);
            if (src->url.data == NULL) {
                return NGX_CONF_ERROR;
            }

            p = ngx_cpymem(src->url.data, "http://169.254.170.2",
                           sizeof("http://169.254.170.2") - 1);
            ngx_memcpy(p, rel.data, rel.len);

        } else if (ngx_http_replay_source_getenv(cf,
                       "AWS_CONTAINER_CREDENTIALS_FULL_URI", &src->url)
                   == NGX_OK)
        {
            var = "AWS_CONTAINER_CREDENTIALS_FULL_URI";

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials container: neither "
                               "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor "
                               "AWS_CONTAINER_CREDENTIALS_FULL_URI is set in "
                               "nginx's environment, and no endpoint= is "
                               "given");
            return NGX_CONF_ERROR;
        }
    }

    ep = &src->endpoint;

    if (ngx_http_replay_endpoint_parse(cf, ep, &src->url) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /* the path may name the task: only the host is said */

    ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                       "replay_s3_credentials container: %s://%V, from %s",
                       ep->https ? "https" : "http", &ep->authority,
                       var ? var : "endpoint=");

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

    if (src->file.len == 0
        && ngx_http_replay_source_getenv(cf,
               "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &src->file)
           != NGX_OK
        && ngx_http_replay_source_getenv(cf, "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                        &src->token) == NGX_OK)
    {
        /* a token of its own: it goes in a header, so no control byte */

        ngx_memzero(&check, sizeof(ngx_replay_creds_parsed_t));
        check.key_id[0] = 'A';
        check.key_id_len = 1;
        check.secret[0] = 's';
        check.secret_len = 1;
        check.token_len = ngx_min(src->token.len, sizeof(check.token));
        ngx_memcpy(check.token, src->token.data, check.token_len);

        if (src->token.len > sizeof(check.token)
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

    if (src->file.len
        && ngx_conf_full_name(cf->cycle, &src->file, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* EKS IRSA and others: AssumeRoleWithWebIdentity with a token file */

static char *
ngx_http_replay_source_web_identity_conf(ngx_conf_t *cf,
    ngx_http_replay_source_t *src)
{
    u_char      *p, *last;
    ngx_str_t    v;

    if (src->role.len == 0
        && ngx_http_replay_source_getenv(cf, "AWS_ROLE_ARN", &src->role)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials web_identity: no role_arn= "
                           "and no AWS_ROLE_ARN in nginx's environment");
        return NGX_CONF_ERROR;
    }

    if (src->file.len == 0
        && ngx_http_replay_source_getenv(cf, "AWS_WEB_IDENTITY_TOKEN_FILE",
                                        &src->file)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials web_identity: no "
                           "token_file= and no AWS_WEB_IDENTITY_TOKEN_FILE in "
                           "nginx's environment");
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &src->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (src->session_name.len == 0) {
        (void) ngx_http_replay_source_getenv(cf, "AWS_ROLE_SESSION_NAME",
                                            &src->session_name);
    }

    /* STS's rule for RoleSessionName: [\w+=,.@-]{2,64} */

    if (src->session_name.len) {
        last = src->session_name.data + src->session_name.len;

        for (p = src->session_name.data; p < last; p++) {
            if (*p == '\0' || !ngx_http_replay_source_name_char(*p)) {
                break;
            }
        }

        if (p < last || src->session_name.len < 2
            || src->session_name.len > 64)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "replay_s3_credentials web_identity: the "
                               "session name \"%V\" is not 2 to 64 of "
                               "letters, digits and _+=,.@-",
                               &src->session_name);
            return NGX_CONF_ERROR;
        }
    }

    if (src->sts_region.len == 0
        && ngx_http_replay_source_getenv(cf, "AWS_REGION", &src->sts_region)
           != NGX_OK)
    {
        (void) ngx_http_replay_source_getenv(cf, "AWS_DEFAULT_REGION",
                                            &src->sts_region);
    }

    if (src->ca.len == 0) {
        (void) ngx_http_replay_source_getenv(cf, "AWS_CA_BUNDLE", &src->ca);
    }

    if (src->url.len == 0
        && ngx_http_replay_source_getenv(cf, "AWS_ENDPOINT_URL_STS", &v)
           == NGX_OK)
    {
        src->url = v;
    }

    if (src->url.len == 0) {
        /* https://sts.REGION.amazonaws.com, once the region is known */
        return NGX_CONF_OK;
    }

    if (ngx_http_replay_endpoint_parse(cf, &src->endpoint, &src->url)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (!src->endpoint.https) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "replay_s3_credentials web_identity: the STS "
                           "endpoint \"%V\" must be https: the token is "
                           "sent to it", &src->url);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* an AWS_* variable of the master's environment, copied; empty is unset */

static ngx_int_t
ngx_http_replay_source_getenv(ngx_conf_t *cf, char *name, ngx_str_t *value)
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
ngx_http_replay_source_read_file(ngx_str_t *name, size_t max, u_char **buf,
    size_t *len, ngx_file_info_t *fi, u_char *err)
{
    u_char     *last;
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_err_t   e;
    ngx_int_t   rc;

    last = err + NGX_HTTP_REPLAY_SOURCE_ERRLEN - 1;

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        e = ngx_errno;
        ngx_http_replay_source_errno(ngx_slprintf(err, last, ngx_open_file_n
                                                 " \"%V\" failed", name),
                                    last, e);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    *buf = NULL;

    if (ngx_fd_info(fd, fi) == NGX_FILE_ERROR) {
        e = ngx_errno;
        ngx_http_replay_source_errno(ngx_slprintf(err, last, ngx_fd_info_n
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
            ngx_http_replay_source_errno(ngx_slprintf(err, last, ngx_read_fd_n
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


/* which of key id, secret and token ngx_replay_creds_check() refused */

static ngx_uint_t
ngx_http_replay_source_field(ngx_replay_creds_parsed_t *parsed)
{
    switch (parsed->field[0]) {

    case 'A':
        return 0;

    case 'S':
        return 1;

    default:
        return 2;
    }
}


/* " (2: No such file or directory)", NUL-terminated before last */

static void
ngx_http_replay_source_errno(u_char *p, u_char *last, ngx_err_t err)
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
ngx_http_replay_source_parse_file(ngx_str_t *name, u_char *buf, size_t len,
    ngx_replay_creds_parsed_t *out, u_char *err)
{
    u_char                  *p, *eol, *dst, *last;
    size_t                  *dlen, size;
    ngx_uint_t               line, expiration;
    ngx_replay_sigv4_str_t   value;

    static char             *fields[] = {
        "access key id", "secret access key", "session token"
    };

    last = err + NGX_HTTP_REPLAY_SOURCE_ERRLEN - 1;

    out->key_id_len = 0;
    out->secret_len = 0;
    out->token_len = 0;
    out->expiration = 0;
    expiration = 0;

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

        case NGX_REPLAY_SIGV4_CREDS_EXPIRATION:

            if (expiration) {
                *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                              "duplicate key", name, line) = '\0';
                return NGX_ERROR;
            }

            expiration = 1;

            if (ngx_replay_creds_parse_time(value.data, value.len,
                                            &out->expiration)
                != NGX_REPLAY_CREDS_OK)
            {
                *ngx_slprintf(err, last, "credentials file \"%V\", line %ui: "
                              "the expiration is not a time like "
                              "2024-01-31T12:00:00Z", name, line) = '\0';
                return NGX_ERROR;
            }

            continue;

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
                      fields[ngx_http_replay_source_field(out)]) = '\0';
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a token file (web identity, container authorization), read each time */

static ngx_int_t
ngx_http_replay_source_token_file(ngx_http_replay_source_t *src, u_char **buf,
    size_t *len, u_char *err)
{
    u_char           *p;
    ngx_file_info_t   fi;

    if (ngx_http_replay_source_read_file(&src->file,
                                        NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE,
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
        *ngx_slprintf(err, err + NGX_HTTP_REPLAY_SOURCE_ERRLEN - 1,
                      "the token file \"%V\" is empty or holds a character "
                      "a token may not", &src->file) = '\0';
        ngx_explicit_memzero(*buf, NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE);
        ngx_free(*buf);
        *buf = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_replay_source_fetch(ngx_http_replay_source_t *src)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay: refreshing AWS credentials from %V",
                   &src->name);

    switch (src->type) {

    case NGX_HTTP_REPLAY_SOURCE_FILE:
        ngx_http_replay_source_refresh_file(src);
        return;

    case NGX_HTTP_REPLAY_SOURCE_IMDS:
        src->step = NGX_HTTP_REPLAY_SOURCE_IMDS_TOKEN;
        src->imds_token_len = 0;

        if (src->role.len) {
            /* a role given: no need to ask for it */
            src->imds_role_len = ngx_min(src->role.len,
                                           sizeof(src->imds_role));
            ngx_memcpy(src->imds_role, src->role.data,
                       src->imds_role_len);
        }

        ngx_http_replay_source_imds(src);
        return;

    case NGX_HTTP_REPLAY_SOURCE_CONTAINER:
        ngx_http_replay_source_container(src);
        return;

    default: /* NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY */
        ngx_http_replay_source_sts(src);
        return;
    }
}


/* file=: read again when it has changed (a secrets agent rotated it) */

static void
ngx_http_replay_source_refresh_file(ngx_http_replay_source_t *src)
{
    u_char                       *buf;
    size_t                        len;
    ngx_int_t                     rc;
    ngx_uint_t                    same;
    ngx_file_info_t               fi;
    ngx_replay_creds_parsed_t    *parsed;
    u_char                        err[NGX_HTTP_REPLAY_SOURCE_ERRLEN];

    if (ngx_file_info(src->file.data, &fi) == NGX_FILE_ERROR) {
        ngx_http_replay_source_errno(ngx_slprintf(err, err + sizeof(err) - 1,
                                                 ngx_file_info_n
                                                 " \"%V\" failed",
                                                 &src->file),
                                    err + sizeof(err) - 1, ngx_errno);
        ngx_http_replay_source_done(src, NULL, err, 1);
        return;
    }

    same = (src->mtime == ngx_file_mtime(&fi)
            && src->ctime == fi.st_ctime
            && src->size == ngx_file_size(&fi)
            && src->uniq == ngx_file_uniq(&fi));

    if (same) {
        ngx_http_replay_source_done(src, NULL, NULL, 0);
        return;
    }

    parsed = ngx_alloc(sizeof(ngx_replay_creds_parsed_t), ngx_cycle->log);
    if (parsed == NULL) {
        ngx_http_replay_source_done(src, NULL, (u_char *) "no memory", 1);
        return;
    }

    rc = ngx_http_replay_source_read_file(&src->file,
                                         NGX_HTTP_REPLAY_SOURCE_MAX_FILE, &buf,
                                         &len, &fi, err);

    if (rc == NGX_OK) {
        rc = ngx_http_replay_source_parse_file(&src->file, buf, len, parsed,
                                              err);

        ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_SOURCE_MAX_FILE);
        ngx_free(buf);

        /* the file as read, changed or not: not read again unless it
         * changes again */

        src->mtime = ngx_file_mtime(&fi);
        src->ctime = fi.st_ctime;
        src->size = ngx_file_size(&fi);
        src->uniq = ngx_file_uniq(&fi);
    }

    ngx_http_replay_source_done(src, rc == NGX_OK ? parsed : NULL, err, 1);

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
ngx_http_replay_source_imds(ngx_http_replay_source_t *src)
{
    u_char     *p;
    ngx_str_t   path, headers;
    u_char      buf[sizeof("/latest/meta-data/iam/security-credentials/")
                    + sizeof(src->imds_role)];
    u_char      hdr[sizeof("X-aws-ec2-metadata-token: \r\n")
                    + sizeof(src->imds_token)];

    if (src->step == NGX_HTTP_REPLAY_SOURCE_IMDS_TOKEN) {
        ngx_str_set(&path, "/latest/api/token");
        ngx_str_set(&headers, "X-aws-ec2-metadata-token-ttl-seconds: "
                              NGX_HTTP_REPLAY_SOURCE_IMDS_TTL "\r\n");

        ngx_http_replay_source_send(src, "PUT", &path, &headers, NULL, NULL);
        return;
    }

    path.data = buf;
    p = ngx_cpymem(buf, "/latest/meta-data/iam/security-credentials/",
                   sizeof("/latest/meta-data/iam/security-credentials/") - 1);

    if (src->step == NGX_HTTP_REPLAY_SOURCE_IMDS_CREDS) {
        p = ngx_cpymem(p, src->imds_role, src->imds_role_len);
    }

    path.len = p - buf;

    ngx_str_null(&headers);

    if (src->imds_token_len) {
        headers.data = hdr;
        p = ngx_cpymem(hdr, "X-aws-ec2-metadata-token: ",
                       sizeof("X-aws-ec2-metadata-token: ") - 1);
        p = ngx_cpymem(p, src->imds_token, src->imds_token_len);
        *p++ = CR; *p++ = LF;
        headers.len = p - hdr;
    }

    ngx_http_replay_source_send(src, "GET", &path, &headers, NULL, NULL);

    ngx_explicit_memzero(hdr, sizeof(hdr));
}


/* ECS and EKS Pod Identity: one GET, with the authorization token if any */

static void
ngx_http_replay_source_container(ngx_http_replay_source_t *src)
{
    u_char     *p, *buf;
    size_t      len;
    ngx_str_t   headers, token;
    u_char      err[NGX_HTTP_REPLAY_SOURCE_ERRLEN];

    ngx_str_null(&headers);
    buf = NULL;
    token = src->token;

    if (src->file.len) {
        if (ngx_http_replay_source_token_file(src, &buf, &len, err)
            != NGX_OK)
        {
            ngx_http_replay_source_done(src, NULL, err, 1);
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
                ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE);
                ngx_free(buf);
            }

            ngx_http_replay_source_done(src, NULL, (u_char *) "no memory",
                                       1);
            return;
        }

        p = ngx_cpymem(headers.data, "Authorization: ",
                       sizeof("Authorization: ") - 1);
        p = ngx_cpymem(p, token.data, token.len);
        *p++ = CR; *p = LF;
    }

    if (buf) {
        ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE);
        ngx_free(buf);
    }

    ngx_http_replay_source_send(src, "GET", NULL, &headers, NULL, NULL);

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
ngx_http_replay_source_sts(ngx_http_replay_source_t *src)
{
    u_char     *p, *buf;
    size_t      len, size;
    ngx_str_t   body, session;
    u_char      name[NGX_INT64_LEN + sizeof("ngx-replay-")];
    u_char      err[NGX_HTTP_REPLAY_SOURCE_ERRLEN];

    if (ngx_http_replay_source_token_file(src, &buf, &len, err) != NGX_OK) {
        ngx_http_replay_source_done(src, NULL, err, 1);
        return;
    }

    session = src->session_name;

    if (session.len == 0) {
        session.data = name;
        session.len = ngx_sprintf(name, "ngx-replay-%T", ngx_time()) - name;
    }

    size = sizeof("Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
                  "&RoleArn=&RoleSessionName=&WebIdentityToken="
                  "&DurationSeconds=") - 1 + NGX_TIME_T_LEN
           + 3 * (src->role.len + session.len + len);

    body.data = ngx_alloc(size, ngx_cycle->log);
    if (body.data == NULL) {
        ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE);
        ngx_free(buf);
        ngx_http_replay_source_done(src, NULL, (u_char *) "no memory", 1);
        return;
    }

    p = ngx_cpymem(body.data, "Action=AssumeRoleWithWebIdentity"
                   "&Version=2011-06-15&RoleArn=",
                   sizeof("Action=AssumeRoleWithWebIdentity"
                          "&Version=2011-06-15&RoleArn=") - 1);
    p += ngx_replay_sigv4_uri_encode(p, src->role.data, src->role.len, 0);
    p = ngx_cpymem(p, "&RoleSessionName=", sizeof("&RoleSessionName=") - 1);
    p += ngx_replay_sigv4_uri_encode(p, session.data, session.len, 0);
    p = ngx_cpymem(p, "&WebIdentityToken=", sizeof("&WebIdentityToken=") - 1);
    p += ngx_replay_sigv4_uri_encode(p, buf, len, 0);

    if (src->duration != NGX_CONF_UNSET) {
        p = ngx_sprintf(p, "&DurationSeconds=%T", src->duration);
    }

    body.len = p - body.data;

    ngx_explicit_memzero(buf, NGX_HTTP_REPLAY_SOURCE_MAX_TOKEN_FILE);
    ngx_free(buf);

    ngx_http_replay_source_send(src, "POST", NULL, NULL, &body,
                               "application/x-www-form-urlencoded; "
                               "charset=utf-8");

    ngx_explicit_memzero(body.data, size);
    ngx_free(body.data);
}


/* one request of a refresh; its answer comes to ..._answer() */

static void
ngx_http_replay_source_send(ngx_http_replay_source_t *src, char *method,
    ngx_str_t *path, ngx_str_t *headers, ngx_str_t *body, char *content_type)
{
    ngx_str_t                  action;
    ngx_http_replay_client_t  *hc;
    u_char                     buf[64];

    action.data = buf;
    action.len = ngx_snprintf(buf, sizeof(buf),
                              "fetching AWS credentials (%V)", &src->name)
                 - buf;

    hc = ngx_http_replay_client_create(ngx_cycle->log, &action);
    if (hc == NULL) {
        ngx_http_replay_source_done(src, NULL, (u_char *) "no memory", 1);
        return;
    }

    /* the client keeps its own copy of the action */
    hc->action.data = ngx_pstrdup(hc->pool, &action);
    if (hc->action.data == NULL) {
        ngx_http_replay_client_destroy(hc);
        ngx_http_replay_source_done(src, NULL, (u_char *) "no memory", 1);
        return;
    }

    hc->endpoint = &src->endpoint;
    hc->method.data = (u_char *) method;
    hc->method.len = ngx_strlen(method);
    hc->timeout = src->timeout;
    hc->handler = ngx_http_replay_source_answer;
    hc->data = src;

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
        ngx_http_replay_source_done(src, NULL, (u_char *) "no memory", 1);
        return;
    }

    src->client = hc;
}


static void
ngx_http_replay_source_answer(ngx_http_replay_client_t *hc)
{
    ngx_http_replay_source_t *src = hc->data;

    int                         rc;
    u_char                     *p, *last;
    ngx_int_t                   next;
    ngx_replay_creds_parsed_t  *parsed;
    u_char                      err[NGX_HTTP_REPLAY_SOURCE_ERRLEN];

    src->client = NULL;

    p = err;
    last = err + sizeof(err) - 1;
    parsed = NULL;

    if (src->type == NGX_HTTP_REPLAY_SOURCE_IMDS
        && src->step != NGX_HTTP_REPLAY_SOURCE_IMDS_CREDS)
    {
        next = ngx_http_replay_source_imds_answer(src, hc, err);

        ngx_http_replay_client_destroy(hc);

        if (next == NGX_OK) {
            ngx_http_replay_source_imds(src);

        } else {
            ngx_explicit_memzero(src->imds_token,
                                 sizeof(src->imds_token));
            ngx_http_replay_source_done(src, NULL, err, 1);
        }

        return;
    }

    if (src->type == NGX_HTTP_REPLAY_SOURCE_IMDS) {
        p = ngx_slprintf(p, last, "the role's credentials: ");
        ngx_explicit_memzero(src->imds_token, sizeof(src->imds_token));
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

    if (src->type == NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY) {
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
        p = ngx_http_replay_source_parse_error(p, last, rc, parsed);
        goto failed;
    }

    ngx_http_replay_client_destroy(hc);

    ngx_http_replay_source_done(src, parsed, NULL, 1);

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

    ngx_http_replay_source_done(src, NULL, err, 1);
}


/* the token and role steps of IMDS: NGX_OK to go on, else err is set */

static ngx_int_t
ngx_http_replay_source_imds_answer(ngx_http_replay_source_t *src,
    ngx_http_replay_client_t *hc, u_char *err)
{
    u_char  *p, *q, *end, *last;

    last = err + NGX_HTTP_REPLAY_SOURCE_ERRLEN - 1;

    if (src->step == NGX_HTTP_REPLAY_SOURCE_IMDS_TOKEN) {

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
                || (size_t) (end - p) > sizeof(src->imds_token))
            {
                *ngx_slprintf(err, last, "the session token (PUT "
                              "/latest/api/token): not a token") = '\0';
                return NGX_ERROR;
            }

            src->imds_token_len = end - p;
            ngx_memcpy(src->imds_token, p, end - p);

        } else if (src->imds_v1
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

        src->step = src->role.len ? NGX_HTTP_REPLAY_SOURCE_IMDS_CREDS
                                      : NGX_HTTP_REPLAY_SOURCE_IMDS_ROLE;
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
        if (*q == '\0' || !ngx_http_replay_source_name_char(*q)) {
            break;
        }
    }

    if (q == p || (q < end && *q != CR && *q != LF)
        || (size_t) (q - p) > sizeof(src->imds_role))
    {
        *ngx_slprintf(err, last, "the role's name (GET "
                      "/latest/meta-data/iam/security-credentials/): not a "
                      "role name") = '\0';
        return NGX_ERROR;
    }

    src->imds_role_len = q - p;
    ngx_memcpy(src->imds_role, p, q - p);

    src->step = NGX_HTTP_REPLAY_SOURCE_IMDS_CREDS;

    return NGX_OK;
}


static u_char *
ngx_http_replay_source_parse_error(u_char *p, u_char *last, int rc,
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


static char *
ngx_http_replay_source_param(ngx_conf_t *cf, ngx_http_replay_source_t *src,
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

#define ngx_http_replay_source_is(s)                                          \
    (name.len == sizeof(s) - 1 && ngx_strncmp(name.data, s, name.len) == 0)

    if (ngx_http_replay_source_is("timeout")) {
        n = ngx_parse_time(&value, 0);
        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        src->timeout = (ngx_msec_t) n;
        return NGX_CONF_OK;
    }

    switch (src->type) {

    case NGX_HTTP_REPLAY_SOURCE_FILE:

        if (ngx_http_replay_source_is("check")) {
            n = ngx_parse_time(&value, 1);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            src->check = n;
            return NGX_CONF_OK;
        }

        break;

    case NGX_HTTP_REPLAY_SOURCE_IMDS:

        if (ngx_http_replay_source_is("endpoint")) {
            src->url = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("role")) {
            src->role = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("imds_v1")) {
            if (ngx_strcmp(value.data, "on") == 0) {
                src->imds_v1 = 1;
                return NGX_CONF_OK;
            }

            if (ngx_strcmp(value.data, "off") == 0) {
                src->imds_v1 = 0;
                return NGX_CONF_OK;
            }

            goto invalid;
        }

        break;

    case NGX_HTTP_REPLAY_SOURCE_CONTAINER:

        if (ngx_http_replay_source_is("endpoint")) {
            src->url = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("token_file")) {
            src->file = value;
            return NGX_CONF_OK;
        }

        break;

    case NGX_HTTP_REPLAY_SOURCE_WEB_IDENTITY:

        if (ngx_http_replay_source_is("token_file")) {
            src->file = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("sts_endpoint")) {
            src->url = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("role_arn")) {
            src->role = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("session_name")) {
            src->session_name = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("sts_region")) {
            src->sts_region = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("ca")) {
            src->ca = value;
            return NGX_CONF_OK;
        }

        if (ngx_http_replay_source_is("duration")) {
            n = ngx_parse_time(&value, 1);

            /* what AssumeRoleWithWebIdentity takes */
            if (n == NGX_ERROR || n < 900 || n > 43200) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\": STS takes "
                                   "15m to 12h", param);
                return NGX_CONF_ERROR;
            }

            src->duration = n;
            return NGX_CONF_OK;
        }

        break;
    }

#undef ngx_http_replay_source_is

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       param);

    return NGX_CONF_ERROR;
}
