#include "engine/gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>
#include <utility>

#include "engine/common/error.h"

namespace trinity::gguf {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF is read in place as little-endian");

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
constexpr std::string_view kAlignmentKey = "general.alignment";
constexpr std::string_view kArchitectureKey = "general.architecture";
constexpr uint64_t kInt64Max = std::numeric_limits<int64_t>::max();
// Smallest encodings, used to bound counts by the bytes left before allocating anything:
// a key-value pair is key length + type + 1 byte of value; a tensor info is name length +
// n_dims + one dimension + type + offset.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

// The one list of value types, in ValueType order: name, encoded bytes (0 for string/array),
// integer?, signed?
struct ValueTypeInfo {
  const char* name;
  uint8_t bytes;
  bool is_integer;
  bool is_signed;
};
constexpr ValueTypeInfo kValueTypes[] = {
    {"uint8", 1, true, false},    {"int8", 1, true, true},    {"uint16", 2, true, false},
    {"int16", 2, true, true},     {"uint32", 4, true, false}, {"int32", 4, true, true},
    {"float32", 4, false, false}, {"bool", 1, false, false},  {"string", 0, false, false},
    {"array", 0, false, false},   {"uint64", 8, true, false}, {"int64", 8, true, true},
    {"float64", 8, false, false},
};

bool IsValidType(uint32_t type) { return type < std::size(kValueTypes); }
const ValueTypeInfo& Info(ValueType type) {
  static constexpr ValueTypeInfo kInvalid = {"invalid", 0, false, false};
  const auto index = static_cast<uint32_t>(type);
  return IsValidType(index) ? kValueTypes[index] : kInvalid;
}
bool IsInteger(ValueType type) { return Info(type).is_integer; }
bool IsSigned(ValueType type) { return Info(type).is_signed; }
bool IsFloat(ValueType type) { return type == ValueType::kFloat32 || type == ValueType::kFloat64; }
uint64_t ScalarBytes(ValueType type) { return Info(type).bytes; }

// Smallest encoding of one value of `type` (strings: the length; arrays: type + count).
uint64_t MinValueBytes(ValueType type) {
  if (type == ValueType::kString) return 8;
  if (type == ValueType::kArray) return 12;
  return ScalarBytes(type);
}

std::string Describe(const Value& value) {
  if (value.type != ValueType::kArray) return ValueTypeName(value.type);
  return fmt::format("array of {}", ValueTypeName(value.array_type));
}

uint64_t AlignUp(uint64_t offset, uint64_t alignment) {
  return (offset + alignment - 1) / alignment * alignment;
}

std::string FormatShape(const std::vector<uint64_t>& ne) {
  return fmt::format("{{{}}}", fmt::join(ne, ", "));
}

// Why a type id is not readable, for error messages.
std::string UnsupportedTypeHint(uint32_t type_id, std::string_view architecture) {
  if (IsMicrosoftBitnetArch(architecture) && type_id > kBitnetTypeI2_S && type_id <= 39) {
    return " (Microsoft's I8_S/TL1/TL2 layouts are not supported; use the I2_S file)";
  }
  if (type_id == kBitnetTypeI2_S) {
    return fmt::format(
        " (id 36 means I2_S only with architecture 'bitnet-b1.58' or 'bitnet-25'; this file's "
        "general.architecture is '{}')",
        architecture);
  }
  return "";
}

// Bounds-checked little-endian cursor over the file image. `context_` names what is being read.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_context(std::string context) { context_ = std::move(context); }
  const std::string& context() const { return context_; }

  void Need(uint64_t n) const {
    if (n > remaining()) {
      Fail("{}: truncated file: {} needs {} bytes at offset {} but only {} remain", path_, context_,
           n, pos_, remaining());
    }
  }

