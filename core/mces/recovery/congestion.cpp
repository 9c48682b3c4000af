#include "core/mces/recovery/congestion.h"

#include <algorithm>
#include <cerrno>

#include "core/mces/recovery/cubic.h"
#include "core/mces/recovery/newreno.h"

namespace gs::mces {

std::uint64_t initial_window(const CcConfig& cfg) noexcept {
    if (cfg.initial_window != 0) return cfg.initial_window;
    const std::uint64_t mss = cfg.mss;
    return std::min<std::uint64_t>(10 * mss, std::max<std::uint64_t>(14720, 2 * mss));
}

std::string_view congestion_controller_names() noexcept { return "cubic, newreno"; }

int make_congestion_controller(std::string_view name, const CcConfig& cfg,
                               std::unique_ptr<CongestionController>& out, std::string* error) {
    if (name == "cubic") {
        out = std::make_unique<Cubic>(cfg);
        return 0;
    }
    if (name == "newreno") {
        out = std::make_unique<NewReno>(cfg);
        return 0;
    }
    if (error) {
        *error = "unknown congestion controller '";
        error->append(name);
        error->append("' (known: ");
        error->append(congestion_controller_names());
        error->append(")");
    }
    return -ENOENT;
}

}  // namespace gs::mces
