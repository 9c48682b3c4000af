// overlay_sim: the DT and HC overlays side by side on the network simulator
// (tests/sim) at a given size: join and convergence time, sendToAll delivery
// ratio and latency, stretch (relative delay penalty) and link stress against
// direct unicast, control traffic per node per second. One JSON line per
// (protocol, size) on --out; progress on stderr. bench/overlay.sh runs the
// sizes and writes the results; `overlay_sim --help` says what is measured.
//
// The underlay (a two-level, transit-stub-like model; see usage()):
//   - R = ceil(n / hosts_per_router) stub routers at uniform random positions
//     in a 4,000 km square; each host hangs off a random router, placed
//     uniformly within 25 km of it, over its own access link (0.5-2.5 ms).
//   - One-way delay host a -> host b = access(a) + access(b), plus, when the
//     routers differ, 2 ms per core hop + 5 us/km of distance between the two
//     routers (light in fibre). Range about 1-35 ms. No loss, no jitter: the
//     delay of a pair is fixed, so stretch is exact.
//   - Physical links for stress: each host's uplink and downlink, and one
//     directed core link per pair of routers (the core is a full mesh of
//     direct paths: no two router pairs share a link).
//   - DT's logical coordinates are the host positions (metres): HyperCast's
//     DT places nodes by geography when it can. --dt-coords random instead
//     draws them independently of the underlay.
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/overlay/dt/dt_node.h"
#include "core/overlay/dt/geometry.h"
#include "core/overlay/hc/hc_node.h"
#include "tests/overlay/hc/hc_check.h"
#include "tests/sim/sim.h"

namespace {

using gs::overlay::Delivery;
using gs::overlay::LogicalAddress;
using gs::overlay::Node;
using gs::overlay::SendTo;
using gs::overlay::dt::DtNode;
using gs::overlay::dt::Point;
using gs::overlay::hc::HcNode;
using gs::sansio::Addr;
using gs::sansio::Datagram;
using gs::sansio::kMillisecond;
using gs::sansio::kNever;
using gs::sansio::kSecond;
using gs::sansio::Time;

constexpr std::uint64_t kOverlayHash = 0x0b5e'1a7e'0000'0001ull;
constexpr std::int32_t kSide = 4'000'000;       // metres
constexpr std::int32_t kHostRadius = 25'000;    // metres from the router
constexpr Time kCoreHop = 2 * kMillisecond;
constexpr double kNsPerMetre = 5.0;             // 5 us/km
constexpr std::size_t kPayload = 64;

struct Options {
    std::vector<std::string> protocols{"dt", "hc"};
    std::vector<std::size_t> sizes{64, 256};
    std::uint64_t seed = 1;
    double join_rate = 100.0;           // joins per second
    double converge_limit = 120.0;      // s after the last join
    double settle = 10.0;               // s between convergence and the traffic window
    double window = 20.0;               // s of steady-state control traffic
    int sources = 10;                   // sendToAll rounds
    double round_wait = 5.0;            // s per round
    std::size_t hosts_per_router = 8;
    bool dt_random_coords = false;
    std::string out;                    // JSON lines appended; "" = stdout
    std::size_t check_reference = 0;    // > 0: compare the fast reference with the exact one
    bool dump = false;
    bool boot_started = false;          // bootstrap from started nodes, joined or not                  // DT not converged: every node's neighbours vs the reference
};

void usage(FILE* f) {
    std::fprintf(f,
        "usage: overlay_sim [options]\n"
        "  --protocol dt|hc|both     (both)\n"
        "  --nodes N[,N...]          sizes (64,256)\n"
        "  --seed S                  underlay, join order, sources, node seeds (1)\n"
        "  --join-rate R             nodes start joining at R per second, node 0 first (100)\n"
        "  --converge-limit S        give up S seconds after the last join starts (120)\n"
        "  --settle S                wait S seconds after convergence before measuring (10)\n"
        "  --window S                steady-state control traffic window, seconds (20)\n"
        "  --sources K               sendToAll rounds from K random members (10)\n"
        "  --round-wait S            virtual seconds each round is given (5)\n"
        "  --hosts-per-router H      stub size of the underlay (8)\n"
        "  --dt-coords position|random  DT's logical coordinates (position)\n"
        "  --out FILE                append one JSON line per run (stdout)\n"
        "  --bootstrap joined|started  a joiner's bootstrap members: earlier nodes that have\n"
        "                            joined (joined), or that have started joining (started)\n"
        "  --dump                    DT not converged: print each node's neighbours and its\n"
        "                            reference star on stderr\n"
        "  --check-reference N       check the fast Delaunay reference against the exact\n"
        "                            O(n^2) one on N points of the underlay, then exit\n"
        "\n"
        "Underlay: routers at random in a 4,000 km square, H hosts per router within 25 km,\n"
        "delay(a,b) = access(a) + access(b) [0.5-2.5 ms each] + (routers differ: 2 ms +\n"
        "5 us/km router to router). Links for stress: host uplink, host downlink, and one\n"
        "directed core link per router pair.\n"
        "Measured: join latency of each node (join() to joined()), time until all have\n"
        "joined and until the protocol's own check holds (DT: every neighbour set equals the\n"
        "Delaunay triangulation of all positions; HC: labels compact and every table\n"
        "complete and right), control messages and bytes per node per second in steady\n"
        "state and over the whole join, then per sendToAll round: delivery ratio, latency\n"
        "(send to first delivery at each receiver), stretch = latency / direct unicast\n"
        "delay, and link stress = copies of the message per physical link used.\n");
}

bool parse_double(const char* s, double& out) {
    char* end = nullptr;
    out = std::strtod(s, &end);
    return end != s && *end == '\0' && std::isfinite(out) && out >= 0;
}
bool parse_size(const char* s, std::size_t& out) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end != '\0') return false;
    out = static_cast<std::size_t>(v);
    return true;
}