  // Returns a pointer to the next `n` bytes and moves past them.
  const uint8_t* Take(uint64_t n) {
    Need(n);
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  template <typename T>
  T Read() {
    T value;
    std::memcpy(&value, Take(sizeof(T)), sizeof(T));
    return value;
  }

  std::string ReadString() {
    const uint64_t length = Read<uint64_t>();
    if (length > remaining()) {
      Fail("{}: {}: string length {} at offset {} exceeds the {} bytes left in the file", path_,
           context_, length, pos_ - 8, remaining());
    }
    return std::string(reinterpret_cast<const char*>(Take(length)), length);
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
  std::string context_ = "the header";
};

// Reads one integer of `type`; unsigned types come back as uint64_t, signed as int64_t.
std::variant<uint64_t, int64_t> ReadInteger(Reader& r, ValueType type) {
  const unsigned bytes = Info(type).bytes;
  uint64_t bits = 0;
  std::memcpy(&bits, r.Take(bytes), bytes);
  if (!IsSigned(type)) return bits;
  const unsigned shift = 64 - 8 * bytes;  // sign-extend from the top bit of the encoding
  return static_cast<int64_t>(bits << shift) >> shift;
}

double ReadFloat(Reader& r, ValueType type) {
  return type == ValueType::kFloat32 ? double{r.Read<float>()} : r.Read<double>();
}

bool ReadBool(Reader& r, const std::string& path) {
  const uint8_t b = r.Read<uint8_t>();
  if (b > 1) Fail("{}: {}: bool byte is {}, expected 0 or 1", path, r.context(), b);
  return b == 1;
}

Value ReadValue(Reader& r, ValueType type, const std::string& path) {
  Value value;
  value.type = type;
  if (IsInteger(type)) {
    std::visit([&](auto v) { value.scalar = v; }, ReadInteger(r, type));
  } else if (IsFloat(type)) {
    value.scalar = ReadFloat(r, type);
  } else if (type == ValueType::kBool) {
    value.scalar = ReadBool(r, path);
  } else if (type == ValueType::kString) {
    value.scalar = r.ReadString();
  } else {  // array
    const uint32_t raw_type = r.Read<uint32_t>();
    if (!IsValidType(raw_type)) {
      Fail("{}: {}: invalid array element type {} (expected 0..12)", path, r.context(), raw_type);
    }
    const auto element_type = static_cast<ValueType>(raw_type);
    if (element_type == ValueType::kArray) {
      Fail("{}: {}: arrays of arrays are not supported", path, r.context());
    }
    value.array_type = element_type;
    const uint64_t count = r.Read<uint64_t>();
    if (count > r.remaining() / MinValueBytes(element_type)) {
      Fail("{}: {}: array of {} {} elements cannot fit in the {} bytes left in the file", path,
           r.context(), count, ValueTypeName(element_type), r.remaining());
    }
    if (IsInteger(element_type)) {
      value.ints.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        const auto v = ReadInteger(r, element_type);
        if (const uint64_t* u = std::get_if<uint64_t>(&v)) {
          if (*u > static_cast<uint64_t>(kInt64Max)) {
            Fail("{}: {}: element {} = {} does not fit int64", path, r.context(), i, *u);
          }
          value.ints.push_back(static_cast<int64_t>(*u));
        } else {
          value.ints.push_back(std::get<int64_t>(v));
        }
      }
    } else if (IsFloat(element_type)) {
      value.floats.reserve(count);
      for (uint64_t i = 0; i < count; ++i) value.floats.push_back(ReadFloat(r, element_type));
    } else if (element_type == ValueType::kBool) {
      value.bools.reserve(count);
      for (uint64_t i = 0; i < count; ++i) value.bools.push_back(ReadBool(r, path));
    } else {
      value.strings.reserve(count);
      for (uint64_t i = 0; i < count; ++i) value.strings.push_back(r.ReadString());
    }
  }
  return value;
}

// Reads and checks one tensor info (shape, type, size); offsets are checked by the caller.
TensorInfo ReadTensorInfo(Reader& r, uint64_t index, std::string_view architecture,
                          const std::string& path) {
  TensorInfo t;
  r.set_context(fmt::format("the name of tensor entry {}", index));
  t.name = r.ReadString();
  r.set_context(fmt::format("tensor '{}'", t.name));
  const uint32_t n_dims = r.Read<uint32_t>();
  if (n_dims == 0 || n_dims > kMaxDims) {
    Fail("{}: tensor '{}' has {} dimensions, expected 1 to {}", path, t.name, n_dims, kMaxDims);
  }
  uint64_t n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = r.Read<uint64_t>();
    if (ne == 0) Fail("{}: tensor '{}' has dimension {} of size 0", path, t.name, d);
    if (ne > kInt64Max / n_elements) {
      Fail("{}: tensor '{}' element count overflows at dimension {} (size {})", path, t.name, d,
           ne);
    }
    n_elements *= ne;
    t.ne.push_back(ne);
  }
  t.type_id = r.Read<uint32_t>();
  const std::optional<TensorType> type = ResolveTensorType(t.type_id, architecture);
  if (!type) {
    Fail("{}: tensor '{}' has unsupported type id {}{}", path, t.name, t.type_id,
         UnsupportedTypeHint(t.type_id, architecture));
  }
  t.type = *type;
  const TensorTypeTraits& traits = Traits(t.type);
  if (t.ne[0] % traits.block_values != 0) {
    Fail("{}: tensor '{}' of type {} has rows of {} values, not a whole number of {}-value blocks",
         path, t.name, traits.name, t.ne[0], traits.block_values);
  }
  const std::optional<uint64_t> bytes = TensorBytes(t.type, n_elements);
  if (!bytes) {
    Fail("{}: tensor '{}' of type {} and shape {} has a byte size that overflows", path, t.name,
         traits.name, FormatShape(t.ne));
  }
  t.size_bytes = *bytes;
  t.offset = r.Read<uint64_t>();
  return t;
}

