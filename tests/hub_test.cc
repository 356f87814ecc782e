// The hub client against a fake Hugging Face hub on loopback: a cpp-httplib server that answers
// /{org}/{name}/resolve/{revision}/{file} like huggingface.co (X-Repo-Commit, ETag = sha256 for LFS
// files, 302 to a "CDN" on another port, X-Error-Code on failures) and can cut a body short, ignore
// Range or corrupt the bytes.
#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hub/cache.h"
#include "hub/download.h"
#include "hub/hub_error.h"
#include "hub/progress.h"
#include "hub/sha256.h"

namespace trinity::hub {
namespace {

namespace fs = std::filesystem;

constexpr char kRepo[] = "test-org/tiny-gguf";
constexpr char kModelFile[] = "model-i2_s.gguf";
constexpr char kConfigFile[] = "config.json";
constexpr char kCommit[] = "0123456789abcdef0123456789abcdef01234567";
constexpr char kConfigEtag[] = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";  // a git blob id

// Deterministic bytes that do not compress or repeat.
std::string Payload(size_t size_bytes, uint32_t seed) {
  std::string data(size_bytes, '\0');
  uint64_t state = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (char& c : data) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(state >> 56);
  }
  return data;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const fs::path& path, const std::string& data) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// A server on 127.0.0.1 with an ephemeral port, stopped when destroyed.
class LoopbackServer {
 public:
  LoopbackServer() = default;
  ~LoopbackServer() { Stop(); }
  httplib::Server& server() { return server_; }
  void Start() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // The socket already listens, so requests would queue anyway; wait for the loop to be safe.
    for (int i = 0; i < 2000 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  void Stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

class FakeHub {
 public:
  const std::string model = Payload(300 * 1024 + 123, 1);
  const std::string model_sha = Sha256Hex(model);
  const std::string config = R"({"architecture": "bitnet"})";

  // Knobs, set by tests between requests.
  std::atomic<int> cut_next_bodies{0};  // cut this many bodies at half their length
  std::atomic<bool> ignore_range{false};
  std::atomic<bool> corrupt{false};
  std::string required_token;  // non-empty: other requests get 401
  std::string announced_size;  // non-empty: X-Linked-Size to announce instead

  // What the servers saw.
  std::atomic<int> heads{0}, gets{0}, cdn_gets{0};
  std::mutex mutex;
  std::vector<std::string> ranges;    // Range header of each body request ("" = none)
  std::vector<std::string> hub_auth;  // Authorization seen by the hub
  std::vector<std::string> cdn_auth;  // Authorization seen by the CDN

  void Start() {
    cdn_.server().Get(R"(/cdn/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
      ++cdn_gets;
      {
        std::lock_guard<std::mutex> lock(mutex);
        cdn_auth.push_back(req.get_header_value("Authorization"));
      }
      if (req.matches[1] != model_sha) {
        res.status = 404;
        return;
      }
      ServeBody(req, res, model);
    });
    cdn_.Start();
    hub_.server().Get(R"(/([^/]+)/([^/]+)/resolve/([^/]+)/(.+))",
                      [this](const httplib::Request& req, httplib::Response& res) { Resolve(req, res); });
    hub_.server().Get(R"(/api/models/([^/]+)/([^/]+)/revision/([^/]+))",
                      [this](const httplib::Request& req, httplib::Response& res) {
                        if (std::string(req.matches[1]) + "/" + std::string(req.matches[2]) != kRepo) {
                          res.status = 401;
                          res.set_header("X-Error-Code", "RepoNotFound");
                          return;
                        }
                        res.set_content(R"({"sha": ")" + std::string(kCommit) +
                                            R"(", "siblings": [{"rfilename": ".gitattributes"},
                                            {"rfilename": "config.json"}, {"rfilename": "model-i2_s.gguf"},
                                            {"rfilename": "model-f16.gguf"}]})",
                                        "application/json");
                      });
    hub_.Start();
  }
  void StopHub() { hub_.Stop(); }
  std::string url() const { return hub_.url(); }
  std::vector<std::string> Ranges() {
    std::lock_guard<std::mutex> lock(mutex);
    return ranges;
  }

 private:
  void Resolve(const httplib::Request& req, httplib::Response& res) {
    const bool head = req.method == "HEAD";
    head ? ++heads : ++gets;
    const std::string auth = req.get_header_value("Authorization");
    {
      std::lock_guard<std::mutex> lock(mutex);
      hub_auth.push_back(auth);
    }
    const std::string repo = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
    const std::string revision = req.matches[3];
    const std::string file = req.matches[4];
    // huggingface.co answers 401 + RepoNotFound both for a missing repository and for a private
    // one without a valid token.
    if (repo != kRepo || (!required_token.empty() && auth != "Bearer " + required_token)) {
      res.status = 401;
      res.set_header("X-Error-Code", "RepoNotFound");
      res.set_header("X-Error-Message", "Repository not found");
      return;
    }
    if (revision != "main" && revision != kCommit) {
      res.status = 404;
      res.set_header("X-Error-Code", "RevisionNotFound");
      return;
    }
    res.set_header("X-Repo-Commit", kCommit);
    if (file == kConfigFile) {  // a small file kept in git: ETag is its git blob id
      res.set_header("ETag", std::string("\"") + kConfigEtag + "\"");
      res.set_content(config, "application/json");
      return;
    }
    if (file != kModelFile) {
      res.status = 404;
      res.set_header("X-Error-Code", "EntryNotFound");
      res.set_header("X-Error-Message", "Entry not found");
      return;
    }
    // An LFS file: the metadata rides on a redirect to the content-addressed CDN URL.
    res.status = 302;
    res.set_header("Location", cdn_.url() + "/cdn/" + model_sha);
    res.set_header("X-Linked-Etag", "\"" + model_sha + "\"");
    res.set_header("X-Linked-Size", announced_size.empty() ? std::to_string(model.size()) : announced_size);
  }

  // Answers Range itself (httplib would otherwise slice the body on its own), optionally cutting
  // the connection halfway or flipping bytes.
  void ServeBody(const httplib::Request& req, httplib::Response& res, const std::string& content) {
    const std::string range = req.get_header_value("Range");
    {
      std::lock_guard<std::mutex> lock(mutex);
      ranges.push_back(range);
    }
    const_cast<httplib::Request&>(req).ranges.clear();
    size_t start = 0;
    if (!ignore_range && range.rfind("bytes=", 0) == 0 && range.back() == '-') {
      start = std::stoull(range.substr(6, range.size() - 7));
      if (start >= content.size()) {
        res.status = 416;
        res.set_header("Content-Range", "bytes */" + std::to_string(content.size()));
        return;
      }
      res.status = 206;
      res.set_header("Content-Range", "bytes " + std::to_string(start) + "-" +
                                          std::to_string(content.size() - 1) + "/" +
                                          std::to_string(content.size()));
    } else {
      res.status = 200;
    }
    std::string body = content.substr(start);
    if (corrupt) {
      for (size_t i = 0; i < body.size(); i += 4096) body[i] ^= 0x5a;
    }
    if (cut_next_bodies.fetch_sub(1) > 0) {
      const size_t cut_at = body.size() / 2;
      res.set_content_provider(body.size(), "application/octet-stream",
                               [body, cut_at](size_t offset, size_t length, httplib::DataSink& sink) {
                                 if (offset >= cut_at) return false;  // closes the connection
                                 sink.write(body.data() + offset, std::min(length, cut_at - offset));
                                 return true;
                               });
      return;
    }
    cut_next_bodies.store(0);
    res.set_content(body, "application/octet-stream");
  }

  LoopbackServer hub_;
  LoopbackServer cdn_;
};

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir_template = (fs::temp_directory_path() / "trinity-hub-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(dir_template.data()), nullptr);
    temp_dir_ = dir_template;
    hub_.Start();
    config_.endpoint = hub_.url();
    config_.cache_dir = temp_dir_ / "hub";
    options_.repo_id = kRepo;
    options_.filename = kModelFile;
    options_.retry_delay_ms = 10;
    options_.http.connect_timeout_s = 5;
    options_.http.head_timeout_s = 10;
    options_.http.stall_timeout_s = 10;
  }
  void TearDown() override {
    hub_.StopHub();
    std::error_code ec;
    fs::remove_all(temp_dir_, ec);
  }

  RepoCache Cache() const { return RepoCache(config_.cache_dir, kRepo); }
  fs::path Incomplete() const { return Cache().incomplete_path(hub_.model_sha); }

  FakeHub hub_;
  fs::path temp_dir_;
  HubConfig config_;
  PullOptions options_;
};

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Lengths around the 55/56/64-byte padding edges, one shot versus byte by byte.
  for (size_t size : {55, 56, 57, 63, 64, 65, 119, 120, 128}) {
    const std::string data = Payload(size, 7);
    Sha256 sha;
    for (char c : data) sha.Update(&c, 1);
    EXPECT_EQ(sha.FinishHex(), Sha256Hex(data)) << size;
  }
}

