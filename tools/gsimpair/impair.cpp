#include "tools/gsimpair/impair.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace gs::impair {

// ---- PRNG -------------------------------------------------------------------

std::uint64_t mix64(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void Rng::reseed(std::uint64_t seed) noexcept {
    // splitmix64 as the xoshiro authors advise: never all-zero state.
    std::uint64_t x = seed;
    for (auto& s : s_) {
        s = mix64(x);
        x += 0x9e3779b97f4a7c15ull;
    }
}

std::uint64_t Rng::next() noexcept {
    auto rotl = [](std::uint64_t v, int k) { return (v << k) | (v >> (64 - k)); };
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

// ---- parameters and counters --------------------------------------------------

namespace {

bool is_prob(double p) { return std::isfinite(p) && p >= 0.0 && p <= 1.0; }

}  // namespace

std::string LinkParams::validate() const {
    if (!is_prob(loss)) return "loss must be a probability in [0, 1]";
    if (!is_prob(reorder_prob)) return "reorder must be a probability in [0, 1]";
    if (!is_prob(dup_prob)) return "duplicate must be a probability in [0, 1]";
    if (!is_prob(corrupt_prob)) return "corrupt must be a probability in [0, 1]";
    if (burst.enabled && (!is_prob(burst.p_good_to_bad) || !is_prob(burst.p_bad_to_good) ||
                          !is_prob(burst.loss_bad)))
        return "burst probabilities must be in [0, 1]";
    if (delay < 0) return "delay must not be negative";
    if (jitter < 0) return "jitter must not be negative";
    if (reorder_delay < 0) return "reorder delay must not be negative";
    return {};
}

const char* drop_name(Drop d) noexcept {
    switch (d) {
    case Drop::none: return "none";
    case Drop::mtu: return "mtu";
    case Drop::loss: return "loss";
    case Drop::burst: return "burst";
    case Drop::queue: return "queue";
    }
    return "?";
}

Counters& Counters::operator+=(const Counters& o) noexcept {
    packets_in += o.packets_in;
    bytes_in += o.bytes_in;
    delivered += o.delivered;
    bytes_delivered += o.bytes_delivered;
    dropped_mtu += o.dropped_mtu;
    dropped_loss += o.dropped_loss;
    dropped_burst += o.dropped_burst;
    dropped_queue += o.dropped_queue;
    reordered += o.reordered;
    duplicated += o.duplicated;
    corrupted += o.corrupted;
    if (o.queue_peak_bytes > queue_peak_bytes) queue_peak_bytes = o.queue_peak_bytes;
    return *this;
}

std::string Counters::json() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "{\"packets_in\":%llu,\"bytes_in\":%llu,\"delivered\":%llu,\"bytes_delivered\":%llu,"
                  "\"dropped_mtu\":%llu,\"dropped_loss\":%llu,\"dropped_burst\":%llu,"
                  "\"dropped_queue\":%llu,\"reordered\":%llu,\"duplicated\":%llu,\"corrupted\":%llu,"
                  "\"queue_peak_bytes\":%llu}",
                  (unsigned long long)packets_in, (unsigned long long)bytes_in,
                  (unsigned long long)delivered, (unsigned long long)bytes_delivered,
                  (unsigned long long)dropped_mtu, (unsigned long long)dropped_loss,
                  (unsigned long long)dropped_burst, (unsigned long long)dropped_queue,
                  (unsigned long long)reordered, (unsigned long long)duplicated,
                  (unsigned long long)corrupted, (unsigned long long)queue_peak_bytes);
    return buf;
}

// ---- the model ----------------------------------------------------------------

Time serialization_time(std::uint64_t bytes, std::uint64_t rate_bps) noexcept {
    if (rate_bps == 0) return 0;
    const unsigned __int128 num = static_cast<unsigned __int128>(bytes) * 8u * 1'000'000'000u;
    return static_cast<Time>((num + rate_bps - 1) / rate_bps);
}