// ---- writer helpers -----------------------------------------------------------------------------

class Buffer {
 public:
  std::vector<uint8_t>& bytes() { return bytes_; }
  void Append(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    bytes_.insert(bytes_.end(), p, p + n);
  }
  template <typename T>
  void Put(T value) {
    Append(&value, sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    Append(s.data(), s.size());
  }
  void PadTo(uint64_t alignment) { bytes_.resize(AlignUp(bytes_.size(), alignment), 0); }

 private:
  std::vector<uint8_t> bytes_;
};

// Range check of an integer (held as uint64 or int64) against the width of `type`.
bool FitsInteger(ValueType type, std::variant<uint64_t, int64_t> v) {
  const unsigned bits = static_cast<unsigned>(ScalarBytes(type) * 8);
  if (const uint64_t* u = std::get_if<uint64_t>(&v)) {
    const uint64_t max = IsSigned(type) ? (uint64_t{1} << (bits - 1)) - 1
                                        : (bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1);
    return *u <= max;
  }
  const int64_t s = std::get<int64_t>(v);
  if (!IsSigned(type)) {
    return s >= 0 && (bits == 64 || static_cast<uint64_t>(s) < (uint64_t{1} << bits));
  }
  if (bits == 64) return true;
  const int64_t max = (int64_t{1} << (bits - 1)) - 1;
  return s >= -max - 1 && s <= max;
}

void PutInteger(Buffer& out, ValueType type, std::variant<uint64_t, int64_t> v) {
  // Two's complement: the low bytes of the 64-bit pattern are the narrower encoding.
  const uint64_t pattern = std::visit([](auto x) { return static_cast<uint64_t>(x); }, v);
  out.Append(&pattern, ScalarBytes(type));
}

void PutFloat(Buffer& out, ValueType type, double v) {
  if (type == ValueType::kFloat32) {
    out.Put(static_cast<float>(v));
  } else {
    out.Put(v);
  }
}

// True when a scalar's variant alternative matches its type (and integers fit its width).
bool ScalarFits(const Value& value) {
  const auto& s = value.scalar;
  if (IsInteger(value.type)) {
    if (const auto* u = std::get_if<uint64_t>(&s)) return FitsInteger(value.type, *u);
    if (const auto* i = std::get_if<int64_t>(&s)) return FitsInteger(value.type, *i);
    return false;
  }
  if (IsFloat(value.type)) return std::holds_alternative<double>(s);
  if (value.type == ValueType::kBool) return std::holds_alternative<bool>(s);
  return std::holds_alternative<std::string>(s);
}

// Checks that `value` is encodable; throws naming the key otherwise.
void ValidateValue(const std::string& key, const Value& value) {
  if (!IsValidType(static_cast<uint32_t>(value.type))) {
    Fail("gguf writer: key '{}' has invalid value type {}", key, static_cast<uint32_t>(value.type));
  }
  if (value.type == ValueType::kArray) {
    const ValueType t = value.array_type;
    if (!IsValidType(static_cast<uint32_t>(t)) || t == ValueType::kArray) {
      Fail("gguf writer: key '{}' has invalid array element type {}", key,
           static_cast<uint32_t>(t));
    }
    if (IsInteger(t)) {
      for (int64_t v : value.ints) {
        if (!FitsInteger(t, v)) {
          Fail("gguf writer: key '{}': element {} does not fit {}", key, v, ValueTypeName(t));
        }
      }
    }
    return;
  }
  if (!ScalarFits(value)) {
    Fail("gguf writer: key '{}': value does not fit its type {}", key, ValueTypeName(value.type));
  }
}

void PutValue(Buffer& out, const Value& value) {
  const ValueType type = value.type;
  if (IsInteger(type)) {
    if (const auto* u = std::get_if<uint64_t>(&value.scalar)) {
      PutInteger(out, type, *u);
    } else {
      PutInteger(out, type, std::get<int64_t>(value.scalar));
    }
  } else if (IsFloat(type)) {
    PutFloat(out, type, std::get<double>(value.scalar));
  } else if (type == ValueType::kBool) {
    out.Put<uint8_t>(std::get<bool>(value.scalar) ? 1 : 0);
  } else if (type == ValueType::kString) {
    out.PutString(std::get<std::string>(value.scalar));
  } else {
    const ValueType t = value.array_type;
    out.Put(static_cast<uint32_t>(t));
    out.Put<uint64_t>(value.ArraySize());
    if (IsInteger(t)) {
      for (int64_t v : value.ints) PutInteger(out, t, v);
    } else if (IsFloat(t)) {
      for (double v : value.floats) PutFloat(out, t, v);
    } else if (t == ValueType::kBool) {
      for (uint8_t v : value.bools) out.Put<uint8_t>(v != 0 ? 1 : 0);
    } else {
      for (const std::string& v : value.strings) out.PutString(v);
    }
  }
}

Value MakeScalar(ValueType type, std::variant<uint64_t, int64_t, double, bool, std::string> v) {
  Value value;
  value.type = type;
  value.scalar = std::move(v);
  return value;
}

bool IsValidAlignment(uint64_t alignment) {
  return alignment != 0 && std::has_single_bit(alignment) &&
         alignment <= std::numeric_limits<uint32_t>::max();
}

void WriteAll(int fd, const uint8_t* data, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t written = ::write(fd, data, n);
    if (written < 0) {
      if (errno == EINTR) continue;
      Fail("{}: write failed: {}", path, std::strerror(errno));
    }
    data += written;
    n -= static_cast<size_t>(written);
  }
}

}  // namespace