TEST(Sha256Test, ChunkedUpdatesAndFiles) {
  const std::string data = Payload(1 << 20, 3);
  Sha256 sha;
  for (size_t at = 0, step = 1; at < data.size(); at += step, step = step * 3 % 9973 + 1) {
    sha.Update(data.data() + at, std::min(step, data.size() - at));
  }
  const std::string digest = sha.FinishHex();
  EXPECT_EQ(digest, Sha256Hex(data));
  const fs::path path = fs::temp_directory_path() / ("trinity-sha-" + std::to_string(getpid()));
  WriteFile(path, data);
  EXPECT_EQ(Sha256File(path), digest);
  EXPECT_EQ(Sha256File(path, 1000), Sha256Hex(data.substr(0, 1000)));
  EXPECT_THROW(Sha256File(path, data.size() + 1), HubError);
  fs::remove(path);
  EXPECT_TRUE(IsSha256Hex(digest));
  EXPECT_FALSE(IsSha256Hex(kConfigEtag));
}

TEST(ProgressTest, Formats) {
  EXPECT_EQ(FormatBytes(812), "812 B");
  EXPECT_EQ(FormatBytes(4100), "4.10 KB");
  EXPECT_EQ(FormatBytes(540'200'000), "540.2 MB");
  EXPECT_EQ(FormatBytes(1'190'000'000), "1.19 GB");
  EXPECT_EQ(FormatDuration(7), "0:07");
  EXPECT_EQ(FormatDuration(754), "12:34");
  EXPECT_EQ(FormatDuration(3723), "1:02:03");
  EXPECT_EQ(FormatDuration(-1), "--:--");
}

TEST(ProgressTest, PlainLinesWhenNotATerminal) {
  char* text = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&text, &size);
  {
    ConsoleProgress progress(out, /*interactive=*/false);
    progress.Begin("model.gguf", 1000, 200);
    for (uint64_t done = 200; done <= 1000; done += 10) progress.Update(done);
    progress.End(true);
  }
  std::fclose(out);
  const std::string log(text, size);
  free(text);
  EXPECT_NE(log.find("downloading model.gguf (1.00 KB, resuming at 200 B)"), std::string::npos) << log;
  EXPECT_NE(log.find("90%"), std::string::npos) << log;
  EXPECT_NE(log.find("downloaded model.gguf: 800 B"), std::string::npos) << log;
  EXPECT_EQ(log.find('\r'), std::string::npos);
  EXPECT_LE(std::count(log.begin(), log.end(), '\n'), 12);
}

TEST(ConfigTest, EnvironmentAsTheOfficialClientReadsIt) {
  const fs::path home = fs::temp_directory_path() / ("trinity-hf-home-" + std::to_string(getpid()));
  WriteFile(home / "token", "hf_from_file\n");
  for (const char* name :
       {"HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"}) {
    unsetenv(name);
  }
  setenv("HF_HOME", home.c_str(), 1);
  HubConfig config = HubConfig::FromEnvironment();
  EXPECT_EQ(config.endpoint, "https://huggingface.co");
  EXPECT_EQ(config.cache_dir, home / "hub");
  EXPECT_EQ(config.token, "hf_from_file");
  EXPECT_FALSE(config.offline);

  setenv("HF_ENDPOINT", "http://127.0.0.1:9/mirror/", 1);
  setenv("HF_HUB_CACHE", "/tmp/somewhere", 1);
  setenv("HF_TOKEN", "  hf_env \n", 1);
  setenv("HF_HUB_OFFLINE", "yes", 1);
  config = HubConfig::FromEnvironment();
  EXPECT_EQ(config.endpoint, "http://127.0.0.1:9/mirror");
  EXPECT_EQ(config.cache_dir, "/tmp/somewhere");
  EXPECT_EQ(config.token, "hf_env");
  EXPECT_TRUE(config.offline);

  setenv("HF_HUB_OFFLINE", "0", 1);
  unsetenv("HF_HOME");
  unsetenv("HF_HUB_CACHE");
  setenv("XDG_CACHE_HOME", home.c_str(), 1);
  config = HubConfig::FromEnvironment();
  EXPECT_FALSE(config.offline);
  EXPECT_EQ(config.cache_dir, home / "huggingface" / "hub");
  for (const char* name : {"HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"}) unsetenv(name);
  fs::remove_all(home);
}

TEST(ConfigTest, RejectsNamesThatWouldEscapeTheCache) {
  EXPECT_NO_THROW(ValidateRepoId("microsoft/bitnet-b1.58-2B-4T-gguf"));
  EXPECT_NO_THROW(ValidateRepoId("gpt2"));
  for (const char* bad : {"", "a/b/c", "../x", "a--b/c", "org/", "/name", "org/na me", "-org/x"}) {
    EXPECT_THROW(ValidateRepoId(bad), HubError) << bad;
  }
  EXPECT_NO_THROW(ValidateFilename("sub/dir/model.gguf"));
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../../b", "a//b", "a\\b", "./a"}) {
    EXPECT_THROW(ValidateFilename(bad), HubError) << bad;
  }
  EXPECT_NO_THROW(ValidateRevision("refs/pr/1"));
  EXPECT_THROW(ValidateRevision("../../etc"), HubError);
  EXPECT_EQ(ResolveUrl("https://hf.co", "a/b", "refs/pr/1", "dir/my file.gguf"),
            "https://hf.co/a/b/resolve/refs%2Fpr%2F1/dir/my%20file.gguf");
}

