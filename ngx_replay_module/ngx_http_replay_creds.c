
/*
 * AWS credentials, see ngx_http_replay_creds.h and docs/design.md.
 *
 * Each "replay_s3_credentials" is a set, with a source of its own
 * (ngx_http_replay_creds_source.c).  Its current credentials live in an
 * entry of the "replay_credentials" shared zone, with the set's state
 * (expiry, last refresh, failures, when to try next) and a lease: the one
 * worker that holds it refreshes, the others wait for the entry's
 * generation to move.  env and file= are read by the master while it
 * loads the configuration and written to the entry there.
 *
 * A worker signs with a copy of the entry's credentials of its own (a
 * heap block with the signer's struct, whose signing key is derived once
 * per day), replaced when the generation moves; requests copy the token
 * they send, so the block can go at once.
 */


#include "ngx_http_replay_creds.h"
#include "ngx_http_replay_creds_source.h"
#include "ngx_http_replay_util.h"


/* credentials are not used in their last seconds: a request signed with
 * them must reach S3 before they expire */
#define NGX_HTTP_REPLAY_CREDS_MARGIN        2

#define NGX_HTTP_REPLAY_CREDS_ERRLEN        NGX_HTTP_REPLAY_SOURCE_ERRLEN

/* the longest a failed refresh waits before the next try */
#define NGX_HTTP_REPLAY_CREDS_MAX_BACKOFF   32


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
    ngx_http_replay_source_t        source;
    ngx_str_t                       conf;            /* "nginx.conf:12" */
    u_char                          id[16];

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
};


typedef struct {
    ngx_array_t                     sets;    /* ngx_http_replay_creds_t * */
    ngx_shm_zone_t                 *zone;
} ngx_http_replay_creds_main_conf_t;


typedef struct {
    ngx_uint_t                      entries;
    ngx_http_replay_creds_shm_t    *first;
} ngx_http_replay_creds_zone_t;


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
static void ngx_http_replay_creds_fetched(ngx_http_replay_source_t *src,
    ngx_replay_creds_parsed_t *parsed, u_char *err, ngx_uint_t changed);
static void ngx_http_replay_creds_failed(ngx_http_replay_creds_t *creds,
    u_char *err);
static void ngx_http_replay_creds_schedule(ngx_http_replay_creds_t *creds,
    time_t at);
static void ngx_http_replay_creds_adopt(ngx_http_replay_creds_t *creds);
static void ngx_http_replay_creds_free_local(ngx_http_replay_creds_t *creds);
static u_char *ngx_http_replay_creds_iso8601(u_char *p, time_t t);
static ngx_array_t *ngx_http_replay_creds_sets(void);


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


/* ------------------------------------------------------------------ */
/* configuration                                                       */


