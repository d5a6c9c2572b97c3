
/*
 * The key cache.
 *
 * A replay's key rarely changes once its game is over, and asking the
 * database for it on every request costs a round trip and the database's
 * CPU.  "replay_key_cache" keeps each successful answer of a
 * replay_key_query (the key, and the Content-Type and file name columns)
 * in a shared memory zone that every worker reads: a red-black tree by
 * the hash of the cache key, and a queue from the most recently used
 * entry to the least.  An entry lives for "valid" seconds; when the zone
 * is full, the least recently used entries make room.
 *
 * The cache key is a digest of the database's connection string and the
 * query's text, then each bound value and a NUL: two queries, or two
 * databases, never share entries, and the entries outlive a reload that
 * keeps the query.  Only a row with a key is kept: "not found" and errors
 * always ask the database again.
 *
 * With "stale=", an expired entry is kept that much longer, and served
 * when the database fails the lookup that was to renew it (down, past
 * query_timeout, its queue full).  With "notify=", the workers LISTEN on
 * a channel (ngx_http_replay_lookup.c) and a NOTIFY drops the entries it
 * names: ngx_http_replay_cache_drop().  The zone counts its drops and has
 * an epoch: an entry of an older epoch counts as expired (the listeners
 * were away and a NOTIFY may have been lost), and an answer that a drop
 * may have overtaken while the database was asked is kept as expired.
 */


#include "ngx_http_replay_cache.h"
#include "ngx_http_replay_status.h"
#include "ngx_http_replay_util.h"


typedef struct {
    ngx_rbtree_t                  rbtree;
    ngx_rbtree_node_t             sentinel;
    ngx_queue_t                   lru;
    ngx_uint_t                    epoch;       /* older entries: expired */
    ngx_uint_t                    drops;       /* by NOTIFY, so far */
} ngx_http_replay_cache_sh_t;


typedef struct {
    ngx_http_replay_cache_sh_t   *sh;
    ngx_slab_pool_t              *shpool;
} ngx_http_replay_cache_t;


typedef struct {
    ngx_str_node_t                sn;          /* sn.str: the cache key */
    ngx_queue_t                   queue;       /* in sh->lru */
    time_t                        expire;
    ngx_uint_t                    epoch;
    uint32_t                      key_len;
    uint32_t                      type_len;
    uint32_t                      name_len;
    u_char                        data[1];     /* cache key, key, type, name */
} ngx_http_replay_cache_node_t;


static void ngx_http_replay_cache_delete(ngx_http_replay_cache_t *cache,
    ngx_http_replay_cache_node_t *node);
static ngx_int_t ngx_http_replay_cache_row(ngx_http_replay_cache_t *cache,
    ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_cache_node_t *node, ngx_http_replay_cache_row_pt set_row);
static ngx_int_t ngx_http_replay_cache_channel(ngx_str_t *name);
static ngx_int_t ngx_http_replay_cache_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_replay_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_replay_cache_vars[] = {

    { ngx_string("replay_key_cache"), NULL, ngx_http_replay_cache_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_replay_cache_states[] = {
    ngx_null_string,
    ngx_string("MISS"),
    ngx_string("HIT"),
    ngx_string("EXPIRED"),
    ngx_string("STALE")
};


ngx_int_t
ngx_http_replay_cache_get(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_str_t *ckey, ngx_http_replay_cache_row_pt set_row, ngx_uint_t *drops)
{
    time_t                         now;
    uint32_t                       hash;
    ngx_int_t                      rc;
    ngx_str_node_t                *sn;
    ngx_http_replay_cache_t       *cache;
    ngx_http_replay_loc_conf_t    *rlcf;
    ngx_http_replay_cache_node_t  *node;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    cache = rlcf->key_cache->data;

    hash = ngx_crc32_long(ckey->data, ckey->len);
    now = ngx_time();

    ngx_shmtx_lock(&cache->shpool->mutex);

    /* an answer overtaken by a drop is not to be kept as fresh */
    *drops = cache->sh->drops;

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, ckey, hash);

    if (sn == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);

        ctx->key_cache = NGX_HTTP_REPLAY_CACHE_MISS;
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_KEY_CACHE_MISS, 1);

        return NGX_DECLINED;
    }

    node = (ngx_http_replay_cache_node_t *) sn;

    if (node->expire <= now || node->epoch != cache->sh->epoch) {

        /* kept while it may still be served stale */

        if (node->expire + rlcf->key_cache_stale <= now) {
            ngx_http_replay_cache_delete(cache, node);
        }

        ngx_shmtx_unlock(&cache->shpool->mutex);

        ctx->key_cache = NGX_HTTP_REPLAY_CACHE_EXPIRED;
        ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_KEY_CACHE_MISS, 1);

        return NGX_DECLINED;
    }

    rc = ngx_http_replay_cache_row(cache, r, ctx, node, set_row);

    ngx_shmtx_unlock(&cache->shpool->mutex);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->key_cache = NGX_HTTP_REPLAY_CACHE_HIT;
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_KEY_CACHE_HIT, 1);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay cache: hit \"%V\"", &ctx->key);

    return NGX_OK;
}