TEST_F(HubTest, FreshDownloadUsesTheOfficialCacheLayout) {
  const PullResult result = Pull(config_, options_);
  const fs::path repo_dir = config_.cache_dir / "models--test-org--tiny-gguf";
  EXPECT_EQ(result.path, repo_dir / "snapshots" / kCommit / kModelFile);
  EXPECT_TRUE(result.downloaded);
  EXPECT_TRUE(result.verified);
  EXPECT_FALSE(result.resumed);
  EXPECT_EQ(result.commit, kCommit);
  EXPECT_EQ(result.etag, hub_.model_sha);
  EXPECT_EQ(result.size_bytes, hub_.model.size());
  ASSERT_TRUE(fs::is_symlink(result.path));
  EXPECT_EQ(fs::read_symlink(result.path), fs::path("../../blobs") / hub_.model_sha);
  EXPECT_TRUE(ReadFile(result.path) == hub_.model) << "content of " << result.path << " differs";
  EXPECT_EQ(ReadFile(repo_dir / "refs" / "main"), kCommit);
  EXPECT_FALSE(fs::exists(Incomplete()));
  EXPECT_TRUE(
      fs::exists(config_.cache_dir / ".locks" / "models--test-org--tiny-gguf" / (hub_.model_sha + ".lock")));
  EXPECT_EQ(hub_.heads, 1);
  EXPECT_EQ(hub_.gets, 1);      // the resolve URL, redirected ...
  EXPECT_EQ(hub_.cdn_gets, 1);  // ... to the CDN
}

