// Runs a sans-IO endpoint (core/common/sansio.h: an MCES endpoint, an
// overlay node) on a UDP socket, in the engine.
//
// The engine is the only place that touches io_uring, and the protocols
// never touch a socket: this is where the two meet. Datagrams that arrive go
// to the endpoint's on_datagram, its timer is an engine Timer, and what it
// wants sent goes out in batches. Performance comes from batching, as the
// field found (docs/engine.md, "UDP hosts"):
//   - receive: recvmmsg of up to kBatch datagrams per wake-up, with UDP GRO
//     (one read returns many coalesced segments, split here);
//   - send: runs of datagrams to one peer of one size go out as one UDP GSO
//     super-datagram (UDP_SEGMENT), several per sendmmsg; the buffers of
//     sent datagrams are handed back to the endpoint's poll_transmit (in
//     Datagram::bytes, with their old size and contents: the endpoint
//     assigns or resizes them), so steady sending allocates nothing;
//     an endpoint may leave a datagram's payload in its own buffers
//     (Datagram::may_hold): it goes out from there, uncopied, unless the
//     socket is full and the datagram has to wait (then it is copied);
//   - the bytes given to on_datagram stay in the receive scratch, unchanged,
//     until the endpoint's on_batch_end(): after each recvmmsg's datagrams
//     were fed, the host flushes, calls the Activity callback (where the
//     owner reads), then on_batch_end(), and only then reads into the
//     scratch again (close() calls on_batch_end() too, if a batch is open).
//     An endpoint may therefore keep views of received bytes until then
//     (mces::ConnConfig::borrow_receive).
//
// Engine thread only: the endpoint is called from the engine thread, and
// its owner calls poke() after changing it from there (a write on a
// connection, a join) so that what it wants sent goes and its timer is
// re-armed. Other threads reach the endpoint through engine Commands.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "core/common/sansio.h"
#include "core/engine/engine.h"

namespace gs::engine {

struct UdpHostStats {
    uint64_t rx_datagrams = 0, rx_bytes = 0, rx_calls = 0, rx_gro_batches = 0;
    uint64_t tx_datagrams = 0, tx_bytes = 0, tx_calls = 0, tx_gso_batches = 0;
    uint64_t tx_errors = 0;        // refused by the kernel (EMSGSIZE, ENETUNREACH, ECONNREFUSED...)
    uint64_t tx_queue_full = 0;    // datagrams dropped because the send backlog was full
    uint64_t tx_gso_refused = 0;   // GSO runs the kernel refused (segments beyond the MTU): sent again one by one
    uint64_t tx_held_copied = 0;   // held payloads copied because the socket was full (see may_hold)
    uint64_t timeouts = 0;
};

struct UdpHostOptions {
    bool gro = true;               // ask the kernel for UDP_GRO
    bool gso = true;               // send runs as UDP_SEGMENT super-datagrams
    // Datagrams kept while the socket's send buffer is full; beyond that they
    // are dropped (the protocol's loss recovery sees them as lost).
    size_t max_backlog = 4096;
};

class UdpHost final : Timer {
public:
    // Called on the engine thread after every batch of input (datagrams or a
    // timeout) has been fed to the endpoint and its output sent: where the
    // owner moves data between the endpoint and the program.
    using Activity = void (*)(Engine& e, void* owner) noexcept;

    // Takes `fd` (a bound UDP socket; made non-blocking; closed by close())
    // and starts receiving. nullptr and -errno in *err when it cannot.
    static UdpHost* start(Engine& e, int fd, sansio::Endpoint& ep, const UdpHostOptions& o,
                          Activity on_activity, void* owner, int* err) noexcept;

    // The endpoint changed outside a callback: send what it has, re-arm its timer.
    void poke(Engine& e) noexcept;
    // Stop: no callback after this returns; the host frees itself once the
    // kernel has let go of it, and closes the socket.
    void close(Engine& e) noexcept;

    const sansio::Addr& local() const noexcept { return local_; }
    int fd() const noexcept { return fd_; }
    const UdpHostStats& stats() const noexcept { return stats_; }

private:
    UdpHost(int fd, sansio::Endpoint& ep, const UdpHostOptions& o, Activity a, void* owner) noexcept
        : fd_(fd), ep_(ep), opt_(o), activity_(a), owner_(owner) {}
    ~UdpHost() = default;

    void fire(Engine& e, int64_t now) noexcept override;   // the endpoint's timer
    void receive(Engine& e) noexcept;
    void end_batch() noexcept;   // the endpoint's on_batch_end, once per batch fed
    void flush(Engine& e) noexcept;
    bool send_backlog() noexcept;   // false: the socket is full
    void rearm_timer(Engine& e) noexcept;
    std::vector<uint8_t> take_spare() noexcept;
    void give_spare(std::vector<uint8_t>&& v) noexcept;
    void pop_sent() noexcept;   // backlog_.front() went out (or was refused)
    void maybe_free() noexcept;

    struct In final : Completion {    // readable (multishot poll)
        UdpHost* h = nullptr;
        bool armed = false;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct Out final : Completion {   // writable again (one shot)
        UdpHost* h = nullptr;
        bool armed = false;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct Cancel final : Completion {
        UdpHost* h = nullptr;
        Completion* target = nullptr;
        const bool* armed = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    void cancel(Engine& e, Cancel& c) noexcept;

    int fd_;
    sansio::Endpoint& ep_;
    UdpHostOptions opt_;
    Activity activity_;
    void* owner_;
    sansio::Addr local_;
    std::deque<sansio::Datagram> backlog_;   // to send, in order
    size_t held_ = 0;                         // of them, with payload held by the endpoint
    // Buffers of datagrams already sent, reused for the next ones: at most
    // kMaxSpare (one sendmmsg's worth of GSO runs) and kMaxSpareBytes.
    static constexpr size_t kMaxSpare = 1024;
    static constexpr size_t kMaxSpareBytes = 4 << 20;
    std::vector<std::vector<uint8_t>> spare_;
    size_t spare_bytes_ = 0;
    bool in_flush_ = false, closing_ = false;
    bool batch_open_ = false;                 // datagrams fed since the last on_batch_end
    int64_t timer_at_ = 0;                    // armed deadline, 0: none
    int inflight_ = 0;
    int family_ = AF_INET;
    // Datagrams larger than this are not sent in GSO runs: the kernel
    // refuses a run whose segments exceed the route's MTU (EINVAL), where
    // it would fragment the same datagram sent alone. Learned from the
    // refusals: the socket may reach peers over different paths.
    size_t gso_seg_max_ = 65535;
    In in_;
    Out out_;
    Cancel cancel_in_, cancel_out_;
    UdpHostStats stats_;
};

// sockaddr <-> sansio::Addr (IPv4 held IPv4-mapped).
sansio::Addr to_addr(const sockaddr* sa, socklen_t len) noexcept;
socklen_t from_addr(const sansio::Addr& a, sockaddr_storage& ss, int family) noexcept;

}  // namespace gs::engine
