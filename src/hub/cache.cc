#include "hub/cache.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include "hub/hub_error.h"

namespace trinity::hub {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kModelsPrefix = "models--";

// A name for a temporary file beside `path` that no other process or thread uses at the same time
// (several threads of one process may pull the same file: pid alone collides).
fs::path TempPathBeside(const fs::path& path) {
  static std::atomic<uint64_t> counter{0};
  return path.string() + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
}

// An environment variable, or nullopt when unset or empty.
std::optional<std::string> Env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || value[0] == '\0') return std::nullopt;
  return std::string(value);
}

// huggingface_hub's _is_true: 1, ON, YES, TRUE in any case.
bool EnvIsTrue(const char* name) {
  std::string value = Env(name).value_or("");
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char c) { return std::toupper(c); });
  return value == "1" || value == "ON" || value == "YES" || value == "TRUE";
}

fs::path HomeDir() {
  if (auto home = Env("HOME")) return *home;
  if (const passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_dir != nullptr) {
    return pw->pw_dir;
  }
  return "/tmp";
}

// os.path.expanduser for the "~" and "~/..." forms.
fs::path ExpandUser(const std::string& path) {
  if (path == "~") return HomeDir();
  if (path.rfind("~/", 0) == 0) return HomeDir() / path.substr(2);
  return path;
}

// Token strings are stripped of surrounding whitespace and newlines, as huggingface_hub does.
std::string Strip(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string ReadSmallFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// "models--org--name" -> "org/name" (names never contain "--").
std::string RepoIdFromFolder(std::string_view folder) {
  folder.remove_prefix(kModelsPrefix.size());
  std::string repo_id;
  for (size_t i = 0; i < folder.size(); ++i) {
    if (folder.compare(i, 2, "--") == 0) {
      repo_id += '/';
      ++i;
    } else {
      repo_id += folder[i];
    }
  }
  return repo_id;
}

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
}

void ValidateRepoPart(std::string_view repo_id, std::string_view part) {
  const auto fail = [&](const std::string& why) {
    throw HubError(ErrorKind::kInvalidArgument,
                   "invalid repository id '" + std::string(repo_id) + "': " + why +
                       " (expected 'name' or 'org/name' using letters, digits, '-', '_', '.')");
  };
  if (part.empty()) fail("empty name");
  for (char c : part) {
    if (!IsNameChar(c)) fail(std::string("character '") + c + "' is not allowed");
  }
  const auto is_edge_ok = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (!is_edge_ok(part.front()) || !is_edge_ok(part.back())) {
    fail("names must start and end with a letter, digit or '_'");
  }
}

}  // namespace

HubConfig HubConfig::FromEnvironment() {
  HubConfig config;
  if (auto endpoint = Env("HF_ENDPOINT")) {
    config.endpoint = *endpoint;
    while (!config.endpoint.empty() && config.endpoint.back() == '/') config.endpoint.pop_back();
  }
  fs::path hf_home;
  if (auto home = Env("HF_HOME")) {
    hf_home = ExpandUser(*home);
  } else if (auto xdg = Env("XDG_CACHE_HOME")) {
    hf_home = ExpandUser(*xdg) / "huggingface";
  } else {
    hf_home = HomeDir() / ".cache" / "huggingface";
  }
  if (auto cache = Env("HF_HUB_CACHE")) {
    config.cache_dir = ExpandUser(*cache);
  } else if (auto legacy = Env("HUGGINGFACE_HUB_CACHE")) {
    config.cache_dir = ExpandUser(*legacy);
  } else {
    config.cache_dir = hf_home / "hub";
  }
  if (auto token = Env("HF_TOKEN")) {
    config.token = Strip(*token);
  } else if (auto legacy = Env("HUGGING_FACE_HUB_TOKEN")) {
    config.token = Strip(*legacy);
  } else {
    const fs::path token_path = Env("HF_TOKEN_PATH") ? ExpandUser(*Env("HF_TOKEN_PATH")) : hf_home / "token";
    config.token = Strip(ReadSmallFile(token_path));
  }
  config.offline = EnvIsTrue("HF_HUB_OFFLINE") || EnvIsTrue("TRANSFORMERS_OFFLINE");
  config.progress_disabled = EnvIsTrue("HF_HUB_DISABLE_PROGRESS_BARS");
  return config;
}

