/* The GSocket API: ask for a service class and QoS directly.
 *
 * A program that links libgsocket (pkg-config gsocket) gets the same shim a
 * program run under gsrun gets: every other socket of the program is still
 * classified by the policy, and a socket created or configured here carries
 * the program's own request instead. The policy's matching rule fills what the
 * request leaves unset (docs/api.md).
 *
 * Conventions, as BSD sockets: 0 (or an fd) on success, -1 with errno on
 * failure. Invalid arguments also log one line through the shim's log
 * (GSOCKET_LOG, GSOCKET_LOG_FILE) naming the argument and what would be right.
 * Units are those of the policy: bytes per second, bytes, microseconds, parts
 * per million. Every function is thread-safe; none is async-signal-safe except
 * gs_close (it is close()).
 */
#ifndef GSOCKET_GSOCKET_H
#define GSOCKET_GSOCKET_H

#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GS_VERSION_MAJOR 0
#define GS_VERSION_MINOR 1
#define GS_VERSION_PATCH 0
/* (major << 16) | (minor << 8) | patch, as gs_version() returns it. */
#define GS_VERSION ((GS_VERSION_MAJOR << 16) | (GS_VERSION_MINOR << 8) | GS_VERSION_PATCH)

/* The GSocket service classes (numbers as in the policy's `class = 0-4`). */
enum gs_class {
    GS_DATAGRAM = 0,   /* best-effort datagrams: UDP */
    GS_RELIABLE = 1,   /* reliable ordered stream: TCP */
    GS_GUARANTEED = 2, /* TCP with a reserved rate (host ledger) and pacing */
    GS_REALTIME = 3,   /* bounded delay and jitter; reserves its rate too (TCP or UDP) */
    GS_GROUP = 4       /* group communication: not yet (EPROTONOSUPPORT) */
};

/* QoS parameters. Unset fields (0, or -1 for priority and dscp) take the
 * value of the policy's matching rule at connect. Initialise with gs_qos_init. */
struct gs_qos {
    uint64_t rate;       /* send rate, bytes/s; 0 = unset. Reserved by classes 2 and 3 */
    uint64_t rate_down;  /* receive rate, bytes/s; 0 = unset. Reserved by classes 2 and 3 */
    uint64_t burst;      /* bytes above the rate; 0 = unset */
    uint32_t latency_us; /* delay bound; 0 = unset; class GS_REALTIME only */
    uint32_t jitter_us;  /* jitter bound; 0 = unset; class GS_REALTIME only */
    uint32_t loss_ppm;   /* loss tolerance, 0-1000000; 0 = unset */
    int priority;        /* SO_PRIORITY 0-6; -1 = unset */
    int dscp;            /* DiffServ code point 0-63; -1 = unset */
};

/* What a reservation gave (gs_grant.admission). */
enum gs_admission {
    GS_NONE = 0,       /* the class reserves nothing (0, 1), or it has no rate */
    GS_GRANTED = 1,    /* the whole rate is reserved */
    GS_DOWNGRADED = 2, /* less was reserved (policy on_reject = downgrade); qos.rate says how much */
    GS_UNRESERVED = 3  /* no ledger to ask (no [general] capacity, or it is unreachable): fail open */
};

/* How the flow is carried (gs_grant.transport). */
enum gs_transport {
    GS_NATIVE = 0,  /* the kernel's TCP/UDP with native QoS knobs */
    GS_BRIDGED = 1  /* the gsocket engine carries it (docs/engine.md) */
};

/* What a flow has: its class, the QoS applied (a downgrade shows the granted
 * rate), the outcome of admission and the transport. */
struct gs_grant {
    enum gs_class cls;
    struct gs_qos qos;
    int admission; /* enum gs_admission */
    int transport; /* enum gs_transport */
};

/* Sets every field unset: zeros, priority and dscp -1. */
void gs_qos_init(struct gs_qos* qos);

/* Creates a socket of `domain` (AF_INET or AF_INET6) for class `cls`: UDP for
 * GS_DATAGRAM, TCP for GS_RELIABLE, GS_GUARANTEED and GS_REALTIME, with the
 * request attached (as gs_set_qos). `qos` may be NULL: every field unset.
 * Returns the fd, or -1 with errno:
 *   EAFNOSUPPORT     domain is not AF_INET / AF_INET6
 *   EPROTONOSUPPORT  cls is GS_GROUP (the overlay is not there yet)
 *   EINVAL           cls or a qos field is out of range (see gs_set_qos)
 *   and socket()'s errors (EMFILE, ENFILE, ENOBUFS, ENOMEM, EACCES). */
int gs_socket(int domain, enum gs_class cls, const struct gs_qos* qos);

/* Attaches a request to `fd`, an AF_INET/AF_INET6 TCP or UDP socket not yet
 * connected (or listening: the request is the socket's, accepted sockets are
 * classified by the policy). It replaces an earlier request. Takes effect at
 * connect (or a UDP socket's first sendto). Returns 0 or -1 with errno:
 *   EBADF            fd is not an open descriptor
 *   ENOTSOCK         fd is not a socket
 *   EAFNOSUPPORT     not an AF_INET / AF_INET6 TCP or UDP socket
 *   EISCONN          the socket is connected, or its flow is classified already
 *   EPROTONOSUPPORT  cls is GS_GROUP
 *   EINVAL           cls is not a gs_class; GS_DATAGRAM on a TCP socket;
 *                    GS_RELIABLE or GS_GUARANTEED on a UDP socket; priority
 *                    not -1 or 0-6; dscp not -1 or 0-63; loss_ppm above
 *                    1000000; latency_us or jitter_us with a class other than
 *                    GS_REALTIME
 * With the shim disabled (GSOCKET_DISABLE=1) arguments are checked and the
 * request is ignored: the socket stays a plain one. */
