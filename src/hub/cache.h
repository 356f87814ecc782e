// The Hugging Face hub cache, laid out exactly as the official Python client (huggingface_hub)
// lays it out, so a file fetched by either is found by the other:
//
//   $HF_HUB_CACHE/                         default $HF_HOME/hub, HF_HOME default
//     models--{org}--{name}/               ~/.cache/huggingface (or $XDG_CACHE_HOME/huggingface)
//       blobs/{etag}                       the bytes; for LFS files etag = sha256 of the content
//       blobs/{etag}.incomplete            a download in progress, resumed with a Range request
//       refs/{revision}                    the commit hash that revision (e.g. "main") pointed to
//       snapshots/{commit}/{filename}      relative symlink to ../../blobs/{etag}
//   $HF_HUB_CACHE/.locks/models--{org}--{name}/{etag}.lock   flock()ed while downloading
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trinity::hub {

inline constexpr std::string_view kDefaultEndpoint = "https://huggingface.co";
inline constexpr std::string_view kDefaultRevision = "main";

// Settings the official client reads from the environment.
struct HubConfig {
  std::string endpoint{kDefaultEndpoint};  // HF_ENDPOINT, without a trailing '/'
  std::filesystem::path cache_dir;         // HF_HUB_CACHE (or HUGGINGFACE_HUB_CACHE), HF_HOME/hub
  std::string token;                       // HF_TOKEN, HUGGING_FACE_HUB_TOKEN, $HF_TOKEN_PATH file,
                                           // $HF_HOME/token; empty = anonymous
  bool offline = false;                    // HF_HUB_OFFLINE in {1, ON, YES, TRUE}
  bool progress_disabled = false;          // HF_HUB_DISABLE_PROGRESS_BARS

  static HubConfig FromEnvironment();
};

// Validation of names that become URL and path components. Each throws HubError
// (kInvalidArgument) with the reason.
void ValidateRepoId(std::string_view repo_id);     // "name" or "org/name", [A-Za-z0-9._-]
void ValidateFilename(std::string_view filename);  // relative, no "." / ".." / empty components
void ValidateRevision(std::string_view revision);

// Paths inside the cache for one repository (models only).
class RepoCache {
 public:
  RepoCache(std::filesystem::path cache_dir, std::string repo_id);

  const std::string& repo_id() const { return repo_id_; }
  const std::filesystem::path& cache_dir() const { return cache_dir_; }
  std::filesystem::path repo_dir() const { return cache_dir_ / folder_; }
  std::filesystem::path blob_path(std::string_view etag) const;
  std::filesystem::path incomplete_path(std::string_view etag) const;
  std::filesystem::path lock_path(std::string_view etag) const;
  std::filesystem::path ref_path(std::string_view revision) const;
  std::filesystem::path snapshot_path(std::string_view commit, std::string_view filename) const;

  // The commit `revision` resolves to locally: itself if it is a 40-hex commit hash, else the
  // content of refs/{revision}; nullopt if unknown.
  std::optional<std::string> ResolveRevision(std::string_view revision) const;
  // The snapshot file for (revision, filename) if it is in the cache (and not a dangling link).
  std::optional<std::filesystem::path> FindCached(std::string_view revision, std::string_view filename) const;
  // Records that `revision` points to `commit` (refs/{revision}); a no-op when they are equal.
  void WriteRef(std::string_view revision, std::string_view commit) const;
  // Points snapshots/{commit}/{filename} at blobs/{etag} with a relative symlink (a copy where
  // the file system has no symlinks). Replaces an existing entry atomically.
  std::filesystem::path LinkSnapshot(std::string_view commit, std::string_view filename,
                                     std::string_view etag) const;

 private:
  std::filesystem::path cache_dir_;
  std::string repo_id_;
  std::string folder_;  // "models--org--name"
};

// One file of one snapshot in the cache.
struct CachedFile {
  std::string repo_id;
  std::string filename;  // path inside the repository, '/'-separated
  std::string commit;
  std::vector<std::string> refs;  // revisions (e.g. "main") that point to this commit
  uint64_t size_bytes = 0;
  std::filesystem::path path;       // snapshots/{commit}/{filename}
  std::filesystem::path blob_path;  // what it links to
};

// Every complete file in every model snapshot under `cache_dir`, sorted by repository, file and
// commit. Dangling links (blob removed) are skipped. A missing cache directory gives an empty list.
std::vector<CachedFile> ListCachedFiles(const std::filesystem::path& cache_dir);

// Partial downloads (blobs/*.incomplete) under `cache_dir`, for reporting.
struct PartialDownload {
  std::string repo_id;
  std::filesystem::path path;
  uint64_t size_bytes = 0;
};
std::vector<PartialDownload> ListPartialDownloads(const std::filesystem::path& cache_dir);

// True when `s` is 40 lowercase hex digits, a git commit hash.
bool IsCommitHash(std::string_view s);

}  // namespace trinity::hub
