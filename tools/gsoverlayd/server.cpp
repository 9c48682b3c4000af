#include "tools/gsoverlayd/server.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace gs::overlay::server {

namespace {

bool unspecified_ip(const Addr& a) {
    static constexpr std::array<std::uint8_t, 16> zero{};
    Addr v4any = Addr::v4(0, 0);
    return a.ip == zero || a.ip == v4any.ip;
}

std::string hex64(std::uint64_t v) {
    char b[19];
    std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(v));
    return b;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

void refuse(Response& a, Status s, std::string msg) {
    a.status = s;
    a.message = std::move(msg);
}

}  // namespace

Server::Server(Limits limits) : limits_(limits) {}

void Server::event(std::string line) {
    if (events_.size() >= limits_.max_events) {
        events_.pop_front();
        ++events_dropped_;
    }
    events_.push_back(std::move(line));
}

bool Server::poll_event(std::string& line) {
    if (events_dropped_ > 0) {
        line = std::to_string(events_dropped_) + " log lines dropped (too many events at once)";
        events_dropped_ = 0;
        return true;
    }
    if (events_.empty()) return false;
    line = std::move(events_.front());
    events_.pop_front();
    return true;
}

std::size_t Server::member_count() const noexcept {
    std::size_t n = 0;
    for (const auto& [id, o] : overlays_) n += o.members.size();
    return n;
}

const Attributes* Server::attributes(std::uint64_t overlay) const {
    auto it = overlays_.find(overlay);
    return it == overlays_.end() ? nullptr : &it->second.attrs;
}

bool Server::handle(const Addr& from, std::span<const std::uint8_t> bytes, Time now,
                    std::vector<std::uint8_t>& reply) {
    ++stats_.requests;
    expire(now);
    Request q;
    const int rc = decode_request(bytes, q);
    if (rc == kNotOurs) {
        ++stats_.dropped;
        return false;
    }
    Response a;
    a.op = q.op;
    a.txid = q.txid;
    a.overlay = q.overlay;
    if (rc == kBadVersion) {
        ++stats_.bad_version;
        refuse(a, Status::version, "protocol version not supported, this server speaks version 1");
    } else if (rc != 0) {
        ++stats_.malformed;
        refuse(a, Status::malformed, std::string("malformed request (op ") + name(q.op) +
                                         ", " + std::to_string(bytes.size()) + " bytes)");
    } else {
        switch (q.op) {
        case Op::create: answer_create(q, from, a); break;
        case Op::get:
            if (Overlay* o = find(q.overlay, a)) a.attrs = o->attrs;
            break;
        case Op::join: answer_join(q, from, now, a); break;
        case Op::renew: answer_renew(q, from, now, a); break;
        case Op::leave: answer_leave(q, from, a); break;
        case Op::list: answer_list(q, now, a); break;
        case Op::stats: answer_stats(a); break;
        }
    }
    reply = encode_response(a);
    if (reply.size() > kMaxDatagram) {   // cannot happen with the bounds on CREATE; stay safe
        Response e;
        e.op = a.op;
        e.txid = a.txid;
        e.overlay = a.overlay;
        refuse(e, Status::full, "answer too large");
        reply = encode_response(e);
    }
    ++stats_.answered;
    return true;
}

Server::Overlay* Server::find(std::uint64_t id, Response& a) {
    auto it = overlays_.find(id);
    if (it != overlays_.end()) return &it->second;
    ++stats_.unknown_overlay;
    refuse(a, Status::unknown_overlay, "no overlay " + std::to_string(id) + " here: CREATE it first");
    return nullptr;
}