void ValidateRepoId(std::string_view repo_id) {
  if (repo_id.size() > 96) {
    throw HubError(ErrorKind::kInvalidArgument,
                   "invalid repository id '" + std::string(repo_id) + "': longer than 96 characters");
  }
  const size_t slash = repo_id.find('/');
  if (slash == std::string_view::npos) {
    ValidateRepoPart(repo_id, repo_id);
  } else {
    ValidateRepoPart(repo_id, repo_id.substr(0, slash));
    ValidateRepoPart(repo_id, repo_id.substr(slash + 1));
  }
  if (repo_id.find("--") != std::string_view::npos || repo_id.find("..") != std::string_view::npos) {
    throw HubError(ErrorKind::kInvalidArgument,
                   "invalid repository id '" + std::string(repo_id) + "': '--' and '..' are not allowed");
  }
}

void ValidateFilename(std::string_view filename) {
  const auto fail = [&](const std::string& why) {
    throw HubError(ErrorKind::kInvalidArgument, "invalid file name '" + std::string(filename) + "': " + why);
  };
  if (filename.empty()) fail("empty");
  if (filename.front() == '/') fail("must be relative to the repository root");
  for (char c : filename) {
    if (c == '\\' || static_cast<unsigned char>(c) < 0x20) fail("contains '\\' or a control character");
  }
  size_t start = 0;
  while (start <= filename.size()) {
    size_t end = filename.find('/', start);
    if (end == std::string_view::npos) end = filename.size();
    const std::string_view part = filename.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") fail("empty, '.' or '..' path component");
    start = end + 1;
  }
}

void ValidateRevision(std::string_view revision) {
  if (revision.empty()) throw HubError(ErrorKind::kInvalidArgument, "empty revision");
  try {
    ValidateFilename(revision);  // it becomes refs/{revision}: same rules as a file path
  } catch (const HubError&) {
    throw HubError(ErrorKind::kInvalidArgument, "invalid revision '" + std::string(revision) + "'");
  }
}

bool IsCommitHash(std::string_view s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

RepoCache::RepoCache(fs::path cache_dir, std::string repo_id)
    : cache_dir_(std::move(cache_dir)), repo_id_(std::move(repo_id)) {
  folder_ = std::string(kModelsPrefix);
  for (char c : repo_id_) {
    if (c == '/') {
      folder_ += "--";
    } else {
      folder_ += c;
    }
  }
}

fs::path RepoCache::blob_path(std::string_view etag) const {
  return repo_dir() / "blobs" / std::string(etag);
}

fs::path RepoCache::incomplete_path(std::string_view etag) const {
  return repo_dir() / "blobs" / (std::string(etag) + ".incomplete");
}

fs::path RepoCache::lock_path(std::string_view etag) const {
  return cache_dir_ / ".locks" / folder_ / (std::string(etag) + ".lock");
}

fs::path RepoCache::ref_path(std::string_view revision) const {
  return repo_dir() / "refs" / std::string(revision);
}

fs::path RepoCache::snapshot_path(std::string_view commit, std::string_view filename) const {
  return repo_dir() / "snapshots" / std::string(commit) / std::string(filename);
}

std::optional<std::string> RepoCache::ResolveRevision(std::string_view revision) const {
  if (IsCommitHash(revision)) return std::string(revision);
  std::string commit = Strip(ReadSmallFile(ref_path(revision)));
  if (commit.empty()) return std::nullopt;
  return commit;
}

std::optional<fs::path> RepoCache::FindCached(std::string_view revision, std::string_view filename) const {
  const auto commit = ResolveRevision(revision);
  if (!commit) return std::nullopt;
  fs::path path = snapshot_path(*commit, filename);
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;  // follows the link: false when dangling
  return std::nullopt;
}

void RepoCache::WriteRef(std::string_view revision, std::string_view commit) const {
  if (revision == commit) return;
  const fs::path path = ref_path(revision);
  if (Strip(ReadSmallFile(path)) == commit) return;
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = TempPathBeside(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << commit;
    if (!out) throw HubError(ErrorKind::kIo, "cannot write " + tmp.string());
  }
  fs::rename(tmp, path, ec);
  if (ec) throw HubError(ErrorKind::kIo, "cannot write " + path.string() + ": " + ec.message());
}

fs::path RepoCache::LinkSnapshot(std::string_view commit, std::string_view filename,
                                 std::string_view etag) const {
  const fs::path path = snapshot_path(commit, filename);
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) {
    throw HubError(ErrorKind::kIo, "cannot create " + path.parent_path().string() + ": " + ec.message());
  }
  // snapshots/{commit}/a/b.gguf -> ../../../blobs/{etag}: one "../" per directory below repo_dir.
  std::string target;
  const size_t depth = 2 + std::count(filename.begin(), filename.end(), '/');
  for (size_t i = 0; i < depth; ++i) target += "../";
  target += "blobs/" + std::string(etag);

  const fs::path tmp = TempPathBeside(path);
  fs::remove(tmp, ec);
  fs::create_symlink(target, tmp, ec);
  if (ec) {  // no symlinks here (some network or FAT file systems): keep a copy instead
    fs::copy_file(blob_path(etag), tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) throw HubError(ErrorKind::kIo, "cannot create " + path.string() + ": " + ec.message());
  }
  fs::rename(tmp, path, ec);
  if (ec) throw HubError(ErrorKind::kIo, "cannot create " + path.string() + ": " + ec.message());
  return path;
}