/*
 * The database failed the lookup that was to renew an expired entry:
 * the entry is served if it is still within "stale=".  NGX_OK: set_row()
 * has given the request its row; NGX_DECLINED: none; NGX_ERROR: the
 * request cannot hold it.
 */

ngx_int_t
ngx_http_replay_cache_get_stale(ngx_http_request_t *r,
    ngx_http_replay_ctx_t *ctx, ngx_str_t *ckey,
    ngx_http_replay_cache_row_pt set_row)
{
    uint32_t                       hash;
    ngx_int_t                      rc;
    ngx_str_node_t                *sn;
    ngx_http_replay_cache_t       *cache;
    ngx_http_replay_loc_conf_t    *rlcf;
    ngx_http_replay_cache_node_t  *node;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    cache = rlcf->key_cache->data;

    hash = ngx_crc32_long(ckey->data, ckey->len);

    ngx_shmtx_lock(&cache->shpool->mutex);

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, ckey, hash);
    node = (ngx_http_replay_cache_node_t *) sn;

    if (node == NULL
        || node->expire + rlcf->key_cache_stale <= ngx_time())
    {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_DECLINED;
    }

    rc = ngx_http_replay_cache_row(cache, r, ctx, node, set_row);

    ngx_shmtx_unlock(&cache->shpool->mutex);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->key_cache = NGX_HTTP_REPLAY_CACHE_STALE;
    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_KEY_CACHE_STALE, 1);

    return NGX_OK;
}


/* with the zone locked: the entry's row, copied while it cannot go */

static ngx_int_t
ngx_http_replay_cache_row(ngx_http_replay_cache_t *cache,
    ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_http_replay_cache_node_t *node, ngx_http_replay_cache_row_pt set_row)
{
    u_char     *p;
    ngx_str_t   key, type, name;

    ngx_queue_remove(&node->queue);
    ngx_queue_insert_head(&cache->sh->lru, &node->queue);

    p = node->data + node->sn.str.len;

    key.data = p;
    key.len = node->key_len;
    p += key.len;

    type.data = p;
    type.len = node->type_len;
    p += type.len;

    name.data = p;
    name.len = node->name_len;

    return set_row(r, ctx, &key, &type, &name);
}


/* the database has no row for an expired entry: it is not served stale */

