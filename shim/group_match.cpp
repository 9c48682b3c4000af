#include "shim/group_match.h"

#include <netinet/in.h>
#include <string.h>

namespace gs::shim {

namespace {

bool is_multicast(const Endpoint& e) noexcept {
    if (e.addr.family == AF_INET) return (e.addr.bytes[0] & 0xf0) == 0xe0;
    return e.addr.family == AF_INET6 && e.addr.bytes[0] == 0xff;
}

// An IPv6 address as an Endpoint, an IPv4-mapped one as IPv4.
Endpoint from_in6(const in6_addr& a) noexcept {
    sockaddr_in6 s{};
    s.sin6_family = AF_INET6;
    s.sin6_addr = a;
    Endpoint e;
    endpoint_from(reinterpret_cast<const sockaddr*>(&s), sizeof s, e);
    return e;
}

}  // namespace

GroupOption group_option(int level, int name, const void* val, socklen_t len) noexcept {
    GroupOption o;
    if (val == nullptr) return o;
    GroupOp op = GroupOp::none;
    if (level == IPPROTO_IP && (name == IP_ADD_MEMBERSHIP || name == IP_DROP_MEMBERSHIP)) {
        if (len < sizeof(ip_mreq)) return o;   // ip_mreqn begins as ip_mreq does
        ip_mreq m;
        memcpy(&m, val, sizeof m);
        o.group.addr.family = AF_INET;
        memcpy(o.group.addr.bytes, &m.imr_multiaddr, 4);
        op = name == IP_ADD_MEMBERSHIP ? GroupOp::join : GroupOp::leave;
    } else if (level == IPPROTO_IPV6 && (name == IPV6_JOIN_GROUP || name == IPV6_LEAVE_GROUP)) {
        if (len < sizeof(ipv6_mreq)) return o;
        ipv6_mreq m;
        memcpy(&m, val, sizeof m);
        o.group = from_in6(m.ipv6mr_multiaddr);
        op = name == IPV6_JOIN_GROUP ? GroupOp::join : GroupOp::leave;
    } else if ((level == IPPROTO_IP || level == IPPROTO_IPV6) && (name == MCAST_JOIN_GROUP || name == MCAST_LEAVE_GROUP)) {
        if (len < sizeof(group_req)) return o;
        group_req g;
        memcpy(&g, val, sizeof g);
        if (g.gr_group.ss_family == AF_INET) {
            sockaddr_in s;
            memcpy(&s, &g.gr_group, sizeof s);
            o.group.addr.family = AF_INET;
            memcpy(o.group.addr.bytes, &s.sin_addr, 4);
        } else if (g.gr_group.ss_family == AF_INET6) {
            sockaddr_in6 s;
            memcpy(&s, &g.gr_group, sizeof s);
            o.group = from_in6(s.sin6_addr);
        } else {
            return o;
        }
        op = name == MCAST_JOIN_GROUP ? GroupOp::join : GroupOp::leave;
    } else {
        return o;
    }
    o.group.port = 0;
    if (!is_multicast(o.group)) return GroupOption{};   // the kernel's EINVAL
    o.op = op;
    return o;
}

const policy::Overlay* find_group(const policy::Policy& p, const Endpoint& group, bool any_port) noexcept {
    const policy::Overlay* first = nullptr;
    const size_t n = group.addr.family == AF_INET ? 4 : 16;
    for (const policy::Overlay& o : p.overlays()) {
        if (o.group.family == 0 || o.group.family != group.addr.family || memcmp(o.group.bytes, group.addr.bytes, n) != 0)
            continue;
        if (o.group_port == group.port) return &o;
        if (first == nullptr) first = &o;
    }
    return any_port ? first : nullptr;
}

}  // namespace gs::shim
