// Golden files: every tests/policy/bad/X.ini gives exactly the lines of
// X.expected; every good/X.ini parses clean and reads as good/X.expected (the
// canonical form from to_ini). GS_UPDATE_GOLDEN=1 rewrites the .expected files.
//
// auth_key files: git keeps no file mode, so the keys the .ini files name
// (good.key, mode644.key, short.key; missing.key is absent) are made with
// their modes in a temporary directory, the current one while files are
// parsed: a policy named without a directory reads its keys from there.
#include "policy/policy.h"

#include "core/mces/auth/secret.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace gs::policy;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<fs::path> files(const char* sub) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(fs::path(GS_POLICY_TEST_DIR) / sub))
        if (e.path().extension() == ".ini") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

std::string diag_text(const Policy& p) {
    std::string s;
    for (const Diagnostic& d : p.diagnostics()) s += d.text + "\n";
    return s;
}

bool update() {
    const char* u = getenv("GS_UPDATE_GOLDEN");
    return u && std::string(u) == "1";
}

void check_golden(const fs::path& ini, const std::string& got) {
    fs::path exp = ini;
    exp.replace_extension(".expected");
    if (update()) std::ofstream(exp, std::ios::binary) << got;
    REQUIRE_MESSAGE(fs::exists(exp), exp.string());
    CHECK_MESSAGE(got == slurp(exp), ini.filename().string());
}

constexpr const char* kTestKey = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

void write_file(const fs::path& p, const std::string& text, mode_t mode) {
    std::ofstream(p, std::ios::binary) << text;
    REQUIRE(chmod(p.c_str(), mode) == 0);
}

// The key files of the golden .ini files, in a temporary current directory.
class KeyDir {
public:
    KeyDir() {
        char tmpl[] = "/tmp/gs-policy-keys-XXXXXX";
        REQUIRE(mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
        write_file(dir_ / "good.key", std::string(kTestKey) + "\n", 0600);
        write_file(dir_ / "mode644.key", std::string(kTestKey) + "\n", 0644);
        write_file(dir_ / "short.key", std::string(kTestKey, 63) + "\n", 0600);
        old_ = fs::current_path();
        fs::current_path(dir_);
    }
    ~KeyDir() {
        fs::current_path(old_);
        fs::remove_all(dir_);
    }
    const fs::path& dir() const { return dir_; }

private:
    fs::path dir_, old_;
};

}  // namespace

TEST_CASE("bad files: each gives exactly its expected diagnostics") {
    auto bad = files("bad");
    CHECK(bad.size() >= 30);
    KeyDir keys;
    for (const fs::path& f : bad) {
        CAPTURE(f.filename().string());
        Policy p = Policy::parse(slurp(f), f.filename().string());
        CHECK_FALSE(p.ok());
        for (const Diagnostic& d : p.diagnostics()) {
            CHECK(d.file == f.filename().string());
            CHECK(d.text.rfind(d.file + ":" + std::to_string(d.line) + ": ", 0) == 0);
        }
        check_golden(f, diag_text(p));
    }
}

TEST_CASE("good files: no diagnostics, expected rules, and the canonical form reads back") {
    auto good = files("good");
    CHECK(good.size() >= 5);
    KeyDir keys;
    for (const fs::path& f : good) {
        CAPTURE(f.filename().string());
        Policy p = Policy::parse(slurp(f), f.filename().string());
        CHECK_MESSAGE(p.ok(), diag_text(p));
        std::string canon = to_ini(p);
        check_golden(f, canon);
        Policy again = Policy::parse(canon, "canon.ini");
        CHECK_MESSAGE(again.ok(), diag_text(again));
        CHECK(to_ini(again) == canon);
    }
}

TEST_CASE("the design example decides what DESIGN.md says") {
    Policy p = Policy::load_file(std::string(GS_POLICY_TEST_DIR) + "/good/design_example.ini");
    REQUIRE(p.ok());
    REQUIRE(p.rules().size() == 2);
    const Rule& web = p.rules()[0];
    CHECK(web.decision.rule == "web");
    CHECK(web.decision.line == 9);
    CHECK(web.process == std::vector<std::string>{"curl", "wget"});
    CHECK(web.proto == Proto::tcp);
    CHECK(web.dst.size() == 2);
    CHECK(web.dport.size() == 3);
    CHECK(web.direction == Direction::connect);
    CHECK(web.decision.service == ServiceClass::reliable);
    CHECK(web.decision.transport == Transport::automatic);
    CHECK(web.decision.qos.rate == 2500000);
    CHECK(web.decision.qos.priority == 6);
    CHECK(web.decision.qos.dscp == 34);
    const Rule& media = p.rules()[1];
    CHECK(media.decision.service == ServiceClass::realtime);
    CHECK(media.decision.transport == Transport::automatic);   // realtime defaults to auto
    CHECK(media.decision.qos.latency_us == 120000);
    CHECK(media.decision.qos.fec_data == 10);
    CHECK(media.decision.qos.fec_parity == 2);
    REQUIRE(p.overlays().size() == 1);
    CHECK(p.overlays()[0].id == 1234);
    CHECK(p.overlays()[0].protocol == "DT");
    CHECK(p.overlays()[0].group_port == 6000);
    CHECK(p.overlays()[0].server == "127.0.0.1:8081");
    CHECK(p.general().capacity == 125000000);
}