TEST_F(HubTest, SmallGitFileIsStoredUnderItsGitEtagWithoutSha256Check) {
  options_.filename = kConfigFile;
  const PullResult result = Pull(config_, options_);
  EXPECT_TRUE(result.downloaded);
  EXPECT_FALSE(result.verified);  // a git blob id is not a sha256 of the content
  EXPECT_EQ(fs::read_symlink(result.path), fs::path("../../blobs") / kConfigEtag);
  EXPECT_EQ(ReadFile(result.path), hub_.config);
  EXPECT_EQ(hub_.cdn_gets, 0);
}

TEST_F(HubTest, SecondPullIsACacheHit) {
  const PullResult first = Pull(config_, options_);
  const PullResult second = Pull(config_, options_);
  EXPECT_FALSE(second.downloaded);
  EXPECT_EQ(second.path, first.path);
  EXPECT_EQ(second.size_bytes, hub_.model.size());
  EXPECT_EQ(hub_.heads, 2);     // asks whether main moved ...
  EXPECT_EQ(hub_.cdn_gets, 1);  // ... but does not download again
  // A commit hash is immutable: no request at all.
  options_.revision = kCommit;
  EXPECT_EQ(Pull(config_, options_).path, first.path);
  EXPECT_EQ(hub_.heads, 2);
  // --force downloads again.
  options_.revision = "main";
  options_.force = true;
  EXPECT_TRUE(Pull(config_, options_).downloaded);
  EXPECT_EQ(hub_.cdn_gets, 2);
}