// ---- Value / TensorInfo -------------------------------------------------------------------------

const char* ValueTypeName(ValueType type) { return Info(type).name; }

size_t Value::ArraySize() const {
  if (type != ValueType::kArray) return 0;
  if (IsInteger(array_type)) return ints.size();
  if (IsFloat(array_type)) return floats.size();
  if (array_type == ValueType::kBool) return bools.size();
  return strings.size();
}

uint64_t TensorInfo::n_elements() const {
  return std::accumulate(ne.begin(), ne.end(), uint64_t{1}, std::multiplies<>());
}

// ---- File ---------------------------------------------------------------------------------------

std::unique_ptr<File> File::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    Fail("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail("{}: not a regular file", path);
  }
  if (st.st_size == 0) {
    ::close(fd);
    Fail("{}: file is empty (expected a GGUF header)", path);
  }
  const auto size = static_cast<size_t>(st.st_size);
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (mapping == MAP_FAILED)
    Fail("{}: mmap of {} bytes failed: {}", path, size, std::strerror(err));

  std::unique_ptr<File> file(new File());
  file->path_ = path;
  file->mapping_ = mapping;
  file->base_ = static_cast<const uint8_t*>(mapping);
  file->size_ = size;
  file->Parse();
  return file;
}

std::unique_ptr<File> File::FromMemory(const uint8_t* data, size_t size, std::string name) {
  std::unique_ptr<File> file(new File());
  file->path_ = std::move(name);
  file->base_ = data;
  file->size_ = size;
  file->Parse();
  return file;
}