void Server::answer_create(const Request& q, const Addr& from, Response& a) {
    const std::string id = std::to_string(q.overlay);
    Attributes attrs;
    for (const Attribute& x : q.attrs.items()) {
        const AttributeSpec* s = find_spec(x.name);
        if (s && s->scope == Scope::member) {
            ++stats_.bad_attributes;
            refuse(a, Status::bad_attributes,
                   x.name + " is set per member: the server does not keep it");
            return;
        }
        attrs.set(x.name, x.value, Origin{"CREATE", 0});
    }
    if (const Attribute* x = attrs.find("OverlayID"); x && x->value != id) {
        ++stats_.bad_attributes;
        refuse(a, Status::bad_attributes,
               "OverlayID = " + x->value + " differs from the request's overlay " + id);
        return;
    }
    if (!attrs.find("OverlayID")) attrs.set("OverlayID", id, Origin{"CREATE", 0});
    std::vector<std::string> errors;
    Config c;
    if (build_config(attrs, c, errors) != 0) {
        ++stats_.bad_attributes;
        std::string m = errors.empty() ? std::string("bad attributes") : errors.front();
        if (errors.size() > 1) m += " (and " + std::to_string(errors.size() - 1) + " more)";
        refuse(a, Status::bad_attributes, m);
        return;
    }
    Attributes canon;
    const Attributes stored = c.overlay_attributes();
    for (const Attribute& x : stored.items()) canon.set(x.name, x.value);

    auto it = overlays_.find(q.overlay);
    if (it != overlays_.end()) {
        const std::string diff = first_key_difference(it->second.config, c);
        if (!diff.empty()) {
            ++stats_.conflicts;
            const std::string msg = "key attribute " + diff + " differs: overlay " + id + " has " +
                                    diff + " = " + it->second.config.values.at(diff) +
                                    ", the request has " + diff + " = " + c.values.at(diff);
            event("refused CREATE of overlay " + id + " from " + from.str() + ": " + msg);
            refuse(a, Status::conflict, msg);
            return;
        }
        a.created = false;
        a.attrs = it->second.attrs;
        return;
    }
    // The attributes must fit a GET answer.
    Response probe;
    probe.op = Op::get;
    probe.attrs = canon;
    if (encode_response(probe).size() > kMaxDatagram) {
        ++stats_.bad_attributes;
        refuse(a, Status::bad_attributes, "attributes too large for one answer");
        return;
    }
    if (overlays_.size() >= limits_.max_overlays) {
        ++stats_.full;
        refuse(a, Status::full,
               "the server holds its maximum of " + std::to_string(limits_.max_overlays) + " overlays");
        return;
    }
    ++stats_.created;
    event("created overlay " + id + " (" + c.values.at("Protocol") + ", key hash " +
          hex64(c.key_hash) + ") for " + from.str());
    a.created = true;
    a.attrs = canon;
    overlays_.emplace(q.overlay, Overlay{std::move(c), std::move(canon), {}});
    dirty_ = true;
}

Time Server::lease_of(std::uint32_t ms) const {
    if (ms == 0) return limits_.lease_default;
    return std::clamp(static_cast<Time>(ms) * sansio::kMillisecond, limits_.lease_min, limits_.lease_max);
}

bool Server::member_addr(const Request& q, const Addr& from, Addr& out, Response& a) const {
    out = q.member;
    if (out.port == 0) {
        refuse(a, Status::malformed, "member port 0");
        return false;
    }
    // "0.0.0.0:8081": the member means "the address you see me at".
    if (unspecified_ip(out)) out.ip = from.ip;
    return true;
}

Server::Member* Server::upsert(Overlay& o, const Addr& m, Time now, Time lease, Response& a) {
    for (Member& x : o.members) {
        if (x.addr == m) {
            x.renewed = now;
            x.expires = now + lease;
            return &x;
        }
    }
    if (o.members.size() >= limits_.max_members) {
        ++stats_.full;
        refuse(a, Status::full, "overlay " + std::to_string(o.config.overlay_id) + " has its maximum of " +
                                    std::to_string(limits_.max_members) + " members");
        return nullptr;
    }
    o.members.push_back(Member{m, now, now + lease});
    return &o.members.back();
}

