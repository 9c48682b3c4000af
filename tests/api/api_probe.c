/* For api.sh: a C program linked to the preload library (no LD_PRELOAD
 * needed). api_probe PORT CLASS RATE HOLD_S [AFTER_CLOSE_S]:
 * gs_socket + gs_connect to 127.0.0.1:PORT, prints the grant and the pacing
 * rate read back ("granted class 2 rate 7500000 admission 1 pacing 7500000")
 * or "errno N", holds HOLD_S seconds, gs_close, prints "closed", holds
 * AFTER_CLOSE_S more. Also prints how many distinct files named
 * libgsocket* are mapped ("maps 1"). */
#include <gsocket/gsocket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int gsocket_maps(void) {
    FILE* f = fopen("/proc/self/maps", "r");
    char line[4096], seen[8][512];
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        char* p = strchr(line, '/');
        if (!p || !strstr(p, "libgsocket")) continue;
        p[strcspn(p, "\n")] = 0;
        int dup = 0;
        for (int i = 0; i < n; ++i) dup |= strcmp(seen[i], p) == 0;
        if (!dup && n < 8) snprintf(seen[n++], sizeof seen[0], "%s", p);
    }
    if (f) fclose(f);
    return n;
}

int main(int argc, char** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: api_probe PORT CLASS RATE HOLD_S [AFTER_CLOSE_S]\n");
        return 1;
    }
    printf("maps %d\n", gsocket_maps());
    struct gs_qos q;
    gs_qos_init(&q);
    q.rate = strtoull(argv[3], NULL, 10);
    int fd = gs_socket(AF_INET, (enum gs_class)atoi(argv[2]), &q);
    if (fd < 0) {
        printf("errno %d\n", errno);
        return 0;
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct gs_grant g;
    if (gs_connect(fd, (struct sockaddr*)&a, sizeof a, &g) != 0) {
        printf("errno %d\n", errno);
        fflush(stdout);
        return 0;
    }
    unsigned long long pacing = 0;
    socklen_t l = sizeof pacing;
    getsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &pacing, &l);
    printf("granted class %d rate %llu admission %d pacing %llu\n", (int)g.cls, (unsigned long long)g.qos.rate,
           g.admission, pacing);
    fflush(stdout);
    sleep((unsigned)atoi(argv[4]));
    printf(gs_close(fd) == 0 ? "closed\n" : "close failed\n");
    fflush(stdout);
    if (argc > 5) sleep((unsigned)atoi(argv[5]));
    return 0;
}