// 0, or -EINVAL after printing what was wrong.
int parse(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            usage(stdout);
            std::exit(0);
        }
        if (a == "--dump") {
            o.dump = true;
            continue;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "overlay_sim: %s needs a value\n", a.c_str());
            return -EINVAL;
        }
        const char* v = argv[++i];
        bool ok = true;
        std::size_t z = 0;
        if (a == "--protocol") {
            if (std::strcmp(v, "both") == 0) o.protocols = {"dt", "hc"};
            else if (std::strcmp(v, "dt") == 0 || std::strcmp(v, "hc") == 0) o.protocols = {v};
            else ok = false;
        } else if (a == "--nodes") {
            o.sizes.clear();
            std::string s = v;
            for (std::size_t p = 0; ok && p <= s.size();) {
                std::size_t q = s.find(',', p);
                if (q == std::string::npos) q = s.size();
                ok = parse_size(s.substr(p, q - p).c_str(), z) && z >= 2 && z <= (1u << 20);
                o.sizes.push_back(z);
                p = q + 1;
            }
        } else if (a == "--seed") {
            ok = parse_size(v, z);
            o.seed = z;
        } else if (a == "--join-rate") {
            ok = parse_double(v, o.join_rate) && o.join_rate > 0;
        } else if (a == "--converge-limit") {
            ok = parse_double(v, o.converge_limit);
        } else if (a == "--settle") {
            ok = parse_double(v, o.settle);
        } else if (a == "--window") {
            ok = parse_double(v, o.window) && o.window > 0;
        } else if (a == "--sources") {
            ok = parse_size(v, z) && z <= 1000;
            o.sources = static_cast<int>(z);
        } else if (a == "--round-wait") {
            ok = parse_double(v, o.round_wait) && o.round_wait > 0;
        } else if (a == "--hosts-per-router") {
            ok = parse_size(v, o.hosts_per_router) && o.hosts_per_router >= 1;
        } else if (a == "--dt-coords") {
            if (std::strcmp(v, "position") == 0) o.dt_random_coords = false;
            else if (std::strcmp(v, "random") == 0) o.dt_random_coords = true;
            else ok = false;
        } else if (a == "--bootstrap") {
            if (std::strcmp(v, "joined") == 0) o.boot_started = false;
            else if (std::strcmp(v, "started") == 0) o.boot_started = true;
            else ok = false;
        } else if (a == "--out") {
            o.out = v;
        } else if (a == "--check-reference") {
            ok = parse_size(v, o.check_reference) && o.check_reference >= 3;
        } else {
            std::fprintf(stderr, "overlay_sim: unknown option %s\n", a.c_str());
            usage(stderr);
            return -EINVAL;
        }
        if (!ok) {
            std::fprintf(stderr, "overlay_sim: bad value for %s: %s\n", a.c_str(), v);
            return -EINVAL;
        }
    }
    return 0;
}

double wall_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- underlay ----------------------------------------------------------------

Addr addr_of(std::size_t i) { return Addr::v4(0x0a000000u + static_cast<std::uint32_t>(i), 7000); }
std::size_t index_of(const Addr& a) {
    return (std::size_t{a.ip[13]} << 16) | (std::size_t{a.ip[14]} << 8) | a.ip[15];
}

struct Underlay {
    std::vector<Point> host;            // distinct
    std::vector<std::uint32_t> router_of;
    std::vector<Point> router;
    std::vector<Time> access;