void
ngx_http_replay_cache_forget(ngx_http_request_t *r, ngx_str_t *ckey)
{
    uint32_t                     hash;
    ngx_str_node_t              *sn;
    ngx_http_replay_cache_t     *cache;
    ngx_http_replay_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    cache = rlcf->key_cache->data;

    hash = ngx_crc32_long(ckey->data, ckey->len);

    ngx_shmtx_lock(&cache->shpool->mutex);

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, ckey, hash);

    if (sn) {
        ngx_http_replay_cache_delete(cache,
                                     (ngx_http_replay_cache_node_t *) sn);
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


void
ngx_http_replay_cache_put(ngx_http_request_t *r, ngx_http_replay_ctx_t *ctx,
    ngx_str_t *ckey, ngx_uint_t drops)
{
    u_char                        *p;
    size_t                         size;
    uint32_t                       hash;
    ngx_queue_t                   *q;
    ngx_shm_zone_t                *zone;
    ngx_str_node_t                *sn;
    ngx_http_replay_cache_t       *cache;
    ngx_http_replay_loc_conf_t    *rlcf;
    ngx_http_replay_cache_node_t  *node;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_replay_module);
    zone = rlcf->key_cache;
    cache = zone->data;

    size = offsetof(ngx_http_replay_cache_node_t, data) + ckey->len
           + ctx->key.len + ctx->content_type.len + ctx->file_name.len;

    hash = ngx_crc32_long(ckey->data, ckey->len);

    ngx_shmtx_lock(&cache->shpool->mutex);

    /* another worker's lookup of the same values may have come first */

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, ckey, hash);

    if (sn) {
        ngx_http_replay_cache_delete(cache,
                                     (ngx_http_replay_cache_node_t *) sn);
    }

    /* room is made from the least recently used end */

    for ( ;; ) {
        node = ngx_slab_alloc_locked(cache->shpool, size);

        if (node) {
            break;
        }

        if (ngx_queue_empty(&cache->sh->lru)) {
            ngx_shmtx_unlock(&cache->shpool->mutex);

            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "replay: replay_key_cache zone \"%V\" is too "
                          "small for an entry of %uz bytes, not cached",
                          &zone->shm.name, size);
            return;
        }

        q = ngx_queue_last(&cache->sh->lru);

        ngx_http_replay_cache_delete(cache,
                     ngx_queue_data(q, ngx_http_replay_cache_node_t, queue));
    }

    node->expire = ngx_time() + rlcf->key_cache_valid;

    /*
     * a NOTIFY dropped entries while the database was asked: maybe this
     * one, whose answer may be older than it; it is kept as expired
     */
    node->epoch = (drops == cache->sh->drops) ? cache->sh->epoch
                                              : cache->sh->epoch - 1;

    node->key_len = (uint32_t) ctx->key.len;
    node->type_len = (uint32_t) ctx->content_type.len;
    node->name_len = (uint32_t) ctx->file_name.len;

    p = ngx_cpymem(node->data, ckey->data, ckey->len);
    p = ngx_cpymem(p, ctx->key.data, ctx->key.len);
    p = ngx_cpymem(p, ctx->content_type.data, ctx->content_type.len);
    ngx_memcpy(p, ctx->file_name.data, ctx->file_name.len);

    node->sn.node.key = hash;
    node->sn.str.len = ckey->len;
    node->sn.str.data = node->data;

    ngx_rbtree_insert(&cache->sh->rbtree, &node->sn.node);
    ngx_queue_insert_head(&cache->sh->lru, &node->queue);

    ngx_shmtx_unlock(&cache->shpool->mutex);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "replay cache: stored \"%V\"", &ctx->key);
}


/*
 * A NOTIFY names an entry: the key of the query whose identity is given,
 * with these values.  Returns whether there was one.
 */

ngx_uint_t
ngx_http_replay_cache_drop(ngx_shm_zone_t *zone, ngx_str_t *ckey)
{
    uint32_t                  hash;
    ngx_str_node_t           *sn;
    ngx_http_replay_cache_t  *cache;

    cache = zone->data;
    hash = ngx_crc32_long(ckey->data, ckey->len);

    ngx_shmtx_lock(&cache->shpool->mutex);

    cache->sh->drops++;

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, ckey, hash);

    if (sn) {
        ngx_http_replay_cache_delete(cache,
                                     (ngx_http_replay_cache_node_t *) sn);
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);

    if (sn == NULL) {
        return 0;
    }

    ngx_http_replay_stat(NGX_HTTP_REPLAY_ST_KEY_CACHE_DROPS, 1);

    return 1;
}


/*
 * Every entry of the zone counts as expired from now on: asked for, it
 * goes to the database, and is served stale if the database fails.  For
 * an empty NOTIFY, and when a LISTEN has been away.
 */

