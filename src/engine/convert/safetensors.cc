#include "engine/convert/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/common/error.h"
#include "engine/common/fp16.h"

namespace trinity::convert {
namespace {

using nlohmann::json;

struct DtypeInfo {
  std::string_view name;
  StDtype dtype;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"BOOL", StDtype::kBool, 1}, {"U8", StDtype::kU8, 1},     {"I8", StDtype::kI8, 1},
    {"U16", StDtype::kU16, 2},   {"I16", StDtype::kI16, 2},   {"F16", StDtype::kF16, 2},
    {"BF16", StDtype::kBF16, 2}, {"U32", StDtype::kU32, 4},   {"I32", StDtype::kI32, 4},
    {"F32", StDtype::kF32, 4},   {"U64", StDtype::kU64, 8},   {"I64", StDtype::kI64, 8},
    {"F64", StDtype::kF64, 8},
};

const DtypeInfo& Info(StDtype dtype) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.dtype == dtype) return d;
  }
  return kDtypes[0];  // unreachable: every enumerator is listed
}

// Largest header we accept (the Python tools refuse more than 100 MB as well).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

}  // namespace

const char* StDtypeName(StDtype dtype) { return Info(dtype).name.data(); }
size_t StDtypeSize(StDtype dtype) { return Info(dtype).size; }

uint64_t StTensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

std::string StTensor::ShapeString() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::unique_ptr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail("{}: cannot open safetensors file: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    Fail("{}: cannot stat safetensors file: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail("{}: not a regular file", path);
  }
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ < 8) {
    ::close(fd);
    Fail("{}: truncated safetensors file: {} bytes, expected at least the 8-byte header size", path, file->size_);
  }
  void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (map == MAP_FAILED) Fail("{}: cannot mmap safetensors file: {}", path, std::strerror(err));
  file->mapping_ = map;
  file->base_ = static_cast<const uint8_t*>(map);
  file->Parse();
  return file;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::FromMemory(const uint8_t* data, size_t size, std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  file->base_ = data;
  file->size_ = size;
  file->Parse();
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

const StTensor* SafetensorsFile::Find(std::string_view name) const {
  for (const StTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

void SafetensorsFile::Parse() {
  if (size_ < 8) Fail("{}: truncated safetensors file: {} bytes, expected at least 8", path_, size_);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(base_[i]) << (8 * i);
  if (header_size > size_ - 8) {
    Fail("{}: safetensors header size {} exceeds the file ({} bytes after the size field): truncated or not a "
         "safetensors file",
         path_, header_size, size_ - 8);
  }
  if (header_size > kMaxHeaderBytes) Fail("{}: safetensors header size {} exceeds the 100 MB limit", path_, header_size);
  const char* header_begin = reinterpret_cast<const char*>(base_ + 8);
  json header = json::parse(header_begin, header_begin + header_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) Fail("{}: safetensors header is not valid JSON", path_);
  if (!header.is_object()) Fail("{}: safetensors header must be a JSON object", path_);

  const uint8_t* data_area = base_ + 8 + header_size;
  const uint64_t data_size = size_ - 8 - header_size;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // (begin, end) per tensor, for overlap checks
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& entry = it.value();
    if (!entry.is_object()) Fail("{}: tensor {}: header entry must be an object", path_, name);
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) Fail("{}: tensor {}: missing or non-string \"dtype\"", path_, name);
    const std::string dtype_name = dtype_it->get<std::string>();
    const DtypeInfo* info = nullptr;
    for (const DtypeInfo& d : kDtypes) {
      if (d.name == dtype_name) info = &d;
    }
    if (info == nullptr) {
      Fail("{}: tensor {}: unsupported dtype \"{}\" (expected U8, BF16, F16, F32 or another safetensors dtype)", path_,
           name, dtype_name);
    }
    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) Fail("{}: tensor {}: missing or non-array \"shape\"", path_, name);
    StTensor t;
    t.name = name;
    t.dtype = info->dtype;
    uint64_t n = 1;
    bool overflow = false;
    for (const json& d : *shape_it) {
      if (!d.is_number_unsigned()) Fail("{}: tensor {}: shape entries must be non-negative integers", path_, name);
      const uint64_t v = d.get<uint64_t>();
      t.shape.push_back(v);
      if (v != 0 && n > std::numeric_limits<uint64_t>::max() / v) overflow = true;
      n *= v;
    }
    if (t.shape.size() > 8) Fail("{}: tensor {}: {} dimensions is too many", path_, name, t.shape.size());
    if (overflow || n > std::numeric_limits<uint64_t>::max() / info->size) {
      Fail("{}: tensor {}: shape {} is too large", path_, name, t.ShapeString());
    }
    auto off_it = entry.find("data_offsets");
    if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
        !(*off_it)[1].is_number_unsigned()) {
      Fail("{}: tensor {}: \"data_offsets\" must be two non-negative integers", path_, name);
    }
    const uint64_t begin = (*off_it)[0].get<uint64_t>();
    const uint64_t end = (*off_it)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      Fail("{}: tensor {}: data_offsets [{}, {}] lie outside the data area of {} bytes (file truncated?)", path_, name,
           begin, end, data_size);
    }
    const uint64_t expected = n * info->size;
    if (end - begin != expected) {
      Fail("{}: tensor {}: data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}", path_, name, begin, end,
           end - begin, t.ShapeString(), info->name, expected);
    }
    t.data = data_area + begin;
    t.size_bytes = expected;
    tensors_.push_back(std::move(t));
    ranges.emplace_back(begin, end);
  }
  // Order by offset and reject overlaps (zero-sized tensors overlap nothing).
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  uint64_t prev_end = 0;
  const StTensor* prev = nullptr;
  for (size_t i : order) {
    if (ranges[i].first == ranges[i].second) continue;
    if (prev != nullptr && ranges[i].first < prev_end) {
      Fail("{}: tensors {} and {} overlap in the data area", path_, prev->name, tensors_[i].name);
    }
    prev_end = ranges[i].second;
    prev = &tensors_[i];
  }
  std::vector<StTensor> sorted;
  sorted.reserve(tensors_.size());
  for (size_t i : order) sorted.push_back(std::move(tensors_[i]));
  tensors_ = std::move(sorted);
}