TEST_F(HubTest, InterruptedDownloadResumesWithRange) {
  hub_.cut_next_bodies = 1;
  options_.max_retries = 0;
  try {
    Pull(config_, options_);
    FAIL() << "the cut download should fail";
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNetwork);
    EXPECT_NE(std::string(e.what()).find(hub_.url() + "/test-org/tiny-gguf/resolve/main/" + kModelFile),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("resume"), std::string::npos) << e.what();
  }
  ASSERT_TRUE(fs::exists(Incomplete()));
  const uint64_t partial = fs::file_size(Incomplete());
  EXPECT_GT(partial, 0u);
  EXPECT_LT(partial, hub_.model.size());
  EXPECT_FALSE(fs::exists(Cache().snapshot_path(kCommit, kModelFile)));

  const PullResult result = Pull(config_, options_);
  EXPECT_TRUE(result.downloaded);
  EXPECT_TRUE(result.resumed);
  EXPECT_TRUE(result.verified);
  EXPECT_TRUE(ReadFile(result.path) == hub_.model) << "content of " << result.path << " differs";
  EXPECT_FALSE(fs::exists(Incomplete()));
  const std::vector<std::string> ranges = hub_.Ranges();
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=" + std::to_string(partial) + "-");
}

TEST_F(HubTest, CutConnectionIsRetriedWithinOnePull) {
  hub_.cut_next_bodies = 2;
  options_.max_retries = 3;
  std::vector<std::string> notes;
  options_.on_message = [&](const std::string& note) { notes.push_back(note); };
  const PullResult result = Pull(config_, options_);
  EXPECT_TRUE(ReadFile(result.path) == hub_.model) << "content of " << result.path << " differs";
  EXPECT_TRUE(result.verified);
  const std::vector<std::string> ranges = hub_.Ranges();
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_NE(ranges[1], "");
  EXPECT_NE(ranges[2], ranges[1]);
  int retries = 0;
  for (const std::string& note : notes) retries += note.find("retrying") != std::string::npos;
  EXPECT_EQ(retries, 2);
}

TEST_F(HubTest, ServerThatIgnoresRangeRestartsFromZero) {
  hub_.cut_next_bodies = 1;
  options_.max_retries = 0;
  EXPECT_THROW(Pull(config_, options_), HubError);
  ASSERT_GT(fs::file_size(Incomplete()), 0u);
  hub_.ignore_range = true;
  const PullResult result = Pull(config_, options_);
  EXPECT_TRUE(ReadFile(result.path) == hub_.model) << "content of " << result.path << " differs";
  EXPECT_TRUE(result.verified);
}

