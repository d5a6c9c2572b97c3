/*
 * bench/baseline.c: the pattern ngx_replay_module replaces, as a
 * benchmark contender.
 *
 *   baseline --listen 127.0.0.1:PORT --origin 127.0.0.1:PORT
 *            --bucket NAME --db CONNINFO --query SQL [--db-pool N]
 *            --access-key ID --secret-key SECRET [--region R]
 *
 * A small threaded HTTP server with blocking sockets, one thread per
 * client connection (keep-alive).  For GET /game/ID/replay it
 *
 *   1. looks the key up with SQL ($1 = ID) on a pooled PostgreSQL
 *      connection (blocking libpq, at most --db-pool connections shared
 *      by all threads),
 *   2. signs a GET of /BUCKET/KEY with SigV4 (the project's own signer,
 *      ngx_replay_module/ngx_http_replay_sigv4.c),
 *   3. fetches the WHOLE object from the origin over the thread's own
 *      keep-alive connection into a heap buffer that doubles as it fills
 *      (starting at 64 KiB),
 *   4. and only then writes it to the client.
 *
 * GET /key/KEY skips step 1.  No row is 404, an origin error 502.  It is
 * what many services do with an SDK's "get object" call, written plainly.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "ngx_http_replay_sigv4.h"


#define REQ_MAX     16384
#define HDR_MAX     16384
#define BODY_START  (64 * 1024)


typedef struct db_conn_s  db_conn_t;

struct db_conn_s {
    PGconn      *pg;
    db_conn_t   *next;
};


static struct sockaddr_in  listen_addr, origin_addr;
static const char  *opt_bucket = "replays";
static const char  *opt_db;
static const char  *opt_query;
static const char  *opt_access_key;
static const char  *opt_secret_key;
static const char  *opt_region = "us-east-1";
static int          opt_db_pool = 4;

static pthread_mutex_t  db_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   db_cond = PTHREAD_COND_INITIALIZER;
static db_conn_t       *db_idle;
static int              db_open;


static void
die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    fprintf(stderr, "baseline: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}


static int
parse_addr(const char *s, struct sockaddr_in *sin)
{
    char         host[64];
    const char  *colon;

    colon = strrchr(s, ':');
    if (colon == NULL || (size_t) (colon - s) >= sizeof(host)) {
        return -1;
    }

    memcpy(host, s, colon - s);
    host[colon - s] = '\0';

    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(atoi(colon + 1));

    return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}


static int
send_all(int fd, const void *p, size_t n)
{
    ssize_t  k;

    while (n) {
        k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p = (const char *) p + k;
        n -= k;
    }

    return 0;
}


/* ---------------------------------------------------------- database */

static db_conn_t *
db_get(void)
{
    db_conn_t  *c;
    PGresult   *res;

    pthread_mutex_lock(&db_lock);

    while (db_idle == NULL && db_open >= opt_db_pool) {
        pthread_cond_wait(&db_cond, &db_lock);
    }

    if (db_idle) {
        c = db_idle;
        db_idle = c->next;
        pthread_mutex_unlock(&db_lock);
        return c;
    }

    db_open++;
    pthread_mutex_unlock(&db_lock);

    c = calloc(1, sizeof(db_conn_t));
    if (c == NULL) {
        goto failed;
    }

    c->pg = PQconnectdb(opt_db);
    if (PQstatus(c->pg) != CONNECTION_OK) {
        fprintf(stderr, "baseline: %s", PQerrorMessage(c->pg));
        PQfinish(c->pg);
        free(c);
        goto failed;
    }

    res = PQprepare(c->pg, "key", opt_query, 1, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "baseline: %s", PQerrorMessage(c->pg));
        PQclear(res);
        PQfinish(c->pg);
        free(c);
        goto failed;
    }
    PQclear(res);

    return c;

failed:

    pthread_mutex_lock(&db_lock);
    db_open--;
    pthread_cond_signal(&db_cond);
    pthread_mutex_unlock(&db_lock);
    return NULL;
}


static void
db_put(db_conn_t *c, int broken)
{
    pthread_mutex_lock(&db_lock);

    if (broken) {
        PQfinish(c->pg);
        free(c);
        db_open--;

    } else {
        c->next = db_idle;
        db_idle = c;
    }

    pthread_cond_signal(&db_cond);
    pthread_mutex_unlock(&db_lock);
}


