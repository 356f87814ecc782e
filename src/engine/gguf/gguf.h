// GGUF v2/v3 reader (mmap, zero copy) and writer.
//
// The reader validates everything before exposing it: magic, version, counts, string lengths,
// value types, tensor shapes, types, offsets, sizes, alignment and overlaps, all bounded by the
// file size. Any violation throws trinity::Error naming the file, the key or tensor and what was
// expected. Nothing here knows about models; model/ interprets the metadata.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/gguf/tensor_type.h"

namespace trinity::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

const char* ValueTypeName(ValueType type);

// One metadata value. Scalars keep their exact type; arrays are homogeneous.
struct Value {
  ValueType type = ValueType::kUint8;
  ValueType array_type = ValueType::kUint8;  // element type when type == kArray
  // Integer scalars are held as int64 or uint64 (by signedness), floats as double.
  std::variant<uint64_t, int64_t, double, bool, std::string> scalar;
  // Arrays: exactly one of these is used, chosen by array_type.
  std::vector<std::string> strings;
  std::vector<int64_t> ints;     // every integer array (uint64 values above INT64_MAX are rejected)
  std::vector<double> floats;    // float32/float64 arrays
  std::vector<uint8_t> bools;    // bool arrays
  size_t ArraySize() const;      // element count for arrays, 0 otherwise
};

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;   // ggml order: ne[0] is the contiguous (input) dimension
  uint32_t type_id = 0;       // the raw id stored in the file
  TensorType type = TensorType::kUnknown;  // resolved with the file's architecture
  uint64_t offset = 0;        // relative to the start of the data section
  uint64_t size_bytes = 0;    // computed from type and shape
  uint64_t n_elements() const;
};

class File {
 public:
  // Maps and validates the file. Throws trinity::Error on any problem.
  static std::unique_ptr<File> Open(const std::string& path);
  // Parses an in-memory image (the fuzz target and tests use this). `data` must outlive the File.
  static std::unique_ptr<File> FromMemory(const uint8_t* data, size_t size, std::string name = "<memory>");
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute offset of the data section

  // Metadata, in file order.
  const std::vector<KeyValue>& metadata() const { return metadata_; }
  const Value* Find(std::string_view key) const;

  // Typed getters. Find* return nullopt when the key is absent and throw when it exists with an
  // incompatible type; Get* throw when absent too. Integer getters accept any integer type whose
  // value fits; float getters accept float or integer types.
  std::optional<std::string> FindString(std::string_view key) const;
  std::string GetString(std::string_view key) const;
  std::optional<uint64_t> FindUint(std::string_view key) const;
  uint64_t GetUint(std::string_view key) const;
  std::optional<int64_t> FindInt(std::string_view key) const;
  int64_t GetInt(std::string_view key) const;
  std::optional<double> FindFloat(std::string_view key) const;
  double GetFloat(std::string_view key) const;
  std::optional<bool> FindBool(std::string_view key) const;
  // Arrays (throw if absent or of another element type; integer arrays of any width are accepted).
  const std::vector<std::string>& GetStringArray(std::string_view key) const;
  const std::vector<int64_t>& GetIntArray(std::string_view key) const;
  const std::vector<double>& GetFloatArray(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  // Pointer to a tensor's bytes inside the mapping (size_bytes long).
  const uint8_t* TensorData(const TensorInfo& tensor) const;
  // Drops the mapped pages wholly inside [data, data + n) from this process's resident set
  // (madvise MADV_DONTNEED; the mapping is read-only, so a later read faults them back in from
  // the page cache). For a copy made at load, so the source no longer counts towards peak memory.
  // No-op for in-memory files.
  void ReleasePages(const uint8_t* data, uint64_t n) const;

 private:
  File() = default;
  void Parse();
  const Value& GetArray(std::string_view key, std::string_view expected,
                        bool (*element_ok)(ValueType)) const;

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when we own an mmap
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> metadata_;
  std::vector<TensorInfo> tensors_;
};

// Builds a GGUF v3 file in memory order: metadata (in insertion order), tensor infos, data.
class Writer {
 public:
  void SetAlignment(uint64_t alignment);  // also written as general.alignment when != 32
  void AddString(std::string key, std::string value);
  void AddUint32(std::string key, uint32_t value);
  void AddInt32(std::string key, int32_t value);
  void AddUint64(std::string key, uint64_t value);
  void AddFloat32(std::string key, float value);
  void AddBool(std::string key, bool value);
  void AddStringArray(std::string key, std::vector<std::string> values);
  void AddFloat32Array(std::string key, std::vector<float> values);
  void AddInt32Array(std::string key, std::vector<int32_t> values);
  void AddValue(std::string key, Value value);  // any value, e.g. copied from another file
  // `data` must be exactly the size implied by type_id and ne (for I2_S: n/4 + 32).
  void AddTensor(std::string name, std::vector<uint64_t> ne, uint32_t type_id, std::vector<uint8_t> data);
  // Writes atomically (temporary file + rename). Throws trinity::Error on I/O failure.
  void WriteFile(const std::string& path) const;
  std::vector<uint8_t> WriteMemory() const;

 private:
  // Validates the tensors and returns everything before the data section (padded).
  std::vector<uint8_t> SerializeHeader() const;

  uint64_t alignment_ = 32;
  std::vector<KeyValue> metadata_;
  struct PendingTensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type_id;
    std::vector<uint8_t> data;
  };
  std::vector<PendingTensor> tensors_;
};

}  // namespace trinity::gguf
