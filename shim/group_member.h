// Opening an overlay member in the engine: what the overlay socket API
// (gs_overlay_open, shim/overlay_api.cpp) and the shim's legacy multicast
// groups (shim/group.cpp) both do, once. Implemented in overlay_api.cpp.
//
// Steps (docs/overlay.md "How a member joins"): parse the attributes; with
// a Server, GET (or CREATE) the overlay's attributes and merge them; bind
// NodeAddress; JOIN at the server for members to bootstrap from; build the
// node; start it in the engine (OverlayHost) with its lease kept beside it
// (OverlayCompanion: RENEW, LEAVE at the end). The node is started, not yet
// joined: a `join` request on `fd` (or OverlayRequest::join) does that.
//
// Not for signal handlers: allocates, and talks to the overlay server
// (up to 3 x 300 ms per request).
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/common/sansio.h"
#include "core/engine/engine.h"
#include "core/engine/overlay_host.h"

namespace gs::shim {

struct OverlayMember {
    int fd = -1;                              // the caller's end of the member's SOCK_SEQPACKET pair
    engine::Engine* e = nullptr;
    engine::OverlayHost* host = nullptr;      // engine thread only (and while open)
    engine::OverlayShared shared;             // must outlive the host (shared.closed, or on_closed)
    std::size_t max_payload = 0;              // the overlay's MaxPayload
    sansio::Addr self;                        // where the node is bound
    std::uint64_t overlay_id = 0;
};

// Opens `m` (fd, e, host, max_payload, self, overlay_id set) from attribute
// text (`source` names it in messages: a file, "[overlay NAME]"). 0, or
// -errno: EINVAL (bad attributes), EACCES (a key attribute differs from the
// overlay's), ETIMEDOUT / ECONNREFUSED (the server), EAGAIN (no engine),
// what bind says for NodeAddress. Messages, one sentence each without a
// prefix, are appended to `msgs` for the caller to log: the reasons of a
// failure, and on success what did not go as asked (JOIN refused: joining
// through Bootstrap only). m.shared.on_closed, if used, is set before.
// May throw std::bad_alloc.
int open_overlay_member(std::string_view text, const char* source, OverlayMember& m,
                        std::vector<std::string>& msgs);

using engine::run_on_engine;   // core/engine/engine.h

}  // namespace gs::shim
