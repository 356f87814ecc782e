#include "hub/download.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "hub/hub_error.h"
#include "hub/sha256.h"

namespace trinity::hub {
namespace fs = std::filesystem;
namespace {

void Note(const PullOptions& options, const std::string& message) {
  if (options.on_message) options.on_message(message);
}

std::vector<std::string> RequestHeaders(const HubConfig& config) {
  std::vector<std::string> headers;
  if (!config.token.empty()) headers.push_back("Authorization: Bearer " + config.token);
  return headers;
}

// `ETag: W/"abc"` -> abc, as huggingface_hub's _normalize_etag.
std::string NormalizeEtag(std::string etag) {
  if (etag.rfind("W/", 0) == 0) etag.erase(0, 2);
  etag.erase(std::remove(etag.begin(), etag.end(), '"'), etag.end());
  return etag;
}

// Commit hashes and ETags come from the server and become file names in the cache.
bool IsSafePathComponent(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 255) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

std::optional<uint64_t> ParseSize(const std::string& text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), ::isdigit)) return std::nullopt;
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// "scheme://host[:port]" of a URL.
std::string Origin(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url;
  const size_t path_start = url.find('/', scheme_end + 3);
  return path_start == std::string::npos ? url : url.substr(0, path_start);
}

std::string ServerDetail(const HttpResponse& response) {
  const std::string message = response.Header("x-error-message");
  return message.empty() ? "" : " The hub says: " + message;
}

// The hub explains failures with X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound,
// GatedRepo); huggingface_hub maps them to its exception types, and this to HubError kinds.
HubError StatusError(const HttpResponse& response, const std::string& url, const HubConfig& config,
                     std::string_view repo_id, std::string_view filename, std::string_view revision) {
  const std::string code = response.Header("x-error-code");
  const std::string status = "HTTP " + std::to_string(response.status);
  const std::string where = " (" + url + ", " + status + ").";
  const std::string repo(repo_id), file(filename), rev(revision);
  if (code == "RevisionNotFound") {
    return HubError(ErrorKind::kNotFound,
                    "revision '" + rev + "' not found in " + repo + where + ServerDetail(response));
  }
  if (code == "EntryNotFound") {
    return HubError(ErrorKind::kNotFound, "file '" + file + "' not found in " + repo + " at revision '" +
                                              rev + "'" + where + ServerDetail(response));
  }
  if (code == "GatedRepo") {
    return HubError(ErrorKind::kForbidden,
                    repo + " is gated" + where + " Request access at " + config.endpoint + "/" + repo +
                        ", then set HF_TOKEN to a token of an account that has it." + ServerDetail(response));
  }
  if (response.status == 401 || code == "RepoNotFound") {
    const ErrorKind kind = response.status == 404 ? ErrorKind::kNotFound : ErrorKind::kUnauthorized;
    const std::string token_hint =
        config.token.empty()
            ? " If it is private or gated, set HF_TOKEN to a read token (" + config.endpoint +
                  "/settings/tokens)."
            : " The token from HF_TOKEN (or the saved token) was sent: check that it is valid and "
              "can read this repository.";
    return HubError(kind, "repository " + repo + " not found or not accessible" + where +
                              " Check the repository id." + token_hint + ServerDetail(response));
  }
  if (response.status == 403) {
    return HubError(ErrorKind::kForbidden,
                    "access to " + repo + " denied" + where +
                        (config.token.empty() ? " Set HF_TOKEN to a token that can read it."
                                              : " The token in HF_TOKEN lacks permission for it.") +
                        ServerDetail(response));
  }
  if (response.status == 404 && file.empty()) {
    return HubError(ErrorKind::kNotFound, "repository " + repo + " or its revision '" + rev + "' not found" +
                                              where + ServerDetail(response));
  }
  if (response.status == 404) {
    return HubError(ErrorKind::kNotFound,
                    "'" + file + "' not found in repository " + repo + " at revision '" + rev + "'" + where +
                        " Check the repository id, file name and revision." + ServerDetail(response));
  }
  return HubError(ErrorKind::kHttp, "unexpected " + status + " from " + url + "." + ServerDetail(response));
}