    Underlay(std::size_t n, std::size_t per_router, std::mt19937_64& rng) {
        const std::size_t routers = (n + per_router - 1) / per_router;
        std::uniform_int_distribution<std::int32_t> pos(kHostRadius, kSide - kHostRadius);
        for (std::size_t r = 0; r < routers; ++r) router.push_back(Point{pos(rng), pos(rng)});
        std::uniform_int_distribution<std::size_t> pick(0, routers - 1);
        std::uniform_int_distribution<std::int32_t> off(-kHostRadius, kHostRadius);
        std::uniform_int_distribution<Time> acc(500 * gs::sansio::kMicrosecond, 2500 * gs::sansio::kMicrosecond);
        std::set<Point> used;
        for (std::size_t i = 0; i < n; ++i) {
            // Every router gets one host before any gets a second, so none is empty.
            const std::size_t r = i < routers ? i : pick(rng);
            Point p;
            do {
                std::int32_t dx, dy;
                do {
                    dx = off(rng);
                    dy = off(rng);
                } while (double(dx) * dx + double(dy) * dy > double(kHostRadius) * kHostRadius);
                p = Point{router[r].x + dx, router[r].y + dy};
            } while (!used.insert(p).second);
            host.push_back(p);
            router_of.push_back(static_cast<std::uint32_t>(r));
            access.push_back(acc(rng));
        }
    }
    static double dist(Point a, Point b) {
        const double dx = double(a.x) - b.x, dy = double(a.y) - b.y;
        return std::sqrt(dx * dx + dy * dy);
    }
    Time delay(std::size_t a, std::size_t b) const {
        if (a == b) return 0;
        Time d = access[a] + access[b];
        const auto ra = router_of[a], rb = router_of[b];
        if (ra != rb) d += kCoreHop + static_cast<Time>(dist(router[ra], router[rb]) * kNsPerMetre);
        return d;
    }
};

// ---- the Delaunay reference, fast ----------------------------------------------
//
// The exact reference (geometry.h delaunay_edges) costs O(n^2 * degree): about
// 25 s at 10,000 points here. This one computes each star among the points of
// a square of grid cells around the node and accepts it only when it is
// provably the star among all points: every triangle (u, a, b) between
// consecutive star members turns counter-clockwise (the star closes around u)
// and its circumcircle lies inside the square, with a margin (so no point
// outside the square can be in or on it: the triangle is Delaunay in the full
// set). Otherwise the square grows, up to all points (hull nodes).

std::vector<std::vector<std::size_t>> reference_stars(const std::vector<Point>& pts) {
    const std::size_t n = pts.size();
    std::int64_t minx = INT64_MAX, miny = INT64_MAX, maxx = INT64_MIN, maxy = INT64_MIN;
    for (auto p : pts) {
        minx = std::min<std::int64_t>(minx, p.x);
        miny = std::min<std::int64_t>(miny, p.y);
        maxx = std::max<std::int64_t>(maxx, p.x);
        maxy = std::max<std::int64_t>(maxy, p.y);
    }
    const std::int64_t span = std::max<std::int64_t>({maxx - minx, maxy - miny, 1});
    const auto g = static_cast<std::int64_t>(std::max<double>(1, std::sqrt(double(n) / 2)));
    const std::int64_t cell = span / g + 1;
    std::vector<std::vector<std::size_t>> grid(static_cast<std::size_t>(g * g));
    auto cx = [&](std::int64_t x) { return std::min<std::int64_t>((x - minx) / cell, g - 1); };
    auto cy = [&](std::int64_t y) { return std::min<std::int64_t>((y - miny) / cell, g - 1); };
    for (std::size_t i = 0; i < n; ++i) grid[static_cast<std::size_t>(cy(pts[i].y) * g + cx(pts[i].x))].push_back(i);

    std::vector<std::vector<std::size_t>> out(n);
    std::vector<Point> local;
    std::vector<std::size_t> ids;
    for (std::size_t u = 0; u < n; ++u) {
        const std::int64_t ux = cx(pts[u].x), uy = cy(pts[u].y);
        for (std::int64_t k = 1;; k *= 2) {
            const std::int64_t x0 = std::max<std::int64_t>(0, ux - k), x1 = std::min<std::int64_t>(g - 1, ux + k);
            const std::int64_t y0 = std::max<std::int64_t>(0, uy - k), y1 = std::min<std::int64_t>(g - 1, uy + k);
            const bool all = x0 == 0 && y0 == 0 && x1 == g - 1 && y1 == g - 1;
            local.clear();
            ids.clear();
            std::size_t self = 0;
            for (std::int64_t y = y0; y <= y1; ++y)
                for (std::int64_t x = x0; x <= x1; ++x)
                    for (std::size_t i : grid[static_cast<std::size_t>(y * g + x)]) {
                        if (i == u) self = local.size();
                        local.push_back(pts[i]);
                        ids.push_back(i);
                    }
            if (local.size() < 8 && !all) continue;
            auto star = gs::overlay::dt::delaunay_star(local, self);
            bool ok = all;
            if (!ok && star.size() >= 3) {
                // The square's inside, in coordinates: points outside it have
                // x < bx0 or x >= bx1 (and the same for y) unless at the border.
                const double bx0 = x0 == 0 ? -1e300 : double(minx + x0 * cell);
                const double bx1 = x1 == g - 1 ? 1e300 : double(minx + (x1 + 1) * cell);
                const double by0 = y0 == 0 ? -1e300 : double(miny + y0 * cell);
                const double by1 = y1 == g - 1 ? 1e300 : double(miny + (y1 + 1) * cell);
                ok = true;
                const Point a0 = pts[u];
                for (std::size_t s = 0; ok && s < star.size(); ++s) {
                    const Point b = local[star[s]], c = local[star[(s + 1) % star.size()]];
                    if (gs::overlay::dt::orient(a0, b, c) <= 0) {
                        ok = false;
                        break;
                    }
                    // Circumcircle in doubles (coordinates < 2^23: exact enough
                    // with the margin below).
                    const double ax = a0.x, ay = a0.y, bx = b.x - ax, by = b.y - ay, qx = c.x - ax, qy = c.y - ay;
                    const double d = 2 * (bx * qy - by * qx);
                    const double b2 = bx * bx + by * by, c2 = qx * qx + qy * qy;
                    const double ox = (qy * b2 - by * c2) / d, oy = (bx * c2 - qx * b2) / d;
                    const double r = std::sqrt(ox * ox + oy * oy) * (1 + 1e-9) + 2;
                    const double X = ax + ox, Y = ay + oy;
                    ok = X - r > bx0 && X + r < bx1 - 1 && Y - r > by0 && Y + r < by1 - 1;
                }
            }
            if (ok) {
                for (std::size_t s : star) out[u].push_back(ids[s]);
                break;
            }
        }
    }
    return out;
}

