/*
 * bench/slowclients.c: many clients that read slowly, for the memory
 * scenario of the benchmark.
 *
 *   slowclients -p PORT -u PATH -n N [options]
 *
 * Opens N connections to 127.0.0.1:PORT (--ramp of them a second), over
 * TLS with --tls, each asking once for PATH ("{id}" replaced by the next
 * id of --ids FIRST:COUNT), then reads each body at --rate bytes a second
 * through a receive buffer of --rcvbuf bytes, so that the server has
 * every request in flight at once, its buffers full.  One thread, epoll
 * for connecting, TLS handshakes and response headers; the bodies are
 * read on a clock tick.
 *
 * Once every connection has its response header (status 200) and
 * --min-body bytes of body (or all of a shorter body), or has failed, it
 * prints "ready OK FAILED SECONDS" on stdout; then it keeps reading until
 * SIGTERM or SIGINT (with --quit, at once), closes every connection
 * (without a TLS close_notify: a client that goes away) and prints one
 * JSON object:
 *
 *   {"clients": N, "ok": N, "failed": 0, "statuses": {"200": N},
 *    "body_bytes": B, "ready": true}
 *
 * Options:
 *   --ids FIRST:COUNT  ids for "{id}" (default 1:1)
 *   --tls              TLS (no certificate check: a benchmark's client)
 *   --ramp N           connections opened a second (default 200)
 *   --rate N           body bytes read a second per connection (16384)
 *   --rcvbuf N         SO_RCVBUF of each connection (16384)
 *   --min-body N       body bytes before a connection counts as in
 *                      flight (65536)
 *   --quit             close and exit once ready
 *   --timeout S        give up after S seconds without being ready (180)
 *
 * Exit status: 0 when ready with no failure, 1 otherwise, 2 on bad usage.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <openssl/err.h>
#include <openssl/ssl.h>


#define HEADER_MAX  16384
#define TICK_MS     100
#define MAX_STATUS  600


enum {
    ST_IDLE = 0,      /* not connected yet */
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_SENDING,
    ST_HEADER,
    ST_BODY,          /* read on the tick */
    ST_DONE,          /* the whole body came */
    ST_FAILED
};


typedef struct {
    int         fd;
    int         state;
    int         settled;          /* counted in "ready" */
    SSL        *ssl;
    char        req[256];
    size_t      req_len, req_sent;
    char        head[HEADER_MAX];
    size_t      head_len;
    long long   length;           /* Content-Length, -1 if none */
    long long   body;
    int         status;
} conn_t;


static volatile sig_atomic_t  stop;

static conn_t      *conns;
static int          nconns, ep;
static SSL_CTX     *ctx;
static long long    rate = 16384, min_body = 65536;
static int          rcvbuf = 16384, ramp = 200, quit, timeout_s = 180;
static int          port, tls;
static const char  *path;
static long         id_first = 1, id_count = 1;
static int          statuses[MAX_STATUS];
static int          nok, nfailed;


static void
on_signal(int signo)
{
    (void) signo;
    stop = 1;
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
watch(conn_t *c, uint32_t events)
{
    struct epoll_event  ev;

    ev.events = events;
    ev.data.ptr = c;

    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == -1) {
        perror("epoll_ctl");
        exit(1);
    }
}


static void
settle(conn_t *c, int failed)
{
    if (c->settled) {
        return;
    }

    c->settled = 1;

    if (failed) {
        nfailed++;
    } else {
        nok++;
    }
}


static void
fail(conn_t *c)
{
    c->state = ST_FAILED;
    settle(c, 1);

    if (c->fd != -1) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    }
}


/* reads or writes through TLS or not: >0 bytes, 0 EOF, -1 again, -2 error */

static ssize_t
io(conn_t *c, void *buf, size_t len, int writing, uint32_t *want)
{
    int      n, err;
    ssize_t  r;

    *want = writing ? EPOLLOUT : EPOLLIN;

    if (!tls) {
        r = writing ? send(c->fd, buf, len, MSG_NOSIGNAL)
                    : recv(c->fd, buf, len, 0);

        if (r >= 0) {
            return r;
        }

        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
               ? -1 : -2;
    }

    n = writing ? SSL_write(c->ssl, buf, (int) len)
                : SSL_read(c->ssl, buf, (int) len);

    if (n > 0) {
        return n;
    }

    err = SSL_get_error(c->ssl, n);

    switch (err) {
    case SSL_ERROR_WANT_READ:
        *want = EPOLLIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        *want = EPOLLOUT;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        ERR_clear_error();
        return (err == SSL_ERROR_SYSCALL && n == 0) ? 0 : -2;
    }
}


