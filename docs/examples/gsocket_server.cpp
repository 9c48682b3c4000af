// A server with the C++ layer: listens, accepts N connections and reports
// each accepted flow's class (the policy's accept rules decide it), then the
// bytes it received.
//
//   c++ -std=c++20 gsocket_server.cpp $(pkg-config --cflags --libs gsocket) -o gsocket_server
//   ./gsocket_server 5000 [N]
#include <gsocket/gsocket.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s PORT [CONNECTIONS]\n", argv[0]);
        return 1;
    }
    const int port = std::atoi(argv[1]);
    const int want = argc > 2 ? std::atoi(argv[2]) : 1;

    std::error_code ec;
    gs::Socket listener = gs::Socket::create(AF_INET, gs::Class::reliable, gs::Qos(), ec);
    if (ec) {
        std::fprintf(stderr, "gs_socket: %s\n", ec.message().c_str());
        return 1;
    }
    int one = 1;
    setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listener.fd(), 16) != 0) {
        std::perror("bind/listen");
        return 1;
    }
    std::printf("listening on %d\n", port);
    std::fflush(stdout);

    for (int i = 0; i < want; ++i) {
        sockaddr_in peer{};
        socklen_t len = sizeof peer;
        gs::Socket conn(accept(listener.fd(), reinterpret_cast<sockaddr*>(&peer), &len));
        if (!conn) {
            std::perror("accept");
            return 1;
        }
        gs_grant g{};
        if (std::error_code e = conn.qos(g)) {
            std::fprintf(stderr, "gs_get_qos: %s\n", e.message().c_str());
            return 1;
        }
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &peer.sin_addr, host, sizeof host);
        std::printf("flow from %s:%u: class %s, admission %s\n", host, ntohs(peer.sin_port),
                    gs::name(static_cast<gs::Class>(g.cls)), gs::admission_name(g.admission));
        std::fflush(stdout);
        char buf[65536];
        long long total = 0;
        for (ssize_t n; (n = recv(conn.fd(), buf, sizeof buf, 0)) > 0;) total += n;
        std::printf("received %lld bytes\n", total);
        std::fflush(stdout);
        if (std::error_code e = conn.close()) std::fprintf(stderr, "gs_close: %s\n", e.message().c_str());
    }
    return 0;
}