void File::ReleasePages(const uint8_t* data, uint64_t n) const {
  if (mapping_ == nullptr || n == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + n) / page * page;
  if (begin < end) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

File::~File() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

void File::Parse() {
  Reader r(base_, size_, path_);
  const uint32_t magic = r.Read<uint32_t>();
  if (magic != kMagic) {
    Fail("{}: not a GGUF file: first bytes are {:02x} {:02x} {:02x} {:02x}, expected 'GGUF'", path_,
         base_[0], base_[1], base_[2], base_[3]);
  }
  version_ = r.Read<uint32_t>();
  if (version_ == 1) {
    Fail("{}: GGUF version 1 is not supported (it predates 64-bit counts); expected version 2 or 3",
         path_);
  }
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3) {
      Fail("{}: big-endian GGUF is not supported (expected a little-endian file)", path_);
    }
    Fail("{}: unsupported GGUF version {} (expected 2 or 3)", path_, version_);
  }
  const uint64_t n_tensors = r.Read<uint64_t>();
  const uint64_t n_kv = r.Read<uint64_t>();
  if (n_kv > r.remaining() / kMinKeyValueBytes) {
    Fail("{}: header declares {} metadata entries, more than the {} bytes left can hold", path_,
         n_kv, r.remaining());
  }
  if (n_tensors > r.remaining() / kMinTensorInfoBytes) {
    Fail("{}: header declares {} tensors, more than the {} bytes left can hold", path_, n_tensors,
         r.remaining());
  }

  // Metadata.
  metadata_.reserve(n_kv);
  std::unordered_set<std::string> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    r.set_context(fmt::format("the key of metadata entry {}", i));
    std::string key = r.ReadString();
    if (!keys.insert(key).second) Fail("{}: duplicate metadata key '{}'", path_, key);
    r.set_context(fmt::format("key '{}'", key));
    const uint32_t raw_type = r.Read<uint32_t>();
    if (!IsValidType(raw_type)) {
      Fail("{}: key '{}' has invalid value type {} (expected 0..12)", path_, key, raw_type);
    }
    Value value = ReadValue(r, static_cast<ValueType>(raw_type), path_);
    metadata_.push_back({std::move(key), std::move(value)});
  }

  alignment_ = kDefaultAlignment;
  if (const Value* v = Find(kAlignmentKey)) {
    const uint64_t* a = std::get_if<uint64_t>(&v->scalar);
    if (v->type != ValueType::kUint32 || a == nullptr || !IsValidAlignment(*a)) {
      Fail("{}: key '{}' must be a uint32 power of two, got {} {}", path_, kAlignmentKey,
           Describe(*v), a != nullptr ? fmt::to_string(*a) : std::string("value"));
    }
    alignment_ = *a;
  }
  const std::string architecture = FindString(kArchitectureKey).value_or("");

  // Tensor infos.
  tensors_.reserve(n_tensors);
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t = ReadTensorInfo(r, i, architecture, path_);
    if (!names.insert(t.name).second) Fail("{}: duplicate tensor name '{}'", path_, t.name);
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the aligned offset after the tensor infos.
  data_offset_ = AlignUp(r.pos(), alignment_);
  if (data_offset_ > size_) {
    if (!tensors_.empty()) {
      Fail("{}: truncated file: the data section starts at offset {} but the file has {} bytes",
           path_, data_offset_, size_);
    }
    data_offset_ = size_;
  }
  const uint64_t data_size = size_ - data_offset_;
  for (const TensorInfo& t : tensors_) {
    if (t.offset % alignment_ != 0) {
      Fail("{}: tensor '{}' data offset {} is not a multiple of the alignment {}", path_, t.name,
           t.offset, alignment_);
    }
    if (t.offset > data_size || t.size_bytes > data_size - t.offset) {
      Fail(
          "{}: tensor '{}' data ({} bytes at data offset {}) extends past the end of the file "
          "(data section is {} bytes; truncated file?)",
          path_, t.name, t.size_bytes, t.offset, data_size);
    }
  }
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (a.offset + a.size_bytes > b.offset) {
      Fail("{}: tensors '{}' (bytes {}..{}) and '{}' (from byte {}) overlap", path_, a.name,
           a.offset, a.offset + a.size_bytes, b.name, b.offset);
    }
  }
}