// ---- nodes ---------------------------------------------------------------------

// What the bench records while a round runs.
struct Recorder {
    std::uint32_t current = 0;          // id of the message in flight (0: none)
    std::vector<Time> first;            // per node: first delivery of `current`, -1 none
    std::uint64_t duplicates = 0;
    std::vector<Time> joined_at;        // per node: when joined() first turned true
};

// Wraps a node for the simulator: forwards everything, and after each input
// takes the node's deliveries (timestamped) and notes when it joined.
class Tap final : public gs::sansio::Endpoint {
public:
    Tap(std::unique_ptr<Node> node, std::size_t index, Recorder& rec)
        : node_(std::move(node)), index_(index), rec_(rec) {}
    void on_datagram(const Addr& from, const Addr& to, std::span<const std::uint8_t> bytes, Time now) override {
        node_->on_datagram(from, to, bytes, now);
        after(now);
    }
    void on_timeout(Time now) override {
        node_->on_timeout(now);
        after(now);
    }
    Time next_timeout() const override { return node_->next_timeout(); }
    bool poll_transmit(Datagram& out) override { return node_->poll_transmit(out); }
    Node& node() { return *node_; }
    void after(Time now) {
        if (rec_.joined_at[index_] < 0 && node_->joined()) rec_.joined_at[index_] = now;
        while (node_->poll_deliver(d_)) {
            if (d_.payload.size() != kPayload) continue;
            std::uint32_t id;
            std::memcpy(&id, d_.payload.data(), 4);
            if (id != rec_.current || rec_.current == 0) continue;
            if (rec_.first[index_] < 0) rec_.first[index_] = now;
            else ++rec_.duplicates;
        }
    }

private:
    std::unique_ptr<Node> node_;
    std::size_t index_;
    Recorder& rec_;
    Delivery d_;
};

struct Stat {
    double mean = 0, p50 = 0, p95 = 0, max = 0;
};
Stat summarize(std::vector<double> v) {
    Stat s;
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    s.mean = sum / double(v.size());
    auto q = [&](double p) { return v[std::min(v.size() - 1, static_cast<std::size_t>(p * double(v.size())))]; };
    s.p50 = q(0.5);
    s.p95 = q(0.95);
    s.max = v.back();
    return s;
}

struct Result {
    std::string proto;
    std::size_t n = 0;
    double last_join = 0;                 // s: when the last node started joining
    Stat join_latency;                    // s, per node
    double all_joined = -1;               // s since start, -1 never
    double converged = -1;                // s since start, -1 not within the limit
    double accuracy = 0;                  // fraction of nodes whose state is right
    std::string accuracy_note;
    double ctl_msgs = 0, ctl_bytes = 0;   // per node per second, steady state
    double join_ctl_msgs = 0, join_ctl_bytes = 0;   // per node per second, start to convergence (or limit)
    double delivery_mean = 0, delivery_min = 1;
    std::uint64_t duplicates = 0;
    Stat latency_ms, stretch, direct_ms;
    double stress_mean = 0, stress_max = 0, stress_uplink_max = 0, overlay_hops = 0;
    double links_used = 0;                // physical links carrying the message, per round
    double wall = 0;
    std::uint64_t events = 0;
    long rss_kib = 0;
};