void
ngx_http_replay_cache_expire_all(ngx_shm_zone_t *zone)
{
    ngx_http_replay_cache_t  *cache;

    cache = zone->data;

    ngx_shmtx_lock(&cache->shpool->mutex);

    cache->sh->epoch++;
    cache->sh->drops++;

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


/* with the zone locked */

static void
ngx_http_replay_cache_delete(ngx_http_replay_cache_t *cache,
    ngx_http_replay_cache_node_t *node)
{
    ngx_queue_remove(&node->queue);
    ngx_rbtree_delete(&cache->sh->rbtree, &node->sn.node);
    ngx_slab_free_locked(cache->shpool, node);
}


char *
ngx_http_replay_key_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_replay_loc_conf_t *rlcf = conf;

    u_char                   *p;
    ssize_t                   size;
    ngx_str_t                *value, name, s;
    ngx_uint_t                i;
    ngx_shm_zone_t           *zone;
    ngx_http_replay_cache_t  *cache;

    if (rlcf->key_cache != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts > 2) {
            return "takes no parameter after \"off\"";
        }

        rlcf->key_cache = NULL;
        return NGX_CONF_OK;
    }

    p = (u_char *) ngx_strchr(value[1].data, ':');

    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\": NAME:SIZE, e.g. "
                           "replay_keys:10m", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    /* replay_status keeps its counters in a zone of that name */

    if (name.len == sizeof("replay_status") - 1
        && ngx_strncmp(name.data, "replay_status", name.len) == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone name \"replay_status\" is reserved for "
                           "replay_status");
        return NGX_CONF_ERROR;
    }

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: at least %uzk",
                           &name, 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    rlcf->key_cache_valid = 600;
    rlcf->key_cache_stale = 0;
    ngx_str_null(&rlcf->key_cache_notify);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "stale=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            rlcf->key_cache_stale = ngx_parse_time(&s, 1);

            if (rlcf->key_cache_stale == (time_t) NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": a time, e.g. 1h",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "notify=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (ngx_http_replay_cache_channel(&s) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": a channel is a name "
                                   "of letters, digits and \"_\", not "
                                   "starting with a digit, at most 63",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            rlcf->key_cache_notify = s;
            continue;
        }

        if (ngx_strncmp(value[i].data, "valid=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            rlcf->key_cache_valid = ngx_parse_time(&s, 1);

            if (rlcf->key_cache_valid == (time_t) NGX_ERROR
                || rlcf->key_cache_valid == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": a time of at least 1s",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_replay_module);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the same zone named again, by another location: shared */

    if (zone->data) {
        if (zone->init != ngx_http_replay_cache_init_zone) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "zone \"%V\" is already used by another "
                               "directive", &name);
            return NGX_CONF_ERROR;
        }

        rlcf->key_cache = zone;
        return NGX_CONF_OK;
    }

    cache = ngx_pcalloc(cf->pool, sizeof(ngx_http_replay_cache_t));
    if (cache == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->init = ngx_http_replay_cache_init_zone;
    zone->data = cache;

    rlcf->key_cache = zone;

    return NGX_CONF_OK;
}


/* a channel LISTEN takes as a plain identifier: nothing to quote */

static ngx_int_t
ngx_http_replay_cache_channel(ngx_str_t *name)
{
    u_char      ch;
    ngx_uint_t  i;

    if (name->len == 0 || name->len > 63
        || (name->data[0] >= '0' && name->data[0] <= '9'))
    {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        ch = name->data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '_'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_replay_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_replay_cache_t  *ocache = data;

    size_t                    len;
    ngx_http_replay_cache_t  *cache;

    cache = shm_zone->data;

    /* a reload: the entries stay */

    if (ocache) {
        cache->sh = ocache->sh;
        cache->shpool = ocache->shpool;
        return NGX_OK;
    }

    cache->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        cache->sh = cache->shpool->data;
        return NGX_OK;
    }

    cache->sh = ngx_slab_alloc(cache->shpool,
                               sizeof(ngx_http_replay_cache_sh_t));
    if (cache->sh == NULL) {
        return NGX_ERROR;
    }

    cache->shpool->data = cache->sh;

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&cache->sh->lru);

    len = sizeof(" in replay_key_cache zone \"\"") + shm_zone->shm.name.len;

    cache->shpool->log_ctx = ngx_slab_alloc(cache->shpool, len);
    if (cache->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cache->shpool->log_ctx, " in replay_key_cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is not an error: the oldest entries make room */
    cache->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_replay_cache_add_variables(ngx_conf_t *cf)
{
    return ngx_http_replay_add_variables(cf, ngx_http_replay_cache_vars);
}


static ngx_int_t
ngx_http_replay_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_replay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_replay_module);

    if (ctx == NULL || ctx->key_cache == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ngx_http_replay_cache_states[ctx->key_cache].len;
    v->data = ngx_http_replay_cache_states[ctx->key_cache].data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