const Value* File::Find(std::string_view key) const {
  for (const KeyValue& kv : metadata_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

std::optional<std::string> File::FindString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != ValueType::kString) {
    Fail("{}: key '{}' has type {}, expected string", path_, key, Describe(*v));
  }
  return std::get<std::string>(v->scalar);
}

std::string File::GetString(std::string_view key) const {
  std::optional<std::string> v = FindString(key);
  if (!v) Fail("{}: required key '{}' (string) is missing", path_, key);
  return *std::move(v);
}

std::optional<uint64_t> File::FindUint(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (!IsInteger(v->type)) {
    Fail("{}: key '{}' has type {}, expected an unsigned integer", path_, key, Describe(*v));
  }
  if (const auto* i = std::get_if<int64_t>(&v->scalar)) {
    if (*i < 0) Fail("{}: key '{}' is {}, expected an unsigned integer", path_, key, *i);
    return static_cast<uint64_t>(*i);
  }
  return std::get<uint64_t>(v->scalar);
}

uint64_t File::GetUint(std::string_view key) const {
  const std::optional<uint64_t> v = FindUint(key);
  if (!v) Fail("{}: required key '{}' (unsigned integer) is missing", path_, key);
  return *v;
}

std::optional<int64_t> File::FindInt(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (!IsInteger(v->type)) {
    Fail("{}: key '{}' has type {}, expected an integer", path_, key, Describe(*v));
  }
  if (const auto* u = std::get_if<uint64_t>(&v->scalar)) {
    if (*u > static_cast<uint64_t>(kInt64Max)) {
      Fail("{}: key '{}' is {}, which does not fit int64", path_, key, *u);
    }
    return static_cast<int64_t>(*u);
  }
  return std::get<int64_t>(v->scalar);
}

int64_t File::GetInt(std::string_view key) const {
  const std::optional<int64_t> v = FindInt(key);
  if (!v) Fail("{}: required key '{}' (integer) is missing", path_, key);
  return *v;
}

std::optional<double> File::FindFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (IsFloat(v->type)) return std::get<double>(v->scalar);
  if (IsInteger(v->type)) {
    return std::visit(
        [](auto x) -> double {
          if constexpr (std::is_integral_v<decltype(x)>) return static_cast<double>(x);
          return 0;
        },
        v->scalar);
  }
  Fail("{}: key '{}' has type {}, expected a number", path_, key, Describe(*v));
}

double File::GetFloat(std::string_view key) const {
  const std::optional<double> v = FindFloat(key);
  if (!v) Fail("{}: required key '{}' (number) is missing", path_, key);
  return *v;
}

std::optional<bool> File::FindBool(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != ValueType::kBool)
    Fail("{}: key '{}' has type {}, expected bool", path_, key, Describe(*v));
  return std::get<bool>(v->scalar);
}