class Bench {
public:
    Bench(const Options& o, const std::string& proto, std::size_t n)
        : o_(o), proto_(proto), n_(n), rng_(o.seed * 1'000'003 + n), under_(n, o.hosts_per_router, rng_),
          sim_(o.seed) {
        rec_.first.assign(n, -1);
        rec_.joined_at.assign(n, -1);
        taps_.resize(n);
        coords_.resize(n);
        if (proto_ == "dt") {
            if (o.dt_random_coords) {
                std::uniform_int_distribution<std::int32_t> d(0, kSide);
                std::set<Point> used;
                for (auto& c : coords_)
                    do c = Point{d(rng_), d(rng_)};
                    while (!used.insert(c).second);
            } else {
                coords_ = under_.host;
            }
        }
        gs::sim::LinkParams clean;   // all delay from the model below
        sim_.set_default_link(clean);
        sim_.set_delay_model([this](const Addr& a, const Addr& b) { return under_.delay(index_of(a), index_of(b)); });
    }

    Result run() {
        const double w0 = wall_now();
        Result r;
        r.proto = proto_;
        r.n = n_;
        if (proto_ == "dt") build_reference();
        schedule_joins();
        r.last_join = double(join_at(n_ - 1)) / 1e9;
        converge(r);
        // Steady state: settle, then the control traffic window.
        sim_.run_until(sim_.now() + seconds(o_.settle));
        progress("steady state");
        auto c0 = control();
        sim_.run_until(sim_.now() + seconds(o_.window));
        auto c1 = control();
        r.ctl_msgs = double(c1.first - c0.first) / double(n_) / o_.window;
        r.ctl_bytes = double(c1.second - c0.second) / double(n_) / o_.window;
        rounds(r);
        r.wall = wall_now() - w0;
        r.events = sim_.events_processed();
        struct rusage ru {};
        getrusage(RUSAGE_SELF, &ru);
        r.rss_kib = ru.ru_maxrss;
        return r;
    }

private:
    static Time seconds(double s) { return static_cast<Time>(s * 1e9); }
    Time join_at(std::size_t i) const { return static_cast<Time>(double(i) * 1e9 / o_.join_rate); }

    void progress(const char* what) {
        std::size_t started = 0, joined = 0;
        for (auto& t : taps_)
            if (t) {
                ++started;
                joined += t->node().joined();
            }
        std::fprintf(stderr, "[%s n=%zu] t=%.1fs %s: started %zu joined %zu events %.1fM wall %.0fs\n",
                     proto_.c_str(), n_, double(sim_.now()) / 1e9, what, started, joined,
                     double(sim_.events_processed()) / 1e6, wall_now() - wall0_);
    }

    void build_reference() {
        const double t0 = wall_now();
        auto stars = reference_stars(coords_);
        ref_.resize(n_);
        for (std::size_t i = 0; i < n_; ++i) {
            for (std::size_t j : stars[i]) ref_[i].push_back(gs::overlay::dt::pack(coords_[j]));
            std::sort(ref_[i].begin(), ref_[i].end());
        }
        std::fprintf(stderr, "[dt n=%zu] reference triangulation in %.1f s\n", n_, wall_now() - t0);
    }

    void start(std::size_t i) {
        std::vector<Addr> boot;
        if (i > 0) {
            // Up to three members picked at random among the earlier nodes
            // that have joined (the overlay server's job in a deployment);
            // node 0, the first member, when none is found. --bootstrap
            // started: any earlier node, as the DT and HC tests do.
            std::uniform_int_distribution<std::size_t> pick(0, i - 1);
            for (int k = 0; k < 50 && boot.size() < 3; ++k) {
                const std::size_t j = pick(rng_);
                const Addr a = addr_of(j);
                if ((o_.boot_started || taps_[j]->node().joined()) &&
                    std::find(boot.begin(), boot.end(), a) == boot.end())
                    boot.push_back(a);
            }
            if (boot.empty()) boot.push_back(addr_of(0));
        }
        std::unique_ptr<Node> node;
        const std::uint64_t seed = o_.seed * 7'919 + i + 1;
        if (proto_ == "dt") {
            node = std::make_unique<DtNode>(addr_of(i), kOverlayHash, gs::overlay::dt::pack(coords_[i]), seed,
                                            gs::overlay::dt::DtConfig{}, boot);
        } else {
            node = std::make_unique<HcNode>(addr_of(i), kOverlayHash, seed, gs::overlay::hc::HcConfig{}, boot);
        }
        taps_[i] = std::make_unique<Tap>(std::move(node), i, rec_);
        sim_.add_node(addr_of(i), *taps_[i]);
        join_called_.push_back(sim_.now());
        taps_[i]->node().join(sim_.now());
        taps_[i]->after(sim_.now());
        sim_.kick(*taps_[i]);
    }

    void schedule_joins() {
        // One callback at a time (each schedules the next): no n closures queued.
        next_join_ = 0;
        sim_.schedule(0, [this] { join_next(); });
    }
    void join_next() {
        start(next_join_++);
        if (next_join_ < n_) sim_.schedule(join_at(next_join_), [this] { join_next(); });
    }

