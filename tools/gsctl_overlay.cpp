// gsctl overlay status: what an overlay server (gsoverlayd, docs/overlay.md)
// knows: its overlays, or one overlay's attributes and members with what is
// left of their leases.
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "core/overlay/config/server_wire.h"
#include "tools/gsoverlayd/client.h"

namespace srv = gs::overlay::server;

namespace {

constexpr const char* kOverlayUsage =
    "usage: gsctl overlay status [--server HOST:PORT] [--json] [OVERLAY_ID]\n"
    "       gsctl overlay members [OVERLAY_ID] [--root ADDRESS] [--json]\n"
    "\n"
    "status:\n"
    "What the overlay server knows (default server 127.0.0.1:8081, gsoverlayd's\n"
    "default): without OVERLAY_ID every overlay with its protocol and member count;\n"
    "with it the overlay's attributes (key ones marked *) and its members with the\n"
    "seconds left of their leases. Members renew every Lease/3, so a live member\n"
    "never runs out. Exit status: 0 ok, 1 the server does not answer or does not\n"
    "know the overlay, 2 usage error.\n"
    "\n"
    "members: what the members running on this host see: their neighbours and,\n"
    "with --root, their parent and children in that root's tree, drawn as a tree\n"
    "(gsctl overlay members --help).\n";

std::string json_str(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if (static_cast<unsigned char>(c) < 0x20) {
            char b[8];
            snprintf(b, sizeof b, "\\u%04x", c);
            o += b;
            continue;
        }
        o += c;
    }
    return o + "\"";
}

const char* proto_name(uint8_t p) { return p == 1 ? "DT" : p == 2 ? "HC" : "?"; }

int fail_call(const std::string& server, int rc, const srv::Response* a) {
    if (rc != 0)
        fprintf(stderr, "gsctl: no overlay server answers at %s (%s): start gsoverlayd there or give --server\n",
                server.c_str(), strerror(-rc));
    else
        fprintf(stderr, "gsctl: the overlay server at %s says %s%s%s\n", server.c_str(), srv::name(a->status),
                a->message.empty() ? "" : ": ", a->message.c_str());
    return 1;
}

}  // namespace

int cmd_overlay_members(const std::vector<std::string>& args);   // gsctl.cpp: asks the control sockets

int cmd_overlay(const std::vector<std::string>& args) {
    if (args.empty() || args[0] == "-h" || args[0] == "--help") {
        fputs(kOverlayUsage, args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    if (args[0] == "members") return cmd_overlay_members(std::vector<std::string>(args.begin() + 1, args.end()));
    if (args[0] != "status") {
        fprintf(stderr, "gsctl: unknown overlay command '%s'\n\n%s", args[0].c_str(), kOverlayUsage);
        return 2;
    }
    std::string server = "127.0.0.1:8081";
    bool json = false;
    std::string id_text;
    for (size_t i = 1; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            fputs(kOverlayUsage, stdout);
            return 0;
        } else if (a == "--json") {
            json = true;
        } else if (a == "--server") {
            if (++i == args.size()) {
                fprintf(stderr, "gsctl: --server needs HOST:PORT\n\n%s", kOverlayUsage);
                return 2;
            }
            server = args[i];
        } else if (!a.empty() && a[0] != '-' && id_text.empty()) {
            id_text = a;
        } else {
            fprintf(stderr, "gsctl: unexpected argument '%s'\n\n%s", a.c_str(), kOverlayUsage);
            return 2;
        }
    }
    uint64_t id = 0;
    if (!id_text.empty()) {
        char* end = nullptr;
        errno = 0;
        id = strtoull(id_text.c_str(), &end, 10);
        if (errno != 0 || *end != 0 || id == 0) {
            fprintf(stderr, "gsctl: OVERLAY_ID '%s': give the overlay's number (OverlayID), 1 or more\n", id_text.c_str());
            return 2;
        }
    }
    srv::Client c;
    if (int rc = c.open(server); rc != 0) {
        fprintf(stderr, "gsctl: --server %s: %s: write HOST:PORT, e.g. 127.0.0.1:8081\n", server.c_str(), strerror(-rc));
        return 2;
    }
    if (id == 0) {   // every overlay, page by page
        std::vector<srv::OverlaySummary> all;
        srv::Request q;
        q.op = srv::Op::list;
        for (;;) {
            srv::Response a;
            int rc = c.call(q, a);
            if (rc != 0 || a.status != srv::Status::ok) return fail_call(server, rc, &a);
            all.insert(all.end(), a.overlays.begin(), a.overlays.end());
            if (!a.more || a.overlays.empty()) break;
            q.cursor = a.overlays.back().id;
        }
        if (json) {
            printf("{\"server\":%s,\"overlays\":[", json_str(server).c_str());
            for (size_t i = 0; i < all.size(); ++i)
                printf("%s{\"id\":%llu,\"protocol\":\"%s\",\"members\":%u}", i ? "," : "",
                       static_cast<unsigned long long>(all[i].id), proto_name(all[i].protocol), all[i].members);
            printf("]}\n");
            return 0;
        }
        printf("%-20s %-8s %s\n", "OVERLAY", "PROTOCOL", "MEMBERS");
        for (const auto& o : all)
            printf("%-20llu %-8s %u\n", static_cast<unsigned long long>(o.id), proto_name(o.protocol), o.members);
        if (all.empty()) printf("(no overlays at %s)\n", server.c_str());
        return 0;
    }
    srv::Request q;
    q.op = srv::Op::get;
    q.overlay = id;
    srv::Response attrs;
    int rc = c.call(q, attrs);
    if (rc != 0 || attrs.status != srv::Status::ok) return fail_call(server, rc, &attrs);
    q.op = srv::Op::list;
    srv::Response members;
    rc = c.call(q, members);
    if (rc != 0 || members.status != srv::Status::ok) return fail_call(server, rc, &members);
    std::string keys;
    if (const auto* k = attrs.attrs.find("KeyAttributes")) keys = "," + k->value + ",";
    auto is_key = [&](const std::string& n) {
        return n == "OverlayID" || n == "KeyAttributes" || n == "Protocol" || keys.find("," + n + ",") != std::string::npos;
    };
    if (json) {
        printf("{\"server\":%s,\"id\":%llu,\"attributes\":{", json_str(server).c_str(), static_cast<unsigned long long>(id));
        bool first = true;
        for (const auto& a : attrs.attrs.items()) {
            printf("%s%s:%s", first ? "" : ",", json_str(a.name).c_str(), json_str(a.value).c_str());
            first = false;
        }
        printf("},\"members\":[");
        for (size_t i = 0; i < members.members.size(); ++i)
            printf("%s{\"address\":%s,\"lease_left_ms\":%u}", i ? "," : "", json_str(members.members[i].addr.str()).c_str(),
                   members.members[i].remaining_ms);
        printf("]}\n");
        return 0;
    }
    printf("overlay %llu at %s\n", static_cast<unsigned long long>(id), server.c_str());
    for (const auto& a : attrs.attrs.items()) printf("  %s %s = %s\n", is_key(a.name) ? "*" : " ", a.name.c_str(), a.value.c_str());
    printf("%-28s %s\n", "MEMBER", "LEASE LEFT");
    for (const auto& m : members.members) printf("%-28s %.1f s\n", m.addr.str().c_str(), m.remaining_ms / 1000.0);
    if (members.members.empty()) printf("(no members)\n");
    return 0;
}