void Server::answer_join(const Request& q, const Addr& from, Time now, Response& a) {
    Overlay* o = find(q.overlay, a);
    Addr m;
    if (!o || !member_addr(q, from, m, a)) return;
    std::vector<const Member*> others;
    for (const Member& x : o->members)
        if (x.addr != m && x.expires > now) others.push_back(&x);
    std::sort(others.begin(), others.end(), [](const Member* l, const Member* r) {
        return l->renewed != r->renewed ? l->renewed > r->renewed : l->addr < r->addr;
    });
    const std::size_t n = std::min<std::size_t>(others.size(), q.want);
    for (std::size_t i = 0; i < n; ++i) a.members.push_back({others[i]->addr, 0});
    const Time lease = lease_of(q.lease_ms);
    const std::size_t before = o->members.size();
    if (!upsert(*o, m, now, lease, a)) {
        a.members.clear();
        return;
    }
    ++stats_.joins;
    a.lease_ms = static_cast<std::uint32_t>(lease / sansio::kMillisecond);
    if (o->members.size() != before)
        event("join overlay " + std::to_string(q.overlay) + ": " + m.str() + " (" +
              std::to_string(o->members.size()) + " members)");
}

void Server::answer_renew(const Request& q, const Addr& from, Time now, Response& a) {
    Overlay* o = find(q.overlay, a);
    Addr m;
    if (!o || !member_addr(q, from, m, a)) return;
    const Time lease = lease_of(q.lease_ms);
    const std::size_t before = o->members.size();
    if (!upsert(*o, m, now, lease, a)) return;
    ++stats_.renews;
    a.lease_ms = static_cast<std::uint32_t>(lease / sansio::kMillisecond);
    if (o->members.size() != before)
        event("renew registered overlay " + std::to_string(q.overlay) + ": " + m.str() + " (" +
              std::to_string(o->members.size()) + " members)");
}

void Server::answer_leave(const Request& q, const Addr& from, Response& a) {
    Overlay* o = find(q.overlay, a);
    Addr m;
    if (!o || !member_addr(q, from, m, a)) return;
    auto it = std::find_if(o->members.begin(), o->members.end(),
                           [&](const Member& x) { return x.addr == m; });
    ++stats_.leaves;
    if (it == o->members.end()) return;   // idempotent
    o->members.erase(it);
    event("leave overlay " + std::to_string(q.overlay) + ": " + m.str() + " (" +
          std::to_string(o->members.size()) + " members)");
}

void Server::answer_list(const Request& q, Time now, Response& a) {
    if (q.overlay == 0) {
        for (auto it = overlays_.upper_bound(q.cursor); it != overlays_.end(); ++it) {
            if (a.overlays.size() == kMaxListOverlays) {
                a.more = true;
                break;
            }
            a.overlays.push_back({it->first, static_cast<std::uint32_t>(it->second.members.size()),
                                  static_cast<std::uint8_t>(it->second.config.protocol)});
        }
        return;
    }
    Overlay* o = find(q.overlay, a);
    if (!o) return;
    std::vector<const Member*> live;
    for (const Member& x : o->members)
        if (x.expires > now) live.push_back(&x);
    std::sort(live.begin(), live.end(), [](const Member* l, const Member* r) {
        return l->renewed != r->renewed ? l->renewed > r->renewed : l->addr < r->addr;
    });
    for (std::size_t i = 0; i < live.size() && i < kMaxListMembers; ++i)
        a.members.push_back({live[i]->addr,
                             static_cast<std::uint32_t>((live[i]->expires - now) / sansio::kMillisecond)});
}

void Server::answer_stats(Response& a) {
    a.stats = {
        {"requests", stats_.requests},   {"answered", stats_.answered},
        {"dropped", stats_.dropped},     {"malformed", stats_.malformed},
        {"bad_version", stats_.bad_version}, {"unknown_overlay", stats_.unknown_overlay},
        {"conflicts", stats_.conflicts}, {"bad_attributes", stats_.bad_attributes},
        {"full", stats_.full},           {"created", stats_.created},
        {"joins", stats_.joins},         {"renews", stats_.renews},
        {"leaves", stats_.leaves},       {"expired", stats_.expired},
        {"overlays", overlays_.size()},  {"members", member_count()},
    };
}