void apply_flip(std::span<std::uint8_t> bytes, std::int64_t flip_bit) noexcept {
    if (flip_bit < 0) return;
    const auto byte = static_cast<std::size_t>(flip_bit / 8);
    if (byte >= bytes.size()) return;
    bytes[byte] ^= static_cast<std::uint8_t>(1u << (flip_bit % 8));
}

std::uint64_t LinkState::backlog(const LinkParams& p, Time now) const noexcept {
    if (p.rate_bps == 0 || tx_free_at_ <= now) return 0;
    const unsigned __int128 rem = static_cast<unsigned __int128>(tx_free_at_ - now);
    return static_cast<std::uint64_t>(rem * p.rate_bps / 8'000'000'000u);
}

Decision LinkState::offer(const LinkParams& p, std::size_t size, Time now) noexcept {
    Decision dec;
    ++c_.packets_in;
    c_.bytes_in += size;

    if (p.mtu != 0 && size > p.mtu) {
        ++c_.dropped_mtu;
        dec.drop = Drop::mtu;
        return dec;
    }

    if (p.burst.enabled) {
        // Move the two-state chain first, then draw the loss of the state we are in.
        if (bad_) {
            if (rng_.chance(p.burst.p_bad_to_good)) bad_ = false;
        } else if (rng_.chance(p.burst.p_good_to_bad)) {
            bad_ = true;
        }
        if (bad_ ? rng_.chance(p.burst.loss_bad) : rng_.chance(p.loss)) {
            if (bad_) ++c_.dropped_burst; else ++c_.dropped_loss;
            dec.drop = bad_ ? Drop::burst : Drop::loss;
            return dec;
        }
    } else if (rng_.chance(p.loss)) {
        ++c_.dropped_loss;
        dec.drop = Drop::loss;
        return dec;
    }

    Time depart = now;
    if (p.rate_bps != 0) {
        const std::uint64_t queued = backlog(p, now);
        if (p.queue_limit != 0 && queued + size > p.queue_limit) {
            ++c_.dropped_queue;
            dec.drop = Drop::queue;
            return dec;
        }
        if (queued + size > c_.queue_peak_bytes) c_.queue_peak_bytes = queued + size;
        const Time start = tx_free_at_ > now ? tx_free_at_ : now;
        depart = start + serialization_time(size, p.rate_bps);
        tx_free_at_ = depart;
    }

    Time d = p.delay;
    if (p.jitter > 0) {
        const auto span = static_cast<std::uint64_t>(p.jitter) * 2 + 1;
        d += static_cast<Time>(rng_.below(span)) - p.jitter;
        if (d < 0) d = 0;
    }
    Time at = depart + d;
    if (!p.jitter_reorders) {
        // A link is a FIFO: a packet never overtakes one sent before it.
        if (at < last_fifo_at_) at = last_fifo_at_;
        last_fifo_at_ = at;
    }
    if (rng_.chance(p.reorder_prob)) {
        at += p.reorder_delay;
        ++c_.reordered;
    }

    dec.count = 1;
    dec.d[0].at = at;
    if (rng_.chance(p.dup_prob)) {
        dec.count = 2;
        dec.d[1].at = at;
        ++c_.duplicated;
    }
    if (size > 0 && rng_.chance(p.corrupt_prob)) {
        dec.d[0].flip_bit = static_cast<std::int64_t>(rng_.below(static_cast<std::uint64_t>(size) * 8));
        ++c_.corrupted;
    }
    c_.delivered += static_cast<std::uint64_t>(dec.count);
    c_.bytes_delivered += size * static_cast<std::uint64_t>(dec.count);
    return dec;
}

// ---- option strings -------------------------------------------------------------

namespace {

int fail(std::string* err, std::string_view option, std::string_view text, std::string_view what) {
    if (err) {
        *err = std::string(option) + ": '" + std::string(text) + "' " + std::string(what);
    }
    return -EINVAL;
}

// Splits "12.5ms" into 12.5 and "ms". False when no number leads.
bool split_number(std::string_view text, double& num, std::string_view& unit) {
    if (text.empty()) return false;
    const char* b = text.data();
    const char* e = b + text.size();
    auto [ptr, ec] = std::from_chars(b, e, num);
    if (ec != std::errc() || !std::isfinite(num)) return false;
    unit = std::string_view(ptr, static_cast<std::size_t>(e - ptr));
    return true;
}

std::string lower(std::string_view s) {
    std::string r(s);
    for (auto& c : r)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return r;
}

// "", k, m, g, t (1000s) and ki, mi, gi, ti (1024s); 0 when unknown.
double prefix_mult(std::string_view p) {
    const std::string l = lower(p);
    if (l.empty()) return 1;
    if (l == "k") return 1e3;
    if (l == "m") return 1e6;
    if (l == "g") return 1e9;
    if (l == "t") return 1e12;
    if (l == "ki") return 1024.0;
    if (l == "mi") return 1024.0 * 1024;
    if (l == "gi") return 1024.0 * 1024 * 1024;
    if (l == "ti") return 1024.0 * 1024 * 1024 * 1024;
    return 0;
}

bool ends_with(std::string_view s, std::string_view suf) {
    return s.size() >= suf.size() && s.substr(s.size() - suf.size()) == suf;
}

}  // namespace

int parse_probability(std::string_view option, std::string_view text, double& out, std::string* err) {
    static constexpr std::string_view kWhat =
        "is not a probability: expected a percentage such as 5% or a fraction such as 0.05, in [0, 1]";
    double v = 0;
    std::string_view unit;
    if (!split_number(text, v, unit)) return fail(err, option, text, kWhat);
    if (unit == "%") {
        v /= 100.0;
    } else if (!unit.empty()) {
        return fail(err, option, text, kWhat);
    }
    if (!is_prob(v)) return fail(err, option, text, kWhat);
    out = v;
    return 0;
}

int parse_duration(std::string_view option, std::string_view text, Time& out, std::string* err) {
    static constexpr std::string_view kWhat =
        "is not a duration: expected a number and a unit (ns, us, ms, s) such as 20ms or 1.5s";
    double v = 0;
    std::string_view unit;
    if (!split_number(text, v, unit) || v < 0) return fail(err, option, text, kWhat);
    double mult = 0;
    const std::string u = lower(unit);
    if (u == "ns") mult = 1;
    else if (u == "us") mult = 1e3;
    else if (u == "ms") mult = 1e6;
    else if (u == "s") mult = 1e9;
    else if (u.empty() && v == 0) mult = 1;
    if (mult == 0) return fail(err, option, text, kWhat);
    const double ns = std::round(v * mult);
    if (ns > 1e18) return fail(err, option, text, "is too long: at most 1e9 s");
    out = static_cast<Time>(ns);
    return 0;
}

int parse_rate(std::string_view option, std::string_view text, std::uint64_t& out, std::string* err) {
    static constexpr std::string_view kWhat =
        "is not a rate: expected bits per second such as 10mbit or 1.5gbit, or bytes per second "
        "such as 2MB/s (k, m, g = 1000s; ki, mi, gi = 1024s)";
    double v = 0;
    std::string_view unit;
    if (!split_number(text, v, unit) || v <= 0) return fail(err, option, text, kWhat);
    const std::string u = lower(unit);
    double bits = 0;
    if (ends_with(u, "bps")) {
        return fail(err, option, text,
                    "is ambiguous (bits or bytes per second?): write 10mbit for bits or 10MB/s for bytes");
    } else if (ends_with(u, "bit/s") || ends_with(u, "bit")) {
        const std::size_t cut = ends_with(u, "bit/s") ? 5 : 3;
        const double m = prefix_mult(unit.substr(0, unit.size() - cut));
        if (m == 0) return fail(err, option, text, kWhat);
        bits = v * m;
    } else if (ends_with(unit, "B/s")) {
        const double m = prefix_mult(unit.substr(0, unit.size() - 3));
        if (m == 0) return fail(err, option, text, kWhat);
        bits = v * m * 8;
    } else {
        return fail(err, option, text, kWhat);
    }
    if (bits < 1 || bits > 1e15) return fail(err, option, text, "is out of range: 1 bit/s to 1 Pbit/s");
    out = static_cast<std::uint64_t>(std::llround(bits));
    return 0;
}

int parse_size(std::string_view option, std::string_view text, std::uint64_t& out, std::string* err) {
    static constexpr std::string_view kWhat =
        "is not a size: expected bytes such as 1500, 256KB or 64KiB (KB = 1000, KiB = 1024)";
    double v = 0;
    std::string_view unit;
    if (!split_number(text, v, unit) || v < 0) return fail(err, option, text, kWhat);
    double m = 0;
    if (unit.empty()) {
        m = 1;
    } else if (unit.back() == 'B' || unit.back() == 'b') {
        if (lower(unit).find("bit") != std::string::npos) return fail(err, option, text, kWhat);
        m = prefix_mult(unit.substr(0, unit.size() - 1));
    }
    if (m == 0) return fail(err, option, text, kWhat);
    const double bytes = std::floor(v * m);
    if (bytes > 1e15) return fail(err, option, text, "is out of range: at most 1 PB");
    out = static_cast<std::uint64_t>(bytes);
    return 0;
}

int parse_burst(std::string_view option, std::string_view text, BurstParams& out, std::string* err) {
    static constexpr std::string_view kWhat =
        "is not a burst model: expected P_GOOD_TO_BAD,P_BAD_TO_GOOD[,LOSS_IN_BAD], each a "
        "probability, such as 1%,30% or 1%,30%,90%";
    BurstParams b;
    b.enabled = true;
    double* fields[3] = {&b.p_good_to_bad, &b.p_bad_to_good, &b.loss_bad};
    std::size_t n = 0, pos = 0;
    while (true) {
        const std::size_t comma = text.find(',', pos);
        const std::string_view part =
            text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        if (n == 3) return fail(err, option, text, kWhat);
        std::string sub;
        if (parse_probability(option, part, *fields[n], &sub) != 0) {
            return fail(err, option, text, kWhat);
        }
        ++n;
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
    }
    if (n < 2) return fail(err, option, text, kWhat);
    out = b;
    return 0;
}

int set_link_option(LinkParams& p, std::string_view name, std::string_view value, std::string* err) {
    const std::string opt = "--" + std::string(name);
    if (name == "loss") return parse_probability(opt, value, p.loss, err);
    if (name == "burst") return parse_burst(opt, value, p.burst, err);
    if (name == "delay") return parse_duration(opt, value, p.delay, err);
    if (name == "jitter") return parse_duration(opt, value, p.jitter, err);
    if (name == "reorder") return parse_probability(opt, value, p.reorder_prob, err);
    if (name == "reorder-delay") return parse_duration(opt, value, p.reorder_delay, err);
    if (name == "duplicate") return parse_probability(opt, value, p.dup_prob, err);
    if (name == "corrupt") return parse_probability(opt, value, p.corrupt_prob, err);
    if (name == "rate") return parse_rate(opt, value, p.rate_bps, err);
    if (name == "queue") return parse_size(opt, value, p.queue_limit, err);
    if (name == "mtu") {
        std::uint64_t v = 0;
        const int rc = parse_size(opt, value, v, err);
        if (rc != 0) return rc;
        if (v > 0xffffffffu) return fail(err, opt, value, "is too large for an MTU");
        p.mtu = static_cast<std::uint32_t>(v);
        return 0;
    }
    return fail(err, opt, value, "is not a link option (loss, burst, delay, jitter, reorder, "
                                 "reorder-delay, duplicate, corrupt, rate, queue, mtu)");
}

}  // namespace gs::impair