TEST_CASE("builtin policy parses clean and changes nothing on the wire") {
    Policy p = Policy::builtin();
    CHECK_MESSAGE(p.ok(), diag_text(p));
    CHECK(p.source() == "<built-in>");
    CHECK(p.general().on_error == OnError::open);
    CHECK(p.general().log == LogLevel::warn);
    CHECK(p.rules().size() >= 2);
    for (const Rule& r : p.rules()) {
        CHECK(r.decision.transport == Transport::native);
        const Qos& q = r.decision.qos;
        CHECK((q.rate == 0 && q.rate_down == 0 && q.priority < 0 && q.dscp < 0 && q.elements.empty()));
    }
    FlowKey dns;
    dns.proto = Proto::udp;
    dns.direction = Direction::datagram;
    dns.dport = 53;
    CHECK(p.match(dns).rule == "dns");
    FlowKey web;
    web.dport = 8080;
    CHECK(p.match(web).rule == "web");
    CHECK(p.match(web).service == ServiceClass::reliable);
    web.dport = 9999;
    CHECK(p.match(web).rule == "default");
}

TEST_CASE("line numbers survive comments, continuations, blank lines and CRLF") {
    std::string text =
        "; c\r\n"
        "\r\n"
        "[flow a]\r\n"
        "dst = 10.0.0.0/8\r\n"
        "   10.0.0.1/8 ; host bits\r\n"
        "# another comment\r\n"
        "dport = 0\r\n";
    Policy p = Policy::parse(text, "t.ini");
    REQUIRE(p.diagnostics().size() == 2);
    CHECK(p.diagnostics()[0].text == "t.ini:5: dst = 10.0.0.1/8: 10.0.0.1/8 has host bits set, write 10.0.0.0/8");
    CHECK(p.diagnostics()[1].line == 7);
    CHECK(p.rules().empty());   // a section with a problem is not kept
}

TEST_CASE("a line of exactly 199 characters is fine, 200 is reported") {
    std::string ok = "[flow a]\nprocess = " + std::string(189, 'p') + "\n";
    CHECK(("process = " + std::string(189, 'p')).size() == 199);
    Policy p = Policy::parse(ok, "t.ini");
    // 189 characters is over the name limit, but the line itself is read whole.
    REQUIRE(p.diagnostics().size() == 1);
    CHECK(p.diagnostics()[0].text.find("name too long") != std::string::npos);
    Policy q = Policy::parse("[flow a]\nprocess = " + std::string(190, 'p') + "\ndport = 1\n", "t.ini");
    REQUIRE(q.diagnostics().size() == 1);
    CHECK(q.diagnostics()[0].text ==
          "t.ini:2: line too long (200 characters), the limit is 199: split the list over several "
          "lines with indentation");
}

TEST_CASE("what parsed cleanly is kept when other parts are broken") {
    Policy p = Policy::parse("[general]\nlog = info\non_error = fial\n[flow good]\ndport = 1\n"
                             "[flow bad]\ndport = 0\n[flow good2]\ndport = 2\n",
                             "t.ini");
    CHECK(p.diagnostics().size() == 2);
    CHECK(p.general().log == LogLevel::info);
    CHECK(p.general().on_error == OnError::open);   // the misspelt value does not count
    REQUIRE(p.rules().size() == 2);
    CHECK(p.rules()[0].decision.rule == "good");
    CHECK(p.rules()[1].decision.rule == "good2");
}

TEST_CASE("load_file: an unreadable file is one diagnostic") {
    Policy p = Policy::load_file("/nonexistent/gsocket/policy.ini");
    REQUIRE(p.diagnostics().size() == 1);
    CHECK(p.diagnostics()[0].text ==
          "/nonexistent/gsocket/policy.ini:0: cannot read: No such file or directory, check GSOCKET_POLICY");
    Policy d = Policy::load_file("/");
    CHECK(d.diagnostics().size() == 1);
    FlowKey f;
    CHECK(p.match(f).rule == "default");
}