char *
ngx_http_replay_creds(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    u_char                              *p;
    ngx_str_t                            name;
    ngx_http_replay_creds_t             *creds, **set;
    ngx_http_replay_creds_main_conf_t   *cmcf;

    if (rlcf->creds != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    creds = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_creds_t));
    if (creds == NULL) {
        return NGX_CONF_ERROR;
    }

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

    if (ngx_http_replay_source_conf(cf, &creds->source) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_http_replay_source_id(&creds->source, creds->id);

    creds->source.handler = ngx_http_replay_creds_fetched;
    creds->source.data = creds;

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


char *
ngx_http_replay_creds_merge(ngx_conf_t *cf, ngx_http_replay_creds_t *creds,
    ngx_str_t *region)
{
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

    return ngx_http_replay_source_merge(cf, &creds->source, region);
}


size_t
ngx_http_replay_creds_key_id_max(ngx_http_replay_creds_t *creds)
{
    return creds->source.loaded ? creds->source.loaded->key_id_len
                                : NGX_REPLAY_CREDS_MAX_KEY_ID;
}


size_t
ngx_http_replay_creds_token_max(ngx_http_replay_creds_t *creds)
{
    /* a rotated file may bring a token: counted as the longest */
    return (creds->source.type == NGX_HTTP_REPLAY_SOURCE_ENV)
           ? creds->source.loaded->token_len : NGX_REPLAY_CREDS_MAX_TOKEN;
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
    ngx_http_replay_source_t            *src;
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

        src = &creds->source;

        if (src->loaded == NULL) {
            continue;
        }

        /* env and file=: what the master has just read */

        ngx_http_replay_creds_store(sh, src->loaded, now);

        if (src->type == NGX_HTTP_REPLAY_SOURCE_FILE) {
            sh->mtime = src->mtime;
            sh->ctime = src->ctime;
            sh->size = src->size;
            sh->uniq = src->uniq;
            sh->due = now + src->check;

        } else {
            sh->due = NGX_MAX_TIME_T_VALUE;
        }

        /* the configuration's copy is no longer needed */
        ngx_explicit_memzero(src->loaded->secret,
                             sizeof(src->loaded->secret));
        ngx_explicit_memzero(src->loaded->token,
                             sizeof(src->loaded->token));
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

        if (!creds->used || creds->source.type == NGX_HTTP_REPLAY_SOURCE_ENV) {
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

        if (creds->source.client) {
            ngx_http_replay_source_cancel(&creds->source);

            /* another worker may take over at once */

            ngx_shmtx_lock(&creds->shpool->mutex);

            if (creds->shm->refresher == ngx_pid) {
                creds->shm->refresher = 0;
            }

            ngx_shmtx_unlock(&creds->shpool->mutex);
        }

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

    if (ngx_exiting || ngx_quit || ngx_terminate || creds->source.client) {
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
            sh->lease = now + 3 * (creds->source.timeout / 1000 + 1) + 2;
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

    if (creds->source.type == NGX_HTTP_REPLAY_SOURCE_FILE) {
        /* the file as last read, whichever worker read it */

        ngx_shmtx_lock(&creds->shpool->mutex);

        creds->source.mtime = sh->mtime;
        creds->source.ctime = sh->ctime;
        creds->source.size = sh->size;
        creds->source.uniq = sh->uniq;

        ngx_shmtx_unlock(&creds->shpool->mutex);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "replay: refreshing AWS credentials from %V",
                   &creds->source.name);

    ngx_http_replay_source_fetch(&creds->source);
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
ngx_http_replay_creds_fetched(ngx_http_replay_source_t *src,
    ngx_replay_creds_parsed_t *parsed, u_char *err, ngx_uint_t changed)
{
    ngx_http_replay_creds_t *creds = src->data;

    time_t                        now, life, delay;
    ngx_http_replay_creds_shm_t  *sh;
    u_char                        expires[sizeof("2024-01-01T00:00:00Z")];
    u_char                        buf[NGX_HTTP_REPLAY_CREDS_ERRLEN];

    now = ngx_time();
    sh = creds->shm;

    if (src->type == NGX_HTTP_REPLAY_SOURCE_FILE && changed) {
        /* read, well or not: not read again unless it changes again */

        ngx_shmtx_lock(&creds->shpool->mutex);

        sh->mtime = src->mtime;
        sh->ctime = src->ctime;
        sh->size = src->size;
        sh->uniq = src->uniq;

        ngx_shmtx_unlock(&creds->shpool->mutex);
    }

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

        if (src->type == NGX_HTTP_REPLAY_SOURCE_FILE) {
            /* looked at again as usual: its agent rotates it */
            delay = src->check;

        } else {
            /* 80 % of their life or 5 minutes before they expire,
             * whichever comes first, but not before half their life */
            life = sh->expires - now;
            delay = ngx_min(life * 8 / 10, ngx_max(life - 300, life / 2));
        }

        sh->due = now + ngx_max(delay, 1);

        if (sh->refresher == ngx_pid) {
            sh->refresher = 0;
        }

        ngx_shmtx_unlock(&creds->shpool->mutex);

        if (src->type != NGX_HTTP_REPLAY_SOURCE_FILE) {
            *ngx_http_replay_creds_iso8601(expires, sh->expires) = '\0';

            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "replay: AWS credentials from %V (%V) refreshed, "
                          "they expire at %s, next refresh in %Ts",
                          &creds->source.name, &creds->conf, expires,
                          ngx_max(delay, 1));

        } else {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "replay: AWS credentials from file (%V) read "
                          "again: \"%V\" has changed", &creds->conf,
                          &src->file);
        }

        ngx_http_replay_creds_schedule(creds, now + ngx_max(delay, 1));
        return;
    }

    if (!changed) {
        ngx_shmtx_lock(&creds->shpool->mutex);

        sh->due = now + creds->source.check;

        if (sh->refresher == ngx_pid) {
            sh->refresher = 0;
        }

        ngx_shmtx_unlock(&creds->shpool->mutex);

        ngx_http_replay_creds_schedule(creds, now + creds->source.check);
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

    if (creds->source.type == NGX_HTTP_REPLAY_SOURCE_FILE) {
        /* the file is looked at as usual: it is read when it changes */
        delay = creds->source.check;

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

    level = (repeat && creds->source.type == NGX_HTTP_REPLAY_SOURCE_FILE)
            ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, ngx_cycle->log, 0,
                  "replay: refreshing AWS credentials from %V (%V) failed: "
                  "%s; %s%s, next try in %Ts", &creds->source.name, &creds->conf,
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
                   &creds->source.name, gen);
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
    ngx_http_replay_creds_t *creds, time_t *retry_after)
{
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
    expires = sh->generation ? sh->expires : 0;
    consecutive = sh->consecutive;
    *ngx_cpymem(err, sh->error, consecutive ? sh->error_len : 0) = '\0';

    ngx_shmtx_unlock(&creds->shpool->mutex);

    retry = ngx_max(ngx_min(retry, 60), 1);

    if (expires) {
        *ngx_http_replay_creds_iso8601(at, expires) = '\0';

        if (consecutive) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "replay: no AWS credentials to sign with: those "
                          "from %V (%V) are no longer valid (they expire at "
                          "%s), %ui refreshes failed in a row, the last: %s",
                          &creds->source.name, &creds->conf, at, consecutive,
                          err);

        } else {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "replay: no AWS credentials to sign with: those "
                          "from %V (%V) are no longer valid (they expire at "
                          "%s), and none newer came", &creds->source.name,
                          &creds->conf, at);
        }

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "replay: no AWS credentials to sign with yet from "
                      "%V (%V)%s%s", &creds->source.name, &creds->conf,
                      err[0] ? ", the last try failed: " : "", err);
    }

    *retry_after = retry;

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
                     + 6 * (set[i]->source.name.len + set[i]->conf.len)
                     + NGX_ATOMIC_T_LEN)
                + sizeof("{\"source\":\"\",\"config\":\"\",\"valid\":false,"
                         "\"expires\":,\"last_refresh\":,\"next_refresh\":,"
                         "\"refreshes\":,\"failures\":,"
                         "\"consecutive_failures\":,\"refused\":,"
                         "\"last_error\":\"\"},")
                + 6 * (set[i]->source.name.len + set[i]->conf.len)
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
            p = ngx_http_replay_escape_label(p, &set[i]->source.name, 0);
            p = ngx_cpymem(p, "\",config=\"", sizeof("\",config=\"") - 1);
            p = ngx_http_replay_escape_label(p, &set[i]->conf, 0);
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
        p = ngx_http_replay_escape_label(p, &set[i]->source.name, 1);
        p = ngx_cpymem(p, "\",\"config\":\"", sizeof("\",\"config\":\"") - 1);
        p = ngx_http_replay_escape_label(p, &set[i]->conf, 1);

        p = ngx_sprintf(p, "\",\"valid\":%s,\"expires\":%uA,"
                        "\"last_refresh\":%uA,\"next_refresh\":%uA,"
                        "\"refreshes\":%uA,\"failures\":%uA,"
                        "\"consecutive_failures\":%uA,\"refused\":%uA,"
                        "\"last_error\":\"",
                        st.v[0] ? "true" : "false", st.v[1], st.v[2],
                        st.v[3], st.v[4], st.v[5], st.v[6], st.v[7]);

        error.data = st.error;
        error.len = st.error_len;
        p = ngx_http_replay_escape_label(p, &error, 1);

        *p++ = '"';
        *p++ = '}';
    }

    *p++ = ']';

    return p;
}
