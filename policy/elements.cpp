// Which MCES element chains are possible. There is one set of rules, the
// connection's own (core/mces/conn/chain.cpp make_chain, compiled into this
// library): a chain this check accepts is a chain a connection builds, so a
// policy line never turns into a silent fallback to the kernel at connect().
#include "policy/policy.h"

#include "core/mces/conn/chain.h"

#include <optional>

namespace gs::policy {
namespace {

// The policy's catalogue and class numbers are the connection's.
constexpr bool same_catalogue() {
    if (mces_elements.size() != mces::kElementNames.size()) return false;
    for (size_t i = 0; i < mces_elements.size(); ++i)
        if (mces_elements[i] != mces::kElementNames[i]) return false;
    return true;
}
static_assert(same_catalogue(), "policy::mces_elements must list mces::kElementNames in order");
static_assert(static_cast<uint8_t>(ServiceClass::datagram) == mces::kClassDatagram &&
              static_cast<uint8_t>(ServiceClass::reliable) == mces::kClassReliable &&
              static_cast<uint8_t>(ServiceClass::guaranteed) == mces::kClassGuaranteed &&
              static_cast<uint8_t>(ServiceClass::realtime) == mces::kClassRealtime &&
              static_cast<uint8_t>(ServiceClass::group) == mces::kClassGroup);

}  // namespace

bool check_elements(const std::vector<std::string>& chain, ServiceClass service,
                    bool class_known, std::string& why) {
    std::optional<uint8_t> cls;
    if (class_known) cls = static_cast<uint8_t>(service);
    mces::ChainResult r = mces::make_chain(chain, cls);
    if (r.ok()) return true;
    why = std::move(r.error);
    return false;
}

}  // namespace gs::policy
