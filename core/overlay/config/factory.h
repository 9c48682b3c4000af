// From a configuration (config.h) to a running overlay node: the DT and HC
// node config structs, and a factory that constructs the node the Protocol
// attribute names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/overlay/config/config.h"
#include "core/overlay/dt/dt_node.h"
#include "core/overlay/hc/hc_node.h"
#include "core/overlay/node.h"

namespace gs::overlay {

dt::DtConfig to_dt_config(const Config& c);
hc::HcConfig to_hc_config(const Config& c);

// The DT logical address: Coordinates when given, else a point drawn from
// `seed` in [0, 2^24)^2 (never kNoAddress).
LogicalAddress dt_coordinates(const Config& c, std::uint64_t seed);

// Constructs the node for `c`: DtNode or HcNode with c's key hash.
// `self`: the node's underlay address (what the owner bound NodeAddress to);
// `seed`: all the node's randomness; `members`: bootstrap members from the
// overlay server (freshest first), tried before c.bootstrap; `self` and
// duplicates are dropped. Returns the node (not yet joined: call join()), or
// nullptr with `error` set: DataTransport = TCP (this build's nodes carry
// data over their UDP node address only).
std::unique_ptr<Node> make_node(const Config& c, const sansio::Addr& self, std::uint64_t seed,
                                const std::vector<sansio::Addr>& members, std::string& error);

}  // namespace gs::overlay
