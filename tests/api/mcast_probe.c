/* A legacy multicast program, plain BSD sockets and nothing of gsocket's:
 * bind the group's port, IP_ADD_MEMBERSHIP, send to the group, receive with
 * recvfrom and print each sender's address. tests/api/mcast_netns.sh runs it
 * in network namespaces with and without the shim.
 *
 *   mcast_probe NAME GROUP PORT [--send K] [--expect N[,N...]] [--phases P]
 *               [--go PREFIX] [--drop-after P] [--timeout S] [--settle MS]
 *
 * Per phase p (1..P): wait for the file PREFIX.p (with --go), send K
 * datagrams "NAME p i" to GROUP:PORT, then receive until N datagrams of
 * phase p from others have come (the p-th of the --expect list, or its last) (0 after --drop-after P: then for --settle
 * ms only), then --settle ms more to see duplicates. Output, one line each:
 *   join ok | join failed: ERR
 *   recv P FROM NAME I      a datagram from another member, FROM = ADDR:PORT
 *   self P FROM I           one of its own (IP_MULTICAST_LOOP)
 *   stray FROM TEXT         anything else
 *   done P others=X self=Y
 *   drop ok | drop failed: ERR
 * Exit 0 when every phase got what it expected (exactly, not more), 1
 * otherwise, 2 on bad arguments. Bounded: each wait by --timeout (10 s).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int wait_file(const char* prefix, int phase, long long deadline) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%d", prefix, phase);
    while (access(path, F_OK) != 0) {
        if (now_ms() >= deadline) return -1;
        usleep(20000);
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: mcast_probe NAME GROUP PORT [--send K] [--expect N[,N...]] [--phases P] [--go PREFIX] "
                        "[--drop-after P] [--timeout S] [--settle MS]\n");
        return 2;
    }
    const char* name = argv[1];
    struct in_addr group;
    if (inet_pton(AF_INET, argv[2], &group) != 1) return 2;
    int port = atoi(argv[3]);
    int send_n = 3, expect[16] = {0}, n_expect = 1, phases = 1, drop_after = 0, timeout_s = 10, settle_ms = 300;
    const char* go = NULL;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--send")) send_n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--expect")) {
            char* p = argv[i + 1];
            for (n_expect = 0; n_expect < 16 && *p;) {
                expect[n_expect++] = (int)strtol(p, &p, 10);
                if (*p == ',') ++p;
                else break;
            }
        }
        else if (!strcmp(argv[i], "--phases")) phases = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--go")) go = argv[i + 1];
        else if (!strcmp(argv[i], "--drop-after")) drop_after = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout")) timeout_s = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--settle")) settle_ms = atoi(argv[i + 1]);
        else return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in me;
    memset(&me, 0, sizeof me);
    me.sin_family = AF_INET;
    me.sin_addr.s_addr = htonl(INADDR_ANY);
    me.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr*)&me, sizeof me) != 0) {
        perror("bind");
        return 1;
    }
    struct ip_mreq mr;
    mr.imr_multiaddr = group;
    mr.imr_interface.s_addr = htonl(INADDR_ANY);
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) == 0) printf("join ok\n");
    else printf("join failed: %s\n", strerror(errno));

    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr = group;
    to.sin_port = htons((unsigned short)port);
    int ok = 1, dropped = 0;
    for (int p = 1; p <= phases; ++p) {
        if (go != NULL && wait_file(go, p, now_ms() + timeout_s * 1000LL) != 0) {
            printf("no go for phase %d\n", p);
            return 1;
        }
        int want = dropped ? 0 : expect[p <= n_expect ? p - 1 : n_expect - 1];
        int send_err = 0;
        for (int i = 0; i < (dropped ? 0 : send_n); ++i) {   /* a member that left says nothing more */
            char msg[128];
            int n = snprintf(msg, sizeof msg, "%s %d %d", name, p, i);
            if (sendto(fd, msg, (size_t)n, 0, (struct sockaddr*)&to, sizeof to) != n && !send_err) {
                send_err = errno;
                printf("send failed: %s\n", strerror(errno));
            }
            usleep(10000);
        }
        int others = 0, self = 0;
        long long deadline = now_ms() + (want > 0 ? timeout_s * 1000LL : settle_ms);
        long long settle_end = -1;
        for (;;) {
            long long t = now_ms();
            if (others >= want && settle_end < 0) settle_end = t + settle_ms;
            long long end = settle_end >= 0 && settle_end < deadline ? settle_end : deadline;
            if (t >= end) break;
            struct pollfd pf = {fd, POLLIN, 0};
            int r = poll(&pf, 1, (int)(end - t));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) continue;
            char buf[2048];
            struct sockaddr_in from;
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(fd, buf, sizeof buf - 1, MSG_DONTWAIT, (struct sockaddr*)&from, &fl);
            if (n < 0) continue;
            buf[n] = '\0';
            char addr[64];
            inet_ntop(AF_INET, &from.sin_addr, addr, sizeof addr);
            char who[64];
            int mp = 0, mi = 0;
            if (sscanf(buf, "%63s %d %d", who, &mp, &mi) != 3 || mp != p) {
                printf("stray %s:%d %s\n", addr, ntohs(from.sin_port), buf);
                continue;
            }
            if (!strcmp(who, name)) {
                ++self;
                printf("self %d %s:%d %d\n", p, addr, ntohs(from.sin_port), mi);
            } else {
                ++others;
                printf("recv %d %s:%d %s %d\n", p, addr, ntohs(from.sin_port), who, mi);
            }
        }
        printf("done %d others=%d self=%d\n", p, others, self);
        if (others != want) ok = 0;
        if (p == drop_after) {
            if (setsockopt(fd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mr, sizeof mr) == 0) printf("drop ok\n");
            else printf("drop failed: %s\n", strerror(errno));
            dropped = 1;
        }
    }
    close(fd);
    return ok ? 0 : 1;
}
