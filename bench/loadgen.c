/*
 * bench/loadgen.c: the large-object load client of the benchmark.
 *
 *   loadgen -u URL -c CONC -n TOTAL [options]
 *
 * CONC threads, each with its own keep-alive connection (HTTP/1.1,
 * blocking sockets), share TOTAL GET requests.  A "{id}" in URL is
 * replaced, request by request, by the next id of --ids FIRST:COUNT, so
 * that a lookup sees distinct ids.  Bodies are read into one 256 KiB
 * buffer per thread and dropped; their length is checked against
 * Content-Length.
 *
 * Requests carry "X-Bench-Log: 1" (bench/run logs those, not wrk's).
 * Per request it measures the time to first byte (from the start of the
 * request, a connect included, to the first byte of the response; with
 * --follow, to the first byte of the response to the redirect's Location)
 * and the total time.  With --pids it samples the resident memory of
 * those processes (/proc/PID/statm) every --sample-us while the load
 * runs, first idle, and their CPU time (/proc/PID/stat utime + stime)
 * before and after.  It prints one JSON object on stdout.
 *
 * Options:
 *   --ids FIRST:COUNT      ids for "{id}" (default 1:1)
 *   --follow               follow a 301/302/307 to an http:// Location
 *   --expect-status N      the final status every response must have (200)
 *   --expect-size N        the body size every response must have
 *   --pids P1,P2,...       processes to sample
 *   --sample-us N          sampling period (default 2000)
 *   --series FILE          write "ms rss_kib" samples to FILE
 *   --samples FILE         write "ttfb_ms total_ms" of each request to FILE
 *   --timeout S            give up after S seconds (default 120)
 *
 * Exit status: 0 when every request got the expected status and size,
 * 1 otherwise, 2 on bad usage.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>


#define RECV_BUF     (256 * 1024)
#define HEADER_MAX   16384
#define MAX_PIDS     64
#define MAX_SAMPLES  (1 << 20)


typedef struct {
    char        host[256];
    int         port;
    char        path[8192];
} url_t;


typedef struct {
    int         fd;
    char        host[256];
    int         port;
} conn_t;


typedef struct {
    double      ttfb;
    double      total;
    long long   bytes;
    int         status;
    int         ok;
} result_t;


static const char  *opt_url;
static int          opt_conc = 1;
static long         opt_total = 1;
static long         opt_id_first = 1;
static long         opt_id_count = 1;
static int          opt_follow;
static int          opt_expect_status = 200;
static long long    opt_expect_size = -1;
static pid_t        opt_pids[MAX_PIDS];
static int          opt_npids;
static long         opt_sample_us = 2000;
static const char  *opt_series;
static const char  *opt_samples;
static int          opt_timeout = 120;

static atomic_long  next_req;
static atomic_int   sampling_stop;
static result_t    *results;
static url_t        base;

static long         page_kib;
static long long    peak_rss_kib;
static long        *series_ms;
static long long   *series_kib;
static long         nseries;
static struct timespec  t_origin;


static void
die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
parse_url(const char *s, url_t *u)
{
    const char  *p, *slash, *colon;
    size_t       hlen;

    if (strncmp(s, "http://", 7) != 0) {
        return -1;
    }

    p = s + 7;
    slash = strchr(p, '/');
    if (slash == NULL) {
        slash = p + strlen(p);
    }

    colon = memchr(p, ':', slash - p);
    hlen = (colon ? colon : slash) - p;
    if (hlen == 0 || hlen >= sizeof(u->host)) {
        return -1;
    }

    memcpy(u->host, p, hlen);
    u->host[hlen] = '\0';
    u->port = colon ? atoi(colon + 1) : 80;

    if (strlen(slash) >= sizeof(u->path)) {
        return -1;
    }

    strcpy(u->path, *slash ? slash : "/");
    return 0;
}


static void
conn_close(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}


static int
conn_open(conn_t *c, const char *host, int port)
{
    int                 fd, one;
    struct sockaddr_in  sin;

    if (c->fd >= 0 && c->port == port && strcmp(c->host, host) == 0) {
        return 0;
    }

    conn_close(c);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        fprintf(stderr, "loadgen: only IPv4 literals: \"%s\"\n", host);
        return -1;
    }

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }

    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0) {
        fprintf(stderr, "loadgen: connect %s:%d: %s\n", host, port,
                strerror(errno));
        close(fd);
        return -1;
    }

    c->fd = fd;
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->port = port;
    return 0;
}


static int
send_all(int fd, const char *p, size_t n)
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
        p += k;
        n -= k;
    }

    return 0;
}


/* the value of header "name" in the header block h (NUL-terminated) */
static int
header_value(const char *h, const char *name, char *out, size_t size)
{
    const char  *p, *e;
    size_t       nlen, vlen;

    nlen = strlen(name);

    for (p = strstr(h, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            p += nlen + 1;
            while (*p == ' ' || *p == '\t') {
                p++;
            }
            e = strstr(p, "\r\n");
            if (e == NULL) {
                return -1;
            }
            while (e > p && (e[-1] == ' ' || e[-1] == '\t')) {
                e--;
            }
            vlen = e - p;
            if (vlen >= size) {
                return -1;
            }
            memcpy(out, p, vlen);
            out[vlen] = '\0';
            return 0;
        }
    }

    return -1;
}