TEST_F(HubTest, CorruptedDownloadIsDetectedAndDeleted) {
  hub_.corrupt = true;
  try {
    Pull(config_, options_);
    FAIL() << "the corrupted download should fail";
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIntegrity);
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(hub_.model_sha), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(Incomplete()));
  EXPECT_FALSE(fs::exists(Cache().blob_path(hub_.model_sha)));
  EXPECT_FALSE(fs::exists(Cache().snapshot_path(kCommit, kModelFile)));
  // Nothing bad stays behind: the next pull starts clean and succeeds.
  hub_.corrupt = false;
  EXPECT_TRUE(ReadFile(Pull(config_, options_).path) == hub_.model) << "content of " << Pull(config_, options_).path << " differs";
}

TEST_F(HubTest, CorruptedPartialFileIsDetectedOnResume) {
  std::string bad_prefix = hub_.model.substr(0, 100000);
  bad_prefix[5000] ^= 1;
  WriteFile(Incomplete(), bad_prefix);
  try {
    Pull(config_, options_);
    FAIL() << "the resumed download has a bad prefix";
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIntegrity) << e.what();
  }
  EXPECT_FALSE(fs::exists(Incomplete()));
  EXPECT_EQ(hub_.Ranges().at(0), "bytes=100000-");
}

TEST_F(HubTest, SizeMismatchIsDetected) {
  hub_.announced_size = std::to_string(hub_.model.size() + 10);
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIntegrity) << e.what();
  }
  EXPECT_FALSE(fs::exists(Incomplete()));
}

TEST_F(HubTest, NotFoundErrorsNameWhatIsMissing) {
  options_.filename = "missing.gguf";
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("file 'missing.gguf' not found in test-org/tiny-gguf"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("HTTP 404"), std::string::npos) << e.what();
  }
  options_.filename = kModelFile;
  options_.revision = "v9";
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("revision 'v9' not found"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(config_.cache_dir / "models--test-org--tiny-gguf" / "blobs"));
}

TEST_F(HubTest, UnauthorizedMentionsHfToken) {
  options_.repo_id = "test-org/private";
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnauthorized);
    EXPECT_NE(std::string(e.what()).find("HF_TOKEN"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("HTTP 401"), std::string::npos) << e.what();
  }
  options_.repo_id = kRepo;
  hub_.required_token = "hf_right";
  config_.token = "hf_wrong";
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnauthorized);
    EXPECT_NE(std::string(e.what()).find("HF_TOKEN"), std::string::npos) << e.what();
  }
}

TEST_F(HubTest, TokenIsSentAsBearerToTheHubButNotTheCdn) {
  hub_.required_token = "hf_secret";
  config_.token = "hf_secret";
  EXPECT_TRUE(ReadFile(Pull(config_, options_).path) == hub_.model) << "content of " << Pull(config_, options_).path << " differs";
  std::lock_guard<std::mutex> lock(hub_.mutex);
  ASSERT_FALSE(hub_.hub_auth.empty());
  for (const std::string& auth : hub_.hub_auth) EXPECT_EQ(auth, "Bearer hf_secret");
  ASSERT_EQ(hub_.cdn_auth.size(), 1u);
  EXPECT_EQ(hub_.cdn_auth[0], "");  // another host:port: libcurl drops Authorization on redirect
}

TEST_F(HubTest, HonoursHfEndpointHfTokenAndHfHubCache) {
  setenv("HF_ENDPOINT", (hub_.url() + "/").c_str(), 1);
  setenv("HF_HUB_CACHE", (temp_dir_ / "env-cache").c_str(), 1);
  setenv("HF_TOKEN", "hf_env_token", 1);
  unsetenv("HF_HUB_OFFLINE");
  const HubConfig config = HubConfig::FromEnvironment();
  unsetenv("HF_ENDPOINT");
  unsetenv("HF_HUB_CACHE");
  unsetenv("HF_TOKEN");
  hub_.required_token = "hf_env_token";
  const PullResult result = Pull(config, options_);
  EXPECT_EQ(result.path,
            temp_dir_ / "env-cache" / "models--test-org--tiny-gguf" / "snapshots" / kCommit / kModelFile);
  EXPECT_TRUE(ReadFile(result.path) == hub_.model) << "content of " << result.path << " differs";
}

