// gsrun: run a program with libgsocket-preload.so and a policy.
//
// It sets the environment the shim reads, keeps any LD_PRELOAD the user
// already has, tells the user when the preload cannot work (static, 32-bit,
// setuid or file-capability programs, Go programs), and execs the program
// (same pid, same signals, same exit status).
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>
#include <vector>

#ifndef GS_LIBDIR
#define GS_LIBDIR "/usr/local/lib"
#endif

namespace {

constexpr const char* kLib = "libgsocket-preload.so";

void usage(FILE* f) {
    fprintf(f,
            "usage: gsrun [OPTIONS] -- CMD [ARGS...]\n"
            "Run CMD with gsocket: every socket it opens is classified by a policy and\n"
            "given its QoS (see docs/policy.md).\n"
            "\n"
            "options:\n"
            "  --policy FILE    policy file (default: $GSOCKET_POLICY, then\n"
            "                   ~/.config/gsocket/policy.ini, /etc/gsocket/policy.ini,\n"
            "                   then the built-in default)\n"
            "  --log LEVEL      off, error, warn (default), info or debug\n"
            "  --log-file FILE  append log lines to FILE instead of stderr\n"
            "  --stats FILE     at exit, each process appends one JSON line with all\n"
            "                   its flows to FILE (truncated when gsrun starts)\n"
            "  --lib PATH       the preload library (default: found next to gsrun)\n"
            "  -q, --quiet      no warnings from gsrun itself\n"
            "  -h, --help       this text\n"
            "\n"
            "exit status: CMD's, or 127 when CMD cannot be run, 2 for bad options.\n");
}

bool readable(const std::string& p) { return !p.empty() && access(p.c_str(), R_OK) == 0; }

std::string self_dir() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "";
    buf[n] = '\0';
    std::string s(buf);
    return s.substr(0, s.rfind('/'));
}

std::string absolute(const std::string& p) {
    if (p.empty() || p[0] == '/') return p;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return p;
    return std::string(cwd) + "/" + p;
}

std::string find_lib(const std::string& given) {
    if (!given.empty()) return readable(given) ? absolute(given) : "";
    if (const char* e = getenv("GSOCKET_PRELOAD_LIB"); e && readable(e)) return absolute(e);
    std::string d = self_dir();
    for (const std::string& c : {d + "/../shim/" + kLib, d + "/" + kLib, d + "/../lib/x86_64-linux-gnu/" + kLib,
                                 d + "/../lib/" + kLib, std::string(GS_LIBDIR) + "/" + kLib}) {
        if (readable(c)) {
            char real[PATH_MAX];
            return realpath(c.c_str(), real) ? std::string(real) : c;
        }
    }
    return "";
}

// execvp's search, so we inspect what will really run.
std::string which(const std::string& cmd) {
    if (cmd.find('/') != std::string::npos) return cmd;
    const char* path = getenv("PATH");
    std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find(':', start);
        if (end == std::string::npos) end = p.size();
        std::string dir = p.substr(start, end - start);
        std::string c = (dir.empty() ? "." : dir) + "/" + cmd;
        if (access(c.c_str(), X_OK) == 0) return c;
        start = end + 1;
    }
    return "";
}

bool g_quiet = false;
void warn(const std::string& cmd, const char* what) {
    if (!g_quiet) fprintf(stderr, "gsrun: warning: %s %s\n", cmd.c_str(), what);
}

// Reads the ELF headers and says what stops LD_PRELOAD from working.
void inspect_elf(const std::string& shown, int fd) {
    Elf64_Ehdr eh;
    if (pread(fd, &eh, sizeof eh, 0) < static_cast<ssize_t>(EI_NIDENT) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
        return;
    if (eh.e_ident[EI_CLASS] == ELFCLASS32) {
        warn(shown, "is a 32-bit program and libgsocket-preload.so is 64-bit: the loader will skip the preload "
                    "and no flow will be classified");
        return;
    }
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr)) return;
    bool interp = false;
    for (int i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph;
        if (pread(fd, &ph, sizeof ph, static_cast<off_t>(eh.e_phoff + i * sizeof ph)) != sizeof ph) return;
        interp |= ph.p_type == PT_INTERP;
    }
    if (!interp) {
        warn(shown, "is statically linked: LD_PRELOAD cannot reach it, its flows will not be classified "
                    "(docs/limitations.md)");
        return;
    }
    // Go programs make their own system calls even when dynamically linked.
    if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shstrndx == SHN_UNDEF) return;
    Elf64_Shdr strtab;
    if (pread(fd, &strtab, sizeof strtab, static_cast<off_t>(eh.e_shoff + eh.e_shstrndx * sizeof strtab)) !=
        sizeof strtab)
        return;
    for (int i = 0; i < eh.e_shnum; ++i) {
        Elf64_Shdr sh;
        char name[16] = {};
        if (pread(fd, &sh, sizeof sh, static_cast<off_t>(eh.e_shoff + i * sizeof sh)) != sizeof sh) return;
        if (pread(fd, name, sizeof name - 1, static_cast<off_t>(strtab.sh_offset + sh.sh_name)) <= 0) continue;
        if (strcmp(name, ".go.buildinfo") == 0 || strcmp(name, ".gopclntab") == 0) {
            warn(shown, "is a Go program: Go's network calls bypass libc, so the preload sees none of them "
                        "(docs/limitations.md)");
            return;
        }
    }
}

