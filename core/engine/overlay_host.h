// An overlay member in the engine (GSocket class 4; docs/overlay.md): a
// protocol node (DT or HC, core/overlay/node.h) on a UdpHost, and the
// program's side as one end of an AF_UNIX SOCK_SEQPACKET pair.
//
// Each message the program writes on its end is a request (OverlayRequest
// then the payload: send to all, to the parent or children for a root, to
// the neighbours, to one node; join; leave); each message it reads is a
// delivery (OverlayDelivery then the payload). So the member is a real fd:
// poll/epoll say when a message waits, any thread sends without a lock, and
// a message the program does not read in time is dropped when its end is
// full, as a UDP socket's would be (counted).
//
// What program threads may read at any time is in OverlayShared (atomics).
// Topology questions (neighbours, parent, children) are answered on the
// engine thread: query() runs one there and waits.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/udp_host.h"
#include "core/overlay/node.h"

namespace gs::engine {

struct OverlayRequest {
    enum Op : uint8_t { send = 1, join = 2, leave = 3 };
    uint8_t op = send;
    uint8_t to = 0;          // overlay::SendTo, for send
    uint8_t pad[6] = {};
    uint64_t root = overlay::kNoAddress;   // parent / children: the tree's root (kNoAddress: this node)
    uint64_t node = overlay::kNoAddress;   // SendTo::node: the destination
};
static_assert(sizeof(OverlayRequest) == 24);

struct OverlayDelivery {
    uint64_t source = overlay::kNoAddress;   // the member that sent it
};
static_assert(sizeof(OverlayDelivery) == 8);

struct OverlayShared {
    std::atomic<uint64_t> address{overlay::kNoAddress};   // this member's logical address
    std::atomic<uint32_t> joined{0};                      // futex word: 1 while a member
    // Set before start() when the member joins through others (bootstrap or
    // server members): `joined` then waits until a message sent to all
    // would reach someone (the node has a child in its own tree), at most
    // kWireWait after the protocol says joined. Before that the node sends
    // to nobody, and a program that sends right after joining would lose
    // its first messages.
    bool await_neighbour = false;
    std::atomic<uint64_t> sent{0}, delivered{0};
    std::atomic<uint64_t> dropped_unread{0};   // deliveries the program's end had no room for
    std::atomic<uint64_t> refused{0};          // requests the node refused (bad destination, too large, not joined)
    std::atomic<int> last_refusal{0};          // its errno
    std::atomic<uint32_t> closed{0};           // the host has gone (the program closed its end)
    // Engine thread, once the host has gone (after `closed` is set): for an
    // owner that does not wait on `closed` (the shim's multicast groups);
    // it may free this. Set before start().
    void (*on_closed)(OverlayShared* s) noexcept = nullptr;
    void* owner = nullptr;
};

// An endpoint run beside the node on a UDP socket of its own, for as long
// as the member lives (the member's lease at the overlay server): `farewell`
// is called just before it stops (a LEAVE), then what it sends goes out.
// It may drive the node (engine thread, both); after each of its batches
// the node's output is sent.
struct OverlayCompanion {
    std::unique_ptr<sansio::Endpoint> ep;
    int fd = -1;
    void (*farewell)(sansio::Endpoint& ep, sansio::Time now) noexcept = nullptr;
};

class OverlayHost {
public:
    // Starts the member: `udp_fd` (bound to the node's underlay address) and
    // `engine_end` (the pair's engine end) are the host's from now on, closed
    // when it ends; `shared` must outlive it (until shared.closed). Engine
    // thread. nullptr and -errno in *err when it cannot start (then both fds
    // are still the caller's to close).
    static OverlayHost* start(Engine& e, std::unique_ptr<overlay::Node> node, int udp_fd, int engine_end,
                              OverlayShared& shared, int* err) noexcept;
    // The same with a companion (its fd is the host's from the call on,
    // closed if the member cannot start).
    static OverlayHost* start(Engine& e, std::unique_ptr<overlay::Node> node, int udp_fd, int engine_end,
                              OverlayShared& shared, OverlayCompanion companion, int* err) noexcept;

    // Engine thread: the node, for topology questions and tests.
    overlay::Node& node() noexcept { return *node_; }
    const UdpHostStats& udp_stats() const noexcept { return udp_->stats(); }

    // Leave (telling the neighbours) and stop. Engine thread.
    void close(Engine& e) noexcept;

private:
    OverlayHost(std::unique_ptr<overlay::Node> node, int engine_end, OverlayShared& shared) noexcept
        : node_(std::move(node)), end_(engine_end), shared_(shared) {}
    ~OverlayHost() = default;

    static void activity(Engine& e, void* self) noexcept;
    static void companion_activity(Engine& e, void* self) noexcept;
    void requests(Engine& e) noexcept;   // what the program wrote
    void deliver() noexcept;             // what arrived, to the program
    void publish() noexcept;
    // publish(): how long `joined` waits for a first neighbour (await_neighbour).
    static constexpr int64_t kWireWait = 2'000'000'000;
    int64_t member_since_ = 0;   // when the node said joined, for kWireWait; 0: not a member
    void maybe_free() noexcept;

    struct In final : Completion {       // the program wrote (multishot poll on end_)
        OverlayHost* h = nullptr;
        bool armed = false;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    struct Cancel final : Completion {
        OverlayHost* h = nullptr;
        void complete(Engine& e, const io_uring_cqe& cqe) noexcept override;
    };
    void cancel_in(Engine& e) noexcept;

    // Every live host (engine thread): at exit the engine waits (bounded)
    // for hosts whose program end has hung up to leave (drain hooks).
    static bool drained() noexcept;
    OverlayHost* next_ = nullptr;
    OverlayHost* prev_ = nullptr;

    std::unique_ptr<overlay::Node> node_;
    UdpHost* udp_ = nullptr;
    OverlayCompanion companion_;
    UdpHost* companion_udp_ = nullptr;
    int end_;
    OverlayShared& shared_;
    In in_;
    Cancel cancel_;
    int inflight_ = 0;
    bool closing_ = false;
};

}  // namespace gs::engine