const Value& File::GetArray(std::string_view key, std::string_view expected,
                            bool (*element_ok)(ValueType)) const {
  const Value* v = Find(key);
  if (v == nullptr) Fail("{}: required key '{}' ({}) is missing", path_, key, expected);
  if (v->type != ValueType::kArray || !element_ok(v->array_type)) {
    Fail("{}: key '{}' has type {}, expected {}", path_, key, Describe(*v), expected);
  }
  return *v;
}

const std::vector<std::string>& File::GetStringArray(std::string_view key) const {
  return GetArray(key, "array of string", [](ValueType t) { return t == ValueType::kString; })
      .strings;
}

const std::vector<int64_t>& File::GetIntArray(std::string_view key) const {
  return GetArray(key, "array of integers", IsInteger).ints;
}

const std::vector<double>& File::GetFloatArray(std::string_view key) const {
  return GetArray(key, "array of float32 or float64", IsFloat).floats;
}

const TensorInfo* File::FindTensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const uint8_t* File::TensorData(const TensorInfo& tensor) const {
  return base_ + data_offset_ + tensor.offset;
}

// ---- Writer -------------------------------------------------------------------------------------

void Writer::SetAlignment(uint64_t alignment) {
  if (!IsValidAlignment(alignment)) {
    Fail("gguf writer: alignment {} is not a power of two that fits uint32", alignment);
  }
  alignment_ = alignment;
  Value value = MakeScalar(ValueType::kUint32, alignment);
  for (KeyValue& kv : metadata_) {
    if (kv.key == kAlignmentKey) {
      kv.value = std::move(value);
      return;
    }
  }
  if (alignment != kDefaultAlignment)
    metadata_.push_back({std::string(kAlignmentKey), std::move(value)});
}

void Writer::AddValue(std::string key, Value value) {
  ValidateValue(key, value);
  for (const KeyValue& kv : metadata_) {
    if (kv.key == key) Fail("gguf writer: duplicate metadata key '{}'", key);
  }
  if (key == kAlignmentKey) {
    const uint64_t* a = std::get_if<uint64_t>(&value.scalar);
    if (value.type != ValueType::kUint32 || a == nullptr || !IsValidAlignment(*a)) {
      Fail("gguf writer: key '{}' must be a uint32 power of two", key);
    }
    alignment_ = *a;
  }
  metadata_.push_back({std::move(key), std::move(value)});
}

void Writer::AddString(std::string key, std::string value) {
  AddValue(std::move(key), MakeScalar(ValueType::kString, std::move(value)));
}

void Writer::AddUint32(std::string key, uint32_t value) {
  AddValue(std::move(key), MakeScalar(ValueType::kUint32, uint64_t{value}));
}

void Writer::AddInt32(std::string key, int32_t value) {
  AddValue(std::move(key), MakeScalar(ValueType::kInt32, int64_t{value}));
}

void Writer::AddUint64(std::string key, uint64_t value) {
  AddValue(std::move(key), MakeScalar(ValueType::kUint64, value));
}

void Writer::AddFloat32(std::string key, float value) {
  AddValue(std::move(key), MakeScalar(ValueType::kFloat32, double{value}));
}

void Writer::AddBool(std::string key, bool value) {
  AddValue(std::move(key), MakeScalar(ValueType::kBool, value));
}

void Writer::AddStringArray(std::string key, std::vector<std::string> values) {
  Value v;
  v.type = ValueType::kArray;
  v.array_type = ValueType::kString;
  v.strings = std::move(values);
  AddValue(std::move(key), std::move(v));
}

void Writer::AddFloat32Array(std::string key, std::vector<float> values) {
  Value v;
  v.type = ValueType::kArray;
  v.array_type = ValueType::kFloat32;
  v.floats.assign(values.begin(), values.end());
  AddValue(std::move(key), std::move(v));
}

void Writer::AddInt32Array(std::string key, std::vector<int32_t> values) {
  Value v;
  v.type = ValueType::kArray;
  v.array_type = ValueType::kInt32;
  v.ints.assign(values.begin(), values.end());
  AddValue(std::move(key), std::move(v));
}

