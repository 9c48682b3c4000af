#include "core/engine/overlay_status.h"

#include <charconv>
#include <cstdio>
#include <utility>

#include "core/engine/overlay_host.h"

namespace gs::engine {

namespace {

struct Listed {
    OverlayHost* host;
    uint64_t id;
    const char* protocol;
};
// Engine thread only: no lock. A fixed table: registering never allocates.
Listed g_listed[kMaxListedMembers];
int g_count = 0;

void add_u64(std::string& s, uint64_t v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    s.append(b, r.ptr);
}

void add_list(std::string& s, const std::vector<overlay::LogicalAddress>& v) {
    s += '[';
    for (size_t i = 0; i < v.size(); ++i) {
        if (i) s += ',';
        add_u64(s, v[i]);
    }
    s += ']';
}

}  // namespace

void overlay_listed(OverlayHost* h, uint64_t overlay_id, const char* protocol) noexcept {
    for (int i = 0; i < g_count; ++i)
        if (g_listed[i].host == h) return;
    if (g_count == kMaxListedMembers) return;
    g_listed[g_count++] = {h, overlay_id, protocol};
}

void overlay_unlisted(OverlayHost* h) noexcept {
    for (int i = 0; i < g_count; ++i)
        if (g_listed[i].host == h) {
            g_listed[i] = g_listed[--g_count];
            return;
        }
}

std::string overlays_json(std::string_view args) {
    while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
    while (!args.empty() && args.back() == ' ') args.remove_suffix(1);
    bool with_root = !args.empty();
    uint64_t root = overlay::kNoAddress;
    if (with_root) {
        auto r = std::from_chars(args.data(), args.data() + args.size(), root);
        if (r.ec != std::errc() || r.ptr != args.data() + args.size())
            return "{\"error\":\"the root must be a logical address in decimal (gsctl overlay members lists them)\"}\n";
    }
    std::string s = "{\"overlays\":[";
    for (int i = 0; i < g_count; ++i) {
        const Listed& l = g_listed[i];
        overlay::Node& n = l.host->node();
        if (i) s += ',';
        s += "{\"overlay\":";
        add_u64(s, l.id);
        s += ",\"protocol\":\"";
        s += l.protocol;
        s += "\",\"joined\":";
        s += n.joined() ? "true" : "false";
        s += ",\"address\":";
        if (n.joined()) add_u64(s, n.address());
        else s += "null";
        s += ",\"neighbors\":";
        add_list(s, n.neighbors());
        if (with_root) {
            s += ",\"root\":";
            add_u64(s, root);
            s += ",\"parent\":";
            std::optional<overlay::LogicalAddress> p = n.parent(root);
            if (p) add_u64(s, *p);
            else s += "null";
            s += ",\"children\":";
            add_list(s, n.children(root));
        }
        const overlay::NodeStats& st = n.stats();
        const std::pair<const char*, uint64_t> counters[] = {
            {"control_sent", st.control_sent},     {"control_bytes_sent", st.control_bytes_sent},
            {"data_sent", st.data_sent},           {"delivered", st.delivered},
            {"dropped_malformed", st.dropped_malformed}, {"dropped_foreign", st.dropped_foreign},
            {"dropped_duplicate", st.dropped_duplicate},
        };
        s += ",\"stats\":{";
        for (const auto& [name, value] : counters) {
            if (s.back() != '{') s += ',';
            s += '"';
            s += name;
            s += "\":";
            add_u64(s, value);
        }
        s += "}}";
    }
    s += "]}\n";
    return s;
}

}  // namespace gs::engine