TEST_CASE("find_policy_file: XDG_CONFIG_HOME, then HOME, then /etc") {
    char tmpl[] = "/tmp/gs-policy-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    fs::path dir = tmpl;
    std::string old_xdg = getenv("XDG_CONFIG_HOME") ? getenv("XDG_CONFIG_HOME") : "";
    std::string old_home = getenv("HOME") ? getenv("HOME") : "";
    bool etc = fs::exists("/etc/gsocket/policy.ini");
    std::string fallback = etc ? "/etc/gsocket/policy.ini" : "";

    setenv("XDG_CONFIG_HOME", (dir / "xdg").c_str(), 1);
    setenv("HOME", (dir / "home").c_str(), 1);
    CHECK(find_policy_file() == fallback);

    fs::create_directories(dir / "home/.config/gsocket");
    std::ofstream(dir / "home/.config/gsocket/policy.ini") << "[general]\n";
    CHECK(find_policy_file() == fallback);   // XDG_CONFIG_HOME set: ~/.config is not used
    unsetenv("XDG_CONFIG_HOME");
    CHECK(find_policy_file() == (dir / "home/.config/gsocket/policy.ini").string());

    setenv("XDG_CONFIG_HOME", (dir / "xdg").c_str(), 1);
    fs::create_directories(dir / "xdg/gsocket");
    std::ofstream(dir / "xdg/gsocket/policy.ini") << "[general]\n";
    CHECK(find_policy_file() == (dir / "xdg/gsocket/policy.ini").string());

    setenv("XDG_CONFIG_HOME", "relative/dir", 1);   // ignored, as the XDG spec says
    CHECK(find_policy_file() == (dir / "home/.config/gsocket/policy.ini").string());

    fs::create_directories(dir / "xdg2/gsocket/policy.ini");   // a directory is not a policy
    setenv("XDG_CONFIG_HOME", (dir / "xdg2").c_str(), 1);
    CHECK(find_policy_file() == fallback);

    if (old_xdg.empty()) unsetenv("XDG_CONFIG_HOME");
    else setenv("XDG_CONFIG_HOME", old_xdg.c_str(), 1);
    if (old_home.empty()) unsetenv("HOME");
    else setenv("HOME", old_home.c_str(), 1);
    fs::remove_all(dir);
}

TEST_CASE("auth_key: read once, relative to the policy file, shared by the rule's decisions") {
    KeyDir keys;
    fs::create_directories(keys.dir() / "etc");
    write_file(keys.dir() / "etc/mces.key", std::string(kTestKey) + "\n", 0400);
    const std::string policy = (keys.dir() / "etc/p.ini").string();
    write_file(policy,
               "[flow a]\ntransport = mces\nauth_key = mces.key\n"
               "[flow b]\nproto = udp\nclass = datagram\ntransport = auto\nauth_key = mces.key\n"
               "auth = authenticate\n"
               "[flow c]\ntransport = mces\nauth_key = " + (keys.dir() / "good.key").string() + "\n",
               0644);
    fs::current_path("/");   // the current directory does not matter for a file named with one
    Policy p = Policy::load_file(policy);
    REQUIRE_MESSAGE(p.ok(), diag_text(p));
    REQUIRE(p.rules().size() == 3);
    const Rule& a = p.rules()[0];
    const Rule& b = p.rules()[1];
    const Rule& c = p.rules()[2];
    CHECK(a.decision.auth == Auth::encrypt);
    CHECK(a.decision.auth_key == (keys.dir() / "etc/mces.key").string());
    REQUIRE(a.decision.psk != nullptr);
    CHECK(a.decision.psk->valid());
    CHECK(a.decision_udp.psk == a.decision.psk);   // TCP and UDP flows of the rule: one key
    CHECK(b.decision.auth == Auth::authenticate);
    CHECK(b.decision.psk == a.decision.psk);       // the file named twice is read once
    CHECK(c.decision.auth_key == (keys.dir() / "good.key").string());
    REQUIRE(c.decision.psk != nullptr);
    CHECK(c.decision.psk != a.decision.psk);
    CHECK(std::equal(c.decision.psk->bytes().begin(), c.decision.psk->bytes().end(),
                     a.decision.psk->bytes().begin()));   // the same 64 digits
    // The canonical form names the resolved path, so it reads from anywhere.
    Policy again = Policy::parse(to_ini(p), "canon.ini");
    CHECK_MESSAGE(again.ok(), diag_text(again));
    REQUIRE(again.rules().size() == 3);
    CHECK(again.rules()[0].decision.auth_key == a.decision.auth_key);
    // Flows without a key: none.
    Policy none = Policy::parse("[flow a]\ntransport = mces\n", "t.ini");
    REQUIRE(none.rules().size() == 1);
    CHECK(none.rules()[0].decision.auth == Auth::none);
    CHECK(none.rules()[0].decision.psk == nullptr);
}

TEST_CASE("auth_key: no diagnostic holds a byte of a key file") {
    KeyDir keys;
    // A key with a bad character at the end, and one file too long.
    write_file(keys.dir() / "bad.key", std::string(kTestKey, 63) + "g\n", 0600);
    write_file(keys.dir() / "long.key", std::string(kTestKey) + kTestKey + "\n", 0600);
    Policy p = Policy::parse("[flow a]\ntransport = mces\nauth_key = bad.key\n"
                             "[flow b]\ntransport = mces\nauth_key = long.key\n",
                             "t.ini");
    REQUIRE(p.diagnostics().size() == 2);
    CHECK(p.diagnostics()[0].text.find("offset 63 is not a hex digit") != std::string::npos);
    CHECK(p.diagnostics()[1].text.find("128 characters") != std::string::npos);
    for (const Diagnostic& d : p.diagnostics()) {
        CHECK(d.text.find("00112233") == std::string::npos);
        CHECK(d.text.find("ccddeeff") == std::string::npos);
    }
    CHECK(p.rules().empty());
}