/* 200 with the key in *key (malloc'd), 404, or 500 */
static int
lookup(const char *id, char **key)
{
    int          status;
    db_conn_t   *c;
    PGresult    *res;
    const char  *params[1];

    c = db_get();
    if (c == NULL) {
        return 500;
    }

    params[0] = id;
    res = PQexecPrepared(c->pg, "key", 1, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "baseline: %s", PQerrorMessage(c->pg));
        PQclear(res);
        db_put(c, PQstatus(c->pg) != CONNECTION_OK);
        return 500;
    }

    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        *key = strdup(PQgetvalue(res, 0, 0));
        status = *key ? 200 : 500;

    } else {
        status = 404;
    }

    PQclear(res);
    db_put(c, 0);
    return status;
}


/* ---------------------------------------------------------- origin */

typedef struct {
    int                        fd;
    ngx_replay_sigv4_creds_t   creds;    /* per thread: the key cache */
} origin_t;


static int
origin_connect(origin_t *o)
{
    int  one;

    if (o->fd >= 0) {
        return 0;
    }

    o->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (o->fd < 0) {
        return -1;
    }

    one = 1;
    setsockopt(o->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(o->fd, (struct sockaddr *) &origin_addr, sizeof(origin_addr))
        != 0)
    {
        close(o->fd);
        o->fd = -1;
        return -1;
    }

    return 0;
}


static void
origin_close(origin_t *o)
{
    if (o->fd >= 0) {
        close(o->fd);
        o->fd = -1;
    }
}


/*
 * GET /BUCKET/KEY, signed.  On 200, *body is the whole object (malloc'd,
 * grown by doubling) and *len its size.  Returns the client's status.
 */
static int
fetch(origin_t *o, const char *key, char **body, size_t *len)
{
    int                          attempt, status;
    char                        *buf, *nb, *end, *p;
    char                         path[4096], req[8192], hdr[HDR_MAX + 1];
    char                         host[64], auth[512];
    size_t                       klen, plen, have, cap, blen, clen, alen;
    ssize_t                      k;
    ngx_replay_sigv4_header_t    h[3];
    ngx_replay_sigv4_request_t   sr;

    klen = strlen(key);
    plen = snprintf(path, sizeof(path), "/%s/", opt_bucket);
    if (plen + ngx_replay_sigv4_uri_encode(NULL, (const unsigned char *) key,
                                           klen, 1) >= sizeof(path))
    {
        return 500;
    }
    plen += ngx_replay_sigv4_uri_encode((unsigned char *) path + plen,
                                        (const unsigned char *) key, klen, 1);
    path[plen] = '\0';

    snprintf(host, sizeof(host), "%s:%d", inet_ntoa(origin_addr.sin_addr),
             ntohs(origin_addr.sin_port));

    memset(&sr, 0, sizeof(sr));
    sr.method.data = (const unsigned char *) "GET";
    sr.method.len = 3;
    sr.path.data = (const unsigned char *) path;
    sr.path.len = plen;
    ngx_replay_sigv4_format_date(time(NULL), sr.amz_date);

    h[0].name.data = (const unsigned char *) "host";
    h[0].name.len = 4;
    h[0].value.data = (const unsigned char *) host;
    h[0].value.len = strlen(host);
    h[1].name.data = (const unsigned char *) "x-amz-content-sha256";
    h[1].name.len = sizeof("x-amz-content-sha256") - 1;
    h[1].value.data = (const unsigned char *) NGX_REPLAY_SIGV4_EMPTY_SHA256;
    h[1].value.len = sizeof(NGX_REPLAY_SIGV4_EMPTY_SHA256) - 1;
    h[2].name.data = (const unsigned char *) "x-amz-date";
    h[2].name.len = sizeof("x-amz-date") - 1;
    h[2].value.data = (const unsigned char *) sr.amz_date;
    h[2].value.len = NGX_REPLAY_SIGV4_DATE_LEN;
    sr.headers = h;
    sr.nheaders = 3;
    sr.payload_hash = h[1].value;

    if (ngx_replay_sigv4_sign(&o->creds, &sr, (unsigned char *) auth,
                              sizeof(auth) - 1, &alen)
        != NGX_REPLAY_SIGV4_OK)
    {
        return 500;
    }
    auth[alen] = '\0';

    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: %s\r\n"
             "X-Amz-Content-Sha256: %s\r\nX-Amz-Date: %.16s\r\n"
             "Authorization: %s\r\n\r\n",
             path, host, NGX_REPLAY_SIGV4_EMPTY_SHA256, sr.amz_date, auth);

    have = 0;

    for (attempt = 0; attempt < 2; attempt++) {
        int reused = (o->fd >= 0);

        if (origin_connect(o) != 0) {
            return 502;
        }

        if (send_all(o->fd, req, strlen(req)) != 0) {
            origin_close(o);
            if (reused) {
                continue;
            }
            return 502;
        }

        have = 0;
        for ( ;; ) {
            k = recv(o->fd, hdr + have, HDR_MAX - have, 0);
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                break;
            }
            have += k;
            if (memmem(hdr, have, "\r\n\r\n", 4) || have == HDR_MAX) {
                break;
            }
        }

        if (have == 0) {
            origin_close(o);
            if (reused) {
                continue;
            }
            return 502;
        }
        break;
    }

    if (have == 0) {
        return 502;
    }

    hdr[have] = '\0';
    end = memmem(hdr, have, "\r\n\r\n", 4);
    if (end == NULL || strncmp(hdr, "HTTP/1.", 7) != 0) {
        origin_close(o);
        return 502;
    }

    status = atoi(hdr + 9);
    *end = '\0';

    p = strcasestr(hdr, "\r\nContent-Length:");
    if (p == NULL) {
        origin_close(o);
        return 502;
    }
    clen = strtoull(p + sizeof("\r\nContent-Length:") - 1, NULL, 10);

    /* the body: into a buffer that doubles as it fills */
    cap = BODY_START;
    buf = malloc(cap);
    if (buf == NULL) {
        origin_close(o);
        return 500;
    }

    blen = have - (end + 4 - hdr);
    memcpy(buf, end + 4, blen);

    while (blen < clen) {
        if (blen == cap) {
            cap *= 2;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                origin_close(o);
                return 500;
            }
            buf = nb;
        }

        k = recv(o->fd, buf + blen, cap - blen, 0);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            free(buf);
            origin_close(o);
            return 502;
        }
        blen += k;
    }

    if (strcasestr(hdr, "\r\nConnection: close")) {
        origin_close(o);
    }

    if (status != 200) {
        free(buf);
        return status == 404 ? 404 : 502;
    }

    *body = buf;
    *len = blen;
    return 200;
}


