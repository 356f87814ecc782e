// `hf_hub_download` for one file, in C++: ask the hub for the file's commit, ETag and size (HEAD
// {endpoint}/{repo}/resolve/{revision}/{file}), reuse the cached blob if it is there, else download
// it to blobs/{etag}.incomplete (resuming with a Range request), check its size and SHA-256, and
// rename it into place. The cache is shared with the official Python client (see cache.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hub/cache.h"
#include "hub/http.h"
#include "hub/progress.h"

namespace trinity::hub {

inline constexpr std::string_view kDefaultRepo = "microsoft/bitnet-b1.58-2B-4T-gguf";
inline constexpr std::string_view kDefaultFile = "ggml-model-i2_s.gguf";

struct PullOptions {
  std::string repo_id{kDefaultRepo};
  std::string filename{kDefaultFile};
  std::string revision{kDefaultRevision};  // branch, tag or commit hash
  bool force = false;                      // download again even if cached
  int max_retries = 5;                     // per download, for cut connections, timeouts, 429 and 5xx
  int retry_delay_ms = 1000;               // doubled after each retry, at most 8 s
  HttpSettings http;
  ProgressSink* progress = nullptr;                    // null: no progress display
  std::function<void(const std::string&)> on_message;  // notes for people; may be empty
};

struct PullResult {
  std::filesystem::path path;  // snapshots/{commit}/{filename}: what callers open
  std::string commit;
  std::string etag;
  uint64_t size_bytes = 0;
  bool downloaded = false;  // false: the file was already in the cache
  bool resumed = false;     // the download continued a partial file
  bool verified = false;    // the content's SHA-256 matched the ETag
  bool offline = false;     // answered from the cache without the hub (offline, or unreachable)
};

// What the hub says about a file (HEAD, following only relative redirects).
struct FileMetadata {
  std::string url;                     // the resolve URL asked
  std::string commit;                  // X-Repo-Commit
  std::string etag;                    // X-Linked-Etag or ETag, without quotes and W/
  std::optional<uint64_t> size_bytes;  // X-Linked-Size or Content-Length
};

// {endpoint}/{repo_id}/resolve/{revision}/{filename}, revision and filename percent-encoded.
std::string ResolveUrl(std::string_view endpoint, std::string_view repo_id, std::string_view revision,
                       std::string_view filename);

// HEAD the resolve URL. Throws HubError: kUnauthorized, kForbidden, kNotFound, kHttp (also when
// the answer lacks X-Repo-Commit or an ETag), kNetwork.
FileMetadata GetFileMetadata(const HubConfig& config, const PullOptions& options);

// Makes `options.filename` of `options.repo_id` at `options.revision` available in the cache and
// returns where. With config.offline, only the cache is consulted. Throws HubError.
PullResult Pull(const HubConfig& config, const PullOptions& options);

// The files of a repository revision, from {endpoint}/api/models/{repo_id}/revision/{revision}.
std::vector<std::string> ListRepoFiles(const HubConfig& config, std::string_view repo_id,
                                       std::string_view revision, const HttpSettings& http);

// The GGUF file to fetch when none is named: the only .gguf, else the only I2_S one. Throws
// HubError (kNotFound) naming the candidates when there is no single choice.
std::string ChooseGgufFile(const std::vector<std::string>& files, std::string_view repo_id);

}  // namespace trinity::hub