void Server::expire(Time now) {
    for (auto& [id, o] : overlays_) {
        auto& ms = o.members;
        for (auto it = ms.begin(); it != ms.end();) {
            if (it->expires > now) {
                ++it;
                continue;
            }
            ++stats_.expired;
            event("lease expired overlay " + std::to_string(id) + ": " + it->addr.str() + " (" +
                  std::to_string(ms.size() - 1) + " members)");
            it = ms.erase(it);
        }
    }
}

Time Server::next_expiry() const noexcept {
    Time t = sansio::kNever;
    for (const auto& [id, o] : overlays_)
        for (const Member& m : o.members) t = std::min(t, m.expires);
    return t;
}

std::string Server::save() const {
    std::string s =
        "# gsoverlayd state: the overlays and their attributes (members re-register with RENEW)\n"
        "[state]\nFormat = 1\n";
    for (const auto& [id, o] : overlays_) s += "\n[overlay]\n" + o.attrs.to_text();
    return s;
}

int Server::load(std::string_view text, std::string_view source, std::vector<std::string>& errors) {
    const std::string src(source);
    const std::size_t before = errors.size();
    std::vector<Attributes> blocks;
    enum class Section { none, state, overlay } section = Section::none;
    bool format_seen = false;
    int line_no = 0;
    while (!text.empty()) {
        ++line_no;
        const std::size_t nl = text.find('\n');
        const std::string_view line = trim(text.substr(0, nl));
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        const std::string where = src + ":" + std::to_string(line_no) + ": ";
        if (line.empty() || line.front() == '#') continue;
        if (line == "[state]") {
            section = Section::state;
            continue;
        }
        if (line == "[overlay]") {
            section = Section::overlay;
            if (blocks.size() >= limits_.max_overlays) {
                errors.push_back(where + "more overlays than --max-overlays (" +
                                 std::to_string(limits_.max_overlays) + ")");
                return -EINVAL;
            }
            blocks.emplace_back();
            continue;
        }
        const std::size_t eq = line.find('=');
        const std::string_view name = eq == std::string_view::npos ? line : trim(line.substr(0, eq));
        const std::string_view value = eq == std::string_view::npos ? "" : trim(line.substr(eq + 1));
        if (eq == std::string_view::npos || !valid_name(name) || value.size() > kMaxValueBytes) {
            errors.push_back(where + "expected '[overlay]' or 'Attribute = value'");
            continue;
        }
        if (section == Section::state) {
            if (name != "Format" || value != "1") {
                errors.push_back(where + std::string(name) + " = " + std::string(value) +
                                 ": expected Format = 1");
                return -EINVAL;
            }
            format_seen = true;
        } else if (section == Section::overlay) {
            Attributes& b = blocks.back();
            if (b.find(name) || b.size() >= kMaxAttributes)
                errors.push_back(where + std::string(name) + " given twice or too many attributes");
            else
                b.set(name, value, Origin{src, line_no});
        } else {
            errors.push_back(where + "attribute outside a section");
        }
    }
    if (!format_seen) errors.push_back(src + ": no '[state]' section with Format = 1");
    std::map<std::uint64_t, Overlay> loaded;
    for (const Attributes& b : blocks) {
        Config c;
        if (build_config(b, c, errors) != 0) continue;
        if (loaded.count(c.overlay_id)) {
            errors.push_back(c.origins["OverlayID"].str() + ": overlay " +
                             std::to_string(c.overlay_id) + " given twice");
            continue;
        }
        Attributes canon;
        const Attributes stored = c.overlay_attributes();
        for (const Attribute& x : stored.items()) canon.set(x.name, x.value);
        const std::uint64_t id = c.overlay_id;
        loaded.emplace(id, Overlay{std::move(c), std::move(canon), {}});
    }
    if (errors.size() != before) return -EINVAL;
    overlays_ = std::move(loaded);
    dirty_ = false;
    return 0;
}

}  // namespace gs::overlay::server
