// Safetensors reader (mmap, zero copy) for Hugging Face checkpoints.
//
// Format: 8-byte little-endian header size N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [out, in], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data area; offsets are relative to the start of the data area. Everything is validated
// before it is exposed: the header size against the file size, the JSON, every dtype, shape and
// offset pair against the data area and against shape * dtype size, and overlaps between tensors.
// Any violation throws trinity::Error naming the file and the tensor. `__metadata__` is ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace trinity::convert {

enum class StDtype { kBool, kU8, kI8, kU16, kI16, kF16, kBF16, kU32, kI32, kF32, kU64, kI64, kF64 };

const char* StDtypeName(StDtype dtype);
size_t StDtypeSize(StDtype dtype);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::kU8;
  std::vector<uint64_t> shape;  // row-major, shape[0] outermost (PyTorch order)
  const uint8_t* data = nullptr;  // inside the mapping; NOT necessarily aligned (use memcpy)
  uint64_t size_bytes = 0;
  uint64_t n_elements() const;
  std::string ShapeString() const;  // "[a, b]"
};

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> Open(const std::string& path);
  // `data` must outlive the object (fuzzing and tests).
  static std::unique_ptr<SafetensorsFile> FromMemory(const uint8_t* data, size_t size, std::string name = "<memory>");
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }  // in data-offset order
  const StTensor* Find(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  void Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;
  std::vector<StTensor> tensors_;
};

// All safetensors files of a checkpoint directory: the shards listed in
// model.safetensors.index.json ("weight_map": tensor -> file) when it exists, else every
// *.safetensors file in the directory. A tensor name may appear in only one file.
class SafetensorsSet {
 public:
  static SafetensorsSet OpenDir(const std::string& dir);

  // nullptr when absent.
  const StTensor* Find(std::string_view name) const;
  // Throws naming the tensor and the directory when absent.
  const StTensor& Get(std::string_view name) const;
  // The file a tensor came from (for error messages).
  const std::string& FileOf(const StTensor& tensor) const;
  std::vector<const StTensor*> AllTensors() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  struct Entry {
    const StTensor* tensor;
    size_t file;
  };
  std::vector<std::pair<std::string, Entry>> index_;  // sorted by name
};

// Reads a tensor of a float dtype (F32, F16, BF16) into floats. Throws for other dtypes.
std::vector<float> ReadFloats(const StTensor& tensor, const std::string& file);

}  // namespace trinity::convert