    // The protocol's own check; "" when right, else the first problem.
    std::string check() {
        if (proto_ == "dt") {
            for (std::size_t i = 0; i < n_; ++i) {
                if (!taps_[i] || !taps_[i]->node().joined()) return "node " + std::to_string(i) + " not joined";
                if (taps_[i]->node().neighbors() != ref_[i]) return "node " + std::to_string(i) + " neighbours";
            }
            return "";
        }
        return hctest::cube_problem(hc_nodes(), n_);
    }
    std::vector<HcNode*> hc_nodes() {
        std::vector<HcNode*> v;
        for (auto& t : taps_)
            if (t) v.push_back(static_cast<HcNode*>(&t->node()));
        return v;
    }
    // The fraction of nodes whose own state is right (for a run that did not
    // converge). DT: neighbour set equal to the reference. HC: holds a label
    // no one else holds, of rank < n, sees n right and knows every cube
    // neighbour at its real address.
    double accuracy(std::string& note) {
        std::size_t good = 0;
        if (proto_ == "dt") {
            std::size_t missing = 0, extra = 0;
            for (std::size_t i = 0; i < n_; ++i) {
                if (!taps_[i] || !taps_[i]->node().joined()) {
                    missing += ref_[i].size();
                    continue;
                }
                auto have = taps_[i]->node().neighbors();
                std::vector<LogicalAddress> d;
                std::set_difference(ref_[i].begin(), ref_[i].end(), have.begin(), have.end(), std::back_inserter(d));
                const std::size_t miss = d.size();
                missing += miss;
                d.clear();
                std::set_difference(have.begin(), have.end(), ref_[i].begin(), ref_[i].end(), std::back_inserter(d));
                extra += d.size();
                good += miss == 0 && d.empty();
            }
            note = std::to_string(good) + "/" + std::to_string(n_) + " exact, " + std::to_string(missing) +
                   " Delaunay edges missing, " + std::to_string(extra) + " extra";
            return double(good) / double(n_);
        }
        using namespace gs::overlay::hc;
        const auto N = static_cast<std::uint32_t>(n_);
        std::unordered_map<Label, std::vector<const HcNode*>> by;
        for (auto* x : hc_nodes())
            if (x->joined()) by[static_cast<Label>(x->address())].push_back(x);
        std::size_t joined = 0, in_cube = 0;
        for (auto& [l, v] : by) {
            joined += v.size();
            if (v.size() != 1 || rank_of(l) >= N) continue;
            ++in_cube;
            const HcNode* x = v[0];
            if (x->view().n != N) continue;
            bool ok = x->neighbors().size() == neighbors_of(l, N).size();
            for (Label nb : neighbors_of(l, N)) {
                auto it = by.find(nb);
                auto a = x->neighbor_addr(nb);
                ok = ok && it != by.end() && it->second.size() == 1 && a && *a == it->second[0]->self();
            }
            good += ok;
        }
        note = std::to_string(good) + "/" + std::to_string(n_) + " consistent, " + std::to_string(joined) +
               " joined, " + std::to_string(in_cube) + " unique labels in the cube; first problem: " +
               hctest::cube_problem(hc_nodes(), n_);
        return double(good) / double(n_);
    }

    void converge(Result& r) {
        const Time deadline = join_at(n_ - 1) + seconds(o_.converge_limit);
        Time last_full = -1, last_progress = 0;
        std::string problem = "not checked";
        const bool done = sim_.run_while(
            [&] {
                const Time now = sim_.now();
                if (now - last_progress >= 10 * kSecond) {
                    last_progress = now;
                    progress("joining");
                }
                if (next_join_ < n_) return true;
                if (r.all_joined < 0) {
                    for (auto& t : taps_)
                        if (!t->node().joined()) return true;
                    r.all_joined = double(now) / 1e9;
                }
                if (last_full >= 0 && now - last_full < 500 * kMillisecond) return true;
                last_full = now;
                problem = check();
                return !problem.empty();
            },
            deadline, 100 * kMillisecond);
        if (done) r.converged = double(sim_.now()) / 1e9;
        r.accuracy = accuracy(r.accuracy_note);
        if (!done) r.accuracy_note += " (not converged: " + problem + ")";
        if (!done && proto_ == "dt" && o_.dump) {
            for (std::size_t i = 0; i < n_; ++i) {
                auto have = taps_[i]->node().neighbors();
                auto* dn = static_cast<DtNode*>(&taps_[i]->node());
                std::fprintf(stderr, "node %zu (%d,%d) r%u known %zu: have", i, coords_[i].x, coords_[i].y,
                             under_.router_of[i], dn->known_count());
                for (auto a : have) std::fprintf(stderr, " (%d,%d)", gs::overlay::dt::unpack(a).x, gs::overlay::dt::unpack(a).y);
                std::fprintf(stderr, " | ref");
                for (auto a : ref_[i]) std::fprintf(stderr, " (%d,%d)", gs::overlay::dt::unpack(a).x, gs::overlay::dt::unpack(a).y);
                std::fprintf(stderr, "\n");
            }
        }
        // Per node-second since each node called join(): nodes that start
        // late send nothing before, and must not dilute the rate.
        auto c = control();
        double node_seconds = 0;
        for (Time t : join_called_) node_seconds += double(sim_.now() - t) / 1e9;
        r.join_ctl_msgs = double(c.first) / node_seconds;
        r.join_ctl_bytes = double(c.second) / node_seconds;
        std::vector<double> jl;
        for (std::size_t i = 0; i < n_; ++i)
            if (rec_.joined_at[i] >= 0) jl.push_back(double(rec_.joined_at[i] - join_called_[i]) / 1e9);
        r.join_latency = summarize(jl);
        progress(done ? "converged" : "NOT converged");
        std::fprintf(stderr, "[%s n=%zu] accuracy %s\n", proto_.c_str(), n_, r.accuracy_note.c_str());
    }

