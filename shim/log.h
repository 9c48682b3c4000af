// The shim's log: one line per event, to stderr or GSOCKET_LOG_FILE.
//
// Safe where a signal handler may reach: no allocation, no lock, no fd kept
// open (a program that closes every fd it does not know cannot close ours,
// and a reused fd number can never receive our lines).
#pragma once

#include "policy/policy.h"

namespace gs::shim::log {

using policy::LogLevel;

// Configure once, before other threads can log (the constructor does).
void configure(LogLevel level, const char* file) noexcept;
LogLevel level() noexcept;
inline bool on(LogLevel l) noexcept { return l != LogLevel::off && l <= level(); }

// printf-style; the line gets the "gsocket[PID] LEVEL: " prefix and a newline.
void line(LogLevel l, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace gs::shim::log

#define GS_LOG(lvl, ...)                                                   \
    do {                                                                   \
        if (::gs::shim::log::on(::gs::policy::LogLevel::lvl))              \
            ::gs::shim::log::line(::gs::policy::LogLevel::lvl, __VA_ARGS__); \
    } while (0)
