// Which MCES element chains are possible. The rules follow from what each
// element needs from the ones before it on the send path (docs/policy.md,
// "elements"); the engine issue builds chains from the same catalogue.
#include "policy/policy.h"

namespace gs::policy {
namespace {

int position(const std::vector<std::string>& chain, std::string_view e) noexcept {
    for (size_t i = 0; i < chain.size(); ++i)
        if (chain[i] == e) return static_cast<int>(i);
    return -1;
}

}  // namespace

bool check_elements(const std::vector<std::string>& chain, ServiceClass service,
                    bool class_known, std::string& why) {
    for (size_t i = 0; i < chain.size(); ++i)
        for (size_t j = i + 1; j < chain.size(); ++j)
            if (chain[i] == chain[j]) {
                why = chain[i] + " appears twice, list each element once";
                return false;
            }
    if (chain.empty() || chain[0] != "framing") {
        why = "the chain must start with framing (it carries the header every element reads)";
        return false;
    }
    int handshake = position(chain, "handshake");
    if (handshake < 0) {
        why = "handshake is required (the cookie and the QoS offer ride on it), add it after framing";
        return false;
    }
    int auth = position(chain, "auth");
    if (auth >= 0 && auth < handshake) {
        why = "auth needs handshake before it (the keys come from the handshake)";
        return false;
    }
    int seq = position(chain, "sequencing");
    for (std::string_view e : {"sack", "ordering", "fec", "deadline"}) {
        int p = position(chain, e);
        if (p >= 0 && (seq < 0 || seq > p)) {
            why = std::string(e) + " needs sequencing before it (it works on sequence numbers)";
            return false;
        }
    }
    int sack = position(chain, "sack");
    for (std::string_view e : {"congestion", "flowcontrol"}) {
        int p = position(chain, e);
        if (p >= 0 && (sack < 0 || sack > p)) {
            why = std::string(e) + " needs sack before it (it reads the acknowledgements)";
            return false;
        }
    }
    int close = position(chain, "close");
    if (close >= 0 && close + 1 != static_cast<int>(chain.size())) {
        why = "close must be the last element";
        return false;
    }
    if (!class_known) return true;
    bool has_ordering = position(chain, "ordering") >= 0;
    switch (service) {
    case ServiceClass::reliable:
    case ServiceClass::guaranteed:
        if (sack < 0 || !has_ordering) {
            why = std::string("class ") + name(service) +
                  " needs sack and ordering (a reliable ordered stream)";
            return false;
        }
        if (service == ServiceClass::guaranteed && position(chain, "pacing") < 0) {
            why = "class guaranteed needs pacing (it holds the flow to its reserved rate)";
            return false;
        }
        break;
    case ServiceClass::realtime:
        if (position(chain, "deadline") < 0) {
            why = "class realtime needs deadline (it drops what is late)";
            return false;
        }
        if (has_ordering) {
            why = "class realtime must not contain ordering (waiting for a retransmission breaks "
                  "the delay bound), use deadline alone";
            return false;
        }
        break;
    case ServiceClass::datagram:
        if (sack >= 0 || has_ordering) {
            why = "class datagram is unreliable and unordered, remove sack and ordering";
            return false;
        }
        break;
    case ServiceClass::group:
        why = "class group is carried by an overlay, elements apply to MCES flows";
        return false;
    }
    return true;
}

}  // namespace gs::policy
