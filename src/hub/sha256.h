// SHA-256 (FIPS 180-4), written out so the hub library needs nothing beyond libcurl. The Hugging
// Face hub names every LFS file by the SHA-256 of its content (the ETag), so a download is verified
// by hashing its bytes as they arrive.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace trinity::hub {

class Sha256 {
 public:
  Sha256() { Reset(); }

  void Reset();
  void Update(const void* data, size_t size_bytes);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // The 32-byte digest as 64 lowercase hex characters. Ends the hash; call Reset() to reuse.
  std::string FinishHex();

 private:
  void Compress(const uint8_t block[64]);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> block_;
  size_t block_used_ = 0;
  uint64_t total_bytes_ = 0;
};

// The hex digest of a whole string.
std::string Sha256Hex(std::string_view data);

// The hex digest of the first `size_bytes` bytes of a file (all of it when size_bytes is
// UINT64_MAX). Throws HubError (kIo) when the file cannot be read or is shorter.
std::string Sha256File(const std::filesystem::path& path, uint64_t size_bytes = UINT64_MAX);

// True when `s` is 64 hex digits, i.e. an ETag that is the SHA-256 of an LFS file.
bool IsSha256Hex(std::string_view s);

}  // namespace trinity::hub
