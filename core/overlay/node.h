// What an overlay node protocol (DT, HC) offers its owner: the overlay
// socket (api/), the shim's multicast bridge and the simulator.
//
// HyperCast's model (../shared/papers.md, section 2): members of an overlay
// have logical addresses; the protocol builds a topology in which every node
// knows its neighbours and, for any root, its parent and children in that
// root's spanning tree. That is enough for sendToAll / sendToParent /
// sendToChildren / sendToNeighbors / sendToNode without a routing protocol.
//
// Sans-IO (core/common/sansio.h): the node is fed datagrams and time and
// returns datagrams to send. It carries both its protocol messages and the
// application's data messages over the same underlay address; data messages
// are forwarded hop by hop along the trees by the nodes themselves.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/common/sansio.h"

namespace gs::overlay {

using sansio::Addr;
using sansio::Time;

// A logical address, opaque to the owner. DT: a point in the plane, x in the
// high 32 bits and y in the low 32 bits (both signed). HC: the hypercube label.
// kNoAddress: not (yet) a member.
using LogicalAddress = std::uint64_t;
constexpr LogicalAddress kNoAddress = ~LogicalAddress{0};

// Every overlay datagram starts with this prefix (network byte order), so a
// node can drop foreign or mismatched traffic before parsing the rest:
//   0  magic   u16  0x4753 ("GS")
//   2  version u8   1
//   3  proto   u8   1 = DT, 2 = HC
//   4  overlay u64  hash of the overlay's key attributes (OverlayID included)
//  12  type    u8   protocol message type; types >= 0x80 carry application data
// The protocols define what follows.
constexpr std::uint16_t kMagic = 0x4753;
constexpr std::uint8_t kVersion = 1;
enum class Protocol : std::uint8_t { dt = 1, hc = 2 };
constexpr std::size_t kPrefixSize = 13;

enum class SendTo : std::uint8_t { all, parent, children, neighbors, node };

// A data message delivered to this member.
struct Delivery {
    LogicalAddress source = kNoAddress;   // the member that sent it
    std::vector<std::uint8_t> payload;
};

// Counters every protocol keeps (gsctl overlay status, tests, benchmarks).
struct NodeStats {
    std::uint64_t control_sent = 0, control_bytes_sent = 0;
    std::uint64_t data_sent = 0, data_bytes_sent = 0;   // including forwarded copies
    std::uint64_t delivered = 0;
    std::uint64_t dropped_malformed = 0;   // bad prefix, truncated, bad fields
    std::uint64_t dropped_foreign = 0;     // another overlay or protocol
    std::uint64_t dropped_duplicate = 0;
};

class Node : public sansio::Endpoint {
public:
    // Starts joining; the owner has already given the node its underlay
    // address and the bootstrap members (from gsoverlayd or configuration).
    virtual void join(Time now) = 0;
    // Leaves gracefully (tells the neighbours); the node then falls silent.
    virtual void leave(Time now) = 0;
    // True once the node is a member with a logical address.
    virtual bool joined() const = 0;
    virtual LogicalAddress address() const = 0;

    // Sends an application message. `root` is the tree's root for parent and
    // children (kNoAddress: this node is the root); `node` is the destination
    // for SendTo::node. 0, or -EINVAL (bad destination, payload too large),
    // -ENOTCONN (not joined), -EHOSTUNREACH (parent of the root itself).
    virtual int send(SendTo to, std::span<const std::uint8_t> payload, Time now,
                     LogicalAddress root = kNoAddress, LogicalAddress node = kNoAddress) = 0;
    // Takes the next message delivered to this member; false when none.
    virtual bool poll_deliver(Delivery& out) = 0;

    // The topology as this node sees it now.
    virtual std::vector<LogicalAddress> neighbors() const = 0;
    virtual std::optional<LogicalAddress> parent(LogicalAddress root) const = 0;   // nullopt at the root
    virtual std::vector<LogicalAddress> children(LogicalAddress root) const = 0;

    virtual const NodeStats& stats() const = 0;

    // Partitions and their merge (issue 6). Two groups of members that do not
    // know each other (disjoint bootstrap lists, a network partition that
    // healed) each build a consistent overlay of their own, and neither
    // protocol can find the other alone. The overlay server knows every
    // member, so the owner acts as the rendezvous: it asks leader() and, on
    // the leader only, calls hint() every few seconds with a few members the
    // server listed.
    //
    // True when this node leads its partition: exactly one member of a
    // converged partition does. DT: joined and no neighbour has greater
    // coordinates ((x, y) lexicographically; in a triangulation only the
    // global maximum has no greater neighbour). HC: the head (the highest
    // label of the cube).
    virtual bool leader() const = 0;
    // The owner was told that a member lives at `member`. When that member may
    // belong to another partition the node makes contact so that the two
    // merge; a hint for itself or for a neighbour sends nothing, and neither
    // does a hint while the node is not a member. Cheap and bounded whatever
    // the owner passes: hints are rate-limited per node (a burst of a few,
    // then about one a second), keep no per-hint state, and one costs at most
    // a few small datagrams (more only when it finds another partition). The
    // protocols' pages (docs/overlay-dt.md, docs/overlay-hc.md) say how the
    // partitions merge.
    virtual void hint(Addr member, Time now) = 0;
};

}  // namespace gs::overlay
