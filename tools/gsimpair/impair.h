// The link impairment model shared by the network simulator (tests/sim) and
// the UDP impairment relay (tools/gsimpair): loss (independent or
// Gilbert-Elliott bursts), delay and jitter, reordering, duplication,
// corruption, a bandwidth limit with a drop-tail queue, and an MTU.
//
// Pure and deterministic: no clock, no socket, no allocation per packet. The
// caller hands in (size, now) and gets a Decision back; the same seed and the
// same calls give the same decisions on every platform and library version
// (the PRNG and the distributions are written here, not taken from <random>).
//
// Order of the stages for one packet (the same order as Linux netem, with the
// queue where a real link has it):
//   1. size > mtu                         -> dropped (Drop::mtu)
//   2. loss: independent, or the Gilbert-Elliott state machine
//                                          -> dropped (Drop::loss / Drop::burst)
//   3. bandwidth: the packet waits for the bytes queued before it and then
//      takes size*8/rate to serialize; if the backlog (bytes still to
//      serialize) plus this packet exceeds queue_limit -> dropped (Drop::queue)
//   4. propagation: + delay + jitter (uniform in [-jitter, +jitter], the
//      total clamped at 0); packets keep FIFO order unless jitter_reorders
//   5. reorder: with reorder_prob the packet gets reorder_delay more (later
//      packets overtake it); it does not hold up the FIFO order of others
//   6. duplicate: with dup_prob a second, identical delivery at the same time
//   7. corrupt: with corrupt_prob one random bit of the first delivery flips
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/common/sansio.h"

namespace gs::impair {

using sansio::Time;

// xoshiro256** seeded through splitmix64 (Blackman & Vigna). Small, fast and
// its output is fixed by this code, unlike std:: distributions.
class Rng {
public:
    explicit Rng(std::uint64_t seed = 0) noexcept { reseed(seed); }
    void reseed(std::uint64_t seed) noexcept;
    std::uint64_t next() noexcept;
    // Uniform in [0, 1) with 53 random bits.
    double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
    // Uniform in [0, n); n == 0 gives 0. Multiply-high: bias below 2^-64 * n.
    std::uint64_t below(std::uint64_t n) noexcept {
        return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
    }
    // True with probability p. Draws nothing when p <= 0 or p >= 1, so a link
    // with an impairment turned off costs no random numbers.
    bool chance(double p) noexcept {
        if (p <= 0.0) return false;
        if (p >= 1.0) return true;
        return uniform() < p;
    }

private:
    std::uint64_t s_[4]{};
};

// splitmix64 step: also used to derive per-link seeds from one master seed.
std::uint64_t mix64(std::uint64_t x) noexcept;

// Gilbert-Elliott two-state burst loss. In the good state a packet is lost
// with LinkParams::loss, in the bad state with loss_bad. The state moves
// once per packet, before the loss draw.
struct BurstParams {
    bool enabled = false;
    double p_good_to_bad = 0.0;
    double p_bad_to_good = 1.0;
    double loss_bad = 1.0;
};

struct LinkParams {
    double loss = 0.0;                 // probability in [0, 1]
    BurstParams burst;
    Time delay = 0;                    // one-way propagation delay, ns
    Time jitter = 0;                   // uniform +-jitter around delay, ns
    bool jitter_reorders = false;      // false: deliveries keep send order
    double reorder_prob = 0.0;
    Time reorder_delay = 10 * sansio::kMillisecond;   // extra delay of a reordered packet
    double dup_prob = 0.0;
    double corrupt_prob = 0.0;
    std::uint64_t rate_bps = 0;        // bit/s; 0 = unlimited (no serialization delay)
    std::uint64_t queue_limit = 0;     // bytes waiting or serializing; 0 = unlimited
    std::uint32_t mtu = 0;             // largest datagram passed; 0 = unlimited

    // "" when the parameters make sense, otherwise what is wrong (e.g. a
    // probability outside [0, 1], a negative delay).
    std::string validate() const;
};

enum class Drop : std::uint8_t { none = 0, mtu, loss, burst, queue };
const char* drop_name(Drop d) noexcept;   // "none", "mtu", "loss", "burst", "queue"

struct Delivery {
    Time at = 0;                // absolute time the packet arrives
    std::int64_t flip_bit = -1; // bit index (0 = lowest bit of byte 0) to flip, -1 none
};

struct Decision {
    Drop drop = Drop::none;
    int count = 0;              // deliveries: 0 when dropped, else 1 or 2
    Delivery d[2];
};

// Counters per link (and per relay direction). Every packet offered is
// counted once in packets_in and either once in one dropped_* or once in
// delivered; duplicates add to delivered and duplicated.
struct Counters {
    std::uint64_t packets_in = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t delivered = 0;        // deliveries scheduled (copies included)
    std::uint64_t bytes_delivered = 0;
    std::uint64_t dropped_mtu = 0;
    std::uint64_t dropped_loss = 0;     // independent loss, or good-state loss with bursts
    std::uint64_t dropped_burst = 0;    // lost in the Gilbert-Elliott bad state
    std::uint64_t dropped_queue = 0;    // drop-tail: queue_limit exceeded
    std::uint64_t reordered = 0;
    std::uint64_t duplicated = 0;
    std::uint64_t corrupted = 0;
    std::uint64_t queue_peak_bytes = 0; // largest backlog seen, this packet included