std::vector<CachedFile> ListCachedFiles(const fs::path& cache_dir) {
  std::vector<CachedFile> files;
  std::error_code ec;
  for (const auto& repo_entry : fs::directory_iterator(cache_dir, ec)) {
    const std::string folder = repo_entry.path().filename().string();
    if (folder.rfind(kModelsPrefix, 0) != 0 || !repo_entry.is_directory(ec)) continue;
    const std::string repo_id = RepoIdFromFolder(folder);
    // commit -> names of the refs pointing at it
    std::map<std::string, std::vector<std::string>> refs_by_commit;
    const fs::path refs_dir = repo_entry.path() / "refs";
    for (auto it = fs::recursive_directory_iterator(refs_dir, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      const std::string name = it->path().lexically_relative(refs_dir).generic_string();
      refs_by_commit[Strip(ReadSmallFile(it->path()))].push_back(name);
    }
    ec.clear();
    const fs::path snapshots_dir = repo_entry.path() / "snapshots";
    for (const auto& commit_entry : fs::directory_iterator(snapshots_dir, ec)) {
      const std::string commit = commit_entry.path().filename().string();
      for (auto it = fs::recursive_directory_iterator(commit_entry.path(), ec); !ec && it != fs::end(it);
           it.increment(ec)) {
        std::error_code file_ec;
        if (!fs::is_regular_file(it->path(), file_ec)) continue;  // directories, dangling links
        CachedFile file;
        file.repo_id = repo_id;
        file.filename = it->path().lexically_relative(commit_entry.path()).generic_string();
        file.commit = commit;
        if (auto refs = refs_by_commit.find(commit); refs != refs_by_commit.end()) {
          file.refs = refs->second;
          std::sort(file.refs.begin(), file.refs.end());
        }
        file.size_bytes = fs::file_size(it->path(), file_ec);
        file.path = it->path();
        file.blob_path = fs::canonical(it->path(), file_ec);
        files.push_back(std::move(file));
      }
      ec.clear();
    }
    ec.clear();
  }
  std::sort(files.begin(), files.end(), [](const CachedFile& a, const CachedFile& b) {
    return std::tie(a.repo_id, a.filename, a.commit) < std::tie(b.repo_id, b.filename, b.commit);
  });
  return files;
}

std::vector<PartialDownload> ListPartialDownloads(const fs::path& cache_dir) {
  std::vector<PartialDownload> partials;
  std::error_code ec;
  for (const auto& repo_entry : fs::directory_iterator(cache_dir, ec)) {
    const std::string folder = repo_entry.path().filename().string();
    if (folder.rfind(kModelsPrefix, 0) != 0) continue;
    const std::string repo_id = RepoIdFromFolder(folder);
    std::error_code blob_ec;
    for (const auto& blob : fs::directory_iterator(repo_entry.path() / "blobs", blob_ec)) {
      if (blob.path().extension() != ".incomplete") continue;
      std::error_code size_ec;
      partials.push_back({repo_id, blob.path(), fs::file_size(blob.path(), size_ec)});
    }
  }
  std::sort(partials.begin(), partials.end(),
            [](const PartialDownload& a, const PartialDownload& b) { return a.path < b.path; });
  return partials;
}

}  // namespace trinity::hub