static void
start(conn_t *c, long id)
{
    int                 fd, one;
    char                target[128], *p;
    struct sockaddr_in  sin;
    struct epoll_event  ev;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        perror("socket");
        exit(1);
    }

    /* before connect, so that the window is small from the start */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c->fd = fd;
    c->length = -1;

    p = strstr(path, "{id}");

    if (p) {
        snprintf(target, sizeof(target), "%.*s%ld%s", (int) (p - path),
                 path, id, p + 4);
    } else {
        snprintf(target, sizeof(target), "%s", path);
    }

    c->req_len = snprintf(c->req, sizeof(c->req),
                          "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Connection: close\r\n\r\n", target);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    ev.events = EPOLLOUT;
    ev.data.ptr = c;

    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        perror("epoll_ctl");
        exit(1);
    }

    c->state = ST_CONNECTING;

    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1
        && errno != EINPROGRESS)
    {
        fail(c);
    }
}


/* the response header: its status and Content-Length */

static int
parse_head(conn_t *c, size_t *used)
{
    char  *end, *p;

    end = memmem(c->head, c->head_len, "\r\n\r\n", 4);

    if (end == NULL) {
        return c->head_len < HEADER_MAX ? 0 : -1;
    }

    *used = end + 4 - c->head;
    *end = '\0';

    if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1
        || c->status < 100 || c->status >= MAX_STATUS)
    {
        return -1;
    }

    statuses[c->status]++;

    for (p = strstr(c->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "Content-Length:", 15) == 0) {
            c->length = atoll(p + 17);
        }
    }

    return 1;
}


static void
body_got(conn_t *c, size_t n)
{
    c->body += n;

    if (c->length >= 0 && c->body >= c->length) {
        c->state = ST_DONE;
        settle(c, c->status != 200);
        return;
    }

    if (c->body >= min_body) {
        settle(c, c->status != 200);
    }
}


/* a connection's event before its body: connect, handshake, request, header */

static void
step(conn_t *c)
{
    int        err;
    size_t     used;
    ssize_t    n;
    uint32_t   want;
    socklen_t  len;

    for ( ;; ) {

        switch (c->state) {

        case ST_CONNECTING:
            len = sizeof(err);
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1
                || err)
            {
                fail(c);
                return;
            }

            if (!tls) {
                c->state = ST_SENDING;
                continue;
            }

            c->ssl = SSL_new(ctx);
            if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->fd)) {
                fail(c);
                return;
            }

            SSL_set_connect_state(c->ssl);
            c->state = ST_HANDSHAKE;
            continue;

        case ST_HANDSHAKE:
            n = SSL_do_handshake(c->ssl);

            if (n == 1) {
                c->state = ST_SENDING;
                continue;
            }

            err = SSL_get_error(c->ssl, (int) n);

            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                watch(c, err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
                return;
            }

            ERR_clear_error();
            fail(c);
            return;

        case ST_SENDING:
            n = io(c, c->req + c->req_sent, c->req_len - c->req_sent, 1,
                   &want);

            if (n == -1) {
                watch(c, want);
                return;
            }

            if (n <= 0) {
                fail(c);
                return;
            }

            c->req_sent += n;

            if (c->req_sent == c->req_len) {
                c->state = ST_HEADER;
            }

            continue;

        case ST_HEADER:
            n = io(c, c->head + c->head_len, HEADER_MAX - 1 - c->head_len, 0,
                   &want);

            if (n == -1) {
                watch(c, want);
                return;
            }

            if (n <= 0) {
                fail(c);
                return;
            }

            c->head_len += n;

            switch (parse_head(c, &used)) {
            case 0:
                continue;
            case -1:
                fail(c);
                return;
            }

            /* the body is read on the tick, at its rate */
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            c->state = ST_BODY;

            body_got(c, c->head_len - used);
            return;

        default:
            return;
        }
    }
}


/* each tick, each body gets its share of the rate */

