// libFuzzer target overlay_config_fuzz: arbitrary attribute files. The input
// is split at the first "\n--\n" into the server's attributes and a member's
// file (no separator: the member's file alone). Besides "no crash, no
// sanitizer report" it checks what must hold for any input:
//   - a configuration that builds has key_hash == key_hash(key_text());
//   - canonical text round-trips: building from overlay_attributes() gives
//     the same key hash and the same canonical values;
//   - merge either succeeds or refuses with exactly one message (-EACCES) or
//     with messages (-EINVAL); a success carries the server's key hash.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/overlay/config/config.h"

using namespace gs::overlay;

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "overlay_config_fuzz: %s\n", what);
    std::abort();
}

void check_config(const Config& c) {
    if (c.key_hash != key_hash(c.key_text())) fail("key hash is not the hash of the key text");
    Config again;
    std::vector<std::string> e;
    if (build_config(c.overlay_attributes(), again, e) != 0) fail("canonical attributes do not build");
    if (again.key_hash != c.key_hash) fail("canonical attributes hash differently");
    for (const auto& [name, value] : c.values) {
        const AttributeSpec* s = find_spec(name);
        if (s && s->scope == Scope::member) continue;   // not carried by overlay_attributes
        if (again.values.at(name) != value) fail("canonical value changed on a round trip");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const std::size_t sep = in.find("\n--\n");
    const std::string_view server_text = sep == std::string_view::npos ? std::string_view() : in.substr(0, sep);
    const std::string_view local_text = sep == std::string_view::npos ? in : in.substr(sep + 4);

    std::vector<std::string> e;
    Attributes server, local;
    const int rs = parse_attributes(server_text, "server", server, e);
    const int rl = parse_attributes(local_text, "local.conf", local, e);
    if ((rs != 0 || rl != 0) && e.empty()) fail("failure without a message");

    Config lc;
    e.clear();
    if (build_config(local, lc, e) == 0) {
        if (!e.empty()) fail("success with messages");
        check_config(lc);
    } else if (e.empty()) {
        fail("failure without a message");
    }
    if (sep == std::string_view::npos) return 0;

    Config sc, mc;
    std::vector<std::string> se;
    const bool server_ok = build_config(server, sc, se) == 0;
    e.clear();
    const int rm = merge_config(server, local, mc, e);
    if (rm == 0) {
        if (!e.empty()) fail("merge success with messages");
        check_config(mc);
        if (!server_ok) fail("merge built what the server's attributes alone could not");
        if (mc.key_hash != sc.key_hash) fail("merged key hash differs from the server's");
    } else if (rm == -EACCES) {
        if (e.size() != 1 || e[0].find("key attribute ") == std::string::npos) fail("refusal without its message");
    } else if (rm != -EINVAL || e.empty()) {
        fail("unexpected merge result");
    }
    return 0;
}
