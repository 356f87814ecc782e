// Open-addressing hash maps for the two lookups on the encode hot path: token bytes -> id and
// (left id, right id) -> merge. Built once, read-only afterwards; linear probing over a flat
// slot array, so a hit usually costs one cache miss instead of std::unordered_map's pointer chase.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace trinity {

inline uint64_t Mix64(uint64_t h) {
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return h;
}

inline uint64_t HashBytes(std::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  return Mix64(h);
}

// Byte string -> int32 value. Keys are copied into one arena.
class FlatStringMap {
 public:
  void Reserve(size_t n) {
    const size_t capacity = std::bit_ceil(n + n / 2 + 16);  // load factor 0.375..0.75
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
  }

  // Inserts key -> value unless key is present (the first value wins). Call Reserve first with
  // at least the number of keys.
  void Insert(std::string_view key, int32_t value) {
    const uint64_t hash = HashBytes(key);
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.value < 0) {
        slot = {static_cast<uint32_t>(hash >> 32), static_cast<uint32_t>(key.size()),
                static_cast<uint32_t>(arena_.size()), value};
        arena_.append(key);
        return;
      }
      if (Matches(slot, hash, key)) return;
    }
  }

  // The value of key, or -1.
  int32_t Find(std::string_view key) const {
    const uint64_t hash = HashBytes(key);
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.value < 0) return -1;
      if (Matches(slot, hash, key)) return slot.value;
    }
  }

 private:
  struct Slot {
    uint32_t tag = 0;  // high half of the hash
    uint32_t len = 0;
    uint32_t offset = 0;  // into arena_
    int32_t value = -1;   // -1: empty
  };

  bool Matches(const Slot& slot, uint64_t hash, std::string_view key) const {
    return slot.tag == static_cast<uint32_t>(hash >> 32) && slot.len == key.size() &&
           std::memcmp(arena_.data() + slot.offset, key.data(), key.size()) == 0;
  }

  std::vector<Slot> slots_ = std::vector<Slot>(1);
  size_t mask_ = 0;
  std::string arena_;
};

// (left id, right id) -> (rank, merged id).
class MergeMap {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };

  static uint64_t Key(int32_t left, int32_t right) {
    return uint64_t{static_cast<uint32_t>(left)} << 32 | static_cast<uint32_t>(right);
  }

  void Reserve(size_t n) {
    const size_t capacity = std::bit_ceil(n + n / 2 + 16);  // load factor 0.375..0.75
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
  }

  // Inserts unless the pair is present (the first, lowest rank wins).
  void Insert(int32_t left, int32_t right, Merge merge) {
    const uint64_t key = Key(left, right);
    for (size_t i = Mix64(key) & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.key == kEmpty) {
        slot = {key, merge};
        return;
      }
      if (slot.key == key) return;
    }
  }

  // The merge of (left, right), or nullptr.
  const Merge* Find(int32_t left, int32_t right) const {
    const uint64_t key = Key(left, right);
    for (size_t i = Mix64(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return &slot.merge;
      if (slot.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are < INT32_MAX, so never a real key
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge{-1, -1};
  };
  std::vector<Slot> slots_ = std::vector<Slot>(1);
  size_t mask_ = 0;
};

}  // namespace trinity
