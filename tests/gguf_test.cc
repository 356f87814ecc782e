// GGUF reader/writer: round trips, every malformed-input class, truncation and bit-flip sweeps.
#include "engine/gguf/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "engine/common/error.h"

namespace trinity::gguf {
namespace {

// Little-endian byte builder for hand-crafted (often malformed) files.
class Bytes {
 public:
  Bytes& U8(uint8_t v) { return Raw(&v, 1); }
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& Str(std::string_view s) {
    U64(s.size());
    return Raw(s.data(), s.size());
  }
  Bytes& Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    data.insert(data.end(), b, b + n);
    return *this;
  }
  Bytes& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    Raw("GGUF", 4);
    U32(version);
    U64(n_tensors);
    return U64(n_kv);
  }
  Bytes& KvString(std::string_view key, std::string_view value) {
    Str(key);
    U32(static_cast<uint32_t>(ValueType::kString));
    return Str(value);
  }
  Bytes& KvU32(std::string_view key, uint32_t value) {
    Str(key);
    U32(static_cast<uint32_t>(ValueType::kUint32));
    return U32(value);
  }
  Bytes& Tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Str(name);
    U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) U64(d);
    U32(type);
    return U64(offset);
  }
  Bytes& PadTo(size_t alignment) {
    data.resize((data.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  Bytes& Zeros(size_t n) {
    data.resize(data.size() + n, 0);
    return *this;
  }
  std::vector<uint8_t> data;
};

std::unique_ptr<File> Parse(const std::vector<uint8_t>& bytes) {
  return File::FromMemory(bytes.data(), bytes.size(), "crafted.gguf");
}

// Parsing must throw trinity::Error whose message names the file and contains every `parts`.
void ExpectError(const std::vector<uint8_t>& bytes, std::initializer_list<std::string_view> parts) {
  try {
    Parse(bytes);
    ADD_FAILURE() << "no error; expected one mentioning " << *parts.begin();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("crafted.gguf"), std::string::npos) << message;
    for (std::string_view part : parts) {
      EXPECT_NE(message.find(part), std::string::npos)
          << "missing '" << part << "' in: " << message;
    }
  }
}

template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected trinity::Error";
  return "";
}

Value Scalar(ValueType type, std::variant<uint64_t, int64_t, double, bool, std::string> v) {
  Value value;
  value.type = type;
  value.scalar = std::move(v);
  return value;
}

Value IntArray(ValueType type, std::vector<int64_t> v) {
  Value value;
  value.type = ValueType::kArray;
  value.array_type = type;
  value.ints = std::move(v);
  return value;
}

std::vector<uint8_t> Iota(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i * 7);
  return v;
}

// A writer exercising every value type and a few tensor types.
Writer FullWriter() {
  Writer w;
  w.AddString("general.architecture", "llama");
  w.AddValue("u8", Scalar(ValueType::kUint8, uint64_t{255}));
  w.AddValue("i8", Scalar(ValueType::kInt8, int64_t{-128}));
  w.AddValue("u16", Scalar(ValueType::kUint16, uint64_t{65535}));
  w.AddValue("i16", Scalar(ValueType::kInt16, int64_t{-32768}));
  w.AddUint32("u32", 4000000000u);
  w.AddInt32("i32", -2000000000);
  w.AddFloat32("f32", 1.5e-3f);
  w.AddBool("yes", true);
  w.AddBool("no", false);
  w.AddString("str", std::string("h\0llo \xe2\x9c\x93", 9));
  w.AddUint64("u64", std::numeric_limits<uint64_t>::max());
  w.AddValue("i64", Scalar(ValueType::kInt64, std::numeric_limits<int64_t>::min()));
  w.AddValue("f64", Scalar(ValueType::kFloat64, 3.141592653589793));
  w.AddStringArray("strs", {"a", "", "ccc"});
  w.AddFloat32Array("f32s", {0.5f, -2.0f, 1e30f});
  w.AddInt32Array("i32s", {-1, 0, 2147483647});
  w.AddValue("u8s", IntArray(ValueType::kUint8, {0, 1, 255}));
  w.AddValue("i8s", IntArray(ValueType::kInt8, {-128, 127}));
  w.AddValue("u16s", IntArray(ValueType::kUint16, {65535}));
  w.AddValue("i16s", IntArray(ValueType::kInt16, {-32768, 32767}));
  w.AddValue("u32s", IntArray(ValueType::kUint32, {4294967295}));
  w.AddValue("u64s", IntArray(ValueType::kUint64, {std::numeric_limits<int64_t>::max()}));
  w.AddValue("i64s", IntArray(ValueType::kInt64, {std::numeric_limits<int64_t>::min(), 7}));
  Value f64s;
  f64s.type = ValueType::kArray;
  f64s.array_type = ValueType::kFloat64;
  f64s.floats = {1e300, -0.0};
  w.AddValue("f64s", f64s);
  Value bools;
  bools.type = ValueType::kArray;
  bools.array_type = ValueType::kBool;
  bools.bools = {1, 0, 1};
  w.AddValue("bools", bools);
  w.AddStringArray("empty", {});
  w.AddTensor("norm.weight", {5}, kGgmlTypeF32, Iota(20));
  w.AddTensor("emb.weight", {4, 3}, kGgmlTypeF16, Iota(24, 1));
  w.AddTensor("q8.weight", {32, 2}, kGgmlTypeQ8_0, Iota(68, 2));
  w.AddTensor("tq2.weight", {256}, kGgmlTypeTQ2_0, Iota(66, 3));
  return w;
}