/*
 * One GET on c (connected or reconnected).  *first gets the time of the
 * response's first byte.  Returns the status, or -1.
 */
static int
do_get(conn_t *c, const url_t *u, char *buf, double *first,
    long long *bytes, char *location, size_t locsize)
{
    int         attempt, status, close_after;
    char        req[9000], hdr[HEADER_MAX + 1], val[64];
    char       *end;
    size_t      have, hlen;
    ssize_t     k;
    long long   clen, got;

    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: replay-bench\r\n"
             "X-Bench-Log: 1\r\n\r\n", u->path, u->host, u->port);

    for (attempt = 0; attempt < 2; attempt++) {
        int reused = (c->fd >= 0 && c->port == u->port
                      && strcmp(c->host, u->host) == 0);

        if (conn_open(c, u->host, u->port) != 0) {
            return -1;
        }

        if (send_all(c->fd, req, strlen(req)) != 0) {
            conn_close(c);
            if (reused) {
                continue;
            }
            return -1;
        }

        have = 0;
        *first = 0;

        for ( ;; ) {
            k = recv(c->fd, hdr + have, HEADER_MAX - have, 0);
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                break;
            }
            if (have == 0) {
                *first = now();
            }
            have += k;
            hdr[have] = '\0';
            if (memmem(hdr, have, "\r\n\r\n", 4) || have == HEADER_MAX) {
                break;
            }
        }

        if (have == 0) {
            /* a keep-alive connection the server had closed: once more */
            conn_close(c);
            if (reused) {
                continue;
            }
            return -1;
        }

        break;
    }

    if (attempt == 2) {
        return -1;
    }

    end = memmem(hdr, have, "\r\n\r\n", 4);
    if (end == NULL || strncmp(hdr, "HTTP/1.", 7) != 0) {
        fprintf(stderr, "loadgen: bad response header from %s:%d\n",
                u->host, u->port);
        conn_close(c);
        return -1;
    }

    hlen = end + 4 - hdr;
    end[2] = '\0';
    status = atoi(hdr + 9);

    if (header_value(hdr, "Content-Length", val, sizeof(val)) != 0) {
        fprintf(stderr, "loadgen: no Content-Length from %s:%d (status %d)\n",
                u->host, u->port, status);
        conn_close(c);
        return -1;
    }
    clen = atoll(val);

    close_after = (header_value(hdr, "Connection", val, sizeof(val)) == 0
                   && strcasecmp(val, "close") == 0);

    if (location) {
        location[0] = '\0';
        header_value(hdr, "Location", location, locsize);
    }

    got = have - hlen;

    while (got < clen) {
        size_t want = (clen - got) < RECV_BUF ? (size_t) (clen - got)
                                              : RECV_BUF;
        k = recv(c->fd, buf, want, 0);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            fprintf(stderr, "loadgen: body cut at %lld of %lld bytes\n",
                    got, clen);
            conn_close(c);
            *bytes = got;
            return -1;
        }
        got += k;
    }

    if (got != clen) {
        fprintf(stderr, "loadgen: %lld bytes after a body of %lld\n",
                got - clen, clen);
        conn_close(c);
        *bytes = clen;
        return -1;
    }

    *bytes = got;

    if (close_after) {
        conn_close(c);
    }

    return status;
}


