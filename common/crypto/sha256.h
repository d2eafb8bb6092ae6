// SHA-256 digests and constant-time comparison, for client tokens (stored and compared as
// digests only) and content-hash versions of route tables. Thread-safe; no state.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace berry::crypto {

using Sha256Digest = std::array<uint8_t, 32>;

// SHA-256 of `data`.
Sha256Digest Sha256(std::string_view data);

// The digest as 32 raw bytes in a string (for protobuf `bytes` fields).
std::string Sha256Bytes(std::string_view data);

// Lower-case hex of arbitrary bytes.
std::string HexEncode(std::string_view bytes);

// True when a and b are equal, in time that depends only on their lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace berry::crypto