SafetensorsSet SafetensorsSet::OpenDir(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsSet set;
  set.dir_ = dir;
  std::vector<std::string> names;  // file names relative to dir
  std::vector<std::pair<std::string, std::string>> weight_map;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path);
    if (!in) Fail("{}: cannot read", index_path.string());
    json index = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) Fail("{}: not a valid JSON object", index_path.string());
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) Fail("{}: missing \"weight_map\" object", index_path.string());
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) Fail("{}: weight_map entry {} must be a file name", index_path.string(), it.key());
      const std::string file = it.value().get<std::string>();
      if (file.empty() || file.find('/') != std::string::npos || file == "..") {
        Fail("{}: weight_map entry {} names \"{}\", expected a file in the same directory", index_path.string(), it.key(),
             file);
      }
      weight_map.emplace_back(it.key(), file);
      if (std::find(names.begin(), names.end(), file) == names.end()) names.push_back(file);
    }
  } else {
    if (!fs::is_directory(dir, ec)) Fail("{}: not a directory", dir);
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors") names.push_back(e.path().filename().string());
    }
    if (ec) Fail("{}: cannot list directory: {}", dir, ec.message());
  }
  if (names.empty()) Fail("{}: no *.safetensors files (and no model.safetensors.index.json)", dir);
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i < names.size(); ++i) {
    set.files_.push_back(SafetensorsFile::Open((fs::path(dir) / names[i]).string()));
    for (const StTensor& t : set.files_.back()->tensors()) set.index_.emplace_back(t.name, Entry{&t, i});
  }
  std::sort(set.index_.begin(), set.index_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < set.index_.size(); ++i) {
    if (set.index_[i].first == set.index_[i - 1].first) {
      Fail("{}: tensor {} appears in both {} and {}", dir, set.index_[i].first,
           set.files_[set.index_[i - 1].second.file]->path(), set.files_[set.index_[i].second.file]->path());
    }
  }
  for (const auto& [tensor, file] : weight_map) {
    const StTensor* t = set.Find(tensor);
    if (t == nullptr || set.FileOf(*t) != (fs::path(dir) / file).string()) {
      Fail("{}: model.safetensors.index.json places tensor {} in {}, but that file does not hold it", dir, tensor, file);
    }
  }
  return set;
}

const StTensor* SafetensorsSet::Find(std::string_view name) const {
  auto it = std::lower_bound(index_.begin(), index_.end(), name,
                             [](const auto& e, std::string_view n) { return e.first < n; });
  if (it == index_.end() || it->first != name) return nullptr;
  return it->second.tensor;
}

const StTensor& SafetensorsSet::Get(std::string_view name) const {
  const StTensor* t = Find(name);
  if (t == nullptr) Fail("{}: tensor {} is missing from the checkpoint's safetensors files", dir_, name);
  return *t;
}

const std::string& SafetensorsSet::FileOf(const StTensor& tensor) const {
  for (const auto& e : index_) {
    if (e.second.tensor == &tensor) return files_[e.second.file]->path();
  }
  return dir_;
}

std::vector<const StTensor*> SafetensorsSet::AllTensors() const {
  std::vector<const StTensor*> out;
  out.reserve(index_.size());
  for (const auto& e : index_) out.push_back(e.second.tensor);
  return out;
}

std::vector<float> ReadFloats(const StTensor& tensor, const std::string& file) {
  const uint64_t n = tensor.n_elements();
  std::vector<float> out(n);
  const uint8_t* p = tensor.data;
  switch (tensor.dtype) {
    case StDtype::kF32:
      if (n > 0) std::memcpy(out.data(), p, n * 4);
      break;
    case StDtype::kF16:
      for (uint64_t i = 0; i < n; ++i) out[i] = Fp16ToFp32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    case StDtype::kBF16:
      for (uint64_t i = 0; i < n; ++i) out[i] = Bf16ToFp32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    default:
      Fail("{}: tensor {} has dtype {}; expected F32, F16 or BF16", file, tensor.name, StDtypeName(tensor.dtype));
  }
  return out;
}

}  // namespace trinity::convert