    std::uint64_t dropped() const noexcept {
        return dropped_mtu + dropped_loss + dropped_burst + dropped_queue;
    }
    Counters& operator+=(const Counters& o) noexcept;
    // {"packets_in":..,...} on one line, the keys named as the members.
    std::string json() const;
};

// The state of one direction of one link (burst state, serializer, FIFO
// clamp, PRNG) and its counters, without the parameters: a simulator with a
// million links keeps one LinkParams per distinct setting, not per link.
class LinkState {
public:
    explicit LinkState(std::uint64_t seed = 0) noexcept : rng_(seed) {}

    // Decides the fate of one packet of `size` bytes offered at `now` on a
    // link with parameters `p`. `now` must not go backwards between calls.
    // Parameters may change between calls; the state carries over.
    Decision offer(const LinkParams& p, std::size_t size, Time now) noexcept;

    const Counters& counters() const noexcept { return c_; }
    // Bytes still to serialize at `now`: the queued packets plus what is left
    // of the one on the wire, i.e. (tx_free_at - now) * rate / 8, rounded
    // down. 0 without a rate. This is the figure queue_limit is checked on.
    std::uint64_t backlog(const LinkParams& p, Time now) const noexcept;

private:
    Rng rng_;
    Counters c_;
    Time tx_free_at_ = 0;         // when the serializer finishes the last queued packet
    Time last_fifo_at_ = 0;       // latest in-order delivery time handed out
    bool bad_ = false;            // Gilbert-Elliott state
};

// A LinkState with its own parameters: one direction of the relay, a test.
class Link {
public:
    Link() = default;
    Link(const LinkParams& p, std::uint64_t seed) : params_(p), st_(seed) {}

    // Changes the parameters and keeps the state (queue, burst state, PRNG).
    void set_params(const LinkParams& p) { params_ = p; }
    const LinkParams& params() const noexcept { return params_; }
    Decision offer(std::size_t size, Time now) noexcept { return st_.offer(params_, size, now); }
    const Counters& counters() const noexcept { return st_.counters(); }
    std::uint64_t backlog(Time now) const noexcept { return st_.backlog(params_, now); }

private:
    LinkParams params_;
    LinkState st_;
};

// Time to serialize `bytes` at `rate_bps`, rounded up to whole ns.
Time serialization_time(std::uint64_t bytes, std::uint64_t rate_bps) noexcept;

// Applies a delivery's bit flip to a copy of the bytes (no-op for -1).
void apply_flip(std::span<std::uint8_t> bytes, std::int64_t flip_bit) noexcept;

// ---- option strings as users type them --------------------------------------
// Each returns 0 and sets `out`, or -EINVAL and sets *err (when err is not
// null) to a message naming the option, the value and what was expected:
//   --loss: '5x' is not a probability: expected a percentage such as 5% or a fraction such as 0.05, in [0, 1]
// `option` is only used in messages ("--loss", "loss").

// "5%", "0.05", "0", "100%"
int parse_probability(std::string_view option, std::string_view text, double& out, std::string* err);
// "20ms", "1.5s", "250us", "100ns", "0"; a bare nonzero number is refused (unit needed)
int parse_duration(std::string_view option, std::string_view text, Time& out, std::string* err);
// bit/s: "10mbit", "1.5gbit", "64kbit", "9600bit", "10mbit/s" (any case);
// bytes/s: "2MB/s", "500KB/s", "100B/s", "1MiB/s" (capital B; times 8).
// k/m/g are powers of 1000, ki/mi/gi of 1024. "10mbps" is refused as
// ambiguous (tc reads it as bytes, most people as bits). Result > 0.
int parse_rate(std::string_view option, std::string_view text, std::uint64_t& out, std::string* err);
// "1500", "1500B", "256KB", "64KiB", "1MB", "1MiB" (KB = 1000, KiB = 1024)
int parse_size(std::string_view option, std::string_view text, std::uint64_t& out, std::string* err);
// Gilbert-Elliott: "P_GB,P_BG" or "P_GB,P_BG,LOSS_BAD", each a probability, e.g. "1%,30%" or "1%,30%,90%"
int parse_burst(std::string_view option, std::string_view text, BurstParams& out, std::string* err);

// Sets one LinkParams field from a (name, value) pair, names as the relay's
// options without dashes: loss, burst, delay, jitter, reorder, reorder-delay,
// duplicate, corrupt, rate, queue, mtu. Unknown names give -EINVAL too.
int set_link_option(LinkParams& p, std::string_view name, std::string_view value, std::string* err);

}  // namespace gs::impair
