// What the kernel can do for a flow that stays on its own TCP/UDP: the list
// of socket options that carry a policy decision's QoS, in the order they must
// be applied. Pure (no sockets): the shim applies the plan, tests read it.
#pragma once

#include <cstdint>

#include "policy/policy.h"

namespace gs::qos {

enum class Knob : uint8_t {
    tos,            // IPPROTO_IP / IP_TOS          (DSCP << 2; ECN bits kept)
    tclass,         // IPPROTO_IPV6 / IPV6_TCLASS   (DSCP << 2; ECN bits kept)
    priority,       // SOL_SOCKET / SO_PRIORITY
    pacing,         // SOL_SOCKET / SO_MAX_PACING_RATE (bytes/s)
    rcvbuf,         // SOL_SOCKET / SO_RCVBUF
    window_clamp,   // IPPROTO_TCP / TCP_WINDOW_CLAMP
    congestion,     // IPPROTO_TCP / TCP_CONGESTION (string)
    notsent_lowat,  // IPPROTO_TCP / TCP_NOTSENT_LOWAT
};
const char* name(Knob k) noexcept;   // the policy key it comes from: "dscp", "priority", "rate", ...

struct Setting {
    Knob knob;
    int level = 0, optname = 0;
    uint64_t value = 0;          // for all but congestion
    const char* text = nullptr;  // congestion name (points into the Decision)
};

// Enough for every knob once, plus IP_TOS and IPV6_TCLASS together.
struct NativePlan {
    Setting settings[10];
    int count = 0;
};

// Default TCP_NOTSENT_LOWAT for the realtime class when the policy sets none:
// keeps at most this much unsent data queued in the kernel, so fresh data is
// not stuck behind stale data (the latency-sensitive classes' knob).
constexpr uint32_t kRealtimeNotsentLowat = 16 * 1024;

// family: AF_INET or AF_INET6 (the socket's, not the peer's: a v6 socket may
// carry v4-mapped traffic, so it gets both IP_TOS and IPV6_TCLASS).
// IP_TOS comes before SO_PRIORITY because setting IP_TOS resets the socket's
// priority in Linux (rt_tos2priority).
NativePlan plan_native(const policy::Decision& d, int family, policy::Proto proto) noexcept;

// The TOS byte to write for DSCP `dscp` when the socket's current TOS is `current`.
constexpr int tos_with_dscp(int dscp, int current) noexcept { return (dscp << 2) | (current & 3); }

}  // namespace gs::qos
