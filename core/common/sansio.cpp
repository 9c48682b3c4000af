#include "core/common/sansio.h"

#include <arpa/inet.h>

namespace gs::sansio {

std::string Addr::str() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (is_v4()) {
        inet_ntop(AF_INET, ip.data() + 12, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(port);
    }
    inet_ntop(AF_INET6, ip.data(), buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(port);
}

}  // namespace gs::sansio