/* ---------------------------------------------------------- clients */

static int
reply_status(int fd, int status)
{
    char        b[160];
    const char *text;
    int         n;

    text = status == 404 ? "Not Found" : status == 400 ? "Bad Request"
           : status == 502 ? "Bad Gateway" : "Internal Server Error";

    n = snprintf(b, sizeof(b), "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n",
                 status, text);

    return send_all(fd, b, n);
}


static int
serve(int fd, origin_t *o, char *target)
{
    int          status, hlen;
    char        *key, *body, *id, *end, hdr[256];
    size_t       len;
    struct iovec iov[2];
    ssize_t      k;

    key = NULL;
    body = NULL;

    if (strncmp(target, "/game/", 6) == 0) {
        id = target + 6;
        end = strchr(id, '/');
        if (end == NULL || strcmp(end, "/replay") != 0 || end == id) {
            return reply_status(fd, 404);
        }
        *end = '\0';
        status = lookup(id, &key);

    } else if (strncmp(target, "/key/", 5) == 0 && target[5]) {
        key = strdup(target + 5);
        status = key ? 200 : 500;

    } else {
        status = 404;
    }

    if (status == 200) {
        status = fetch(o, key, &body, &len);
    }

    free(key);

    if (status != 200) {
        return reply_status(fd, status);
    }

    hlen = snprintf(hdr, sizeof(hdr),
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Content-Length: %zu\r\n\r\n", len);

    iov[0].iov_base = hdr;
    iov[0].iov_len = hlen;
    iov[1].iov_base = body;
    iov[1].iov_len = len;

    while (iov[0].iov_len + iov[1].iov_len) {
        k = writev(fd, iov, 2);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            free(body);
            return -1;
        }
        if ((size_t) k >= iov[0].iov_len) {
            k -= iov[0].iov_len;
            iov[0].iov_len = 0;
            iov[1].iov_base = (char *) iov[1].iov_base + k;
            iov[1].iov_len -= k;
        } else {
            iov[0].iov_base = (char *) iov[0].iov_base + k;
            iov[0].iov_len -= k;
        }
    }

    free(body);
    return 0;
}