static void
make_url(long i, url_t *u)
{
    char        *p;
    char         idbuf[32];
    size_t       pre;

    *u = base;

    p = strstr(base.path, "{id}");
    if (p == NULL) {
        return;
    }

    pre = p - base.path;
    snprintf(idbuf, sizeof(idbuf), "%ld", opt_id_first + i % opt_id_count);
    snprintf(u->path + pre, sizeof(u->path) - pre, "%s%s", idbuf, p + 4);
}


static void *
worker(void *arg)
{
    long         i;
    int          status, hops;
    char        *buf, location[8192];
    double       t0, first;
    long long    bytes;
    url_t        u;
    conn_t       c, c2, *cp;
    result_t    *res;

    (void) arg;

    buf = malloc(RECV_BUF);
    if (buf == NULL) {
        die("out of memory");
    }

    c.fd = -1;
    c2.fd = -1;

    while ((i = atomic_fetch_add(&next_req, 1)) < opt_total) {
        res = &results[i];
        make_url(i, &u);

        t0 = now();
        cp = &c;

        for (hops = 0; ; hops++) {
            bytes = 0;
            first = 0;
            status = do_get(cp, &u, buf, &first, &bytes,
                            location, sizeof(location));

            if (opt_follow && hops == 0
                && (status == 301 || status == 302 || status == 307))
            {
                if (parse_url(location, &u) != 0) {
                    fprintf(stderr, "loadgen: cannot follow \"%s\"\n",
                            location);
                    status = -1;
                    break;
                }
                cp = &c2;
                continue;
            }

            break;
        }

        res->total = now() - t0;
        res->ttfb = first > 0 ? first - t0 : res->total;
        res->bytes = bytes;
        res->status = status;
        res->ok = (status == opt_expect_status
                   && (opt_expect_size < 0 || bytes == opt_expect_size));

        if (!res->ok) {
            fprintf(stderr, "loadgen: request %ld (%s): status %d, "
                    "%lld bytes\n", i, u.path, status, bytes);
        }
    }

    conn_close(&c);
    conn_close(&c2);
    free(buf);
    return NULL;
}


/* ---------------------------------------------------------- /proc */

static long long
rss_kib(void)
{
    int          i, fd;
    char         b[256];
    ssize_t      n;
    long         size, resident;
    long long    sum;

    sum = 0;

    for (i = 0; i < opt_npids; i++) {
        snprintf(b, sizeof(b), "/proc/%d/statm", (int) opt_pids[i]);
        fd = open(b, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        n = read(fd, b, sizeof(b) - 1);
        close(fd);
        if (n <= 0) {
            continue;
        }
        b[n] = '\0';
        if (sscanf(b, "%ld %ld", &size, &resident) == 2) {
            sum += resident * page_kib;
        }
    }

    return sum;
}


/* utime + stime of the processes, in clock ticks */
static long long
cpu_ticks(void)
{
    int          i;
    char         path[64], b[4096], *p;
    FILE        *f;
    size_t       n;
    long long    sum;
    unsigned long long  ut, st;

    sum = 0;

    for (i = 0; i < opt_npids; i++) {
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) opt_pids[i]);
        f = fopen(path, "re");
        if (f == NULL) {
            continue;
        }
        n = fread(b, 1, sizeof(b) - 1, f);
        fclose(f);
        b[n] = '\0';

        /* after "(comm)": state is field 3, utime 14, stime 15 */
        p = strrchr(b, ')');
        if (p == NULL) {
            continue;
        }
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                   "%llu %llu", &ut, &st) == 2)
        {
            sum += ut + st;
        }
    }

    return sum;
}