void Writer::AddTensor(std::string name, std::vector<uint64_t> ne, uint32_t type_id,
                       std::vector<uint8_t> data) {
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) Fail("gguf writer: duplicate tensor name '{}'", name);
  }
  if (ne.empty() || ne.size() > kMaxDims) {
    Fail("gguf writer: tensor '{}' has {} dimensions, expected 1 to {}", name, ne.size(), kMaxDims);
  }
  uint64_t n = 1;
  for (uint64_t d : ne) {
    if (d == 0 || d > kInt64Max / n) {
      Fail("gguf writer: tensor '{}' has invalid shape {}", name, FormatShape(ne));
    }
    n *= d;
  }
  tensors_.push_back({std::move(name), std::move(ne), type_id, std::move(data)});
}

std::vector<uint8_t> Writer::SerializeHeader() const {
  std::string architecture;
  for (const KeyValue& kv : metadata_) {
    if (kv.key == kArchitectureKey && kv.value.type == ValueType::kString) {
      architecture = std::get<std::string>(kv.value.scalar);
    }
  }
  Buffer out;
  out.Put(kMagic);
  out.Put<uint32_t>(3);
  out.Put<uint64_t>(tensors_.size());
  out.Put<uint64_t>(metadata_.size());
  for (const KeyValue& kv : metadata_) {
    out.PutString(kv.key);
    out.Put(static_cast<uint32_t>(kv.value.type));
    PutValue(out, kv.value);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    const std::optional<TensorType> type = ResolveTensorType(t.type_id, architecture);
    if (!type) {
      Fail("gguf writer: tensor '{}' has unsupported type id {}{}", t.name, t.type_id,
           UnsupportedTypeHint(t.type_id, architecture));
    }
    const TensorTypeTraits& traits = Traits(*type);
    const uint64_t n = std::accumulate(t.ne.begin(), t.ne.end(), uint64_t{1}, std::multiplies<>());
    const std::optional<uint64_t> bytes = TensorBytes(*type, n);
    if (t.ne[0] % traits.block_values != 0 || !bytes) {
      Fail("gguf writer: tensor '{}' shape {} is not a whole number of {}-value {} blocks", t.name,
           FormatShape(t.ne), traits.block_values, traits.name);
    }
    if (t.data.size() != *bytes) {
      Fail("gguf writer: tensor '{}' ({} {}) has {} bytes of data, expected {}", t.name,
           traits.name, FormatShape(t.ne), t.data.size(), *bytes);
    }
    out.PutString(t.name);
    out.Put(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) out.Put(d);
    out.Put(t.type_id);
    out.Put(offset);
    offset += AlignUp(t.data.size(), alignment_);
  }
  out.PadTo(alignment_);
  return std::move(out.bytes());
}

std::vector<uint8_t> Writer::WriteMemory() const {
  Buffer out;
  out.bytes() = SerializeHeader();
  for (const PendingTensor& t : tensors_) {
    out.Append(t.data.data(), t.data.size());
    out.PadTo(alignment_);
  }
  return std::move(out.bytes());
}

void Writer::WriteFile(const std::string& path) const {
  const std::vector<uint8_t> header = SerializeHeader();
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) Fail("{}: cannot create temporary file {}: {}", path, tmp, std::strerror(errno));
  bool open = true;
  try {
    WriteAll(fd, header.data(), header.size(), tmp);
    const std::vector<uint8_t> zeros(alignment_, 0);
    for (const PendingTensor& t : tensors_) {
      WriteAll(fd, t.data.data(), t.data.size(), tmp);
      WriteAll(fd, zeros.data(), AlignUp(t.data.size(), alignment_) - t.data.size(), tmp);
    }
    if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
      Fail("{}: cannot finish writing: {}", tmp, std::strerror(errno));
    }
    open = false;
    if (::close(fd) != 0) Fail("{}: close failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    if (open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    Fail("{}: cannot rename {} into place: {}", path, tmp, std::strerror(err));
  }
}

}  // namespace trinity::gguf
