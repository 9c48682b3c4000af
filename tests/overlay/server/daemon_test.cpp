// The real gsoverlayd on 127.0.0.1, driven through the blocking client:
// create, get, a member refused for a wrong key attribute, 8 joins, malformed
// requests survived and counted, lease expiry, SIGTERM and a restart that
// keeps the overlays, a server that is down, bad options and a damaged state
// file. Bounded: a few seconds (leases of 1 s).
#include "core/overlay/config/config.h"
#include "tools/gsoverlayd/client.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

using namespace gs::overlay;
using namespace gs::overlay::server;
using gs::sansio::Addr;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct Daemon {
    pid_t pid = -1;
    fs::path log;
    std::string addr;   // "127.0.0.1:PORT" once listening

    // Starts gsoverlayd with `args`, stderr to `log`; waits (<= 5 s) for its
    // "listening on" line. false when it exited or never listened.
    bool start(const std::vector<std::string>& args, const fs::path& logfile) {
        log = logfile;
        pid = fork();
        if (pid == 0) {
            const int fd = ::open(logfile.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            dup2(fd, 2);
            std::vector<char*> argv{const_cast<char*>(GSOVERLAYD)};
            for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv(GSOVERLAYD, argv.data());
            _exit(127);
        }
        for (int i = 0; i < 500; ++i) {
            const std::string text = slurp(log);
            const auto at = text.rfind("listening on ");
            if (at != std::string::npos) {
                const auto end = text.find(' ', at + 13);
                addr = text.substr(at + 13, end - at - 13);
                return true;
            }
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }
    // SIGTERM, then the exit status (-1: had to be killed after 5 s).
    int stop() {
        if (pid < 0) return -1;
        kill(pid, SIGTERM);
        for (int i = 0; i < 500; ++i) {
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        pid = -1;
        return -1;
    }
    ~Daemon() { stop(); }
};

int exit_status(const std::vector<std::string>& args) {
    const pid_t pid = fork();
    if (pid == 0) {
        const int null = ::open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        std::vector<char*> argv{const_cast<char*>(GSOVERLAYD)};
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execv(GSOVERLAYD, argv.data());
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::uint64_t counter(Client& c, const char* name) {
    Request q;
    q.op = Op::stats;
    Response a;
    REQUIRE(c.call(q, a) == 0);
    for (const auto& [k, v] : a.stats)
        if (k == name) return v;
    FAIL("no counter ", name);
    return 0;
}

Attributes file_attrs(std::string_view text) {
    Attributes a;
    std::vector<std::string> e;
    REQUIRE(parse_attributes(text, "member.conf", a, e) == 0);
    return a;
}

struct TempDir {
    fs::path path;
    TempDir() {
        char t[] = "/tmp/gsoverlayd-test-XXXXXX";
        REQUIRE(mkdtemp(t));
        path = t;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

}  // namespace

TEST_CASE("gsoverlayd: a whole life on 127.0.0.1") {
    TempDir tmp;
    const std::string state = (tmp.path / "state").string();
    Daemon d;
    REQUIRE(d.start({"--listen", "127.0.0.1:0", "--state-dir", state, "--lease-min", "1s"},
                    tmp.path / "log1"));
    Client c;
    REQUIRE(c.open(d.addr) == 0);

    // CREATE from a creator's configuration, then GET.
    Config creator;
    std::vector<std::string> e;
    REQUIRE(parse_config("OverlayID = 1234\nKeyAttributes = Protocol,DataTransport\nProtocol = DT\n"
                         "HelloFast = 100ms\nNodeAddress = :9000\n",
                         "creator.conf", creator, e) == 0);
    Request q;
    q.op = Op::create;
    q.overlay = 1234;
    q.attrs = creator.overlay_attributes();
    Response a;
    REQUIRE(c.call(q, a) == 0);
    REQUIRE(a.status == Status::ok);
    CHECK(a.created);
    Request get;
    get.op = Op::get;
    get.overlay = 1234;
    REQUIRE(c.call(get, a) == 0);
    REQUIRE(a.status == Status::ok);
    const Attributes served = a.attrs;
    CHECK(served.to_text() == creator.overlay_attributes().to_text());

    // A member with the same key attributes gets the creator's key hash; one
    // with another Protocol is refused, naming it and the server.
    Config m;
    REQUIRE(merge_config(served, file_attrs("HelloFast = 50ms\nNodeAddress = :9001\n"), m, e) == 0);
    CHECK(m.key_hash == creator.key_hash);
    CHECK(m.hello_fast == 50 * gs::sansio::kMillisecond);
    e.clear();
    CHECK(merge_config(served, file_attrs("Protocol = HC\n"), m, e) == -EACCES);
    REQUIRE(e.size() == 1);
    CHECK(e[0] == "member.conf:1: key attribute Protocol = HC differs from the overlay's Protocol = DT "
                  "(server " + d.addr + "): this member cannot join overlay 1234");
    // CREATE with other key attributes is refused by the server, naming the attribute.
    q.attrs.set("DataTransport", "TCP");
    REQUIRE(c.call(q, a) == 0);
    CHECK(a.status == Status::conflict);
    CHECK(a.message == "key attribute DataTransport differs: overlay 1234 has DataTransport = UDP, "
                       "the request has DataTransport = TCP");

    // 8 members join with 1 s leases; each learns the ones before it, freshest first.
    for (int i = 1; i <= 8; ++i) {
        Request j;
        j.op = Op::join;
        j.overlay = 1234;
        j.member = Addr::v4(0x7f000001, static_cast<std::uint16_t>(10000 + i));
        j.lease_ms = 1000;
        j.want = 8;
        REQUIRE(c.call(j, a) == 0);
        REQUIRE(a.status == Status::ok);
        CHECK(a.lease_ms == 1000);
        REQUIRE(a.members.size() == static_cast<std::size_t>(i - 1));
        for (std::size_t k = 0; k < a.members.size(); ++k)   // freshest first
            CHECK(a.members[k].addr.str() ==
                  Addr::v4(0x7f000001, static_cast<std::uint16_t>(10000 + i - 1 - static_cast<int>(k))).str());
    }
    Request list;
    list.op = Op::list;
    list.overlay = 1234;
    REQUIRE(c.call(list, a) == 0);
    CHECK(a.members.size() == 8);

    // Malformed requests: junk is dropped, a readable header is answered; all counted.
    std::mt19937 rng(42);
    std::uint64_t junk = 0, headed = 0;
    for (int i = 0; i < 60; ++i) {
        std::vector<std::uint8_t> b(rng() % 200);
        for (auto& x : b) x = static_cast<std::uint8_t>(rng());
        const bool header = i % 2 == 0 && b.size() >= 17;
        if (header) {   // a valid header (overlay >= 2^56, none such), a random body
            b[0] = 0x47;
            b[1] = 0x4f;
            b[2] = 1;
            b[3] = static_cast<std::uint8_t>(1 + rng() % 7);
            b[8] = 1;
        } else if (!b.empty()) {
            b[0] = 0;   // never the magic
        }
        std::vector<std::uint8_t> reply;
        if (header) {
            ++headed;
            REQUIRE(c.raw(b, reply, 1000) == 0);
            Response r;
            REQUIRE(decode_response(reply, r) == 0);
            CHECK(r.status != Status::ok);
        } else {
            ++junk;
            CHECK(c.raw(b, reply, 5) == -ETIMEDOUT);
        }
    }
    // A random body is almost always malformed; one that happens to decode
    // asks about an overlay that does not exist. Either way: answered, counted.
    CHECK(counter(c, "dropped") == junk);
    CHECK(counter(c, "malformed") + counter(c, "unknown_overlay") == headed);
    CHECK(counter(c, "malformed") > 0);
    REQUIRE(c.call(get, a) == 0);   // still serving
    CHECK(a.status == Status::ok);

    // Leases end.
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    REQUIRE(c.call(list, a) == 0);
    CHECK(a.members.empty());
    CHECK(counter(c, "expired") == 8);

    // SIGTERM: a clean exit with the counters logged.
    CHECK(d.stop() == 0);
    const std::string log1 = slurp(tmp.path / "log1");
    CHECK(log1.find("created overlay 1234 (DT") != std::string::npos);
    CHECK(log1.find("lease expired overlay 1234: 127.0.0.1:10001") != std::string::npos);
    CHECK(log1.find("exiting on ") != std::string::npos);
    CHECK(log1.find("counters: requests=") != std::string::npos);
    CHECK(fs::exists(fs::path(state) / "gsoverlayd.state"));
    CHECK(!fs::exists(fs::path(state) / "gsoverlayd.state.tmp"));

    // While it is down, a member's request times out (and a member with its
    // own complete file still builds its configuration).
    Client down;
    REQUIRE(down.open(d.addr) == 0);
    CHECK(down.call(get, a, 50, 2) == -ETIMEDOUT);
    Config alone;
    CHECK(parse_config(served.to_text() + "Bootstrap = 127.0.0.1:10001\n", "cached.conf", alone, e) == 0);
    CHECK(alone.key_hash == creator.key_hash);

    // Restart on the same address: the overlay and its attributes are back,
    // the same conflict is refused, members come back with RENEW.
    Daemon d2;
    REQUIRE(d2.start({"--listen", d.addr, "--state-dir", state}, tmp.path / "log2"));
    CHECK(slurp(tmp.path / "log2").find("loaded 1 overlays from") != std::string::npos);
    REQUIRE(c.call(get, a) == 0);
    REQUIRE(a.status == Status::ok);
    CHECK(a.attrs.to_text() == served.to_text());
    REQUIRE(c.call(q, a) == 0);
    CHECK(a.status == Status::conflict);
    Request r;
    r.op = Op::renew;
    r.overlay = 1234;
    r.member = Addr::v4(0x7f000001, 10001);
    REQUIRE(c.call(r, a) == 0);
    CHECK(a.status == Status::ok);
    REQUIRE(c.call(list, a) == 0);
    CHECK(a.members.size() == 1);
    CHECK(d2.stop() == 0);
}

TEST_CASE("gsoverlayd: options and a damaged state file") {
    CHECK(exit_status({"--help"}) == 0);
    CHECK(exit_status({"--max-overlays", "0"}) == 2);
    CHECK(exit_status({"--listen", "nowhere"}) == 2);
    CHECK(exit_status({"--lease-min", "10s", "--lease-max", "1s"}) == 2);
    CHECK(exit_status({"--bogus", "1"}) == 2);

    TempDir tmp;
    fs::create_directories(tmp.path / "state");
    std::ofstream(tmp.path / "state" / "gsoverlayd.state") << "[state]\nFormat = 1\n[overlay]\nOverlayID = x\n";
    Daemon d;
    CHECK(!d.start({"--listen", "127.0.0.1:0", "--state-dir", (tmp.path / "state").string()},
                   tmp.path / "log"));
    const std::string log = slurp(tmp.path / "log");
    CHECK(log.find("gsoverlayd.state:4: OverlayID = x: expected a number from 1 to 9223372036854775808") !=
          std::string::npos);
    CHECK(log.find("refusing to start") != std::string::npos);
    CHECK(exit_status({"--listen", "127.0.0.1:0", "--state-dir", (tmp.path / "state").string()}) == 1);
}
