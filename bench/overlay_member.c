/* overlay_member: one member of bench/overlay_real.sh, the real-process
 * overlay benchmark. Written against the public API (api/gsocket.h) only.
 *
 *   overlay_member CONFIG --index I --members N --go FILE --out FILE
 *                  [--messages K] [--interval-ms M] [--peers FILE] [--done FILE] [--timeout S]
 *
 * 1. Opens and joins the overlay CONFIG describes; prints "joined ADDRESS MS".
 * 2. Until FILE exists, watches its neighbour set (every 20 ms) and keeps the
 *    time of its last change: the script takes the overlay as converged at
 *    the latest such time over all members.
 * 3. Then sends K messages to all, one every M ms, each carrying its index,
 *    sequence number and send time (CLOCK_MONOTONIC, which every namespace
 *    shares). With --peers (one IPv4 address per line, line I being this
 *    member's), each round also sends the same record as a plain UDP
 *    datagram to one other member (port 7100, round robin): the direct
 *    unicast path the overlay's latency is compared with.
 * 4. Receives until it has every other member's K messages or the timeout,
 *    then writes to --out a summary line and one line per sample:
 *      summary I JOIN_MS JOINED_NS LAST_CHANGE_NS NEIGHBOURS EXPECTED RECEIVED DUPLICATES MALFORMED UNICAST
 *      o MICROSECONDS        (a sendToAll message, send to receive)
 *      u MICROSECONDS        (a unicast datagram)
 * 5. With --done, stays a member until that file exists (the script reads
 *    every member's counters with gsctl overlay members meanwhile).
 * Exit 0 when every expected message arrived exactly once. */
#include <arpa/inet.h>
#include <errno.h>
#include <gsocket/gsocket.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_MEMBERS 256
#define MAX_MESSAGES 10000
#define UNICAST_PORT 7100

struct record {
    uint32_t magic, index, seq, pad;
    uint64_t sent_ns;
    char filler[40]; /* 64 bytes in all: a small message, as a chat or a sensor sends */
};

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void* a, const void* b) {
    uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE* f) {
    fprintf(f,
            "usage: overlay_member CONFIG --index I --members N --go FILE --out FILE\n"
            "                      [--messages K] [--interval-ms M] [--peers FILE] [--done FILE] [--timeout S]\n"
            "One member of bench/overlay_real.sh: joins, watches its neighbours until FILE exists,\n"
            "sends K timestamped messages to all (and, with --peers, as many direct UDP datagrams),\n"
            "and writes join time, convergence, delivery and latency samples to --out; with --done,\n"
            "stays a member until that file exists.\n");
}

