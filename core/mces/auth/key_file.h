// Reading the pre-shared key (Psk, secret.h) that a policy names for MCES
// authentication from its file: the only file I/O in core/mces/auth;
// everything else here is sans-IO.
//
// Key file format: exactly 64 hexadecimal digits (0-9, a-f, A-F: the 32 key
// bytes), optionally followed by whitespace (a newline). Nothing else: no
// comments, no leading blanks. Make one with
//     (umask 077; od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' > mces.key)
// or `openssl rand -hex 32 > mces.key && chmod 600 mces.key`.
//
// Like ssh with a private key, load_psk refuses a file that
//   - is not a regular file (after following symlinks), or
//   - is not owned by the effective user, or
//   - has any group or other permission bit (mode & 077): it must be 0600
//     or 0400,
// and says which file, what is wrong and how to fix it. No message ever
// holds key bytes, nor any character of the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/mces/auth/secret.h"

namespace gs::mces::auth {

constexpr std::size_t kPskHexLen = 2 * kPskLen;
// Larger files are refused without reading them: a key file is 64-66 bytes.
constexpr std::size_t kMaxKeyFileLen = 256;

// Reads the key file at path into out. Returns 0, or -errno with a one-line
// message in error that names the file and the fix:
//   -ENOENT, -EACCES, ... (open failed: strerror's text)
//   -EPERM   not a regular file, owned by another user, or group/other bits
//            set ("... has mode 0644 ...; run: chmod 600 PATH")
//   -EINVAL  not 64 hex digits (+ optional whitespace); says how many bytes
//            or at which offset a non-hex character sits, never which one
//   -ENOMEM  guarded memory could not be allocated
// On error out is left empty. The bytes read are wiped from the stack.
int load_psk(const std::string& path, Psk& out, std::string& error);

// The same check of contents without the file: text as read from a key
// file. name is used in messages only. Returns 0, -EINVAL or -ENOMEM.
int parse_psk(std::span<const char> text, const std::string& name, Psk& out,
              std::string& error);

}  // namespace gs::mces::auth