static void
tick(void)
{
    int         i;
    char        buf[65536];
    size_t      share, len;
    ssize_t     n;
    uint32_t    want;
    conn_t     *c;

    share = rate * TICK_MS / 1000;

    for (i = 0; i < nconns; i++) {
        c = &conns[i];

        if (c->state != ST_BODY) {
            continue;
        }

        for (len = share; len > 0; len -= n) {
            n = io(c, buf, len < sizeof(buf) ? len : sizeof(buf), 0, &want);

            if (n == -1) {
                break;
            }

            if (n == 0 && c->length < 0) {
                c->state = ST_DONE;
                settle(c, c->status != 200);
                break;
            }

            if (n <= 0) {
                fail(c);
                break;
            }

            body_got(c, n);

            if (c->state != ST_BODY) {
                break;
            }
        }
    }
}


static void
usage(void)
{
    fprintf(stderr, "usage: slowclients -p PORT -u PATH -n N [--ids F:C] "
            "[--tls] [--ramp N] [--rate N] [--rcvbuf N] [--min-body N] "
            "[--quit] [--timeout S]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                 i, n, started, ready;
    long long           bytes;
    double              t0, next_tick, next_start, wait;
    struct rlimit       rl;
    struct epoll_event  evs[256];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-u") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            nconns = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--ids") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%ld:%ld", &id_first, &id_count) != 2
                || id_count < 1)
            {
                usage();
            }
        } else if (strcmp(argv[i], "--tls") == 0) {
            tls = 1;
        } else if (strcmp(argv[i], "--ramp") == 0 && i + 1 < argc) {
            ramp = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
            rate = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--rcvbuf") == 0 && i + 1 < argc) {
            rcvbuf = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--min-body") == 0 && i + 1 < argc) {
            min_body = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--quit") == 0) {
            quit = 1;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout_s = atoi(argv[++i]);
        } else {
            usage();
        }
    }

    if (port <= 0 || path == NULL || nconns <= 0 || ramp <= 0 || rate <= 0)
    {
        usage();
    }

    /* a descriptor per connection */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0
        && rl.rlim_cur < (rlim_t) nconns + 64)
    {
        rl.rlim_cur = (rl.rlim_max < (rlim_t) nconns + 64)
                      ? rl.rlim_max : (rlim_t) nconns + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    if (tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL) {
            fprintf(stderr, "slowclients: SSL_CTX_new failed\n");
            return 1;
        }

        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    }

    conns = calloc(nconns, sizeof(conn_t));
    ep = epoll_create1(0);

    if (conns == NULL || ep == -1) {
        perror("slowclients");
        return 1;
    }

    for (i = 0; i < nconns; i++) {
        conns[i].fd = -1;
    }

    t0 = now();
    next_tick = t0;
    next_start = t0;
    started = 0;
    ready = 0;

    while (!stop) {

        /* open connections at the ramp's pace */
        while (started < nconns && now() >= next_start) {
            start(&conns[started], id_first + started % id_count);
            started++;
            next_start = t0 + (double) started / ramp;
        }

        if (now() >= next_tick) {
            tick();
            next_tick += TICK_MS / 1000.0;
        }

        if (!ready && nok + nfailed == nconns) {
            ready = 1;
            printf("ready %d %d %.1f\n", nok, nfailed, now() - t0);
            fflush(stdout);

            if (quit) {
                break;
            }
        }

        if (!ready && now() - t0 > timeout_s) {
            fprintf(stderr, "slowclients: %d of %d in flight after %d s\n",
                    nok, nconns, timeout_s);
            break;
        }

        wait = next_tick - now();
        if (started < nconns && next_start - now() < wait) {
            wait = next_start - now();
        }

        n = epoll_wait(ep, evs, 256, wait > 0 ? (int) (wait * 1000) + 1 : 0);

        for (i = 0; i < n; i++) {
            step(evs[i].data.ptr);
        }
    }

    bytes = 0;

    for (i = 0; i < nconns; i++) {
        bytes += conns[i].body;

        if (conns[i].ssl) {
            SSL_free(conns[i].ssl);
        }

        if (conns[i].fd != -1) {
            close(conns[i].fd);
        }
    }

    printf("{\"clients\": %d, \"ok\": %d, \"failed\": %d, \"statuses\": {",
           nconns, nok, nfailed);

    for (i = 0, n = 0; i < MAX_STATUS; i++) {
        if (statuses[i]) {
            printf("%s\"%d\": %d", n++ ? ", " : "", i, statuses[i]);
        }
    }

    printf("}, \"body_bytes\": %lld, \"ready\": %s}\n", bytes,
           ready ? "true" : "false");

    return (ready && nfailed == 0) ? 0 : 1;
}