void inspect(const std::string& cmd, int depth = 0) {
    std::string path = which(cmd);
    if (path.empty() || depth > 2) return;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return;
    if (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) || ((st.st_mode & S_ISGID) && st.st_gid != getegid()))
        warn(path, "is setuid/setgid: the loader drops LD_PRELOAD for it, its flows will not be classified");
    if (getxattr(path.c_str(), "security.capability", nullptr, 0) > 0 && geteuid() != 0)
        warn(path, "has file capabilities: the loader drops LD_PRELOAD for it, its flows will not be classified");
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char head[256] = {};
    ssize_t n = pread(fd, head, sizeof head - 1, 0);
    if (n > 2 && head[0] == '#' && head[1] == '!') {
        // A script: what matters is its interpreter (through /usr/bin/env too).
        std::string line(head + 2, strcspn(head + 2, "\n"));
        std::vector<std::string> words;
        for (size_t i = 0; i < line.size();) {
            size_t j = line.find_first_of(" \t", i);
            if (j == std::string::npos) j = line.size();
            if (j > i) words.push_back(line.substr(i, j - i));
            i = j + 1;
        }
        close(fd);
        if (words.empty()) return;
        std::string interp = words[0];
        if (interp.size() >= 4 && interp.compare(interp.size() - 4, 4, "/env") == 0 && words.size() > 1)
            interp = words[1];
        inspect(interp, depth + 1);
        return;
    }
    inspect_elf(path, fd);
    close(fd);
}

// What the user preloads keeps its place in front (sanitizer runtimes must
// come first; other shims keep their order) and ours follows; every library
// passes calls on with RTLD_NEXT, so the chain reaches libc either way.
std::string preload_value(const std::string& lib) {
    const char* cur = getenv("LD_PRELOAD");
    std::string existing = cur ? cur : "";
    if (existing.find(kLib) != std::string::npos) return existing;   // nested gsrun
    return existing.empty() ? lib : existing + " " + lib;
}

}  // namespace

int main(int argc, char** argv) {
    std::string policy, log, log_file, stats, lib;
    int i = 1;
    auto need = [&](const char* opt) -> const char* {
        if (i + 1 >= argc) {
            fprintf(stderr, "gsrun: %s needs a value\n", opt);
            usage(stderr);
            exit(2);
        }
        return argv[++i];
    };
    for (; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        }
        if (a == "--policy") policy = need("--policy");
        else if (a == "--log") log = need("--log");
        else if (a == "--log-file") log_file = need("--log-file");
        else if (a == "--stats") stats = need("--stats");
        else if (a == "--lib") lib = need("--lib");
        else if (a == "-q" || a == "--quiet") g_quiet = true;
        else if (!a.empty() && a[0] == '-') {
            fprintf(stderr, "gsrun: unknown option %s\n", a.c_str());
            usage(stderr);
            return 2;
        } else {
            break;   // CMD without "--"
        }
    }
    if (i >= argc) {
        fprintf(stderr, "gsrun: no command given\n");
        usage(stderr);
        return 2;
    }
    if (!log.empty() && log != "off" && log != "error" && log != "warn" && log != "info" && log != "debug") {
        fprintf(stderr, "gsrun: --log %s: unknown level, use off, error, warn, info or debug\n", log.c_str());
        return 2;
    }
    if (!policy.empty() && !readable(policy)) {
        fprintf(stderr, "gsrun: --policy %s: %s; check the path (gsctl policy check FILE validates it)\n",
                policy.c_str(), strerror(errno));
        return 2;
    }
    std::string libpath = find_lib(lib);
    if (libpath.empty()) {
        fprintf(stderr, "gsrun: cannot find %s%s%s; build it (meson) or pass --lib PATH\n", kLib,
                lib.empty() ? "" : " at ", lib.c_str());
        return 2;
    }
    if (!stats.empty()) {
        stats = absolute(stats);
        int fd = open(stats.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "gsrun: --stats %s: %s\n", stats.c_str(), strerror(errno));
            return 2;
        }
        close(fd);
        setenv("GSOCKET_STATS", stats.c_str(), 1);
    }
    if (!policy.empty()) setenv("GSOCKET_POLICY", absolute(policy).c_str(), 1);
    if (!log.empty()) setenv("GSOCKET_LOG", log.c_str(), 1);
    if (!log_file.empty()) setenv("GSOCKET_LOG_FILE", absolute(log_file).c_str(), 1);
    setenv("LD_PRELOAD", preload_value(libpath).c_str(), 1);

    inspect(argv[i]);
    execvp(argv[i], argv + i);
    fprintf(stderr, "gsrun: cannot run %s: %s\n", argv[i], strerror(errno));
    return 127;
}