    std::pair<std::uint64_t, std::uint64_t> control() {
        std::uint64_t m = 0, b = 0;
        for (auto& t : taps_)
            if (t) {
                m += t->node().stats().control_sent;
                b += t->node().stats().control_bytes_sent;
            }
        return {m, b};
    }

    void rounds(Result& r) {
        std::vector<double> lat, stretch, direct;
        std::unordered_map<std::uint64_t, std::uint32_t> links;   // physical link -> copies
        std::uint64_t hops = 0;
        sim_.set_trace([&](const gs::sim::TraceEvent& ev) {
            if (ev.kind != gs::sim::TraceEvent::Kind::send || ev.bytes.size() <= gs::overlay::kPrefixSize ||
                ev.bytes[12] < 0x80)
                return;
            const std::size_t a = index_of(*ev.from), b = index_of(*ev.to);
            ++hops;
            ++links[(std::uint64_t{0} << 62) | a];   // a's uplink
            ++links[(std::uint64_t{1} << 62) | b];   // b's downlink
            const std::uint64_t ra = under_.router_of[a], rb = under_.router_of[b];
            if (ra != rb) ++links[(std::uint64_t{2} << 62) | (ra << 31) | rb];
        });
        double stress_sum = 0, links_sum = 0, hops_sum = 0;
        int done = 0;
        std::uint64_t dup0 = rec_.duplicates;
        for (int k = 0; k < o_.sources; ++k) {
            std::size_t src;
            std::uniform_int_distribution<std::size_t> pick(0, n_ - 1);
            int tries = 0;
            do src = pick(rng_);
            while (!taps_[src]->node().joined() && ++tries < 1000);
            if (!taps_[src]->node().joined()) break;
            links.clear();
            hops = 0;
            std::fill(rec_.first.begin(), rec_.first.end(), -1);
            rec_.current = 0x5e000000u + static_cast<std::uint32_t>(k) + 1;
            std::vector<std::uint8_t> payload(kPayload, 0xab);
            std::memcpy(payload.data(), &rec_.current, 4);
            const Time t0 = sim_.now();
            if (taps_[src]->node().send(SendTo::all, payload, t0) != 0) continue;
            sim_.kick(*taps_[src]);
            sim_.run_until(t0 + seconds(o_.round_wait));
            std::size_t got = 0, expect = 0;
            for (std::size_t i = 0; i < n_; ++i) {
                if (i == src) continue;
                ++expect;
                if (rec_.first[i] < 0) continue;
                ++got;
                const double l = double(rec_.first[i] - t0);
                const double d = double(under_.delay(src, i));
                lat.push_back(l / 1e6);
                direct.push_back(d / 1e6);
                stretch.push_back(l / d);
            }
            const double ratio = double(got) / double(expect);
            r.delivery_mean += ratio;
            r.delivery_min = std::min(r.delivery_min, ratio);
            std::uint32_t mx = 0, up = 0;
            std::uint64_t copies = 0;
            for (auto& [key, c] : links) {
                copies += c;
                mx = std::max(mx, c);
                if ((key >> 62) == 0) up = std::max(up, c);
            }
            if (!links.empty()) stress_sum += double(copies) / double(links.size());
            r.stress_max = std::max<double>(r.stress_max, mx);
            r.stress_uplink_max = std::max<double>(r.stress_uplink_max, up);
            links_sum += double(links.size());
            hops_sum += double(hops);
            ++done;
        }
        sim_.set_trace({});
        rec_.current = 0;
        r.duplicates = rec_.duplicates - dup0;
        if (done > 0) {
            r.delivery_mean /= done;
            r.stress_mean = stress_sum / done;
            r.links_used = links_sum / done;
            r.overlay_hops = hops_sum / done;
        } else {
            r.delivery_min = 0;
        }
        r.latency_ms = summarize(lat);
        r.stretch = summarize(stretch);
        r.direct_ms = summarize(direct);
        progress("rounds done");
    }

