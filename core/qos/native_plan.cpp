#include "core/qos/native_plan.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace gs::qos {

const char* name(Knob k) noexcept {
    switch (k) {
    case Knob::tos: return "dscp";
    case Knob::tclass: return "dscp";
    case Knob::priority: return "priority";
    case Knob::pacing: return "rate";
    case Knob::rcvbuf: return "rcvbuf";
    case Knob::window_clamp: return "window";
    case Knob::congestion: return "congestion";
    case Knob::notsent_lowat: return "notsent_lowat";
    }
    return "?";
}

NativePlan plan_native(const policy::Decision& d, int family, policy::Proto proto) noexcept {
    NativePlan p;
    auto add = [&p](Knob k, int level, int opt, uint64_t v, const char* text = nullptr) {
        p.settings[p.count++] = Setting{k, level, opt, v, text};
    };
    const policy::Qos& q = d.qos;
    const bool tcp = proto == policy::Proto::tcp;

    if (q.dscp >= 0) {
        add(Knob::tos, IPPROTO_IP, IP_TOS, static_cast<uint64_t>(q.dscp));
        if (family == AF_INET6) add(Knob::tclass, IPPROTO_IPV6, IPV6_TCLASS, static_cast<uint64_t>(q.dscp));
    }
    if (q.priority >= 0) add(Knob::priority, SOL_SOCKET, SO_PRIORITY, static_cast<uint64_t>(q.priority));
    // TCP paces itself (since Linux 4.13); UDP only under the fq qdisc.
    if (q.rate > 0) add(Knob::pacing, SOL_SOCKET, SO_MAX_PACING_RATE, q.rate);
    if (q.rcvbuf > 0) add(Knob::rcvbuf, SOL_SOCKET, SO_RCVBUF, q.rcvbuf);
    if (tcp) {
        if (q.window > 0) add(Knob::window_clamp, IPPROTO_TCP, TCP_WINDOW_CLAMP, q.window);
        if (q.congestion[0] != '\0') add(Knob::congestion, IPPROTO_TCP, TCP_CONGESTION, 0, q.congestion);
        uint32_t lowat = q.notsent_lowat;
        if (lowat == 0 && d.service == policy::ServiceClass::realtime) lowat = kRealtimeNotsentLowat;
        if (lowat > 0) add(Knob::notsent_lowat, IPPROTO_TCP, TCP_NOTSENT_LOWAT, lowat);
    }
    return p;
}

}  // namespace gs::qos
