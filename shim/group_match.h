// Which multicast group a socket option or a destination names, and which
// [overlay] of the policy carries it (docs/overlay.md "Legacy multicast").
// Pure: no sockets, no allocation; unit-tested (tests/core/group_test.cpp).
#pragma once

#include <sys/socket.h>

#include <cstdint>

#include "policy/policy.h"
#include "shim/flows.h"

namespace gs::shim {

enum class GroupOp : uint8_t { none, join, leave };

struct GroupOption {
    GroupOp op = GroupOp::none;
    Endpoint group;   // the group's address (port 0: an option names none)
};

// The membership an option asks for: IP_ADD_MEMBERSHIP / IP_DROP_MEMBERSHIP
// (struct ip_mreq or ip_mreqn), IPV6_JOIN_GROUP / IPV6_LEAVE_GROUP (struct
// ipv6_mreq; the same numbers as IPV6_ADD_/DROP_MEMBERSHIP), MCAST_JOIN_GROUP
// / MCAST_LEAVE_GROUP (struct group_req, at IPPROTO_IP or IPPROTO_IPV6). An
// IPv4-mapped IPv6 group is an IPv4 group. op none for every other option,
// and for a value too short or of another family (the kernel answers those).
// Source-specific joins (IP_ADD_SOURCE_MEMBERSHIP, MCAST_JOIN_SOURCE_GROUP)
// are none: they stay the kernel's.
GroupOption group_option(int level, int name, const void* val, socklen_t len) noexcept;

// The policy's overlay for a group: the one whose `group` is ADDR:PORT
// exactly; with `any_port`, else the first (file order) with that address.
// nullptr when none.
const policy::Overlay* find_group(const policy::Policy& p, const Endpoint& group, bool any_port) noexcept;

}  // namespace gs::shim