void CheckFull(const File& f) {
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  ASSERT_EQ(f.metadata().size(), 27u);
  EXPECT_EQ(f.metadata()[0].key, "general.architecture");
  EXPECT_EQ(f.metadata()[1].key, "u8");
  EXPECT_EQ(f.metadata().back().key, "empty");

  EXPECT_EQ(f.GetUint("u8"), 255u);
  EXPECT_EQ(f.Find("u8")->type, ValueType::kUint8);
  EXPECT_EQ(f.FindInt("i8"), -128);
  EXPECT_EQ(f.Find("i8")->type, ValueType::kInt8);
  EXPECT_EQ(f.GetUint("u16"), 65535u);
  EXPECT_EQ(f.GetInt("i16"), -32768);
  EXPECT_EQ(f.GetUint("u32"), 4000000000u);
  EXPECT_EQ(f.GetInt("i32"), -2000000000);
  EXPECT_EQ(f.GetFloat("f32"), double{1.5e-3f});
  EXPECT_EQ(f.Find("f32")->type, ValueType::kFloat32);
  EXPECT_EQ(f.FindBool("yes"), true);
  EXPECT_EQ(f.FindBool("no"), false);
  EXPECT_EQ(f.GetString("str"), std::string("h\0llo \xe2\x9c\x93", 9));
  EXPECT_EQ(f.GetUint("u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.GetInt("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.GetFloat("f64"), 3.141592653589793);
  EXPECT_EQ(f.GetFloat("u32"), 4000000000.0);  // integers are accepted as floats
  EXPECT_EQ(f.GetStringArray("strs"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.GetFloatArray("f32s"), (std::vector<double>{0.5, -2.0, double{1e30f}}));
  EXPECT_EQ(f.GetIntArray("i32s"), (std::vector<int64_t>{-1, 0, 2147483647}));
  EXPECT_EQ(f.GetIntArray("u8s"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(f.GetIntArray("i8s"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(f.GetIntArray("u16s"), (std::vector<int64_t>{65535}));
  EXPECT_EQ(f.GetIntArray("i16s"), (std::vector<int64_t>{-32768, 32767}));
  EXPECT_EQ(f.GetIntArray("u32s"), (std::vector<int64_t>{4294967295}));
  EXPECT_EQ(f.GetIntArray("u64s"), (std::vector<int64_t>{std::numeric_limits<int64_t>::max()}));
  EXPECT_EQ(f.GetIntArray("i64s"), (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 7}));
  EXPECT_EQ(f.GetFloatArray("f64s")[0], 1e300);
  EXPECT_TRUE(std::signbit(f.GetFloatArray("f64s")[1]));
  EXPECT_EQ(f.Find("bools")->bools, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(f.Find("bools")->ArraySize(), 3u);
  EXPECT_EQ(f.Find("u8s")->array_type, ValueType::kUint8);
  EXPECT_EQ(f.GetStringArray("empty").size(), 0u);
  EXPECT_EQ(f.Find("missing"), nullptr);
  EXPECT_EQ(f.FindString("missing"), std::nullopt);

  ASSERT_EQ(f.tensors().size(), 4u);
  struct Expected {
    const char* name;
    std::vector<uint64_t> ne;
    TensorType type;
    std::vector<uint8_t> data;
  };
  const Expected expected[] = {
      {"norm.weight", {5}, TensorType::kF32, Iota(20)},
      {"emb.weight", {4, 3}, TensorType::kF16, Iota(24, 1)},
      {"q8.weight", {32, 2}, TensorType::kQ8_0, Iota(68, 2)},
      {"tq2.weight", {256}, TensorType::kTQ2_0, Iota(66, 3)},
  };
  for (const Expected& e : expected) {
    const TensorInfo* t = f.FindTensor(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->ne, e.ne);
    EXPECT_EQ(t->type, e.type);
    EXPECT_EQ(t->size_bytes, e.data.size());
    EXPECT_EQ(t->offset % 32, 0u);
    EXPECT_EQ(std::vector<uint8_t>(f.TensorData(*t), f.TensorData(*t) + t->size_bytes), e.data);
  }
  EXPECT_EQ(f.FindTensor("emb.weight")->n_elements(), 12u);
  EXPECT_EQ(f.FindTensor("nope"), nullptr);
}

// ---- tensor types -------------------------------------------------------------------------------

TEST(TensorTypeTest, MainlineIdsAndSizes) {
  struct Case {
    uint32_t id;
    TensorType type;
    uint32_t block_values, block_bytes;
  };
  const Case cases[] = {
      {0, TensorType::kF32, 1, 4},         {1, TensorType::kF16, 1, 2},
      {2, TensorType::kQ4_0, 32, 18},      {3, TensorType::kQ4_1, 32, 20},
      {6, TensorType::kQ5_0, 32, 22},      {7, TensorType::kQ5_1, 32, 24},
      {8, TensorType::kQ8_0, 32, 34},      {9, TensorType::kQ8_1, 32, 36},
      {10, TensorType::kQ2_K, 256, 84},    {11, TensorType::kQ3_K, 256, 110},
      {12, TensorType::kQ4_K, 256, 144},   {13, TensorType::kQ5_K, 256, 176},
      {14, TensorType::kQ6_K, 256, 210},   {15, TensorType::kQ8_K, 256, 292},
      {16, TensorType::kIQ2_XXS, 256, 66}, {17, TensorType::kIQ2_XS, 256, 74},
      {18, TensorType::kIQ3_XXS, 256, 98}, {19, TensorType::kIQ1_S, 256, 50},
      {20, TensorType::kIQ4_NL, 32, 18},   {21, TensorType::kIQ3_S, 256, 110},
      {22, TensorType::kIQ2_S, 256, 82},   {23, TensorType::kIQ4_XS, 256, 136},
      {24, TensorType::kI8, 1, 1},         {25, TensorType::kI16, 1, 2},
      {26, TensorType::kI32, 1, 4},        {27, TensorType::kI64, 1, 8},
      {28, TensorType::kF64, 1, 8},        {29, TensorType::kIQ1_M, 256, 56},
      {30, TensorType::kBF16, 1, 2},       {34, TensorType::kTQ1_0, 256, 54},
      {35, TensorType::kTQ2_0, 256, 66},   {39, TensorType::kMXFP4, 32, 17},
  };
  for (const Case& c : cases) {
    for (std::string_view arch : {"", "llama", "bitnet"}) {
      EXPECT_EQ(ResolveTensorType(c.id, arch), c.type) << c.id << " " << arch;
    }
    EXPECT_EQ(Traits(c.type).block_values, c.block_values) << Traits(c.type).name;
    EXPECT_EQ(Traits(c.type).block_bytes, c.block_bytes) << Traits(c.type).name;
  }
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u}) {
    EXPECT_EQ(ResolveTensorType(id, "llama"), std::nullopt) << id;
  }
  EXPECT_EQ(Traits(TensorType::kUnknown).name, "unknown");
  EXPECT_EQ(Traits(TensorType::kTQ2_0).name, "TQ2_0");
}

TEST(TensorTypeTest, MicrosoftIds) {
  for (std::string_view arch : {"bitnet-b1.58", "bitnet-25"}) {
    EXPECT_TRUE(IsMicrosoftBitnetArch(arch));
    EXPECT_EQ(ResolveTensorType(36, arch), TensorType::kI2_S);
    EXPECT_EQ(ResolveTensorType(37, arch), std::nullopt);  // I8_S
    EXPECT_EQ(ResolveTensorType(38, arch), std::nullopt);  // TL1
    EXPECT_EQ(ResolveTensorType(39, arch), std::nullopt);  // TL2, not MXFP4
    EXPECT_EQ(ResolveTensorType(0, arch), TensorType::kF32);
    EXPECT_EQ(ResolveTensorType(1, arch), TensorType::kF16);
    EXPECT_EQ(ResolveTensorType(14, arch), TensorType::kQ6_K);
  }
  EXPECT_FALSE(IsMicrosoftBitnetArch("bitnet"));
}

TEST(TensorTypeTest, TensorBytes) {
  EXPECT_EQ(TensorBytes(TensorType::kF32, 10), 40u);
  EXPECT_EQ(TensorBytes(TensorType::kQ4_0, 64), 36u);
  EXPECT_EQ(TensorBytes(TensorType::kQ4_0, 33), std::nullopt);
  EXPECT_EQ(TensorBytes(TensorType::kTQ1_0, 512), 108u);
  EXPECT_EQ(TensorBytes(TensorType::kI2_S, 2560 * 640), 2560u * 640 / 4 + 32);
  EXPECT_EQ(TensorBytes(TensorType::kI2_S, 128), 64u);
  EXPECT_EQ(TensorBytes(TensorType::kI2_S, 64), std::nullopt);
  EXPECT_EQ(TensorBytes(TensorType::kF32, uint64_t{1} << 62), std::nullopt);
  EXPECT_EQ(TensorBytes(TensorType::kF64, uint64_t{1} << 61), std::nullopt);
  EXPECT_EQ(TensorBytes(TensorType::kI2_S, ~uint64_t{0} - 127), (uint64_t{1} << 62));
  EXPECT_EQ(TensorBytes(TensorType::kUnknown, 1), std::nullopt);
}

// ---- round trips --------------------------------------------------------------------------------

TEST(GgufTest, RoundTripMemory) {
  const std::vector<uint8_t> bytes = FullWriter().WriteMemory();
  CheckFull(*Parse(bytes));
}

TEST(GgufTest, RoundTripFile) {
  const std::string path = ::testing::TempDir() + "/gguf_round_trip.gguf";
  FullWriter().WriteFile(path);
  const std::unique_ptr<File> f = File::Open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->file_size(), std::filesystem::file_size(path));
  CheckFull(*f);
  // The file is byte-identical to the in-memory image, and no temporary is left behind.
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> on_disk((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(on_disk, FullWriter().WriteMemory());
  for (const auto& entry : std::filesystem::directory_iterator(::testing::TempDir())) {
    EXPECT_EQ(entry.path().filename().string().find("gguf_round_trip.gguf.tmp"), std::string::npos);
  }
  std::filesystem::remove(path);
}

TEST(GgufTest, RewriteCopiesValues) {
  const std::vector<uint8_t> bytes = FullWriter().WriteMemory();
  const std::unique_ptr<File> f = Parse(bytes);
  Writer w;
  for (const KeyValue& kv : f->metadata()) w.AddValue(kv.key, kv.value);
  for (const TensorInfo& t : f->tensors()) {
    w.AddTensor(t.name, t.ne, t.type_id,
                std::vector<uint8_t>(f->TensorData(t), f->TensorData(t) + t.size_bytes));
  }
  EXPECT_EQ(w.WriteMemory(), bytes);
}

TEST(GgufTest, MicrosoftI2S) {
  Writer w;
  w.AddString("general.architecture", "bitnet-b1.58");
  w.AddTensor("blk.0.attn_k.weight", {256, 2}, kBitnetTypeI2_S, Iota(512 / 4 + 32));
  w.AddTensor("token_embd.weight", {4, 2}, kGgmlTypeF16, Iota(16));
  const std::vector<uint8_t> bytes = w.WriteMemory();
  const std::unique_ptr<File> f = Parse(bytes);
  const TensorInfo* t = f->FindTensor("blk.0.attn_k.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type, TensorType::kI2_S);
  EXPECT_EQ(t->type_id, 36u);
  EXPECT_EQ(t->size_bytes, 160u);
  EXPECT_EQ(std::vector<uint8_t>(f->TensorData(*t), f->TensorData(*t) + 160), Iota(160));

  // The same id in a file of another architecture is not I2_S.
  Writer mainline;
  mainline.AddString("general.architecture", "bitnet");
  mainline.AddTensor("w", {128}, kBitnetTypeI2_S, Iota(64));
  EXPECT_NE(ErrorOf([&] { mainline.WriteMemory(); }).find("unsupported type id 36"),
            std::string::npos);
  ExpectError(Bytes()
                  .Header(1, 1)
                  .KvString("general.architecture", "bitnet")
                  .Tensor("blk.0.ffn_up.weight", {128}, 36, 0)
                  .PadTo(32)
                  .Zeros(64)
                  .data,
              {"blk.0.ffn_up.weight", "unsupported type id 36", "'bitnet'"});
  ExpectError(Bytes()
                  .Header(1, 1)
                  .KvString("general.architecture", "bitnet-25")
                  .Tensor("blk.0.ffn_up.weight", {128}, 38, 0)
                  .PadTo(32)
                  .Zeros(64)
                  .data,
              {"blk.0.ffn_up.weight", "unsupported type id 38", "TL1"});
}

TEST(GgufTest, CustomAlignment) {
  Writer w;
  w.SetAlignment(64);
  w.AddString("general.architecture", "llama");
  w.AddTensor("a", {3}, kGgmlTypeF32, Iota(12));
  w.AddTensor("b", {1}, kGgmlTypeF32, Iota(4));
  const std::vector<uint8_t> bytes = w.WriteMemory();
  const std::unique_ptr<File> f = Parse(bytes);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->GetUint("general.alignment"), 64u);
  EXPECT_EQ(f->metadata()[0].key, "general.alignment");
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->FindTensor("b")->offset, 64u);
  EXPECT_EQ(bytes.size() % 64, 0u);

  EXPECT_THROW(w.SetAlignment(48), Error);
  EXPECT_THROW(w.SetAlignment(0), Error);
  Writer dup;
  dup.SetAlignment(16);
  EXPECT_NE(ErrorOf([&] { dup.AddUint32("general.alignment", 16); }).find("general.alignment"),
            std::string::npos);
}

TEST(GgufTest, HandCraftedVersion2) {
  Bytes b;
  b.Header(2, 2, /*version=*/2)
      .KvString("general.architecture", "llama")
      .KvU32("llama.block_count", 7);
  b.Tensor("x", {2, 2}, kGgmlTypeF32, 0).Tensor("y", {3}, kGgmlTypeF16, 32);
  b.PadTo(32);
  const size_t data_offset = b.data.size();
  b.Raw(Iota(16).data(), 16).PadTo(32).Raw(Iota(6, 9).data(), 6);
  const std::unique_ptr<File> f = Parse(b.data);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->data_offset(), data_offset);
  EXPECT_EQ(f->GetString("general.architecture"), "llama");
  EXPECT_EQ(f->GetUint("llama.block_count"), 7u);
  EXPECT_EQ(f->tensors()[1].name, "y");
  EXPECT_EQ(f->tensors()[1].size_bytes, 6u);
  EXPECT_EQ(
      std::vector<uint8_t>(f->TensorData(f->tensors()[1]), f->TensorData(f->tensors()[1]) + 6),
      Iota(6, 9));
}

TEST(GgufTest, NoTensorsNoPadding) {
  // A metadata-only file may end right after the last value.
  const std::vector<uint8_t> bytes = Bytes().Header(0, 1).KvU32("k", 1).data;
  const std::unique_ptr<File> f = Parse(bytes);
  EXPECT_EQ(f->tensors().size(), 0u);
  EXPECT_EQ(f->data_offset(), bytes.size());
}

// ---- getters ------------------------------------------------------------------------------------

TEST(GgufTest, GetterTypeErrors) {
  Writer w;
  w.AddUint32("n", 5);
  w.AddInt32("neg", -1);
  w.AddUint64("big", ~uint64_t{0});
  w.AddString("s", "x");
  w.AddInt32Array("ints", {1});
  w.AddBool("flag", true);
  const std::vector<uint8_t> bytes = w.WriteMemory();
  const std::unique_ptr<File> f = File::FromMemory(bytes.data(), bytes.size(), "g.gguf");
  auto expect = [](std::string message, std::initializer_list<std::string_view> parts) {
    EXPECT_NE(message.find("g.gguf"), std::string::npos) << message;
    for (std::string_view p : parts) EXPECT_NE(message.find(p), std::string::npos) << message;
  };
  expect(ErrorOf([&] { f->GetString("n"); }), {"'n'", "uint32", "expected string"});
  expect(ErrorOf([&] { f->FindUint("neg"); }), {"'neg'", "-1", "unsigned"});
  expect(ErrorOf([&] { f->FindInt("big"); }), {"'big'", "int64"});
  expect(ErrorOf([&] { f->GetFloat("s"); }), {"'s'", "string", "number"});
  expect(ErrorOf([&] { f->FindBool("n"); }), {"'n'", "uint32", "bool"});
  expect(ErrorOf([&] { f->GetStringArray("ints"); }),
         {"'ints'", "array of int32", "array of string"});
  expect(ErrorOf([&] { f->GetFloatArray("ints"); }), {"'ints'", "array of int32", "float"});
  expect(ErrorOf([&] { f->GetIntArray("s"); }), {"'s'", "string", "array of integers"});
  expect(ErrorOf([&] { f->GetUint("absent"); }), {"'absent'", "missing"});
  expect(ErrorOf([&] { f->GetString("absent"); }), {"'absent'", "missing"});
  expect(ErrorOf([&] { f->GetIntArray("absent"); }), {"'absent'", "missing"});
  EXPECT_EQ(f->FindUint("absent"), std::nullopt);
  EXPECT_EQ(f->GetInt("neg"), -1);
  EXPECT_EQ(f->GetFloat("neg"), -1.0);
  EXPECT_EQ(f->FindBool("flag"), true);
}

// ---- writer errors ------------------------------------------------------------------------------

TEST(GgufTest, WriterRejectsBadInput) {
  Writer w;
  w.AddString("general.architecture", "llama");
  EXPECT_NE(ErrorOf([&] { w.AddUint32("general.architecture", 1); }).find("duplicate"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { w.AddValue("x", Scalar(ValueType::kUint8, uint64_t{256})); }).find("'x'"),
            std::string::npos);
  EXPECT_THROW(w.AddValue("y", Scalar(ValueType::kUint16, std::string("no"))), Error);
  EXPECT_THROW(w.AddValue("z", IntArray(ValueType::kInt8, {128})), Error);
  EXPECT_THROW(w.AddValue("nested", IntArray(ValueType::kArray, {})), Error);
  EXPECT_THROW(w.AddTensor("t", {}, kGgmlTypeF32, {}), Error);
  EXPECT_THROW(w.AddTensor("t", {1, 0}, kGgmlTypeF32, {}), Error);
  EXPECT_THROW(w.AddTensor("t", {1, 1, 1, 1, 1}, kGgmlTypeF32, {}), Error);
  w.AddTensor("t", {2}, kGgmlTypeF32, Iota(7));
  EXPECT_THROW(w.AddTensor("t", {2}, kGgmlTypeF32, Iota(8)), Error);
  const std::string message = ErrorOf([&] { w.WriteMemory(); });
  EXPECT_NE(message.find("'t'"), std::string::npos) << message;
  EXPECT_NE(message.find("expected 8"), std::string::npos) << message;

  Writer q;
  q.AddTensor("q", {33}, 2, Iota(18));
  EXPECT_NE(ErrorOf([&] { q.WriteMemory(); }).find("'q'"), std::string::npos);

  Writer ok;
  ok.AddUint32("k", 1);
  const std::string path = ::testing::TempDir() + "/no/such/dir/out.gguf";
  EXPECT_NE(ErrorOf([&] { ok.WriteFile(path); }).find(path), std::string::npos);
}

// ---- open errors --------------------------------------------------------------------------------

TEST(GgufTest, OpenErrors) {
  const std::string missing = ::testing::TempDir() + "/does_not_exist.gguf";
  EXPECT_NE(ErrorOf([&] { File::Open(missing); }).find(missing), std::string::npos);
  EXPECT_NE(ErrorOf([&] { File::Open(::testing::TempDir()); }).find("not a regular file"),
            std::string::npos);
  const std::string empty = ::testing::TempDir() + "/gguf_empty.gguf";
  std::ofstream(empty).close();
  EXPECT_NE(ErrorOf([&] { File::Open(empty); }).find("empty"), std::string::npos);
  std::filesystem::remove(empty);
  const std::string text = ::testing::TempDir() + "/gguf_text.gguf";
  std::ofstream(text) << "hello world, not gguf";
  const std::string message = ErrorOf([&] { File::Open(text); });
  EXPECT_NE(message.find(text), std::string::npos);
  EXPECT_NE(message.find("not a GGUF file"), std::string::npos);
  std::filesystem::remove(text);
}

// ---- malformed input, one test per class
// ---------------------------------------------------------

TEST(GgufMalformedTest, Header) {
  ExpectError({}, {"truncated"});
  ExpectError({'G', 'G'}, {"truncated"});
  ExpectError(Bytes().Raw("GGML", 4).U32(3).U64(0).U64(0).data, {"not a GGUF file", "'GGUF'"});
  ExpectError(Bytes().Header(0, 0, 1).data, {"version 1"});
  ExpectError(Bytes().Header(0, 0, 4).data, {"version 4", "expected 2 or 3"});
  ExpectError(Bytes().Header(0, 0, 0x03000000).data, {"big-endian"});
  ExpectError(Bytes().Raw("GGUF", 4).U32(3).U64(0).data, {"truncated", "the header"});
}

TEST(GgufMalformedTest, AbsurdCounts) {
  ExpectError(Bytes().Header(0, ~uint64_t{0}).data, {"metadata entries"});
  ExpectError(Bytes().Header(uint64_t{1} << 60, 0).data, {"tensors"});
  // Counts that fit the remaining bytes individually but not the actual content.
  ExpectError(Bytes().Header(0, 2).KvU32("a", 1).U64(5).Raw("abc", 3).data, {"metadata entry 1"});
}

TEST(GgufMalformedTest, AbsurdStringLengths) {
  ExpectError(Bytes().Header(0, 1).U64(~uint64_t{0}).U32(4).U32(0).data,
              {"metadata entry 0", "string length"});
  ExpectError(Bytes().Header(0, 1).Str("tokenizer.ggml.model").U32(8).U64(uint64_t{1} << 40).data,
              {"'tokenizer.ggml.model'", "string length"});
  ExpectError(Bytes()
                  .Header(0, 1)
                  .Str("tokenizer.ggml.tokens")
                  .U32(9)
                  .U32(8)
                  .U64(2)
                  .Str("a")
                  .U64(1000)
                  .data,
              {"'tokenizer.ggml.tokens'", "string length 1000"});
  ExpectError(Bytes().Header(1, 0).U64(1000).Zeros(40).data, {"tensor entry 0", "string length"});
}

TEST(GgufMalformedTest, AbsurdArrayCounts) {
  ExpectError(
      Bytes().Header(0, 1).Str("tokenizer.ggml.scores").U32(9).U32(6).U64(uint64_t{1} << 61).data,
      {"'tokenizer.ggml.scores'", "cannot fit"});
  ExpectError(Bytes().Header(0, 1).Str("strs").U32(9).U32(8).U64(3).U64(0).U64(0).data,
              {"'strs'", "3 string elements cannot fit"});
}

TEST(GgufMalformedTest, InvalidValueTypes) {
  ExpectError(Bytes().Header(0, 1).Str("weird").U32(13).U32(0).data,
              {"'weird'", "invalid value type 13"});
  ExpectError(Bytes().Header(0, 1).Str("arr").U32(9).U32(99).U64(0).data,
              {"'arr'", "invalid array element type 99"});
  ExpectError(Bytes().Header(0, 1).Str("nested").U32(9).U32(9).U64(1).U32(4).U64(0).data,
              {"'nested'", "arrays of arrays"});
  ExpectError(Bytes().Header(0, 1).Str("flag").U32(7).U8(2).data, {"'flag'", "bool"});
  ExpectError(Bytes().Header(0, 1).Str("flags").U32(9).U32(7).U64(2).U8(1).U8(7).data,
              {"'flags'", "bool"});
  ExpectError(Bytes().Header(0, 1).Str("u64s").U32(9).U32(10).U64(1).U64(~uint64_t{0}).data,
              {"'u64s'", "does not fit int64"});
}

TEST(GgufMalformedTest, DuplicateKey) {
  ExpectError(Bytes().Header(0, 2).KvU32("llama.block_count", 1).KvU32("llama.block_count", 2).data,
              {"duplicate metadata key 'llama.block_count'"});
}

TEST(GgufMalformedTest, BadAlignment) {
  for (uint32_t a : {0u, 3u, 48u}) {
    ExpectError(Bytes().Header(0, 1).KvU32("general.alignment", a).data,
                {"'general.alignment'", "power of two"});
  }
  ExpectError(Bytes().Header(0, 1).Str("general.alignment").U32(10).U64(32).data,
              {"'general.alignment'", "uint64"});
}

TEST(GgufMalformedTest, ArchitectureNotString) {
  ExpectError(Bytes().Header(0, 1).KvU32("general.architecture", 1).data,
              {"'general.architecture'", "uint32", "expected string"});
}

// One tensor info with a data section of `data_bytes`.
std::vector<uint8_t> OneTensor(std::vector<uint64_t> ne, uint32_t type, uint64_t offset,
                               size_t data_bytes) {
  return Bytes()
      .Header(1, 0)
      .Tensor("blk.0.attn_q.weight", std::move(ne), type, offset)
      .PadTo(32)
      .Zeros(data_bytes)
      .data;
}

TEST(GgufMalformedTest, TensorShapes) {
  ExpectError(OneTensor({}, 0, 0, 64), {"'blk.0.attn_q.weight'", "0 dimensions"});
  ExpectError(OneTensor({1, 1, 1, 1, 1}, 0, 0, 64), {"'blk.0.attn_q.weight'", "5 dimensions"});
  ExpectError(OneTensor({4, 0}, 0, 0, 64), {"'blk.0.attn_q.weight'", "dimension 1 of size 0"});
  ExpectError(OneTensor({uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0, 64),
              {"'blk.0.attn_q.weight'", "overflows"});
  ExpectError(OneTensor({~uint64_t{0}}, 0, 0, 64), {"'blk.0.attn_q.weight'", "overflows"});
  // Fits int64 elements but not bytes.
  ExpectError(OneTensor({uint64_t{1} << 62}, 0, 0, 64), {"'blk.0.attn_q.weight'", "overflows"});
}

TEST(GgufMalformedTest, UnknownTypeId) {
  ExpectError(OneTensor({4}, 4, 0, 64), {"'blk.0.attn_q.weight'", "unsupported type id 4"});
  ExpectError(OneTensor({4}, 0xffffffff, 0, 64),
              {"'blk.0.attn_q.weight'", "unsupported type id 4294967295"});
}

TEST(GgufMalformedTest, PartialBlocks) {
  ExpectError(OneTensor({33}, 2, 0, 64),
              {"'blk.0.attn_q.weight'", "Q4_0", "33", "32-value blocks"});
  ExpectError(OneTensor({16, 2}, 8, 0, 64), {"'blk.0.attn_q.weight'", "Q8_0"});
}

TEST(GgufMalformedTest, TensorOffsets) {
  ExpectError(OneTensor({4}, 0, 16, 64), {"'blk.0.attn_q.weight'", "offset 16", "alignment 32"});
  ExpectError(OneTensor({4}, 0, 64, 64), {"'blk.0.attn_q.weight'", "past the end"});
  ExpectError(OneTensor({100}, 0, 0, 64), {"'blk.0.attn_q.weight'", "past the end"});
  ExpectError(OneTensor({4}, 0, ~uint64_t{0} - 31, 64), {"'blk.0.attn_q.weight'", "past the end"});
  // Tensor infos present but the file ends before the aligned data section.
  ExpectError(Bytes().Header(1, 0).Tensor("t", {1}, 0, 0).data, {"data section"});
}

TEST(GgufMalformedTest, DuplicateTensorNames) {
  ExpectError(
      Bytes().Header(2, 0).Tensor("w", {4}, 0, 0).Tensor("w", {4}, 0, 32).PadTo(32).Zeros(64).data,
      {"duplicate tensor name 'w'"});
}

TEST(GgufMalformedTest, OverlappingTensors) {
  ExpectError(Bytes()
                  .Header(3, 0)
                  .Tensor("a", {4}, 0, 0)
                  .Tensor("b", {16}, 0, 64)
                  .Tensor("c", {4}, 0, 96)
                  .PadTo(32)
                  .Zeros(128)
                  .data,
              {"'b'", "'c'", "overlap"});
  // Sharing data exactly is an overlap too.
  ExpectError(
      Bytes().Header(2, 0).Tensor("a", {4}, 0, 0).Tensor("b", {4}, 0, 0).PadTo(32).Zeros(32).data,
      {"overlap"});
}

// ---- sweeps -------------------------------------------------------------------------------------

// Every prefix that cuts into the header or a tensor throws; prefixes that keep all tensor bytes
// (only trailing padding lost) parse. Each prefix is a fresh heap copy so ASan sees over-reads.
TEST(GgufSweepTest, TruncationAtEveryByte) {
  const std::vector<uint8_t> bytes = FullWriter().WriteMemory();
  const std::unique_ptr<File> full = Parse(bytes);
  uint64_t end = 0;
  for (const TensorInfo& t : full->tensors())
    end = std::max(end, full->data_offset() + t.offset + t.size_bytes);
  ASSERT_LT(end, bytes.size());
  for (size_t n = 0; n <= bytes.size(); ++n) {
    const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
    if (n < end) {
      EXPECT_THROW(Parse(prefix), Error) << "length " << n;
    } else {
      EXPECT_NO_THROW(Parse(prefix)) << "length " << n;
    }
  }
}

// Flipping any single bit either still parses or throws trinity::Error (anything else fails).
TEST(GgufSweepTest, BitFlips) {
  const std::vector<uint8_t> bytes = FullWriter().WriteMemory();
  const std::unique_ptr<File> full = Parse(bytes);
  const size_t header_end = full->data_offset();  // flips in tensor data are not interesting
  size_t errors = 0;
  for (size_t i = 0; i < header_end; ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> mutated = bytes;
      mutated[i] ^= static_cast<uint8_t>(1 << bit);
      try {
        Parse(mutated);
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, header_end);  // most flips in the header are caught
}

}  // namespace
}  // namespace trinity::gguf
