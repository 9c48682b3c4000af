#include "core/engine/control.h"

#include <errno.h>

namespace gs::engine {

int control_start(SnapshotFn) noexcept { return -ENOSYS; }
std::string control_dir() { return ""; }
std::string control_path(pid_t) { return ""; }

}  // namespace gs::engine