int main(int argc, char** argv) {
    const char *config = NULL, *go = NULL, *out = NULL, *peers_file = NULL, *done = NULL;
    int index = -1, members = 0, messages = 20, interval_ms = 100;
    double timeout = 60;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        const int more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--index") && more) {
            index = atoi(argv[++i]);
        } else if (!strcmp(a, "--members") && more) {
            members = atoi(argv[++i]);
        } else if (!strcmp(a, "--messages") && more) {
            messages = atoi(argv[++i]);
        } else if (!strcmp(a, "--interval-ms") && more) {
            interval_ms = atoi(argv[++i]);
        } else if (!strcmp(a, "--go") && more) {
            go = argv[++i];
        } else if (!strcmp(a, "--out") && more) {
            out = argv[++i];
        } else if (!strcmp(a, "--done") && more) {
            done = argv[++i];
        } else if (!strcmp(a, "--peers") && more) {
            peers_file = argv[++i];
        } else if (!strcmp(a, "--timeout") && more) {
            timeout = atof(argv[++i]);
        } else if (a[0] != '-' && !config) {
            config = a;
        } else {
            fprintf(stderr, "overlay_member: unknown argument %s (try --help)\n", a);
            return 2;
        }
    }
    if (!config || !go || !out || index < 0 || members < 1 || members > MAX_MEMBERS || index >= members ||
        messages < 1 || messages > MAX_MESSAGES || interval_ms < 0 || timeout <= 0) {
        fprintf(stderr, "overlay_member: CONFIG, --index (0..N-1), --members (1..%d), --go and --out are needed; "
                        "--messages 1..%d (try --help)\n", MAX_MEMBERS, MAX_MESSAGES);
        return 2;
    }
    struct in_addr peers[MAX_MEMBERS];
    int npeers = 0;
    if (peers_file) {
        FILE* f = fopen(peers_file, "r");
        if (!f) {
            fprintf(stderr, "overlay_member: %s: %s\n", peers_file, strerror(errno));
            return 2;
        }
        char line[64];
        while (npeers < MAX_MEMBERS && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (inet_pton(AF_INET, line, &peers[npeers]) != 1) {
                fprintf(stderr, "overlay_member: %s:%d: '%s' is not an IPv4 address\n", peers_file, npeers + 1, line);
                fclose(f);
                return 2;
            }
            ++npeers;
        }
        fclose(f);
        if (npeers != members) {
            fprintf(stderr, "overlay_member: %s lists %d addresses, not --members %d\n", peers_file, npeers, members);
            return 2;
        }
    }
    const uint64_t deadline = now_ns() + (uint64_t)(timeout * 1e9);

    const uint64_t t_open = now_ns();
    gs_overlay* o = gs_overlay_open(config);
    if (!o) {
        fprintf(stderr, "overlay_member: %s: %s\n", config, strerror(errno));
        return 1;
    }
    if (gs_overlay_join(o, (int)(timeout * 1000)) != 0) {
        fprintf(stderr, "overlay_member: join: %s\n", strerror(errno));
        gs_overlay_close(o);
        return 1;
    }
    const uint64_t t_joined = now_ns();
    printf("joined %" PRIu64 " %.1f\n", gs_overlay_address(o), (double)(t_joined - t_open) / 1e6);
    fflush(stdout);

    int udp = -1;
    if (npeers) {
        udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(UNICAST_PORT), .sin_addr = peers[index]};
        if (udp < 0 || bind(udp, (struct sockaddr*)&sa, sizeof sa) != 0) {
            fprintf(stderr, "overlay_member: unicast socket on port %d: %s\n", UNICAST_PORT, strerror(errno));
            gs_overlay_close(o);
            return 1;
        }
    }

    /* Phase 2: the neighbour set until the go file appears. */
    uint64_t last[MAX_MEMBERS], cur[MAX_MEMBERS];
    int nlast = -1;
    uint64_t last_change = t_joined;
    struct stat st;
    while (stat(go, &st) != 0) {
        if (now_ns() > deadline) {
            fprintf(stderr, "overlay_member: %s did not appear within the timeout\n", go);
            gs_overlay_close(o);
            return 1;
        }
        int n = gs_overlay_neighbors(o, cur, MAX_MEMBERS);
        if (n >= 0) {
            if (n > MAX_MEMBERS) n = MAX_MEMBERS;
            qsort(cur, (size_t)n, sizeof cur[0], cmp_u64);
            if (n != nlast || memcmp(cur, last, (size_t)n * sizeof cur[0]) != 0) {
                memcpy(last, cur, (size_t)n * sizeof cur[0]);
                nlast = n;
                last_change = now_ns();
            }
        }
        usleep(20000);
    }

    /* Phases 3 and 4: send on schedule, receive throughout. */
    static uint8_t seen[MAX_MEMBERS][MAX_MESSAGES];
    static uint64_t lat_o[MAX_MEMBERS * 100], lat_u[MAX_MESSAGES];
    const size_t cap_o = sizeof lat_o / sizeof lat_o[0];
    size_t n_o = 0, n_u = 0;
    const uint64_t expected = (uint64_t)(members - 1) * (uint64_t)messages;
    uint64_t received = 0, duplicates = 0, malformed = 0;
    int sent = 0;
    const uint64_t t0 = now_ns();
    uint64_t quiet_until = 0;
    for (;;) {
        const uint64_t t = now_ns();
        if (t > deadline) break;
        if (sent == messages && received >= expected) break;
        if (sent == messages && quiet_until == 0) quiet_until = t + 5000000000u;   /* what is late is lost */
        if (quiet_until && t > quiet_until) break;
        if (sent < messages && t >= t0 + (uint64_t)sent * (uint64_t)interval_ms * 1000000u) {
            struct record r;
            memset(&r, 0, sizeof r);
            r.magic = 0x47534f4d; /* "GSOM" */
            r.index = (uint32_t)index;
            r.seq = (uint32_t)sent;
            r.sent_ns = now_ns();
            if (gs_overlay_send(o, GS_TO_ALL, &r, sizeof r, GS_NO_ADDRESS, GS_NO_ADDRESS) != 0)
                fprintf(stderr, "overlay_member: send %d: %s\n", sent, strerror(errno));
            if (udp >= 0 && members > 1) {
                int to = (index + 1 + sent % (members - 1)) % members;
                struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(UNICAST_PORT), .sin_addr = peers[to]};
                r.sent_ns = now_ns();
                sendto(udp, &r, sizeof r, 0, (struct sockaddr*)&sa, sizeof sa);
            }
            ++sent;
            continue;
        }
        struct pollfd p[2] = {{gs_overlay_fd(o), POLLIN, 0}, {udp, POLLIN, 0}};
        int wait_ms = 5;
        if (poll(p, udp >= 0 ? 2 : 1, wait_ms) <= 0) continue;
        struct record r;
        if (p[0].revents & POLLIN) {
            uint64_t from = 0;
            ssize_t n = gs_overlay_recv(o, &r, sizeof r, &from, MSG_DONTWAIT);
            const uint64_t at = now_ns();
            if (n == (ssize_t)sizeof r && r.magic == 0x47534f4d && r.index < (uint32_t)members &&
                r.index != (uint32_t)index && r.seq < (uint32_t)messages) {
                if (seen[r.index][r.seq]++) {
                    ++duplicates;
                } else {
                    ++received;
                    if (n_o < cap_o) lat_o[n_o++] = (at - r.sent_ns) / 1000;
                }
            } else if (n >= 0) {
                ++malformed;
            }
        }
        if (udp >= 0 && (p[1].revents & POLLIN)) {
            ssize_t n = recv(udp, &r, sizeof r, MSG_DONTWAIT);
            const uint64_t at = now_ns();
            if (n == (ssize_t)sizeof r && r.magic == 0x47534f4d && n_u < MAX_MESSAGES) lat_u[n_u++] = (at - r.sent_ns) / 1000;
        }
    }
    if (udp >= 0) close(udp);

    FILE* f = fopen(out, "w");
    if (!f) {
        fprintf(stderr, "overlay_member: %s: %s\n", out, strerror(errno));
        gs_overlay_close(o);
        return 1;
    }
    fprintf(f, "summary %d %.3f %" PRIu64 " %" PRIu64 " %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %zu\n", index,
            (double)(t_joined - t_open) / 1e6, t_joined, last_change, nlast, expected, received, duplicates, malformed,
            n_u);
    for (size_t i = 0; i < n_o; ++i) fprintf(f, "o %" PRIu64 "\n", lat_o[i]);
    for (size_t i = 0; i < n_u; ++i) fprintf(f, "u %" PRIu64 "\n", lat_u[i]);
    fclose(f);
    while (done && stat(done, &st) != 0 && now_ns() < deadline) {
        /* Still a member (forwarding for the others) until the script has read the counters. */
        struct pollfd p = {gs_overlay_fd(o), POLLIN, 0};
        if (poll(&p, 1, 20) == 1) {
            struct record r;
            uint64_t from = 0;
            gs_overlay_recv(o, &r, sizeof r, &from, MSG_DONTWAIT);
        }
    }
    gs_overlay_close(o);
    printf("member %d: %" PRIu64 "/%" PRIu64 " messages, %" PRIu64 " duplicates, %" PRIu64 " malformed\n", index,
           received, expected, duplicates, malformed);
    return received == expected && duplicates == 0 && malformed == 0 ? 0 : 1;
}