    const Options& o_;
    std::string proto_;
    std::size_t n_;
    std::mt19937_64 rng_;
    Underlay under_;
    gs::sim::Simulator sim_;
    Recorder rec_;
    std::vector<std::unique_ptr<Tap>> taps_;
    std::vector<Point> coords_;
    std::vector<std::vector<LogicalAddress>> ref_;
    std::vector<Time> join_called_;
    std::size_t next_join_ = 0;
    double wall0_ = wall_now();
};

std::string json_stat(const char* name, const Stat& s) {
    char b[256];
    std::snprintf(b, sizeof b, "\"%s\":{\"mean\":%.4g,\"p50\":%.4g,\"p95\":%.4g,\"max\":%.4g}", name, s.mean, s.p50,
                  s.p95, s.max);
    return b;
}
std::string escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        o += c;
    }
    return o;
}

void emit(FILE* f, const Options& o, const Result& r) {
    std::fprintf(f,
                 "{\"proto\":\"%s\",\"n\":%zu,\"seed\":%llu,\"join_rate\":%g,\"hosts_per_router\":%zu,"
                 "\"dt_coords\":\"%s\",\"bootstrap\":\"%s\",\"last_join_s\":%.3f,%s,\"all_joined_s\":%.3f,\"converged_s\":%.3f,"
                 "\"converge_limit_s\":%g,\"accuracy\":%.5f,\"accuracy_note\":\"%s\",\"ctl_msgs\":%.4g,"
                 "\"ctl_bytes\":%.5g,\"join_ctl_msgs\":%.4g,\"join_ctl_bytes\":%.5g,\"rounds\":%d,"
                 "\"delivery_mean\":%.5f,\"delivery_min\":%.5f,\"duplicates\":%llu,%s,%s,%s,"
                 "\"stress_mean\":%.4g,\"stress_max\":%g,\"stress_uplink_max\":%g,\"links_used\":%.1f,"
                 "\"overlay_hops\":%.1f,\"wall_s\":%.1f,\"events\":%llu,\"max_rss_kib\":%ld}\n",
                 r.proto.c_str(), r.n, static_cast<unsigned long long>(o.seed), o.join_rate, o.hosts_per_router,
                 o.dt_random_coords ? "random" : "position", o.boot_started ? "started" : "joined", r.last_join, json_stat("join_latency_s", r.join_latency).c_str(),
                 r.all_joined, r.converged, o.converge_limit, r.accuracy, escape(r.accuracy_note).c_str(), r.ctl_msgs,
                 r.ctl_bytes, r.join_ctl_msgs, r.join_ctl_bytes, o.sources, r.delivery_mean, r.delivery_min,
                 static_cast<unsigned long long>(r.duplicates), json_stat("latency_ms", r.latency_ms).c_str(),
                 json_stat("stretch", r.stretch).c_str(), json_stat("direct_ms", r.direct_ms).c_str(), r.stress_mean,
                 r.stress_max, r.stress_uplink_max, r.links_used, r.overlay_hops, r.wall,
                 static_cast<unsigned long long>(r.events), r.rss_kib);
    std::fflush(f);
}

// Compares reference_stars with the exact delaunay_edges on an underlay of
// `n` hosts. 0 when equal, 1 otherwise.
int check_reference(const Options& o) {
    std::mt19937_64 rng(o.seed);
    Underlay u(o.check_reference, o.hosts_per_router, rng);
    double t0 = wall_now();
    auto fast = reference_stars(u.host);
    double t1 = wall_now();
    auto exact = gs::overlay::dt::delaunay_edges(u.host);
    double t2 = wall_now();
    std::vector<std::pair<std::size_t, std::size_t>> mine;
    for (std::size_t i = 0; i < fast.size(); ++i)
        for (std::size_t j : fast[i]) mine.emplace_back(std::min(i, j), std::max(i, j));
    std::sort(mine.begin(), mine.end());
    // Each edge appears once from each end.
    std::vector<std::pair<std::size_t, std::size_t>> twice;
    for (auto e : exact) {
        twice.push_back(e);
        twice.push_back(e);
    }
    const bool same = mine == twice;
    std::printf("reference check, %zu points: %zu edges, fast %.2f s, exact %.2f s: %s\n", o.check_reference,
                exact.size(), t1 - t0, t2 - t1, same ? "identical" : "DIFFERENT");
    return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (parse(argc, argv, o) != 0) return 2;
    if (o.check_reference > 0) return check_reference(o);
    FILE* out = stdout;
    if (!o.out.empty()) {
        out = std::fopen(o.out.c_str(), "a");
        if (!out) {
            std::fprintf(stderr, "overlay_sim: cannot open %s: %s\n", o.out.c_str(), std::strerror(errno));
            return 1;
        }
    }
    for (std::size_t n : o.sizes)
        for (const auto& p : o.protocols) {
            Bench b(o, p, n);
            emit(out, o, b.run());
        }
    if (out != stdout) std::fclose(out);
    return 0;
}
