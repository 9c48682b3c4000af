/* conn_cost: what a TCP connection costs a program, whatever carries it
 * (kernel TCP, or MCES through the shim when run under gsrun with
 * transport = mces). Plain BSD sockets only. Used by bench/mces_conn.sh.
 *
 *   conn_cost HOST PORT [--count N] [--hold M]
 *
 * 1. N times: connect, send one byte, receive its echo, close; prints the
 *    median and 99th percentile of connect() -> first byte back, in us.
 * 2. Opens M connections and keeps them (each echoes one byte first, so it
 *    is established end to end), then prints the process's resident memory
 *    growth per connection (VmRSS, /proc/self/status) and closes them.
 * Output: one line "first_byte_p50_us P first_byte_p99_us Q rss_per_conn_kib R". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_COUNT 100000

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static long rss_kib(void) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static int cmp_d(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

/* connect, one byte there and back; the fd, or -1 with errno. */
static int echo_once(const struct sockaddr_in* to) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char c = 'x';
    if (connect(fd, (const struct sockaddr*)to, sizeof *to) != 0 || send(fd, &c, 1, 0) != 1) goto fail;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1 || recv(fd, &c, 1, 0) != 1) {
        errno = errno ? errno : ETIMEDOUT;
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int main(int argc, char** argv) {
    int count = 200, hold = 200;
    const char *host = NULL, *port = NULL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: conn_cost HOST PORT [--count N] [--hold M]\n"
                   "N connections one after another: connect() to the first byte echoed back (p50, p99, us);\n"
                   "then M connections held open: resident memory per connection (KiB). Plain sockets:\n"
                   "run it under gsrun to measure what the shim carries them over.\n");
            return 0;
        } else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
            count = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--hold") && i + 1 < argc) {
            hold = atoi(argv[++i]);
        } else if (!host) {
            host = argv[i];
        } else if (!port) {
            port = argv[i];
        } else {
            fprintf(stderr, "conn_cost: unexpected argument %s (try --help)\n", argv[i]);
            return 2;
        }
    }
    struct sockaddr_in to = {.sin_family = AF_INET};
    if (!host || !port || inet_pton(AF_INET, host, &to.sin_addr) != 1 || atoi(port) <= 0 || atoi(port) > 65535 ||
        count < 1 || count > MAX_COUNT || hold < 0 || hold > MAX_COUNT) {
        fprintf(stderr, "conn_cost: give an IPv4 HOST, a PORT, --count 1..%d, --hold 0..%d (try --help)\n", MAX_COUNT,
                MAX_COUNT);
        return 2;
    }
    to.sin_port = htons((uint16_t)atoi(port));

    static double t[MAX_COUNT];
    for (int i = 0; i < count; ++i) {
        double t0 = now_us();
        int fd = echo_once(&to);
        if (fd < 0) {
            fprintf(stderr, "conn_cost: connection %d: %s\n", i, strerror(errno));
            return 1;
        }
        t[i] = now_us() - t0;
        close(fd);
    }
    qsort(t, (size_t)count, sizeof t[0], cmp_d);

    static int fds[MAX_COUNT];
    int warm = echo_once(&to);   /* the engine and its buffers exist before the baseline */
    if (warm >= 0) close(warm);
    long before = rss_kib();
    for (int i = 0; i < hold; ++i) {
        fds[i] = echo_once(&to);
        if (fds[i] < 0) {
            fprintf(stderr, "conn_cost: held connection %d: %s\n", i, strerror(errno));
            return 1;
        }
    }
    long after = rss_kib();
    for (int i = 0; i < hold; ++i) close(fds[i]);
    printf("first_byte_p50_us %.1f first_byte_p99_us %.1f rss_per_conn_kib %.2f\n", t[count / 2],
           t[(count * 99) / 100 < count ? (count * 99) / 100 : count - 1],
           hold ? (double)(after - before) / hold : 0.0);
    return 0;
}