// The lock huggingface_hub takes (filelock uses flock() on Unix), so two downloads of one blob,
// by either client, never write the same .incomplete file.
class FileLock {
 public:
  FileLock(const fs::path& path, const PullOptions& options) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw HubError(ErrorKind::kIo,
                     "cannot create lock file " + path.string() + ": " + std::strerror(errno));
    }
    if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      Note(options, "waiting for another download of this file to finish (lock " + path.string() + ")");
      while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~FileLock() {
    flock(fd_, LOCK_UN);
    close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Ends the progress display on every way out of a download.
class ProgressScope {
 public:
  explicit ProgressScope(ProgressSink* sink) : sink_(sink) {}
  ~ProgressScope() { End(false); }
  void Begin(const std::string& label, uint64_t total, uint64_t start) {
    if (sink_ != nullptr) sink_->Begin(label, total, start);
    begun_ = true;
  }
  void Update(uint64_t done) {
    if (sink_ != nullptr) sink_->Update(done);
  }
  void End(bool ok) {
    if (begun_ && sink_ != nullptr) sink_->End(ok);
    begun_ = false;
  }

 private:
  ProgressSink* sink_;
  bool begun_ = false;
};

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

struct DownloadOutcome {
  bool resumed = false;
  bool verified = false;
  uint64_t size_bytes = 0;
};

// Downloads the blob into blobs/{etag}.incomplete, resuming what is there, verifies it and renames
// it to blobs/{etag}. The caller holds the blob's lock.
DownloadOutcome DownloadBlob(const HubConfig& config, const PullOptions& options, const FileMetadata& meta,
                             const RepoCache& cache) {
  const fs::path incomplete = cache.incomplete_path(meta.etag);
  std::error_code ec;
  fs::create_directories(incomplete.parent_path(), ec);
  UniqueFd fd(open(incomplete.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    throw HubError(ErrorKind::kIo, "cannot write " + incomplete.string() + ": " + std::strerror(errno));
  }
  const auto truncate_all = [&] {
    if (ftruncate(fd.get(), 0) != 0 || lseek(fd.get(), 0, SEEK_SET) != 0) {
      throw HubError(ErrorKind::kIo, "cannot truncate " + incomplete.string() + ": " + std::strerror(errno));
    }
  };
  uint64_t offset = static_cast<uint64_t>(std::max<off_t>(0, lseek(fd.get(), 0, SEEK_END)));
  if (meta.size_bytes && offset > *meta.size_bytes) {  // longer than the file: not a prefix of it
    truncate_all();
    offset = 0;
  }

  const bool verify = IsSha256Hex(meta.etag);
  Sha256 sha;
  if (verify && offset > 0) {
    Note(options,
         "resuming " + options.filename + " at " + FormatBytes(offset) + "; hashing the partial file first");
    // The bytes on disk are hashed again: the digest must cover the whole file.
    std::vector<char> buffer(1 << 20);
    for (uint64_t at = 0; at < offset;) {
      const ssize_t got = pread(fd.get(), buffer.data(), std::min<uint64_t>(buffer.size(), offset - at), at);
      if (got <= 0) {
        if (got < 0 && errno == EINTR) continue;
        throw HubError(ErrorKind::kIo, "cannot read " + incomplete.string());
      }
      sha.Update(buffer.data(), static_cast<size_t>(got));
      at += static_cast<uint64_t>(got);
    }
  }
  DownloadOutcome outcome;
  outcome.resumed = offset > 0;

  ProgressScope progress(options.progress);
  progress.Begin(options.filename, meta.size_bytes.value_or(0), offset);
  const std::vector<std::string> headers = RequestHeaders(config);
  std::string io_error;
  bool range_mismatch = false;

  BodyHandler handler;
  handler.on_begin = [&](const HttpResponse& response) {
    if (offset == 0) return true;
    if (response.status == 206) {
      // Content-Range: bytes {first}-{last}/{total}; the body must continue where the file ends.
      const std::string content_range = response.Header("content-range");
      const size_t space = content_range.find(' ');
      const size_t dash = content_range.find('-');
      uint64_t first = UINT64_MAX;
      if (space != std::string::npos && dash != std::string::npos && dash > space) {
        first = ParseSize(content_range.substr(space + 1, dash - space - 1)).value_or(UINT64_MAX);
      }
      if (first == offset) return true;
      range_mismatch = true;
      return false;
    }
    // 200 to a Range request: the server sends the whole file; start over with it.
    Note(options,
         "the server ignored the Range request; downloading " + options.filename + " from the start");
    truncate_all();
    sha.Reset();
    offset = 0;
    return true;
  };
  handler.on_data = [&](const char* data, size_t size) {
    for (size_t written = 0; written < size;) {
      const ssize_t n = write(fd.get(), data + written, size - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        io_error = std::strerror(errno);
        return false;
      }
      written += static_cast<size_t>(n);
    }
    if (verify) sha.Update(data, size);
    offset += size;
    progress.Update(offset);
    return true;
  };

  for (int attempt = 0;; ++attempt) {
    if (meta.size_bytes && offset == *meta.size_bytes && offset > 0) break;  // nothing left
    const std::string range = offset > 0 ? std::to_string(offset) + "-" : "";
    range_mismatch = false;
    const HttpResponse response = HttpGet(meta.url, headers, range, &handler, options.http);
    if (!io_error.empty()) {
      throw HubError(ErrorKind::kIo, "cannot write " + incomplete.string() + ": " + io_error);
    }
    if (response.cancelled) {
      throw HubError(ErrorKind::kCancelled, "download of " + options.filename + " stopped at " +
                                                FormatBytes(offset) +
                                                "; run the same command again to resume");
    }
    const bool success = response.status >= 200 && response.status < 300;
    if (response.transport_error.empty() && success && !response.handler_stopped) break;

    std::string why;
    bool retry = false;
    if (range_mismatch) {  // a 206 for some other range: drop the partial file, fetch it all
      truncate_all();
      sha.Reset();
      offset = 0;
      why = "the server answered the Range request with another range";
      retry = true;
    } else if (response.status == 416 && offset > 0) {
      truncate_all();  // the partial file does not fit what the server has
      sha.Reset();
      offset = 0;
      why = "the server rejected the Range request (HTTP 416)";
      retry = true;
    } else if (!response.transport_error.empty() && (success || response.status == 0)) {
      why = response.transport_error;
      retry = response.transient;
    } else if (response.status == 429 || response.status >= 500) {
      why = "HTTP " + std::to_string(response.status);
      retry = true;
    } else {
      throw StatusError(response, response.effective_url.empty() ? meta.url : response.effective_url, config,
                        options.repo_id, options.filename, options.revision);
    }
    if (!retry || attempt >= options.max_retries) {
      const std::string total = meta.size_bytes ? " of " + FormatBytes(*meta.size_bytes) : "";
      throw HubError(ErrorKind::kNetwork, "download of " + meta.url + " failed after " + FormatBytes(offset) +
                                              total + ": " + why + ". The partial file is kept (" +
                                              incomplete.string() +
                                              "); run the same command again to resume.");
    }
    const int delay_ms = std::min(8000, options.retry_delay_ms << std::min(attempt, 4));
    Note(options, "download of " + options.filename + " interrupted at " + FormatBytes(offset) + " (" + why +
                      "); retrying in " + fmt::format("{:.1f}", delay_ms / 1000.0) + " s (" +
                      std::to_string(attempt + 1) + "/" + std::to_string(options.max_retries) + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  }

  if (fsync(fd.get()) != 0) {
    throw HubError(ErrorKind::kIo, "cannot write " + incomplete.string() + ": " + std::strerror(errno));
  }
  if (meta.size_bytes && offset != *meta.size_bytes) {
    fs::remove(incomplete, ec);
    throw HubError(ErrorKind::kIntegrity,
                   "size mismatch for " + options.filename + " from " + meta.url + ": the hub announced " +
                       std::to_string(*meta.size_bytes) + " bytes, " + std::to_string(offset) +
                       " arrived. The download was deleted; run the same command again.");
  }
  if (verify) {
    const std::string digest = sha.FinishHex();
    if (digest != Lower(meta.etag)) {
      fs::remove(incomplete, ec);
      throw HubError(ErrorKind::kIntegrity,
                     "checksum mismatch for " + options.filename + " from " + meta.url +
                         ": the hub's ETag says sha256 " + meta.etag + ", the downloaded bytes hash to " +
                         digest + ". The corrupted download was deleted; run the same command again.");
    }
    outcome.verified = true;
  }
  const fs::path blob = cache.blob_path(meta.etag);
  fs::rename(incomplete, blob, ec);
  if (ec)
    throw HubError(ErrorKind::kIo, "cannot move the download to " + blob.string() + ": " + ec.message());
  progress.End(true);
  outcome.size_bytes = offset;
  return outcome;
}

PullResult CachedResult(const fs::path& path, const std::string& commit, bool offline) {
  PullResult result;
  result.path = path;
  result.commit = commit;
  std::error_code ec;
  result.size_bytes = fs::file_size(path, ec);
  const fs::path blob = fs::canonical(path, ec);
  if (!ec) result.etag = blob.filename().string();
  result.offline = offline;
  return result;
}

}  // namespace

std::string ResolveUrl(std::string_view endpoint, std::string_view repo_id, std::string_view revision,
                       std::string_view filename) {
  return std::string(endpoint) + "/" + std::string(repo_id) + "/resolve/" +
         UrlQuote(std::string(revision), /*keep_slash=*/false) + "/" +
         UrlQuote(std::string(filename), /*keep_slash=*/true);
}

FileMetadata GetFileMetadata(const HubConfig& config, const PullOptions& options) {
  FileMetadata meta;
  meta.url = ResolveUrl(config.endpoint, options.repo_id, options.revision, options.filename);
  std::vector<std::string> headers = RequestHeaders(config);
  headers.push_back("Accept-Encoding: identity");  // so Content-Length is the file's size
  std::string url = meta.url;
  HttpResponse response;
  // Follow relative redirects only (a renamed repository); an absolute one goes to the CDN, and
  // the metadata is on this response.
  for (int hops = 0;; ++hops) {
    response = HttpHead(url, headers, options.http);
    if (response.cancelled) throw HubError(ErrorKind::kCancelled, "cancelled");
    if (!response.transport_error.empty()) {
      throw HubError(ErrorKind::kNetwork, "cannot reach " + url + ": " + response.transport_error +
                                              ". Check the network, HF_ENDPOINT (" + config.endpoint +
                                              ") and any proxy settings.");
    }
    const std::string location = response.Header("location");
    const bool relative = !location.empty() && location[0] == '/' && location.rfind("//", 0) != 0;
    if (response.status >= 300 && response.status < 400 && relative && hops < 10) {
      url = Origin(url) + location;
      continue;
    }
    break;
  }
  if (response.status >= 400 || response.status < 200) {
    throw StatusError(response, url, config, options.repo_id, options.filename, options.revision);
  }
  meta.commit = response.Header("x-repo-commit");
  std::string etag = response.Header("x-linked-etag");
  if (etag.empty()) etag = response.Header("etag");
  meta.etag = NormalizeEtag(etag);
  std::string size = response.Header("x-linked-size");
  if (size.empty()) size = response.Header("content-length");
  meta.size_bytes = ParseSize(size);
  if (meta.commit.empty() || meta.etag.empty()) {
    throw HubError(ErrorKind::kHttp,
                   url + " answered HTTP " + std::to_string(response.status) +
                       " without the X-Repo-Commit and ETag headers of a Hugging Face hub: check "
                       "HF_ENDPOINT (" +
                       config.endpoint + ") and any proxy in between.");
  }
  if (!IsSafePathComponent(meta.commit) || !IsSafePathComponent(meta.etag)) {
    throw HubError(ErrorKind::kHttp, url + " answered with an unusable commit '" + meta.commit +
                                         "' or ETag '" + meta.etag + "'");
  }
  return meta;
}

PullResult Pull(const HubConfig& config, const PullOptions& options) {
  ValidateRepoId(options.repo_id);
  ValidateFilename(options.filename);
  ValidateRevision(options.revision);
  const RepoCache cache(config.cache_dir, options.repo_id);
  const std::string what = options.repo_id + "/" + options.filename;

  // A commit hash names immutable content: if it is here, there is nothing to ask.
  if (!options.force && IsCommitHash(options.revision)) {
    if (auto path = cache.FindCached(options.revision, options.filename)) {
      return CachedResult(*path, options.revision, /*offline=*/false);
    }
  }
  if (config.offline) {
    if (auto path = cache.FindCached(options.revision, options.filename)) {
      return CachedResult(*path, *cache.ResolveRevision(options.revision), /*offline=*/true);
    }
    throw HubError(ErrorKind::kOffline, "HF_HUB_OFFLINE is set and " + what + " (revision '" +
                                            options.revision + "') is not in the cache " +
                                            config.cache_dir.string() +
                                            ". Unset HF_HUB_OFFLINE to download it.");
  }

  FileMetadata meta;
  try {
    meta = GetFileMetadata(config, options);
  } catch (const HubError& error) {
    // As huggingface_hub does: when the hub cannot be reached, a cached copy is good enough.
    if (error.kind() == ErrorKind::kNetwork && !options.force) {
      if (auto path = cache.FindCached(options.revision, options.filename)) {
        Note(options, std::string(error.what()) + " Using the cached copy.");
        return CachedResult(*path, *cache.ResolveRevision(options.revision), /*offline=*/true);
      }
    }
    throw;
  }

  cache.WriteRef(options.revision, meta.commit);
  const fs::path snapshot = cache.snapshot_path(meta.commit, options.filename);
  std::error_code ec;
  if (!options.force && fs::is_regular_file(snapshot, ec)) {
    return CachedResult(snapshot, meta.commit, /*offline=*/false);
  }

  PullResult result;
  result.commit = meta.commit;
  result.etag = meta.etag;
  const fs::path blob = cache.blob_path(meta.etag);
  {
    FileLock lock(cache.lock_path(meta.etag), options);
    if (options.force) {
      fs::remove(blob, ec);
      fs::remove(cache.incomplete_path(meta.etag), ec);
    }
    // The blob may be here already: another file or revision with the same content, or another
    // process that finished it while this one waited for the lock.
    if (!fs::is_regular_file(blob, ec)) {
      Note(options, "downloading " + meta.url);
      const DownloadOutcome outcome = DownloadBlob(config, options, meta, cache);
      result.downloaded = true;
      result.resumed = outcome.resumed;
      result.verified = outcome.verified;
    }
  }
  result.path = cache.LinkSnapshot(meta.commit, options.filename, meta.etag);
  result.size_bytes = fs::file_size(blob, ec);
  return result;
}

std::vector<std::string> ListRepoFiles(const HubConfig& config, std::string_view repo_id,
                                       std::string_view revision, const HttpSettings& http) {
  ValidateRepoId(repo_id);
  ValidateRevision(revision);
  if (config.offline) {
    throw HubError(ErrorKind::kOffline, "HF_HUB_OFFLINE is set: cannot list the files of " +
                                            std::string(repo_id) + "; name the file to use the cache");
  }
  const std::string url = config.endpoint + "/api/models/" + std::string(repo_id) + "/revision/" +
                          UrlQuote(std::string(revision), /*keep_slash=*/false);
  const HttpResponse response = HttpGet(url, RequestHeaders(config), "", nullptr, http);
  if (!response.transport_error.empty()) {
    throw HubError(ErrorKind::kNetwork, "cannot reach " + url + ": " + response.transport_error);
  }
  if (response.status < 200 || response.status >= 300) {
    throw StatusError(response, url, config, repo_id, "", revision);
  }
  std::vector<std::string> files;
  try {
    const nlohmann::json info = nlohmann::json::parse(response.body);
    for (const auto& sibling : info.at("siblings"))
      files.push_back(sibling.at("rfilename").get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw HubError(ErrorKind::kHttp, url + " did not return the repository's file list: " + e.what());
  }
  return files;
}

std::string ChooseGgufFile(const std::vector<std::string>& files, std::string_view repo_id) {
  std::vector<std::string> gguf, i2s;
  for (const std::string& file : files) {
    const std::string lower = Lower(file);
    if (lower.size() < 5 || lower.compare(lower.size() - 5, 5, ".gguf") != 0) continue;
    gguf.push_back(file);
    if (lower.find("i2_s") != std::string::npos) i2s.push_back(file);
  }
  if (gguf.size() == 1) return gguf[0];
  if (i2s.size() == 1) return i2s[0];
  if (gguf.empty()) {
    throw HubError(ErrorKind::kNotFound, std::string(repo_id) + " has no .gguf file; name the file to fetch");
  }
  std::string list;
  for (const std::string& file : gguf) list += "\n  " + file;
  throw HubError(ErrorKind::kNotFound,
                 std::string(repo_id) + " has several .gguf files; name the one to fetch:" + list);
}

}  // namespace trinity::hub