static double
elapsed_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ts.tv_sec - t_origin.tv_sec) * 1e3
           + (ts.tv_nsec - t_origin.tv_nsec) / 1e6;
}


static void *
sampler(void *arg)
{
    long long  v;

    (void) arg;

    while (!atomic_load(&sampling_stop)) {
        v = rss_kib();
        if (v > peak_rss_kib) {
            peak_rss_kib = v;
        }
        if (series_ms && nseries < MAX_SAMPLES) {
            series_ms[nseries] = (long) elapsed_ms();
            series_kib[nseries] = v;
            nseries++;
        }
        usleep(opt_sample_us);
    }

    return NULL;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static double
pct(double *v, long n, double p)
{
    long  k;

    if (n == 0) {
        return 0;
    }
    k = (long) (p / 100.0 * (n - 1) + 0.5);
    return v[k];
}


static void
on_alarm(int sig)
{
    static const char  msg[] = "loadgen: timed out\n";

    (void) sig;
    (void) !write(2, msg, sizeof(msg) - 1);
    _exit(1);
}


int
main(int argc, char **argv)
{
    int          i, nok;
    long         j;
    char        *p, *tok;
    double       t0, wall, *ttfb, *total, self_cpu;
    struct rusage  ru;
    long long    bytes, idle, idle_samples[5], cpu0, cpu1;
    pthread_t   *tids, st;
    FILE        *f;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

#define NEEDV  if (v == NULL) die("%s needs a value", a); i++

        if (strcmp(a, "-u") == 0) { NEEDV; opt_url = v; }
        else if (strcmp(a, "-c") == 0) { NEEDV; opt_conc = atoi(v); }
        else if (strcmp(a, "-n") == 0) { NEEDV; opt_total = atol(v); }
        else if (strcmp(a, "--ids") == 0) {
            NEEDV;
            if (sscanf(v, "%ld:%ld", &opt_id_first, &opt_id_count) != 2
                || opt_id_count < 1)
            {
                die("--ids FIRST:COUNT");
            }
        }
        else if (strcmp(a, "--follow") == 0) { opt_follow = 1; }
        else if (strcmp(a, "--expect-status") == 0) {
            NEEDV; opt_expect_status = atoi(v);
        }
        else if (strcmp(a, "--expect-size") == 0) {
            NEEDV; opt_expect_size = atoll(v);
        }
        else if (strcmp(a, "--pids") == 0) {
            NEEDV;
            p = strdup(v);
            for (tok = strtok(p, ","); tok && opt_npids < MAX_PIDS;
                 tok = strtok(NULL, ","))
            {
                opt_pids[opt_npids++] = (pid_t) atoi(tok);
            }
        }
        else if (strcmp(a, "--sample-us") == 0) {
            NEEDV; opt_sample_us = atol(v);
        }
        else if (strcmp(a, "--series") == 0) { NEEDV; opt_series = v; }
        else if (strcmp(a, "--samples") == 0) { NEEDV; opt_samples = v; }
        else if (strcmp(a, "--timeout") == 0) { NEEDV; opt_timeout = atoi(v); }
        else { die("unknown option \"%s\"", a); }
    }

    if (opt_url == NULL || parse_url(opt_url, &base) != 0) {
        die("-u http://IPV4:PORT/PATH is required");
    }
    if (opt_conc < 1 || opt_conc > 1024 || opt_total < 1) {
        die("-c 1..1024 and -n >= 1");
    }

    signal(SIGALRM, on_alarm);
    alarm(opt_timeout);

    page_kib = sysconf(_SC_PAGESIZE) / 1024;
    clock_gettime(CLOCK_MONOTONIC, &t_origin);

    results = calloc(opt_total, sizeof(result_t));
    tids = calloc(opt_conc, sizeof(pthread_t));
    if (results == NULL || tids == NULL) {
        die("out of memory");
    }

    if (opt_series) {
        series_ms = calloc(MAX_SAMPLES, sizeof(long));
        series_kib = calloc(MAX_SAMPLES, sizeof(long long));
        if (series_ms == NULL || series_kib == NULL) {
            die("out of memory");
        }
    }

    /* idle: the median of 5 samples over 50 ms */
    idle = 0;
    if (opt_npids) {
        for (i = 0; i < 5; i++) {
            idle_samples[i] = rss_kib();
            usleep(10000);
        }
        for (i = 0; i < 5; i++) {
            int k, below = 0, same = 0;
            for (k = 0; k < 5; k++) {
                below += idle_samples[k] < idle_samples[i];
                same += idle_samples[k] == idle_samples[i];
            }
            if (below <= 2 && below + same > 2) {
                idle = idle_samples[i];
            }
        }
        peak_rss_kib = idle;
        if (pthread_create(&st, NULL, sampler, NULL) != 0) {
            die("pthread_create");
        }
    }

    cpu0 = cpu_ticks();
    t0 = now();

    for (i = 0; i < opt_conc; i++) {
        if (pthread_create(&tids[i], NULL, worker, NULL) != 0) {
            die("pthread_create");
        }
    }
    for (i = 0; i < opt_conc; i++) {
        pthread_join(tids[i], NULL);
    }

    wall = now() - t0;
    cpu1 = cpu_ticks();

    if (opt_npids) {
        atomic_store(&sampling_stop, 1);
        pthread_join(st, NULL);
    }

    if (opt_samples) {
        f = fopen(opt_samples, "w");
        if (f == NULL) {
            die("cannot write %s", opt_samples);
        }
        for (j = 0; j < opt_total; j++) {
            fprintf(f, "%.4f %.4f\n", results[j].ttfb * 1e3,
                    results[j].total * 1e3);
        }
        fclose(f);
    }

    ttfb = malloc(opt_total * sizeof(double));
    total = malloc(opt_total * sizeof(double));
    nok = 0;
    bytes = 0;

    for (j = 0; j < opt_total; j++) {
        ttfb[j] = results[j].ttfb;
        total[j] = results[j].total;
        bytes += results[j].bytes;
        nok += results[j].ok;
    }

    qsort(ttfb, opt_total, sizeof(double), cmp_double);
    qsort(total, opt_total, sizeof(double), cmp_double);

    getrusage(RUSAGE_SELF, &ru);
    self_cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
               + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;

    printf("{\"requests\": %ld, \"ok\": %d, \"concurrency\": %d, "
           "\"self_cpu_s\": %.3f, "
           "\"bytes\": %lld, \"wall_s\": %.6f, \"mib_per_s\": %.3f, "
           "\"ttfb_p50_ms\": %.4f, \"ttfb_p90_ms\": %.4f, "
           "\"ttfb_max_ms\": %.4f, \"total_p50_ms\": %.4f, "
           "\"total_p90_ms\": %.4f, \"idle_rss_kib\": %lld, "
           "\"peak_rss_kib\": %lld, \"cpu_ticks\": %lld, "
           "\"clk_tck\": %ld, \"samples\": %ld}\n",
           opt_total, nok, opt_conc, self_cpu, bytes, wall,
           bytes / wall / 1048576.0,
           pct(ttfb, opt_total, 50) * 1e3, pct(ttfb, opt_total, 90) * 1e3,
           pct(ttfb, opt_total, 100) * 1e3,
           pct(total, opt_total, 50) * 1e3, pct(total, opt_total, 90) * 1e3,
           idle, peak_rss_kib, cpu1 - cpu0, sysconf(_SC_CLK_TCK), nseries);

    if (opt_series) {
        f = fopen(opt_series, "w");
        if (f == NULL) {
            die("cannot write %s", opt_series);
        }
        for (j = 0; j < nseries; j++) {
            fprintf(f, "%ld %lld\n", series_ms[j], series_kib[j]);
        }
        fclose(f);
    }

    return nok == opt_total ? 0 : 1;
}