int gs_set_qos(int fd, enum gs_class cls, const struct gs_qos* qos);

/* connect(2), negotiating the request: classes that reserve (GS_GUARANTEED,
 * GS_REALTIME with a rate) reserve it in the host ledger first. On success
 * (0, or -1/EINPROGRESS on a non-blocking socket) `granted`, if not NULL,
 * says what the flow got (as gs_get_qos). Returns 0 or -1 with errno:
 *   EINVAL           addr is NULL
 *   ENOBUFS          the reservation was refused (on_reject = fail); the
 *                    socket stays unconnected with its request: lower it
 *                    with gs_set_qos and connect again
 *   EACCES           the policy is broken and says on_error = fail
 *   and connect()'s errors. */
int gs_connect(int fd, const struct sockaddr* addr, socklen_t addrlen, struct gs_grant* granted);

/* What the socket's flow has now. Before connect: the request as asked
 * (admission GS_NONE), or for a socket without one the class of its protocol
 * (the policy decides the rest at connect). Returns 0 or -1 with errno:
 *   EINVAL   out is NULL
 *   EBADF, ENOTSOCK, EAFNOSUPPORT as gs_set_qos */
int gs_get_qos(int fd, struct gs_grant* out);

/* close(2): releases the flow's reservation (a plain close() does too). */
int gs_close(int fd);

/* A message for an errno from this API, in its terms ("ENOBUFS: the host
 * cannot reserve the rate asked ..."); strerror() for others. Static storage. */
const char* gs_strerror(int err);

/* The library's GS_VERSION (may differ from the header's one). */
int gs_version(void);

/* ---- Overlay sockets (GSocket class 4; docs/overlay.md) ------------------
 *
 * A member of an application-level overlay (HyperCast's overlay socket):
 * messages to every member, to a parent or the children in the spanning
 * tree of a root, to the neighbours, or to one member by its logical
 * address. The overlay's configuration is an attribute file (OverlayID,
 * Protocol = DT or HC, NodeAddress, Bootstrap...; docs/overlay.md). The
 * member is a real fd (gs_overlay_fd): poll/epoll say when a message waits.
 * Thread-safe; messages are delivered whole, at most once, in no promised
 * order, and dropped (counted) when the program does not read in time. */

typedef struct gs_overlay gs_overlay;

enum gs_overlay_to {
    GS_TO_ALL = 0,       /* every member (the tree rooted at this member) */
    GS_TO_PARENT = 1,    /* the parent in the tree of `root` */
    GS_TO_CHILDREN = 2,  /* the children in the tree of `root` */
    GS_TO_NEIGHBORS = 3, /* every overlay neighbour */
    GS_TO_NODE = 4       /* the member whose logical address is `node` */
};

/* "No address": a member not (yet) joined; as `root`, this member. */
#define GS_NO_ADDRESS UINT64_MAX

/* Reads `config_file` and creates a member bound to its NodeAddress (not
 * joined yet). NULL with errno: EINVAL (the file is wrong: one log line per
 * problem, naming file, line, attribute and value), ENOENT/EACCES (cannot
 * read it), EADDRINUSE (NodeAddress is taken), ENOMEM, EAGAIN (no engine). */
gs_overlay* gs_overlay_open(const char* config_file);

/* Joins through the Bootstrap members (none: this member starts the
 * overlay) and waits until it is a member whose messages to all reach a
 * neighbour (at most 2 s after the protocol admits it), or `timeout_ms`
 * (< 0: forever).
 * 0, or -1 with ETIMEDOUT (it goes on trying), EINTR. */
int gs_overlay_join(gs_overlay* o, int timeout_ms);

/* Sends one message (at most the overlay's MaxPayload bytes). 0, or -1 with
 * EINVAL (bad `to`, too long), ENOTCONN (not a member), EAGAIN (the queue to
 * the engine is full and o's fd is non-blocking). A message the protocol
 * cannot route is counted, not reported. */
int gs_overlay_send(gs_overlay* o, int to, const void* msg, size_t len, uint64_t root, uint64_t node);

/* Receives one message into buf: its length (cut to len), the sender's
 * logical address in *source (may be NULL). Blocks unless flags has
 * MSG_DONTWAIT (then -1 EAGAIN when none waits). -1 ECONNRESET once the
 * member has been closed. */
ssize_t gs_overlay_recv(gs_overlay* o, void* buf, size_t len, uint64_t* source, int flags);

/* The fd to poll for POLLIN (a message waits). Do not read or write it. */
int gs_overlay_fd(const gs_overlay* o);

/* This member's logical address (DT: x << 32 | (uint32_t)y; HC: its label),
 * GS_NO_ADDRESS before it has joined. */
uint64_t gs_overlay_address(const gs_overlay* o);

/* The topology as this member sees it now. Neighbours and children: how many
 * there are (at most `max` written to out). Parent: 0 and *parent, or -1
 * with ENOENT at the root. -1 ENOTCONN when not a member. */
int gs_overlay_neighbors(gs_overlay* o, uint64_t* out, size_t max);
int gs_overlay_parent(gs_overlay* o, uint64_t root, uint64_t* parent);
int gs_overlay_children(gs_overlay* o, uint64_t root, uint64_t* out, size_t max);

/* Counters: messages sent and delivered, deliveries dropped because the
 * program did not read, requests the protocol refused. */
struct gs_overlay_counters {
    uint64_t sent, delivered, dropped_unread, refused;
};
int gs_overlay_stats(const gs_overlay* o, struct gs_overlay_counters* out);

/* Leaves the overlay (the neighbours are told) and frees the member. */
int gs_overlay_close(gs_overlay* o);

#ifdef __cplusplus
}
#endif

#endif /* GSOCKET_GSOCKET_H */