static void *
client(void *arg)
{
    int          fd, keep;
    char        *req, *end, *sp, *target;
    size_t       have, used;
    ssize_t      k;
    origin_t     o;

    fd = (int) (long) arg;

    memset(&o, 0, sizeof(o));
    o.fd = -1;
    o.creds.access_key_id.data = (const unsigned char *) opt_access_key;
    o.creds.access_key_id.len = strlen(opt_access_key);
    o.creds.secret_access_key.data = (const unsigned char *) opt_secret_key;
    o.creds.secret_access_key.len = strlen(opt_secret_key);
    o.creds.region.data = (const unsigned char *) opt_region;
    o.creds.region.len = strlen(opt_region);
    o.creds.service.data = (const unsigned char *) "s3";
    o.creds.service.len = 2;

    req = malloc(REQ_MAX + 1);
    if (req == NULL) {
        close(fd);
        return NULL;
    }

    have = 0;

    for ( ;; ) {
        /* one request header */
        while ((end = memmem(req, have, "\r\n\r\n", 4)) == NULL) {
            if (have == REQ_MAX) {
                goto done;
            }
            k = recv(fd, req + have, REQ_MAX - have, 0);
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                goto done;
            }
            have += k;
        }

        used = end + 4 - req;
        *end = '\0';

        keep = strstr(req, " HTTP/1.1\r\n") != NULL
               && strcasestr(req, "\r\nConnection: close") == NULL;

        if (strncmp(req, "GET ", 4) != 0) {
            reply_status(fd, 400);
            goto done;
        }

        target = req + 4;
        sp = strchr(target, ' ');
        if (sp == NULL) {
            reply_status(fd, 400);
            goto done;
        }
        *sp = '\0';

        if (serve(fd, &o, target) != 0 || !keep) {
            goto done;
        }

        memmove(req, req + used, have - used);
        have -= used;
    }

done:

    free(req);
    origin_close(&o);
    close(fd);
    return NULL;
}


int
main(int argc, char **argv)
{
    int              i, ls, fd, one;
    pthread_t        t;
    pthread_attr_t   attr;

    for (i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];

        if (strcmp(a, "--listen") == 0) {
            if (parse_addr(v, &listen_addr) != 0) die("bad --listen");
        } else if (strcmp(a, "--origin") == 0) {
            if (parse_addr(v, &origin_addr) != 0) die("bad --origin");
        } else if (strcmp(a, "--bucket") == 0) { opt_bucket = v;
        } else if (strcmp(a, "--db") == 0) { opt_db = v;
        } else if (strcmp(a, "--query") == 0) { opt_query = v;
        } else if (strcmp(a, "--db-pool") == 0) { opt_db_pool = atoi(v);
        } else if (strcmp(a, "--access-key") == 0) { opt_access_key = v;
        } else if (strcmp(a, "--secret-key") == 0) { opt_secret_key = v;
        } else if (strcmp(a, "--region") == 0) { opt_region = v;
        } else {
            die("unknown option \"%s\"", a);
        }
    }

    if (i != argc || listen_addr.sin_port == 0 || origin_addr.sin_port == 0
        || opt_db == NULL || opt_query == NULL || opt_access_key == NULL
        || opt_secret_key == NULL || opt_db_pool < 1)
    {
        die("usage: baseline --listen IP:PORT --origin IP:PORT --db CONNINFO "
            "--query SQL --access-key ID --secret-key SECRET [--bucket B] "
            "[--region R] [--db-pool N]");
    }

    signal(SIGPIPE, SIG_IGN);

    ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0) {
        die("socket: %s", strerror(errno));
    }

    one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

    if (bind(ls, (struct sockaddr *) &listen_addr, sizeof(listen_addr)) != 0
        || listen(ls, 511) != 0)
    {
        die("bind/listen: %s", strerror(errno));
    }

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);

    fprintf(stderr, "baseline: ready\n");

    for ( ;; ) {
        fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            die("accept: %s", strerror(errno));
        }

        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        if (pthread_create(&t, &attr, client, (void *) (long) fd) != 0) {
            close(fd);
        }
    }
}