TEST_F(HubTest, OfflineModeUsesOnlyTheCache) {
  config_.offline = true;
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOffline);
    EXPECT_NE(std::string(e.what()).find("HF_HUB_OFFLINE"), std::string::npos) << e.what();
  }
  EXPECT_EQ(hub_.heads + hub_.gets, 0);

  config_.offline = false;
  const PullResult online = Pull(config_, options_);
  config_.offline = true;
  const PullResult offline = Pull(config_, options_);
  EXPECT_TRUE(offline.offline);
  EXPECT_FALSE(offline.downloaded);
  EXPECT_EQ(offline.path, online.path);
  EXPECT_EQ(offline.commit, kCommit);
  EXPECT_EQ(offline.etag, hub_.model_sha);
  EXPECT_EQ(hub_.heads, 1);
}

TEST_F(HubTest, UnreachableHubFallsBackToTheCache) {
  const PullResult online = Pull(config_, options_);
  hub_.StopHub();
  std::vector<std::string> notes;
  options_.on_message = [&](const std::string& note) { notes.push_back(note); };
  const PullResult cached = Pull(config_, options_);
  EXPECT_TRUE(cached.offline);
  EXPECT_EQ(cached.path, online.path);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("cached copy"), std::string::npos);

  options_.filename = kConfigFile;  // not cached
  try {
    Pull(config_, options_);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNetwork);
    EXPECT_NE(std::string(e.what()).find(hub_.url() + "/test-org/tiny-gguf/resolve/main/config.json"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(HubTest, ConcurrentPullsDownloadOnce) {
  std::vector<PullResult> results(3);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (PullResult& result : results) {
    threads.emplace_back([&] {
      try {
        result = Pull(config_, options_);
      } catch (const std::exception&) {
        ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(hub_.cdn_gets, 1);
  for (const PullResult& result : results) EXPECT_TRUE(ReadFile(result.path) == hub_.model) << "content of " << result.path << " differs";
}

TEST_F(HubTest, ListsCachedFilesAndPartialDownloads) {
  EXPECT_TRUE(ListCachedFiles(config_.cache_dir).empty());
  Pull(config_, options_);
  options_.filename = kConfigFile;
  Pull(config_, options_);
  WriteFile(config_.cache_dir / "models--other--repo" / "blobs" / "abc.incomplete", "12345");
  const std::vector<CachedFile> files = ListCachedFiles(config_.cache_dir);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].repo_id, kRepo);
  EXPECT_EQ(files[0].filename, kConfigFile);
  EXPECT_EQ(files[1].filename, kModelFile);
  EXPECT_EQ(files[1].size_bytes, hub_.model.size());
  EXPECT_EQ(files[1].commit, kCommit);
  EXPECT_EQ(files[1].refs, std::vector<std::string>{"main"});
  EXPECT_EQ(files[1].blob_path.filename(), hub_.model_sha);
  const std::vector<PartialDownload> partials = ListPartialDownloads(config_.cache_dir);
  ASSERT_EQ(partials.size(), 1u);
  EXPECT_EQ(partials[0].repo_id, "other/repo");
  EXPECT_EQ(partials[0].size_bytes, 5u);
  // A snapshot whose blob was removed is not listed.
  fs::remove(Cache().blob_path(hub_.model_sha));
  EXPECT_EQ(ListCachedFiles(config_.cache_dir).size(), 1u);
}

TEST_F(HubTest, ChoosesTheGgufFileOfARepository) {
  const std::vector<std::string> files = ListRepoFiles(config_, kRepo, "main", options_.http);
  EXPECT_EQ(files.size(), 4u);
  EXPECT_EQ(ChooseGgufFile(files, kRepo), "model-i2_s.gguf");
  EXPECT_EQ(ChooseGgufFile({"a.gguf", "b.txt"}, kRepo), "a.gguf");
  EXPECT_THROW(ChooseGgufFile({"a.gguf", "b.gguf"}, kRepo), HubError);
  EXPECT_THROW(ChooseGgufFile({"model.safetensors"}, kRepo), HubError);
  try {
    ListRepoFiles(config_, "nobody/nothing", "main", options_.http);
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnauthorized) << e.what();
  }
}

}  // namespace
}  // namespace trinity::hub
