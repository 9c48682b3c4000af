// The overlay members this process runs, for `gsctl overlay members`
// (docs/overlay.md): each member's view of the overlay — its address, its
// neighbours, and its parent and children in the spanning tree of a root.
//
// The registry is engine-thread state: members are added by whoever starts
// them (on the engine thread, right after OverlayHost::start) and removed by
// the host itself when it is freed, so an entry never outlives its node.
// The control socket answers "overlays [ROOT]" with overlays_json(ROOT).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gs::engine {

class OverlayHost;

// Engine thread. `overlay_id` and `protocol` ("DT", "HC": a static string)
// label the member in the answer. Registering twice, or more than
// kMaxListedMembers, is ignored (the member then just is not listed).
inline constexpr int kMaxListedMembers = 256;
void overlay_listed(OverlayHost* h, uint64_t overlay_id, const char* protocol) noexcept;
void overlay_unlisted(OverlayHost* h) noexcept;

// Engine thread. `args`: "" or a root's logical address in decimal. One
// JSON object: {"overlays":[{"overlay":ID,"protocol":"HC","address":A,
// "joined":true,"neighbors":[...],"root":R,"parent":P|null,"children":[...],
// "stats":{...}}, ...]} ("root" and its fields only when a root was given;
// "parent" is null at the root). An `args` that is not a number gives
// {"error":"..."}. May throw std::bad_alloc (the control socket answers an error).
std::string overlays_json(std::string_view args);

}  // namespace gs::engine
