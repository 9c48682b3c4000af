/* A guaranteed-class client: asks for 20 Mbit/s, prints what was granted,
 * sends data at that rate and closes (which releases the reservation).
 *
 *   cc gsocket_client.c $(pkg-config --cflags --libs gsocket) -o gsocket_client
 *   ./gsocket_client 127.0.0.1 5000 [BYTES]
 *
 * Exit status: 0 sent, 1 error, 2 refused (ENOBUFS: the host's budget is taken). */
#include <gsocket/gsocket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char* admission_name(int a) {
    switch (a) {
    case GS_GRANTED: return "granted";
    case GS_DOWNGRADED: return "downgraded";
    case GS_UNRESERVED: return "unreserved (no ledger)";
    default: return "none";
    }
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [BYTES]\n", argv[0]);
        return 1;
    }
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) {
        fprintf(stderr, "%s: not an IPv4 address\n", argv[1]);
        return 1;
    }
    long long total = argc > 3 ? atoll(argv[3]) : 1000000;

    struct gs_qos qos;
    gs_qos_init(&qos);
    qos.rate = 20000000 / 8; /* 20 Mbit/s, in bytes per second */

    int fd = gs_socket(AF_INET, GS_GUARANTEED, &qos);
    if (fd < 0) {
        fprintf(stderr, "gs_socket: %s\n", gs_strerror(errno));
        return 1;
    }
    struct gs_grant g;
    if (gs_connect(fd, (struct sockaddr*)&peer, sizeof peer, &g) != 0) {
        int e = errno;
        fprintf(stderr, "gs_connect: %s\n", gs_strerror(e));
        gs_close(fd);
        return e == ENOBUFS ? 2 : 1;
    }
    printf("class %d, rate %llu bit/s, admission %s, transport %s\n", (int)g.cls,
           (unsigned long long)g.qos.rate * 8, admission_name(g.admission),
           g.transport == GS_BRIDGED ? "bridged" : "native");
    fflush(stdout);

    char buf[16384];
    memset(buf, 'g', sizeof buf);
    long long sent = 0;
    while (sent < total) {
        size_t n = total - sent < (long long)sizeof buf ? (size_t)(total - sent) : sizeof buf;
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            perror("send");
            gs_close(fd);
            return 1;
        }
        sent += w;
    }
    printf("sent %lld bytes\n", sent);
    return gs_close(fd) == 0 ? 0 : 1;
}
