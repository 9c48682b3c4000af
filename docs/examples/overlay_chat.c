/* overlay_chat: join an overlay, say hello to every member, count who
 * answered. An example of the overlay socket API (api/gsocket.h,
 * docs/overlay.md), also used by tests/api/overlay.sh.
 *
 *   overlay_chat CONFIG [--expect N] [--go FILE] [--timeout SECONDS]
 *
 * Joins the overlay CONFIG describes, prints "joined ADDRESS", waits for FILE
 * to exist (when given: all members joined), sends one message to all, and
 * receives until it has heard from N other members (default 0: just listen
 * for the timeout). Exits 0 when it heard each of them exactly once. */
#include <errno.h>
#include <gsocket/gsocket.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
    const char* config = NULL;
    const char* go = NULL;
    int expect = 0;
    double timeout = 20;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: overlay_chat CONFIG [--expect N] [--go FILE] [--timeout SECONDS]\n"
                   "Joins the overlay CONFIG describes (docs/overlay.md), waits for FILE, says hello to all,\n"
                   "and exits 0 once it has heard from N other members exactly once each.\n");
            return 0;
        } else if (!strcmp(argv[i], "--expect") && i + 1 < argc) {
            expect = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--go") && i + 1 < argc) {
            go = argv[++i];
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = atof(argv[++i]);
        } else if (argv[i][0] != '-' && !config) {
            config = argv[i];
        } else {
            fprintf(stderr, "overlay_chat: unknown argument %s (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "overlay_chat: give the overlay's attribute file (try --help)\n");
        return 2;
    }
    gs_overlay* o = gs_overlay_open(config);
    if (!o) {
        fprintf(stderr, "overlay_chat: %s: %s\n", config, strerror(errno));
        return 1;
    }
    if (gs_overlay_join(o, (int)(timeout * 1000)) != 0) {
        fprintf(stderr, "overlay_chat: join: %s\n", strerror(errno));
        gs_overlay_close(o);
        return 1;
    }
    uint64_t me = gs_overlay_address(o);
    printf("joined %" PRIu64 "\n", me);
    fflush(stdout);
    double end = now() + timeout;
    struct stat st;
    while (go && stat(go, &st) != 0 && now() < end) usleep(20000);
    char msg[64];
    int n = snprintf(msg, sizeof msg, "hello from %" PRIu64, me);
    if (gs_overlay_send(o, GS_TO_ALL, msg, (size_t)n, GS_NO_ADDRESS, GS_NO_ADDRESS) != 0) {
        fprintf(stderr, "overlay_chat: send: %s\n", strerror(errno));
        gs_overlay_close(o);
        return 1;
    }
    uint64_t heard[256];
    int distinct = 0, duplicates = 0, wrong = 0;
    while (now() < end && (expect == 0 || distinct < expect)) {
        struct pollfd p = {gs_overlay_fd(o), POLLIN, 0};
        if (poll(&p, 1, 100) != 1) continue;
        char buf[256];
        uint64_t from = 0;
        ssize_t r = gs_overlay_recv(o, buf, sizeof buf - 1, &from, MSG_DONTWAIT);
        if (r < 0) continue;
        buf[r] = 0;
        char want[64];
        snprintf(want, sizeof want, "hello from %" PRIu64, from);
        if (strcmp(buf, want) != 0) ++wrong;
        int seen = 0;
        for (int i = 0; i < distinct; ++i) seen |= heard[i] == from;
        if (seen) ++duplicates;
        else if (distinct < 256) heard[distinct++] = from;
    }
    // Stay a little so that later senders still reach a full overlay.
    usleep(500000);
    struct pollfd p = {gs_overlay_fd(o), POLLIN, 0};
    while (poll(&p, 1, 0) == 1) {
        char buf[256];
        uint64_t from = 0;
        if (gs_overlay_recv(o, buf, sizeof buf, &from, MSG_DONTWAIT) < 0) break;
        int seen = 0;
        for (int i = 0; i < distinct; ++i) seen |= heard[i] == from;
        if (seen) ++duplicates;
    }
    struct gs_overlay_counters s;
    gs_overlay_stats(o, &s);
    printf("member %" PRIu64 ": heard %d members, %d duplicates, %d malformed; sent %" PRIu64 ", delivered %" PRIu64
           ", dropped %" PRIu64 "\n", me, distinct, duplicates, wrong, s.sent, s.delivered, s.dropped_unread);
    gs_overlay_close(o);
    return (expect == 0 || distinct == expect) && duplicates == 0 && wrong == 0 ? 0 : 1;
}
